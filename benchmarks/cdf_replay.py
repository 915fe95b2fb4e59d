"""CDF replay fidelity: does SimChip reproduce the source table's conductance distributions?

Programs 100 k devices per level (RESET for LCS, SET at each HCS level) on an ideal chip (no read noise,
perfect forming, no wear-out, no relaxation, so a read returns the programmed conductance) and reports,
per level, the Kolmogorov-Smirnov distance between the replayed reads and the table's CDF
(``table.cdf(level, x)``). The acceptance bound is ``max_ks < 0.01``.

As a check that the statistic can see an error, the same reads are also compared with the table's CDF
shifted by a tenth of the level's sigma (``ks_shifted_0p1_sigma``): that must come out well above the bound.

Prints ONE JSON line. Usage: ``python benchmarks/cdf_replay.py [--cdf FILE] [--per-level 100000] [--seed 0]``
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from hwloop.chip.base import CELLS_PER_TILE
from hwloop.chip.cdf import CdfTable, load_table
from hwloop.chip.default_table import default_table
from hwloop.chip.sim import SimChip, SimConfig

KS_BOUND = 0.01


def ks_distance(table: CdfTable, level: int, g_us: np.ndarray, shift_us: float = 0.0) -> float:
    """Two-sided KS distance between the empirical CDF of ``g_us`` and ``table.cdf(level, x - shift_us)``."""
    x = np.sort(np.asarray(g_us, dtype=np.float64))
    f = table.cdf(level, x - shift_us)
    n = x.size
    return float(max(np.max(np.arange(1, n + 1) / n - f), np.max(f - np.arange(n) / n)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cdf", default=None, help="table to replay (default: the built-in synthetic table)")
    ap.add_argument("--per-level", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    table = load_table(args.cdf) if args.cdf else default_table()
    n_per = args.per_level
    n_tiles = -(-n_per * table.n_levels // CELLS_PER_TILE)
    t0 = time.perf_counter()
    chip = SimChip(n_tiles=n_tiles, table=table, config=SimConfig.ideal(), seed=args.seed)
    idx = np.arange(n_per * table.n_levels).reshape(table.n_levels, n_per)
    chip.form_idx(idx.ravel())
    chip.reset_idx(idx[0])
    level = np.repeat(np.arange(1, table.n_levels), n_per)
    chip.set_idx(idx[1:].ravel(), level=level)
    g = chip.read_idx(idx.ravel()).reshape(idx.shape)
    noise_free = chip.true_g_us(idx.ravel()).reshape(idx.shape)
    assert np.array_equal(g, noise_free), "ideal chip must read noise-free"
    elapsed = time.perf_counter() - t0

    sig = table.sigmas_us
    ks = [ks_distance(table, k, g[k]) for k in range(table.n_levels)]
    ks_shift = [ks_distance(table, k, g[k], shift_us=0.1 * sig[k]) for k in range(table.n_levels)]
    names = [lv.name for lv in table.levels]
    max_ks = max(ks)
    print(
        json.dumps(
            {
                "benchmark": "cdf_replay",
                "table": table.source_path,
                "synthetic": table.synthetic,
                "devices_per_level": n_per,
                "tiles": n_tiles,
                "seed": args.seed,
                "ks": {n: round(d, 5) for n, d in zip(names, ks, strict=True)},
                "max_ks": round(max_ks, 5),
                "ks_bound": KS_BOUND,
                "passes": bool(max_ks < KS_BOUND),
                "ks_expected_under_h0": round(0.8687 / np.sqrt(n_per), 5),
                "ks_shifted_0p1_sigma": {n: round(d, 4) for n, d in zip(names, ks_shift, strict=True)},
                "min_ks_shifted_0p1_sigma": round(min(ks_shift), 4),
                "median_us": {n: round(float(np.median(g[k])), 3) for k, n in enumerate(names)},
                "table_median_us": {n: round(float(m), 3) for n, m in zip(names, table.medians_us, strict=True)},
                "program_read_s": round(elapsed, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
