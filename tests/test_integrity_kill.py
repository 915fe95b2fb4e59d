"""Kill each writer (train, calibrate, sweep) at a random point: its files open, the resume finishes, and
no operation is missing or doubled (issue 12). One kill per writer here; ``benchmarks/kill_writers.py``
repeats it 20 times per writer."""

from __future__ import annotations

import importlib.util
import signal
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location(
    "kill_writers", Path(__file__).resolve().parents[1] / "benchmarks" / "kill_writers.py"
)
kw = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kw)  # type: ignore[union-attr]


@pytest.mark.parametrize("writer", ["train", "calibrate", "sweep"])
def test_kill_a_writer_at_a_random_point(writer: str, tmp_path: Path) -> None:
    if writer == "calibrate":
        pytest.importorskip("hwloop.emulator")
    data = kw.make_data(tmp_path / "data")
    w = kw.WRITERS[writer](data, tmp_path)
    rng = np.random.default_rng({"train": 1, "calibrate": 2, "sweep": 3}[writer])
    # SIGKILL where the resume is the question; SIGTERM for calibrate, where every acknowledged op must be logged
    sig = signal.SIGTERM if writer == "calibrate" else signal.SIGKILL
    r = w.once(0, rng, sig)
    print(writer, r)
    assert r["opened"], r
    assert r["resumed"], r
    missing = r["acked_missing"] if writer == "calibrate" else r["ops_missing"]
    assert missing == 0, r
