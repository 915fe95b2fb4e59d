"""hwloop train --chip real: the same loop through the real driver path, against the virtual bench."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hwloop.orchestrator import TrainConfig, train
from hwloop.runlog import OP_CODES, RunLog

emulator = pytest.importorskip("hwloop.emulator")


def test_train_real_through_virtual_bench(tiny_data: Path, tmp_path: Path) -> None:
    with emulator.VirtualBench("instruments/virtual.toml", seed=0, pace=False, mode="process") as vb:
        cfg = TrainConfig(
            tasks="mnist,fashion-mnist",
            epochs_per_task=1,
            warmup=1,
            hidden=16,
            lr=5e-3,
            batch_size=50,
            train_samples=200,
            chip="real",
            bench=vb.bench_path,
            data_dir=str(tiny_data),
            verify_data=False,
            out=str(tmp_path / "real.h5"),
            progress=False,
            eval_batch=200,
        )
        res = train(cfg)
    assert res.status == "finished" and set(res.final_acc) == {"mnist", "fashion-mnist"}
    with RunLog(res.log) as log:
        backends = log.tile_backends
        ops = log.ops[()]
        g0, _ = log.snapshot(len(log.snapshot_epochs()) - 1)
    assert backends[0] == "real" and set(backends[1:]) == {"sim"}
    # tile 0 (on the bench) was formed, programmed and read through the drivers, like the simulated tiles
    on_real = ops["tile"] == 0
    for name in ("FORM", "RESET", "SET", "READ"):
        assert np.any(on_real & (ops["op"] == OP_CODES[name])), name
    assert np.all(np.isfinite(g0[0])) and float(np.median(g0[0][g0[0] > 0])) > 1.0
