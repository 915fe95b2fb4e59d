"""A full disk: one line and exit code 2, a log that still opens, and a resume that finishes once there is
space (issue 12, item 11). Needs root to mount a small tmpfs (CI runs as root); skips elsewhere."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from _child import TINY_TRAIN, hwloop_run

from hwloop.runlog import RunLog


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "small"
    d.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) for a small tmpfs")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_disk_full_gives_one_line_keeps_the_log_and_resumes_after_space_is_freed(
    tiny_data: Path, small_fs: Path
) -> None:
    out = small_fs / "run.h5"
    args = [
        *TINY_TRAIN,
        "--epochs-per-task",
        "40",
        "--warmup",
        "1",
        "--data-dir",
        str(tiny_data),
        "--out",
        str(out),
    ]
    r = hwloop_run(*args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "full" in r.stderr and "--resume" in r.stderr
    with RunLog(out) as log:  # opens, and says what happened
        assert log.status == "failed"
        n_before = len(log.epochs())
        assert 1 <= n_before < 40, "the disk filled too late or too early for this test"
    # still full: the resume is refused with one line as well, and the log is untouched
    r = hwloop_run("train", "--resume", str(out), "--data-dir", str(tiny_data), "--no-progress")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    with RunLog(out) as log:
        assert len(log.epochs()) >= n_before
    # space freed: the resume finishes
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_fs)], check=True)
    r = hwloop_run("train", "--resume", str(out), "--data-dir", str(tiny_data), "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    with RunLog(out) as log:
        assert log.status == "finished"
        assert log.epochs()["epoch"].tolist() == list(range(1, 41))
