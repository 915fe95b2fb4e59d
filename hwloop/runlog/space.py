"""Disk space: a write refused for lack of space becomes one ``RunLogError`` (``DiskSpaceError``), and
the writer is marked broken after a failed write (``_disk_guard``)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from hwloop.errors import RunLogError


def is_disk_full(exc: BaseException) -> bool:
    """True for a write that failed for lack of space (h5py reports HDF5's errno only in the message)."""
    import errno

    text = str(exc)
    return (
        getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
        or "No space left" in text
        or ("errno = 28" in text)
        or "Disk quota exceeded" in text
    )


def disk_error(path: Path, exc: BaseException, doing: str) -> RunLogError:
    """One line for a write that failed (disk full, quota, I/O error), saying what is kept and what to do."""
    import errno

    err = getattr(exc, "errno", None)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if is_disk_full(exc):
        why = f"the disk holding {path.parent} is full"
    elif err == errno.EFBIG or "File too large" in text:
        why = "the file size limit was reached"
    else:
        why = f"a write failed ({text})"
    return RunLogError(
        f"{doing} {path}: {why}. The log keeps every step flushed before this; free some space, then "
        f"continue with: hwloop train --resume {path}"
    )


#: free space (bytes) kept in reserve on the log's file system: a write that would leave less is refused
#: before HDF5 sees a full disk (HDF5 cannot recover from a failed write: its close fails too, and the
#: process can crash at exit), and the reserve lets the writer still mark the status and close cleanly
SPACE_RESERVE_BYTES = 1 << 20


class DiskSpaceError(RunLogError):
    """Not enough free space to write safely; nothing was written, the file is intact."""


def check_space(path: Path, need_bytes: int, doing: str = "cannot write") -> None:
    """Raise ``DiskSpaceError`` unless ``need_bytes`` plus the reserve are free where ``path`` lives."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return
    if not free >= need_bytes + SPACE_RESERVE_BYTES:
        raise DiskSpaceError(
            f"{doing} {path}: the disk holding {path.parent} is full ({free / 1e6:.1f} MB free, "
            f"{(need_bytes + SPACE_RESERVE_BYTES) / 1e6:.1f} MB needed). The log keeps every step flushed "
            f"before this; free some space, then continue with: hwloop train --resume {path}"
        )


def _disk_guard(fn):  # type: ignore[no-untyped-def]
    """A failed write (disk full) in a writer method becomes one ``RunLogError`` and marks the writer broken."""
    import functools

    @functools.wraps(fn)
    def wrapper(self: Any, *a: object, **kw: object) -> None:  # self: a RunLogWriter
        if self._broken is not None:
            raise self._broken
        try:
            fn(self, *a, **kw)
        except OSError as exc:
            self._broken = disk_error(self.path, exc, "cannot write")
            raise self._broken from exc

    return wrapper
