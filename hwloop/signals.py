"""Stopping on SIGTERM: the process-wide stop request, and the handlers that every command uses.

A signal handler that raises can land inside a finalizer or weakref callback, where Python ignores the
exception. So the CLI's handler (:func:`request_stop`) also sets a flag, and the training loop turns it into
``KeyboardInterrupt`` between steps (:func:`check_stop`), taking the same path as Ctrl-C.

- :func:`request_stop`: the CLI's handler for every command (``hwloop.cli.main``).
- :func:`interrupt_now`: raise ``KeyboardInterrupt`` at once (a sweep driver and its worker processes, which
  run no cooperative loop of their own).
- :func:`handling`: install a handler for the duration of a ``with`` block (main thread only), then restore.
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


def check_stop() -> None:
    """Raise ``KeyboardInterrupt`` if a stop was requested."""
    if stop_requested.is_set():
        raise KeyboardInterrupt("stop requested (SIGTERM)")


def request_stop(signum: int, frame: FrameType | None) -> None:
    """Flag a stop; raise ``KeyboardInterrupt`` here unless a cooperative loop will look at the flag."""
    stop_requested.set()
    if not cooperative.is_set():  # no loop will look at the flag: interrupt right here
        raise KeyboardInterrupt(f"signal {signum}")


def interrupt_now(signum: int, frame: FrameType | None) -> None:
    """Raise ``KeyboardInterrupt`` (SIGTERM takes the Ctrl-C path)."""
    raise KeyboardInterrupt(f"signal {signum}")


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
