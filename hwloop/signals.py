"""A process-wide stop request (set by the CLI's SIGTERM handler), checked by long loops at safe points.

A signal handler that raises can land inside a finalizer or weakref callback, where Python ignores the
exception. So the handler also sets this flag, and the training loop turns it into ``KeyboardInterrupt``
between steps, taking the same path as Ctrl-C.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

stop_requested = threading.Event()
#: set while a loop that calls ``check_stop`` at safe points is running; the handler then only flags
cooperative = threading.Event()


def check_stop() -> None:
    """Raise ``KeyboardInterrupt`` if a stop was requested."""
    if stop_requested.is_set():
        raise KeyboardInterrupt("stop requested (SIGTERM)")


@contextmanager
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
