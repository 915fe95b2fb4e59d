"""Synthetic run logs that follow the trainer's protocol, for the tests and benchmarks (not part of hwloop:
the analysis layer only reads logs, and the trainer's protocol lives in ``hwloop.crossbar.weights``).

``write_sim_log`` drives a real ``SimChip`` through a ``RunLogWriter`` the way the orchestrator does:
form, initial programming, then per step RESET of the changed devices, SET of those going to an HCS level,
READ back, flush; per epoch a full read (one READ_ALL row + snapshot) and an epoch row.
``write_bulk_log`` writes rows of the same shape straight into the writer (no chip), to make big logs fast.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hwloop.chip.base import CELLS_PER_TILE, Op
from hwloop.chip.sim import SimChip, SimConfig
from hwloop.runlog import RunLogWriter


def script_env(**extra: str) -> dict[str, str]:
    """The environment for a test's child Python script that imports this module (the tests folder first
    on its PYTHONPATH)."""
    paths = [str(Path(__file__).resolve().parent), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, **extra, "PYTHONPATH": os.pathsep.join(paths)}


#: acc_fn(epoch, task_index, n_tasks, rng) -> accuracy per task (fractions, NaN for unseen tasks)
AccFn = Callable[[int, int, int, np.random.Generator], np.ndarray]


def default_acc(epoch: int, task: int, n_tasks: int, rng: np.random.Generator) -> np.ndarray:
    acc = np.full(n_tasks, np.nan, dtype=np.float32)
    acc[: task + 1] = 0.9 + 0.01 * rng.standard_normal(task + 1)
    return acc


def write_sim_log(
    path: str | Path,
    *,
    n_tiles: int = 1,
    n_devices: int = 2048,
    tasks: tuple[str, ...] = ("mnist",),
    epochs_per_task: int = 2,
    steps_per_epoch: int = 4,
    change_rate: float = 0.05,
    m_star: float = 3.0,
    seed: int = 0,
    sim_config: SimConfig | None = None,
    acc_fn: AccFn = default_acc,
    hidden: int = 32,
    layer_tiles: list[dict] | None = None,
    close_status: str | None = "finished",
    config_extra: dict | None = None,
) -> tuple[Path, SimChip, np.ndarray]:
    """Write a run log of ``n_devices`` used devices; returns (path, chip, final nominal levels)."""
    rng = np.random.default_rng(seed)
    cfg = sim_config or SimConfig.ideal()
    chip = SimChip(n_tiles=n_tiles, config=cfg, seed=seed)
    config = {
        "tasks": list(tasks),
        "epochs_per_task": epochs_per_task,
        "warmup": 0,
        "m_star": m_star,
        "hidden": hidden,
        "lr": 5e-4,
        "batch_size": 100,
        "seed": seed,
        "train_samples": 200,
        "chip": "sim",
        "bn_mode": "per-task",
        **(config_extra or {}),
    }
    w = RunLogWriter.create(
        path,
        config=config,
        table=chip.table,
        tasks=list(tasks),
        n_tiles=n_tiles,
        tile_backends=["sim"] * n_tiles,
        chip="sim",
        seed=seed,
        overwrite=True,
    )
    if layer_tiles is not None:
        w.f.attrs["layer_tiles_json"] = json.dumps(layer_tiles)
    chip.add_listener(w.listener)
    dev = np.arange(n_devices, dtype=np.int64)
    # devices change at very different rates, as in training (a few busy ones, many quiet ones)
    rate = np.minimum(1.0, change_rate * rng.lognormal(0.0, 1.0, n_devices))
    nominal = np.full(n_tiles * CELLS_PER_TILE, -1, dtype=np.int8)
    chip.form_idx(dev)
    target = rng.integers(0, chip.table.n_levels, n_devices).astype(np.int8)
    _program(chip, dev, target)
    nominal[dev] = target
    with w.full_read():
        g = chip.read_all()
    w.append_snapshot(0, g, nominal)
    step = 0
    for ti in range(len(tasks)):
        for e in range(epochs_per_task):
            epoch = ti * epochs_per_task + e + 1
            before = dict(chip_sets=int(chip.set_count.sum()), chip_resets=int(chip.reset_count.sum()))
            for _ in range(steps_per_epoch):
                step += 1
                w.step = step
                changed = dev[rng.random(n_devices) < rate]
                n_lv = chip.table.n_levels
                new = (nominal[changed] + rng.integers(1, n_lv, changed.size)) % n_lv
                _program(chip, changed, new.astype(np.int8))
                nominal[changed] = new
                w.flush()
            with w.full_read():
                g = chip.read_all()
            sets = int(chip.set_count.sum()) - before["chip_sets"]
            resets = int(chip.reset_count.sum()) - before["chip_resets"]
            w.append_epoch(
                {
                    "epoch": epoch,
                    "task": ti,
                    "m_star": m_star,
                    "lr": 5e-4,
                    "acc": acc_fn(epoch, ti, len(tasks), rng),
                    "train_loss": 0.3,
                    "train_acc": 0.9,
                    "programs": resets,
                    "sets": sets,
                    "resets": resets,
                    "reads": 0,
                    "wall_s": 1.0,
                    "step": step,
                }
            )
            w.append_snapshot(epoch, g, nominal)
    if close_status is not None:
        w.close(close_status)
    return Path(path), chip, nominal


def _program(chip: SimChip, idx: np.ndarray, level: np.ndarray) -> None:
    """The trainer's protocol: RESET, SET the HCS ones, READ back."""
    if idx.size == 0:
        return
    chip.reset_idx(idx)
    hcs = level > 0
    if hcs.any():
        chip.set_idx(idx[hcs], level=level[hcs])
    chip.read_idx(idx)


