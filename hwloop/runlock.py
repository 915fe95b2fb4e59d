"""Who may write a run log: one writer at a time, held by an advisory lock on a sidecar file.

A run log ``RUN.h5`` is written by exactly one process. That process holds an exclusive
``fcntl.flock`` on the sidecar ``RUN.h5.lock`` for as long as it writes, and records its PID, host and
start time in it (JSON). The lock is on a sidecar and not on the log itself because the writer replaces
the log with ``os.replace`` when it compacts or rebuilds it, and a lock on the old inode would no longer
guard the path. The kernel drops the lock when the process dies (kill -9 included), so a crashed run never
leaves a stale lock behind; the sidecar is removed on a normal close.

``flock`` does not reach across hosts on every network file system, so a second rule backs it up: a log
whose ``writer_host`` is another host and whose ``/heartbeat`` is fresher than ``STALE_HEARTBEAT_S`` is
taken to be live too, as is one whose ``writer_pid`` is alive on this host with a fresh heartbeat.
Documented in ``docs/runlog-schema.md`` ("Single writer").
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

from hwloop.errors import RunLogError

#: a heartbeat older than this (s) no longer counts as a live writer on another host (flushes come at
#: least once per training step, and an end-of-epoch evaluation rarely takes minutes)
STALE_HEARTBEAT_S = 600.0


def lock_path(log: str | Path) -> Path:
    p = Path(log)
    return p.with_name(p.name + ".lock")


def _flock_ex(fd: int, tries: int = 4, wait_s: float = 0.05) -> None:
    """Exclusive non-blocking flock, tried a few times: ``holder()`` takes a shared lock for an instant."""
    for k in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if k == tries - 1:
                raise
            time.sleep(wait_s)


def _holder_text(lp: Path) -> str:
    try:
        d = json.loads(lp.read_text() or "{}")
    except (OSError, ValueError):
        d = {}
    pid, host = d.get("pid"), d.get("host")
    if pid is None:
        return "another process"
    where = "" if host in (None, socket.gethostname()) else f" on host {host}"
    since = f", since {d['started_utc']}" if d.get("started_utc") else ""
    return f"another process (PID {pid}{where}{since})"


def _held_error(log: Path, who: str) -> RunLogError:
    return RunLogError(
        f"{log} is being written by {who}: a live run cannot be resumed or appended to. Wait for it to "
        f"end, or stop it first (kill -TERM <PID>), then resume"
    )


class RunLock:
    """An exclusive, non-blocking advisory lock on ``<log>.lock``. Release with ``release()``."""

    def __init__(self, log: Path, fd: int, lp: Path) -> None:
        self.log = log
        self._fd: int | None = fd
        self._path = lp

    @classmethod
    def acquire(cls, log: str | Path) -> RunLock:
        """Take the lock, or raise ``RunLogError`` naming the process that holds it."""
        p = Path(log)
        lp = lock_path(p)
        for _ in range(20):  # the holder may unlink the sidecar between our open and our flock: retry
            try:
                fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise RunLogError(f"cannot create the lock file {lp} ({exc.strerror}); check the folder") from exc
            try:
                _flock_ex(fd)
            except BlockingIOError:
                os.close(fd)
                raise _held_error(p, _holder_text(lp)) from None
            except OSError as exc:
                os.close(fd)
                raise RunLogError(f"cannot lock {lp} ({exc.strerror})") from exc
            try:
                same = os.fstat(fd).st_ino == os.stat(lp).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            info = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "log": str(p),
            }
            with contextlib.suppress(OSError):  # the lock holds even if the note cannot be written
                os.ftruncate(fd, 0)
                os.write(fd, json.dumps(info).encode())
            return cls(p, fd, lp)
        raise RunLogError(f"could not lock {lp}: it keeps being replaced; is another hwloop starting on {p}?")

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Remove the sidecar and drop the lock (safe to call twice)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self._path)
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder(log: str | Path) -> str | None:
    """A description of the process holding the lock of ``log``, or None if it is free."""
    lp = lock_path(Path(log))
    if not lp.exists():
        return None
    try:
        fd = os.open(lp, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder_text(lp)
    except OSError:
        return None
    finally:
        os.close(fd)  # closing drops a shared lock we may have taken
    return None


def writer_seems_live(attrs: dict, heartbeat_s: float | None, now_s: float | None = None) -> str | None:
    """The backup rule for logs whose lock is not visible (another host, or a writer without the lock):
    a description of the live writer, or None. ``attrs`` are the log's root attributes."""
    now_s = time.time() if now_s is None else now_s
    if heartbeat_s is None or not now_s - heartbeat_s < STALE_HEARTBEAT_S:
        return None
    host = attrs.get("writer_host")
    try:
        pid = int(attrs.get("writer_pid", -1))
    except (TypeError, ValueError):
        pid = -1
    age = f"last heartbeat {now_s - heartbeat_s:.0f} s ago"
    if host is not None and host != socket.gethostname():
        return f"a process on host {host} (PID {pid}, {age})"
    if pid <= 0 or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return f"another process (PID {pid}, {age})"


def refuse_if_held(log: str | Path) -> None:
    """Raise ``RunLogError`` if another process holds the lock of ``log``."""
    who = holder(log)
    if who is not None:
        raise _held_error(Path(log), who)


__all__ = ["STALE_HEARTBEAT_S", "RunLock", "holder", "lock_path", "refuse_if_held", "writer_seems_live"]
