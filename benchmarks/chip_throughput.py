"""SimChip throughput: SET + READ of every device of an 82-tile chip (1.34 M devices).

Prints ONE JSON line. Speed is given in device-operations per second (a SET of n devices plus a READ
of n devices is 2n device-ops) and as ``ratio_to_floor``: the chip's speed divided by that of a bare
numpy pass over arrays of the same sizes, measured in the same run. The floor does the minimum any
simulator must do: for SET, one uniform draw per device, a gather from the quantile grid, a linear
interpolation and a scatter into the conductance array; for READ, a gather, one normal draw per device
and the noise arithmetic. So ``ratio_to_floor`` near 1 means SimChip adds little overhead (address
checks, forming checks, wear-out bookkeeping, counters) to the unavoidable work.

Usage: ``python benchmarks/chip_throughput.py [--tiles 82] [--reps 5] [--seed 0]``
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from hwloop.chip.cdf import GRID_POINTS
from hwloop.chip.sim import SimChip, SimConfig


def floor_pass(
    grid: np.ndarray,
    g_us: np.ndarray,
    idx: np.ndarray,
    level: np.ndarray,
    rng: np.random.Generator,
    rel: float,
    abs_us: float,
) -> np.ndarray:
    """Bare numpy SET (inverse-transform draw + scatter) and READ (gather + noise) of ``idx``."""
    u = rng.random(idx.size) * (GRID_POINTS - 1)
    i = np.minimum(u.astype(np.intp), GRID_POINTS - 2)
    g = grid[level, i]
    g_us[idx] = g + (u - i) * (grid[level, i + 1] - g)
    r = g_us[idx]
    z = rng.standard_normal(idx.size, dtype=np.float32)
    return r + z * (np.float32(rel) * r + np.float32(abs_us))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=82)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    # default device model (read noise, endurance budget), but every device forms so that all are programmed
    cfg = SimConfig.default().with_(form_dead_fraction=0.0)
    chip = SimChip(n_tiles=args.tiles, config=cfg, seed=args.seed)
    n = chip.n_devices
    idx = np.arange(n)
    attempts = 0
    while not chip.formed_mask().all():
        chip.form_idx(np.flatnonzero(~chip.formed_mask()))
        attempts += 1
    rng = np.random.default_rng(args.seed + 1)
    level = rng.integers(1, chip.table.n_hcs + 1, n).astype(np.intp)

    grid = chip.table.grid
    g_floor = np.zeros(n, dtype=np.float32)
    floor_rng = np.random.default_rng(args.seed + 2)
    # warm-up (page in arrays, caches)
    chip.set_idx(idx, level=level)
    chip.read_idx(idx)
    floor_pass(grid, g_floor, idx, level, floor_rng, cfg.read_noise_rel, cfg.read_noise_abs_us)

    t_chip, t_set, t_read, t_floor = [], [], [], []
    for _ in range(args.reps):  # interleaved, so both see the same machine load
        t0 = time.perf_counter()
        chip.set_idx(idx, level=level)
        t1 = time.perf_counter()
        g = chip.read_idx(idx)
        t2 = time.perf_counter()
        floor_pass(grid, g_floor, idx, level, floor_rng, cfg.read_noise_rel, cfg.read_noise_abs_us)
        t3 = time.perf_counter()
        t_set.append(t1 - t0)
        t_read.append(t2 - t1)
        t_chip.append(t2 - t0)
        t_floor.append(t3 - t2)
    assert g.shape == (n,) and np.isfinite(g).all()

    chip_s = float(np.median(t_chip))
    floor_s = float(np.median(t_floor))
    ops = 2 * n
    print(
        json.dumps(
            {
                "benchmark": "chip_throughput",
                "tiles": args.tiles,
                "devices": n,
                "reps": args.reps,
                "form_attempts": attempts,
                "device_ops_per_s": round(ops / chip_s),
                "floor_device_ops_per_s": round(ops / floor_s),
                "ratio_to_floor": round(floor_s / chip_s, 3),
                "set_s": round(float(np.median(t_set)), 4),
                "read_s": round(float(np.median(t_read)), 4),
                "set_read_s": round(chip_s, 4),
                "floor_s": round(floor_s, 4),
                "target_device_ops_per_s": 20_000_000,
                "meets_target": bool(ops / chip_s >= 20e6),
                "timing": "median of reps, chip and floor interleaved",
                "numpy": np.__version__,
                "python": platform.python_version(),
            }
        )
    )


if __name__ == "__main__":
    main()