def write_bulk_log(
    path: str | Path,
    *,
    n_ops: int,
    n_tiles: int = 82,
    n_steps: int = 2000,
    seed: int = 0,
    steps_per_epoch: int = 200,
) -> Path:
    """A big log of about ``n_ops`` rows with the trainer's row pattern, written without a chip."""
    from hwloop.chip.default_table import default_table

    rng = np.random.default_rng(seed)
    n_dev = n_tiles * CELLS_PER_TILE
    w = RunLogWriter.create(
        path,
        config={"tasks": ["mnist"], "m_star": 3.0, "hidden": 512, "chip": "sim", "seed": seed},
        table=default_table(),
        tasks=["mnist"],
        n_tiles=n_tiles,
        tile_backends=["sim"] * n_tiles,
        chip="sim",
        seed=seed,
        overwrite=True,
    )
    # skewed per-device popularity (as in Fig. 5b): sample changed devices from a Zipf-like law
    weights = rng.pareto(1.5, n_dev) + 0.05
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    per_step = max(1, n_ops // (n_steps * 2 + 1))  # RESET + READ per change, SET for most
    nan = np.float32(np.nan)
    for step in range(1, n_steps + 1):
        w.step = step
        idx = np.unique(np.minimum(np.searchsorted(cdf, rng.random(per_step)), n_dev - 1))
        lv = rng.integers(0, 9, idx.size).astype(np.int8)
        w.listener(Op.RESET, idx, np.zeros(idx.size, np.int8), np.full(idx.size, nan, np.float32))
        h = lv > 0
        w.listener(Op.SET, idx[h], lv[h], np.full(int(h.sum()), nan, np.float32))
        g_us = rng.random(idx.size).astype(np.float32) * 100
        w.listener(Op.READ, idx, np.full(idx.size, -1, np.int8), g_us)
        if step % 50 == 0:
            w.flush()
        if step % steps_per_epoch == 0:
            w.append_epoch({"epoch": step // steps_per_epoch, "task": 0, "m_star": 3.0, "acc": [0.9], "step": step})
        if w.ops_rows >= n_ops:
            break
    w.close("finished")
    return Path(path)
