"""A SIGTERM at any moment of a run's start-up ends ``python -m hwloop.cli`` with exit code 130 and leaves the
run log whole (the flaky end of ``test_two_simultaneous_resumes_one_wins_the_other_names_the_holder``).

The cause was CPython's: a plain ``KeyboardInterrupt`` that leaves code run by ``exec()`` of a string (every
dataclass method, built while torch imports its modules lazily) is recorded as an unhandled Ctrl-C even when
it is caught, and a ``python -m`` process then kills itself with SIGINT (status -2) at exit. The handlers
raise ``hwloop.signals.Terminated`` (a subclass, not recorded) instead."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _child import TINY_TRAIN, hwloop_popen, repo_env, wait_checkpoint

from hwloop.runlock import lock_path
from hwloop.runlog import RunLog
from hwloop.signals import Terminated, check_stop, cooperative, deferred, interrupt_now, request_stop, stop_requested

_CHILD = """
import os, signal, sys, threading
from hwloop.signals import {handler}
signal.signal(signal.SIGTERM, {handler})
threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
try:
    exec("import time\\ntime.sleep(60)")  # the stop lands in exec'd code, as in a dataclass built on import
except KeyboardInterrupt:
    sys.exit(130)
sys.exit(1)
"""


@pytest.mark.parametrize("handler", ["request_stop", "interrupt_now"])
def test_a_stop_raised_inside_exec_code_still_exits_130(tmp_path: Path, handler: str) -> None:
    (tmp_path / "sigchild.py").write_text(_CHILD.format(handler=handler))
    r = subprocess.run(
        [sys.executable, "-m", "sigchild"], cwd=tmp_path, env=repo_env(), capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 130, (r.returncode, r.stderr)  # -2 (killed by SIGINT) with a plain KeyboardInterrupt


def test_every_stop_is_a_terminated_keyboard_interrupt() -> None:
    with pytest.raises(Terminated):
        interrupt_now(signal.SIGTERM, None)
    assert issubclass(Terminated, KeyboardInterrupt) and Terminated is not KeyboardInterrupt
    stop_requested.set()
    try:
        with pytest.raises(Terminated):
            check_stop()
    finally:
        stop_requested.clear()


def test_a_stop_while_a_run_closes_only_flags() -> None:
    assert not cooperative.is_set()
    try:
        with pytest.raises(Terminated):
            request_stop(signal.SIGTERM, None)  # outside any loop: at once
        stop_requested.clear()
        with deferred():
            request_stop(signal.SIGTERM, None)  # closing the log: only flagged, the close goes on
        assert stop_requested.is_set() and not cooperative.is_set()
        cooperative.set()
        with deferred():
            pass
        assert cooperative.is_set()  # inside a loop that checks: left as it was
    finally:
        cooperative.clear()
        stop_requested.clear()


# ---------------------------------------------------------------------------- end to end: train --resume


def _cli(*args: str) -> subprocess.Popen:
    return hwloop_popen(*args, module="hwloop")  # the console script's entry (hwloop.__main__:run)


def _crashed_log(tiny_data: Path, out: Path) -> None:
    run = _cli(
        *TINY_TRAIN, "--epochs-per-task", "200", "--warmup", "1", "--data-dir", str(tiny_data), "--out", str(out)
    )
    try:
        wait_checkpoint(out, 1)
    finally:
        run.send_signal(signal.SIGKILL)
        run.communicate()


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has a SIGTERM handler yet (``SigCgt`` in /proc): before that, it is the
    interpreter starting, and SIGTERM ends it as it ends any program that has not started."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


def _wait(cond, p: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while p.poll() is None and time.monotonic() < deadline:
        try:
            if cond():
                return
        except OSError:  # /proc entry gone: it ended
            return
        time.sleep(0.005)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_a_sigterm_while_the_cli_is_imported_exits_130() -> None:
    p = hwloop_popen("chip", "info", "--chip", "sim", module="hwloop")
    _wait(lambda: _catches_sigterm(p.pid), p)  # hwloop.__main__ flags from here; the CLI takes ~1 s to import
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, (p.returncode, err)
    assert err.strip() == "hwloop: interrupted" and out == ""  # stopped before the command started


# when to send SIGTERM: seconds after the program installed its first handler (importing the CLI, then
# torch), or after the resume took the log's lock (checkpoint load, optimizer state: torch imports its
# compiler lazily there, and the first steps)
_MOMENTS = [
    ("handler", 0.0),
    ("handler", 0.3),
    ("handler", 0.9),
    ("lock", 0.0),
    ("lock", 0.15),
    ("lock", 0.4),
    ("lock", 1.0),
]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_sigterm_at_any_start_up_moment_exits_130_and_keeps_the_log(tiny_data: Path, tmp_path: Path) -> None:
    crashed = tmp_path / "crashed.h5"
    _crashed_log(tiny_data, crashed)
    with RunLog(crashed) as log:
        assert log.status == "crashed"
        ckpt_epoch = int(log.f["checkpoint"]["index"][2])  # a resume rolls back to it, then trains on
    digest = _sha(crashed)
    seen = set()
    for i, (after, delay_s) in enumerate(_MOMENTS):
        out = tmp_path / f"resume{i}.h5"
        shutil.copy(crashed, out)
        p = _cli("train", "--resume", str(out), "--data-dir", str(tiny_data), "--json", "--no-progress")
        try:
            if after == "lock":
                _wait(lock_path(out).exists, p)
            else:
                _wait(lambda pid=p.pid: _catches_sigterm(pid), p)
            time.sleep(delay_s)
            p.send_signal(signal.SIGTERM)
            _, err = p.communicate(timeout=120)
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()
        where = f"SIGTERM {delay_s} s after the {after}"
        assert p.returncode == 130, (where, p.returncode, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("hwloop: interrupted"), (where, err)
        assert not lock_path(out).exists(), where
        with RunLog(out) as log:
            status = log.status
            ep = log.epochs()["epoch"]
        seen.add(status)
        if status == "crashed":  # stopped before the resume touched the log: it is as it was
            assert _sha(out) == digest, where
        else:
            assert status == "interrupted", (where, status)
            assert ep.size >= ckpt_epoch >= 1, where
            np.testing.assert_array_equal(ep, np.arange(1, ep.size + 1))  # nothing lost or doubled
    assert "interrupted" in seen  # at least one stop landed after the resume took over the log


def test_ctrl_c_has_the_same_handler_as_sigterm_while_a_command_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``hwloop.cli.main`` a Ctrl-C only flags a stop that the training loop takes between steps
    (Python's own handler raised anywhere, and a KeyboardInterrupt raised in a weakref callback is dropped:
    the run then finished as if never interrupted). The caller's handler comes back afterwards."""
    import hwloop.cli as cli_module
    from hwloop.signals import request_stop

    seen: list[object] = []
    monkeypatch.setattr(cli_module.cli, "main", lambda **kw: seen.append(signal.getsignal(signal.SIGINT)) or 0)
    before_int = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, as in a new process
    before_term = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as ex:
            cli_module.main([])
        assert ex.value.code == 0
        assert seen == [request_stop]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before_int)
        signal.signal(signal.SIGTERM, before_term)


