"""One point of a sweep, run to the end in a worker: what its log says, running or resuming it, its results."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from hwloop.errors import HwloopError
from hwloop.runlog import RunLog
from hwloop.sweep.manifest import utc_now
from hwloop.training.config import TrainConfig

#: a log that says "running" but whose writer (on another host) has not flushed for this long is crashed
STALE_HEARTBEAT_S = 300.0
#: how long a point waits for the live writer of its log to go away (a killed sweep's worker) before failing
WAIT_LIVE_WRITER_S = 30.0


def log_state(path: Path) -> tuple[str, bool]:
    """(status, has_checkpoint) of a run log; ("unreadable", False) if it cannot be opened.

    A log written on another host that says "running" with a heartbeat older than ``STALE_HEARTBEAT_S`` is
    taken as crashed (the run log itself waits an hour before saying so).
    """
    try:
        with RunLog(path) as log:
            status = log.status
            slot = int(log.f["checkpoint"]["index"][0])
            if status == "running" and time.time() - float(log.f["heartbeat"][0]) > STALE_HEARTBEAT_S:
                status = "crashed"
    except (HwloopError, OSError, KeyError, ValueError):
        return "unreadable", False
    return status, slot >= 0


def results_from_log(path: str | Path) -> dict[str, Any]:
    """The results of a run from its log (``RunLog.results``)."""
    with RunLog(path) as log:
        return log.results()


def run_point(
    config: dict[str, Any], log_path: str, *, return_bytes: bool = False, log_bytes: bytes | None = None
) -> dict[str, Any]:
    """Run one sweep point to the end and return its result (a dict; never raises for a failed run).

    The log at ``log_path`` decides what happens: finished → nothing is run (``action`` "found"); a
    checkpoint → resumed; no log → started; a log without checkpoint (or unreadable) → deleted and
    started again ("restarted"). With ``return_bytes`` the log is written to a local temporary folder
    (seeded with ``log_bytes`` if given) and its bytes come back in the result as ``log_bytes``, for
    Ray workers that don't share the sweep folder's file system.
    """
    from hwloop.experiments import train  # torch: only in the process that runs the point

    t0 = time.monotonic()
    tmpdir = None
    res: dict[str, Any] = {
        "status": "failed",
        "error": None,
        "action": None,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_utc": utc_now(),
    }
    try:
        if return_bytes:
            tmpdir = tempfile.mkdtemp(prefix="hwloop-point-")
            path = Path(tmpdir) / Path(log_path).name
            if log_bytes is not None:
                path.write_bytes(log_bytes)
        else:
            path = Path(log_path)
        cfg = TrainConfig(**{**config, "out": str(path)})
        resume = None
        if path.exists():
            status, has_ck = log_state(path)
            deadline = time.monotonic() + WAIT_LIVE_WRITER_S
            while status == "running" and time.monotonic() < deadline:  # e.g. a killed sweep's worker, exiting
                time.sleep(0.5)
                status, has_ck = log_state(path)
            if status == "finished":
                res.update(results_from_log(path), status="finished", action="found")
                return res
            if status == "running":
                raise HwloopError(
                    f"{path} is being written by another live process (writer_pid/writer_host in the log; its "
                    f"heartbeat is recent). Stop it, or wait {STALE_HEARTBEAT_S:.0f} s after it is gone"
                )
            if has_ck:
                resume, res["action"] = str(path), "resumed"
            else:
                path.unlink()
                res["action"] = "restarted"
        else:
            res["action"] = "started"
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            result = train(cfg, resume=resume)
        finally:
            if path.exists():
                with contextlib.suppress(HwloopError, OSError):
                    res.update(results_from_log(path))
        res["status"] = result.status
    except KeyboardInterrupt:
        res.update(status="interrupted", error="interrupted")
    except Exception as exc:
        res.update(
            status="failed",
            error=f"{type(exc).__name__}: {exc}",
            traceback="".join(traceback.format_exception(exc))[-4000:],
        )
    finally:
        res["ended_utc"] = utc_now()
        res["run_wall_s"] = time.monotonic() - t0
        if tmpdir is not None:
            p = Path(tmpdir) / Path(log_path).name
            if p.exists():
                res["log_bytes"] = p.read_bytes()
            shutil.rmtree(tmpdir, ignore_errors=True)
    return res
