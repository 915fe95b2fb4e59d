"""The environment of a test's child ``python -m hwloop.cli`` process: this checkout first on PYTHONPATH, so
the child runs the code under test (not another installed copy)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def repo_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


#: a tiny ``hwloop train`` (sim chip, one task, 16 hidden, 300 images, one thread): add epochs, data and --out
TINY_TRAIN = [
    "train",
    "--chip",
    "sim",
    "--tasks",
    "mnist",
    "--hidden",
    "16",
    "--batch-size",
    "20",
    "--train-samples",
    "300",
    "--lr",
    "5e-3",
    "--no-verify-data",
    "--no-progress",
    "--threads",
    "1",
]


def hwloop_popen(*args: str, module: str = "hwloop.cli") -> subprocess.Popen:
    """``python -m hwloop.cli ARGS`` (or ``module``) as a child of this checkout, stdout and stderr piped."""
    return subprocess.Popen(
        [sys.executable, "-m", module, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=repo_env()
    )


def hwloop_run(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
    """``python -m hwloop.cli ARGS`` as a child of this checkout, to its end; output captured."""
    return subprocess.run(
        [sys.executable, "-m", "hwloop.cli", *args], capture_output=True, text=True, env=repo_env(), timeout=timeout_s
    )


def wait_checkpoint(log: Path, n: int, timeout_s: float = 120) -> None:
    """Wait until the run writing ``log`` has written its checkpoint of epoch ``n`` (read over SWMR)."""
    import h5py

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with h5py.File(log, "r", libver="latest", swmr=True) as f:
                if f["checkpoint"]["index"][2] >= n:
                    return
        except (OSError, KeyError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint {n} in {log} after {timeout_s} s")