# ---------------------------------------------------------------------------- calibration op log


class _SignalOnResize:
    """The op log's real h5py dataset, which sends this process a SIGTERM as the flush starts writing (the
    moment the CI run hit: a stop between taking the buffer and writing it)."""

    def __init__(self, ds: object) -> None:
        self._ds, self.sent = ds, False

    def resize(self, shape: tuple[int, ...]) -> None:
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)
        self._ds.resize(shape)

    def __getattr__(self, name: str) -> object:
        return getattr(self._ds, name)

    def __setitem__(self, key: object, value: object) -> None:
        self._ds[key] = value


def test_a_sigterm_while_the_op_log_flushes_loses_no_row(tmp_path: Path) -> None:
    from hwloop.calibration.oplog import OpLog, read_oplog
    from hwloop.chip.base import Op
    from hwloop.signals import handling

    log = OpLog(tmp_path / "ops.h5")
    idx = np.arange(256)
    log.listener(Op.SET, idx, np.full(256, 3, np.int8), np.full(256, np.nan, np.float32))
    log._ds = _SignalOnResize(log._ds)  # type: ignore[assignment]
    try:
        cut = False
        with handling(request_stop):
            try:
                log.flush()  # the SIGTERM lands inside: only flagged, the rows are written
            except Terminated:
                cut = True  # the stop cut the flush in two
            assert log._ds.sent and stop_requested.is_set()
            log.close()
    finally:
        stop_requested.clear()
    rows = read_oplog(tmp_path / "ops.h5")
    assert (rows.size, cut) == (256, False)
    assert (rows["op"] == int(Op.SET)).all()


class _FailOnceWrite(_SignalOnResize):
    """The op log's real dataset, whose first block write fails after the resize (as a full disk would)."""

    def resize(self, shape: tuple[int, ...]) -> None:
        self._ds.resize(shape)

    def __setitem__(self, key: object, value: object) -> None:
        if not self.sent:
            self.sent = True
            raise OSError("no space left on device")
        self._ds[key] = value


def test_a_failed_op_log_write_keeps_the_rows_for_the_next_flush(tmp_path: Path) -> None:
    from hwloop.calibration.oplog import OpLog, read_oplog
    from hwloop.chip.base import Op

    log = OpLog(tmp_path / "ops.h5")
    log.listener(Op.RESET, np.arange(10), np.zeros(10, np.int8), np.full(10, np.nan, np.float32))
    log.flush()
    log.listener(Op.SET, np.arange(10, 30), np.full(20, 2, np.int8), np.full(20, np.nan, np.float32))
    log._ds = _FailOnceWrite(log._ds)  # type: ignore[assignment]
    with pytest.raises(OSError):
        log.flush()
    log.close()  # the rows still buffered are written where they belong
    rows = read_oplog(tmp_path / "ops.h5")
    assert rows.size == 30
    assert rows["op"].tolist() == [int(Op.RESET)] * 10 + [int(Op.SET)] * 20
    assert rows["col"].tolist() == list(range(30))
