"""One writer per run log: a live run cannot be taken over, and of two simultaneous resumes the loser is
told that another process holds the log (issue 12, items 7 and 14)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from _child import TINY_TRAIN, hwloop_popen, repo_env, wait_checkpoint

from hwloop.chip.default_table import default_table
from hwloop.errors import RunLogError
from hwloop.runlock import STALE_HEARTBEAT_S, RunLock, holder, lock_path, writer_seems_live
from hwloop.runlog import RunLog, RunLogWriter


def _new_writer(p: Path) -> RunLogWriter:
    return RunLogWriter.create(
        p, config={"x": 1}, table=default_table(), tasks=["mnist"], n_tiles=1, tile_backends=["sim"], chip="sim", seed=0
    )


# ---------------------------------------------------------------------------- the lock itself
def test_lock_is_exclusive_names_its_holder_and_goes_with_the_writer(tmp_path: Path) -> None:
    p = tmp_path / "run.h5"
    w = _new_writer(p)
    assert lock_path(p).exists() and f"PID {os.getpid()}" in (holder(p) or "")
    with pytest.raises(RunLogError, match=rf"another process \(PID {os.getpid()}"):
        RunLock.acquire(p)  # flock locks are per open file: a second one conflicts even in this process
    with pytest.raises(RunLogError, match="cannot be resumed"):
        RunLogWriter.reopen(p)
    with pytest.raises(RunLogError, match="being written"):
        RunLogWriter.create(
            p,
            config={},
            table=default_table(),
            tasks=["mnist"],
            n_tiles=1,
            tile_backends=["sim"],
            chip="sim",
            seed=0,
            overwrite=True,
        )
    w.close()
    assert not lock_path(p).exists() and holder(p) is None
    with RunLock.acquire(p) as lk:  # free again
        assert lk.held


def test_heartbeat_rule_backs_up_the_lock() -> None:
    now = time.time()
    other = {"writer_host": "bench-pc-2", "writer_pid": 1234}
    assert "bench-pc-2" in (writer_seems_live(other, now - 5, now) or "")
    assert writer_seems_live(other, now - STALE_HEARTBEAT_S - 1, now) is None
    assert writer_seems_live(other, float("nan"), now) is None  # a NaN heartbeat is not fresh
    me = {"writer_host": socket.gethostname(), "writer_pid": os.getppid()}
    assert writer_seems_live(me, now - 1, now) is not None  # alive here, fresh heartbeat
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert writer_seems_live({**me, "writer_pid": dead.pid}, now - 1, now) is None


def test_resume_refuses_a_log_written_from_another_host_with_a_fresh_heartbeat(tmp_path: Path) -> None:
    p = tmp_path / "run.h5"
    w = _new_writer(p)
    w.save_checkpoint(b"ckpt", 0)
    w.f.close()  # as if this process had died: the file still says running
    w.lock.release()
    with h5py.File(p, "r+", libver="latest") as f:
        f.attrs["writer_host"] = "bench-pc-2"
        f["heartbeat"][0] = time.time()
    with pytest.raises(RunLogError, match="host bench-pc-2"):
        RunLogWriter.reopen(p)
    with h5py.File(p, "r+", libver="latest") as f:
        f["heartbeat"][0] = time.time() - 2 * STALE_HEARTBEAT_S
    w2, info, blob = RunLogWriter.reopen(p)  # stale: taken for a crash, resumed
    assert blob == b"ckpt" and info.epoch == 0
    w2.close("interrupted")


# ---------------------------------------------------------------------------- live runs and racing resumes


def test_a_live_run_cannot_be_resumed_and_still_finishes(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "live.h5"
    live = hwloop_popen(
        *TINY_TRAIN, "--epochs-per-task", "200", "--warmup", "1", "--data-dir", str(tiny_data), "--out", str(out)
    )
    try:
        wait_checkpoint(out, 1)
        r = subprocess.run(
            [sys.executable, "-m", "hwloop.cli", "train", "--resume", str(out), "--data-dir", str(tiny_data)],
            capture_output=True,
            text=True,
            env=repo_env(),
            timeout=120,
        )
        assert r.returncode == 2, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
        assert f"PID {live.pid}" in r.stderr and "live run" in r.stderr, r.stderr
        assert live.poll() is None, "the live run died"
        with RunLog(out) as log:  # untouched: still the live run's file, still running
            assert log.status == "running" and log.attrs["writer_pid"] == live.pid
    finally:
        live.send_signal(signal.SIGTERM)
        _, err = live.communicate(timeout=120)
    assert live.returncode == 130, err
    with RunLog(out) as log:
        assert log.status == "interrupted"  # the live run closed its own file, not a deleted copy
        assert int(log.f["checkpoint"]["index"][2]) >= 1
    assert not lock_path(out).exists()


def test_two_simultaneous_resumes_one_wins_the_other_names_the_holder(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "crashed.h5"
    run = hwloop_popen(
        *TINY_TRAIN, "--epochs-per-task", "200", "--warmup", "1", "--data-dir", str(tiny_data), "--out", str(out)
    )
    wait_checkpoint(out, 1)
    run.send_signal(signal.SIGKILL)
    run.communicate()
    with RunLog(out) as log:
        assert log.status == "crashed"
    procs = [hwloop_popen("train", "--resume", str(out), "--data-dir", str(tiny_data), "--json") for _ in range(2)]
    try:
        # the winner holds the log until it ends (200 epochs: long after the loser); stop it once the loser answered
        deadline = time.monotonic() + 180
        while all(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.1)
        loser = next(p for p in procs if p.poll() is not None)
        winner = next(p for p in procs if p is not loser)
        _, err = loser.communicate()
        assert loser.returncode == 2, err
        assert "another process (PID" in err and f"PID {winner.pid}" in err, err
        assert "copy the log again" not in err and len(err.strip().splitlines()) == 1
        assert winner.poll() is None, "the winner ended before the loser was refused"
        winner.send_signal(signal.SIGTERM)
        _, werr = winner.communicate(timeout=120)
        assert winner.returncode == 130, werr
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    with RunLog(out) as log:
        assert log.status == "interrupted"
        ep = log.epochs()["epoch"]
        np.testing.assert_array_equal(ep, np.arange(1, ep.size + 1))  # nothing lost or doubled by the race
