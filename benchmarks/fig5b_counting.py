"""Why our Fig. 5b differs from the paper's: programming operations per device under other counting rules.

The paper reports 76.12 % of devices under 25 programming operations and 10.16 % over 50 at m* = 3
(its hardware, 50 + 50 epochs). Our runs count a programming operation as one RESET row in ``/ops``
(``hwloop endurance``): a weight whose level changes reprograms only the device(s) of its pair whose own
level changes (k = +2 -> +3 touches the positive cell; its negative cell stays in LCS). For every run log
given, this prints one JSON line with the share of devices under 25 and over 50 operations under:

- ``device``: our rule (RESET rows of the device itself; what ``hwloop endurance`` reports)
- ``pair``: both cells of a pair reprogrammed at every level change of their weight (a device's count is
  the number of steps at which its pair had any RESET), as a controller that rewrites whole weights would
- ``pair_after_warmup`` and ``device_after_warmup``: the same counts, only after the m* = 0 warm-up epochs

plus the run's m*, W_S source, seed, epochs and final accuracies (from the log's configuration).

    python benchmarks/fig5b_counting.py LOG.h5 [LOG.h5 ...] [--json-out FILE]

Reads each ``/ops`` table once, in slices (columns ``step``, ``op``, ``tile``, ``row``, ``col``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from hwloop.chip.base import CELLS_PER_TILE
from hwloop.runlog import OP_CODES, RunLog


def _shares(counts: np.ndarray) -> dict[str, float]:
    return {
        "pct_under_25": round(100.0 * float(np.mean(counts < 25)), 2),
        "pct_over_50": round(100.0 * float(np.mean(counts > 50)), 2),
        "mean_ops": round(float(counts.mean()), 2),
    }


def analyse(path: Path) -> dict:
    with RunLog(path) as log:
        cfg = log.config
        ep = log.epochs()
        steps_per_epoch = int(ep["step"][0]) if ep.size else 0
        warm_step = steps_per_epoch * int(cfg.get("warmup", 0))
        reset = OP_CODES["RESET"]
        dev_parts, step_parts = [], []
        for blk in log.iter_ops(chunk_rows=1 << 22, fields=["step", "op", "tile", "row", "col"]):
            sel = blk["op"] == reset
            b = blk[sel]
            dev_parts.append(b["tile"].astype(np.int64) * CELLS_PER_TILE + b["row"].astype(np.int64) * 128 + b["col"])
            step_parts.append(b["step"].astype(np.int64))
        acc = log.accuracy(ep, percent=True)
        tasks = log.tasks
    dev = np.concatenate(dev_parts) if dev_parts else np.zeros(0, np.int64)
    step = np.concatenate(step_parts) if step_parts else np.zeros(0, np.int64)
    used = np.unique(dev)  # devices programmed at least once (the initial programming included)
    out: dict = {
        "log": str(path),
        "m_star": cfg.get("m_star"),
        "ws_source": cfg.get("ws_source", "nominal"),
        "seed": cfg.get("seed"),
        "hidden": cfg.get("hidden"),
        "epochs_per_task": cfg.get("epochs_per_task"),
        "warmup": cfg.get("warmup"),
        "devices": int(used.size),
        "final_acc": {t: round(float(acc[-1, j]), 2) for j, t in enumerate(tasks)} if acc.size else {},
    }
    n_pairs = int(used.max()) // 2 + 1 if used.size else 1
    for label, keep in (("", np.ones(step.size, bool)), ("_after_warmup", step > warm_step)):
        d, s = dev[keep], step[keep]
        per_dev = np.bincount(np.searchsorted(used, d), minlength=used.size)
        # pair rule: distinct (step, pair) events; each cell of the pair gets its pair's count
        events = np.unique(s * n_pairs + (d >> 1))
        per_pair_dev = np.bincount(events % n_pairs, minlength=n_pairs)[used >> 1]
        out["device" + label] = _shares(per_dev)
        out["pair" + label] = _shares(per_pair_dev)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("logs", nargs="+", type=Path)
    ap.add_argument("--json-out", type=Path)
    a = ap.parse_args()
    rows = []
    for p in a.logs:
        r = analyse(p)
        rows.append(r)
        print(json.dumps(r), flush=True)
    if a.json_out:
        a.json_out.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
