"""--device and --flush-s: the device path runs on CPU too, a missing GPU is one clear line (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _tiny import tiny_config

from hwloop.errors import ConfigError
from hwloop.orchestrator import TrainConfig, Trainer
from hwloop.runlog import RunLog
from hwloop.training.device import resolve_device

NO_GPU = not torch.cuda.is_available()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hwloop.cli", *args], capture_output=True, text=True, env={**os.environ}, timeout=300
    )


def _cfg(data: Path, out: Path, **kw: object) -> TrainConfig:
    return tiny_config(data, out, **{"device": "cpu", **kw})


@pytest.mark.skipif(not NO_GPU, reason="a GPU is present")
def test_cuda_without_gpu_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.skipif(not NO_GPU, reason="a GPU is present")
def test_cli_cuda_without_gpu_is_one_line_exit_2(tiny_data: Path, tmp_path: Path) -> None:
    r = _cli(
        "train",
        "--device",
        "cuda",
        "--data-dir",
        str(tiny_data),
        "--no-verify-data",
        "--hidden",
        "8",
        "--out",
        str(tmp_path / "x.h5"),
    )
    assert r.returncode == 2
    assert "--device cuda" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize("value", ["nan", "-1", "inf"])
def test_bad_flush_s_is_one_line_exit_2(value: str, tiny_data: Path, tmp_path: Path) -> None:
    r = _cli(
        "train", "--flush-s", value, "--data-dir", str(tiny_data), "--no-verify-data", "--out", str(tmp_path / "x.h5")
    )
    assert r.returncode == 2 and "flush-s" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_separate_device_copy_gives_the_same_run(tiny_data: Path, tmp_path: Path, monkeypatch) -> None:
    """The GPU data path (a device copy of the weights, updated by index for the changed weights only)
    exercised on CPU: the run is the same as with the shared host cache, to the last operation."""
    ref = Trainer(_cfg(tiny_data, tmp_path / "shared.h5")).run()
    monkeypatch.setattr(Trainer, "share_host_weights", False)
    tr = Trainer(_cfg(tiny_data, tmp_path / "copy.h5"))
    res = tr.run()
    assert tr.w_dev is not tr.hw.w_torch  # the copy path ran
    assert res.final_acc == ref.final_acc and res.programs == ref.programs
    torch.testing.assert_close(tr.w_dev, tr.hw.w_torch, rtol=0, atol=0)
    with RunLog(tmp_path / "shared.h5") as a, RunLog(tmp_path / "copy.h5") as b:
        assert a.ops.shape == b.ops.shape
        assert json.dumps(a.epochs()["acc"].tolist()) == json.dumps(b.epochs()["acc"].tolist())


def test_flush_s_zero_flushes_every_step(tiny_data: Path, tmp_path: Path) -> None:
    """--flush-s 0 is the old per-step flush; the log is the same as with group commit."""
    a = Trainer(_cfg(tiny_data, tmp_path / "a.h5", flush_s=0.0, tasks="mnist")).run()
    b = Trainer(_cfg(tiny_data, tmp_path / "b.h5", flush_s=5.0, tasks="mnist")).run()
    assert a.final_acc == b.final_acc
    with RunLog(tmp_path / "a.h5") as la, RunLog(tmp_path / "b.h5") as lb:
        assert la.ops.shape == lb.ops.shape and la.status == lb.status == "finished"
