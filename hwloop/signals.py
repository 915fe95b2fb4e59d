"""Stopping on SIGTERM: the process-wide stop request, and the handlers that every command uses.

A signal handler that raises can land inside a finalizer or weakref callback, where Python ignores the
exception. So the CLI's handler (:func:`request_stop`) also sets a flag, and the training loop turns it into
``KeyboardInterrupt`` between steps (:func:`check_stop`), taking the same path as Ctrl-C.

- :func:`flag_only`: the handler while ``python -m hwloop`` (or the console script) imports the CLI.
- :func:`request_stop`: the CLI's handler for every command (``hwloop.cli.main``).
- :func:`interrupt_now`: raise ``KeyboardInterrupt`` at once (a sweep driver and its worker processes, which
  run no cooperative loop of their own).
- :func:`handling`: install a handler for the duration of a ``with`` block (main thread only), then restore.
- :func:`deferred`: a block (closing a run log) that a SIGTERM only flags, so it cannot be cut in two.

Every stop raises :class:`Terminated`, a subclass of ``KeyboardInterrupt`` (so ``except KeyboardInterrupt``
takes it as Ctrl-C), never ``KeyboardInterrupt`` itself. A handler runs wherever the main thread is, and
during start-up that is often inside code that ``exec()`` compiled from a string: ``dataclasses`` builds
every ``__init__``/``__eq__`` that way, and torch and scipy define hundreds of dataclasses in modules they
import lazily. When a plain ``KeyboardInterrupt`` leaves such an ``exec``, CPython records it as an
*unhandled* Ctrl-C (``_Py_UnhandledKeyboardInterrupt``, set on the exact type) and keeps that record even
after the exception is caught; a ``python -m`` process then ends by killing itself with SIGINT (exit status
-2) instead of exiting 130 as asked. A subclass is not recorded.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

Handler = Callable[[int, FrameType | None], Any]

stop_requested = threading.Event()
#: set while a loop that calls ``check_stop`` at safe points is running; the handler then only flags
cooperative = threading.Event()


class Terminated(KeyboardInterrupt):
    """A stop asked by a signal (SIGTERM): the Ctrl-C path, without CPython's exit-by-SIGINT record."""


def check_stop() -> None:
    """Raise :class:`Terminated` if a stop was requested."""
    if stop_requested.is_set():
        raise Terminated("stop requested (SIGTERM)")


def request_stop(signum: int, frame: FrameType | None) -> None:
    """Flag a stop; raise :class:`Terminated` here unless a cooperative loop will look at the flag."""
    stop_requested.set()
    if not cooperative.is_set():  # no loop will look at the flag: interrupt right here
        raise Terminated(f"signal {signum}")


def flag_only(signum: int, frame: FrameType | None) -> None:
    """Flag a stop and return: the handler of a program's first moments (``python -m hwloop``), while the
    CLI is still being imported and nothing is open yet; ``hwloop.cli.main`` then exits 130 at once."""
    stop_requested.set()


def interrupt_now(signum: int, frame: FrameType | None) -> None:
    """Raise :class:`Terminated` (SIGTERM takes the Ctrl-C path)."""
    raise Terminated(f"signal {signum}")


@contextlib.contextmanager
def handling(handler: Handler, *signums: int) -> Iterator[None]:
    """Within the block, ``handler`` answers ``signums`` (default SIGTERM); the old handlers come back after.

    Outside the main thread (where Python cannot set handlers) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    nums = signums or (signal.SIGTERM,)
    old = {s: signal.signal(s, handler) for s in nums}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def stop_point() -> Iterator[None]:
    """A block that a SIGTERM may not cut in two: inside it the handler only flags, and the stop is taken
    when the block ends (``KeyboardInterrupt``). Nested in a loop that already checks at its own safe
    points (``cooperative`` set), it leaves the stop to that loop. Used around real-bench array calls, so
    that every frame the board executed has been acknowledged and logged before the process stops."""
    if cooperative.is_set():
        yield
        return
    cooperative.set()
    try:
        yield
    finally:
        cooperative.clear()
    check_stop()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A block that a SIGTERM only flags and never cuts (closing a run log: drain, status, compaction).
    Unlike :func:`stop_point` it does not stop when it ends: it is the last thing done before returning or
    re-raising, and a stop that arrives while a run is closing has nothing left to stop."""
    was = cooperative.is_set()
    cooperative.set()
    try:
        yield
    finally:
        if not was:
            cooperative.clear()
