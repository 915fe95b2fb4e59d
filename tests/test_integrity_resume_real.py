"""Resume on a real chip (the virtual bench): pulses after the checkpoint stay in the log, marked in
/resumes, counted by endurance; a bench whose chip does not match the checkpoint is refused (issue 12,
item 9). Simulated chips keep the roll-back (tests/test_training.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from _child import repo_env

from hwloop.runlog import OP_CODES, RunLog

emulator = pytest.importorskip("hwloop.emulator")


def _progress(log: Path) -> tuple[int, int]:
    """(checkpoint epoch, RESET rows on the real tile 0 after the checkpoint), or -1s."""
    try:
        with h5py.File(log, "r", libver="latest", swmr=True) as f:
            ck_rows = int(f["checkpoint"]["index"][3])
            post = f["ops"][ck_rows:] if ck_rows >= 0 else f["ops"][:0]
            n = int(np.count_nonzero((post["tile"] == 0) & (post["op"] == OP_CODES["RESET"])))
            return int(f["checkpoint"]["index"][2]), n
    except (OSError, KeyError):
        return -1, -1


def _train_args(bench: str, data: Path, out: Path) -> list[str]:
    return [
        "train",
        "--chip",
        "real",
        "--bench",
        bench,
        "--tasks",
        "mnist",
        "--epochs-per-task",
        "3",
        "--warmup",
        "1",
        "--hidden",
        "16",
        "--batch-size",
        "5",  # 120 steps per epoch: the stop lands well inside an epoch, after the checkpoint polled
        "--train-samples",
        "600",
        "--lr",
        "5e-3",
        "--data-dir",
        str(data),
        "--no-verify-data",
        "--no-progress",
        "--threads",
        "1",
        "--out",
        str(out),
    ]


def _tile0_counts(rows: np.ndarray, code: int) -> np.ndarray:
    m = (rows["op"] == code) & (rows["tile"] == 0)
    flat = rows["row"][m].astype(np.int64) * 128 + rows["col"][m]
    return np.bincount(flat, minlength=128 * 128)


def test_resume_on_a_real_chip_keeps_the_pulses_after_the_checkpoint(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "real.h5"
    with emulator.VirtualBench("instruments/virtual.toml", seed=0, pace=False) as vb:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hwloop.cli", *_train_args(vb.bench_path, tiny_data, out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=repo_env(),
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            ck, after = _progress(out)
            if ck >= 1 and after > 0:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGTERM)  # stops between steps: every acknowledged op is flushed
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        with RunLog(out) as log:
            ck_rows = int(log.f["checkpoint"]["index"][3])
            before = log.ops[()]
        post = before[ck_rows:]
        post_real = post[(post["tile"] == 0) & (post["op"] != OP_CODES["READ_ALL"])]
        assert np.count_nonzero(post_real["op"] == OP_CODES["RESET"]) > 0, "no real pulses after the checkpoint"
        # the board's own count of RESET pulses on every device equals the log's, before the resume ...
        sim_resets = vb.sim.reset_count.reshape(-1)[: 128 * 128].astype(np.int64)
        np.testing.assert_array_equal(_tile0_counts(before, OP_CODES["RESET"]), sim_resets)
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "hwloop.cli",
                "train",
                "--resume",
                str(out),
                "--data-dir",
                str(tiny_data),
                "--no-progress",
                "--json",
            ],
            capture_output=True,
            text=True,
            env=repo_env(),
            timeout=600,
        )
        assert r.returncode == 0, r.stderr[-2000:]
        sim_resets = vb.sim.reset_count.reshape(-1)[: 128 * 128].astype(np.int64)
        sim_sets = vb.sim.set_count.reshape(-1)[: 128 * 128].astype(np.int64)
    with RunLog(out) as log:
        assert log.status == "finished"
        rows = log.ops[()]
        resumes = log.f["resumes"][()]
    # ... and after it: nothing the real chip received is missing (the roll-back used to drop post_real)
    np.testing.assert_array_equal(_tile0_counts(rows, OP_CODES["RESET"]), sim_resets)
    np.testing.assert_array_equal(_tile0_counts(rows, OP_CODES["SET"]), sim_sets)
    assert resumes.size == 1
    a, b = int(resumes["ops_start"][0]), int(resumes["ops_stop"][0])
    assert a == ck_rows and b - a == post_real.size
    for name in post_real.dtype.names:  # kept as they were (NaN reads included), marked by /resumes
        np.testing.assert_array_equal(rows[a:b][name], post_real[name], err_msg=name)


def test_resume_refuses_a_bench_whose_chip_does_not_match(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "real.h5"
    with emulator.VirtualBench("instruments/virtual.toml", seed=0, pace=False) as vb:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hwloop.cli", *_train_args(vb.bench_path, tiny_data, out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=repo_env(),
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None and _progress(out)[0] < 1:
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with emulator.VirtualBench("instruments/virtual.toml", seed=0, pace=False) as fresh:  # an unformed chip
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "hwloop.cli",
                "train",
                "--resume",
                str(out),
                "--bench",
                fresh.bench_path,
                "--data-dir",
                str(tiny_data),
                "--no-progress",
            ],
            capture_output=True,
            text=True,
            env=repo_env(),
            timeout=300,
        )
    assert r.returncode == 2, r.stderr[-2000:]
    assert len(r.stderr.strip().splitlines()) == 1 and "does not match the checkpoint" in r.stderr, r.stderr
    with RunLog(out) as log:  # still opens, and can be resumed on the right chip later
        assert log.status in ("failed", "crashed")
