"""What program-and-verify costs and buys, on the default table (sim chip, default device model).

1. Per tolerance k (window median ± k sigma): success rate and mean pulses (RESET + SET) per verified
   program, against single shot (1 attempt) measured in the same run on the same chip model.
2. A short training (MNIST then Fashion-MNIST from $HWLOOP_DATA, first --train-samples images, --epochs
   per task, --threads 1) with --program single-shot and with --program verify, same seed: final accuracy,
   device programs, pulses (RESET + SET rows of the run log) and wall time. Skipped without the data.

Prints one JSON line.

    python benchmarks/verify_cost.py [--devices 2000] [--train-samples 2000] [--epochs 2] [--hidden 128]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hwloop.chip.sim import SimChip
from hwloop.chip.verify import level_windows, program_verify
from hwloop.errors import DataError


def table_cost(devices: int, max_pulses: int, tolerances: list[float], seed: int) -> list[dict]:
    out = []
    for k in tolerances:
        row: dict = {"tolerance_sigma": k}
        for name, budget in (("single_shot", 1), ("verify", max_pulses)):
            chip = SimChip(n_tiles=-(-devices * 9 // 16384), seed=seed)
            idx = np.arange(devices * 9)
            chip.form_idx(idx)
            idx = idx[chip.formed_mask()[idx]]
            level = np.arange(idx.size) % 9
            lo, hi = level_windows(chip.table, "sigma", k)
            r = program_verify(chip, idx, level, lo, hi, max_pulses=budget)
            row[name] = {
                "success_rate": round(float(r.success.mean()), 4),
                "pulses_per_program": round(r.pulses / idx.size, 3),
                "mean_attempts": round(float(r.attempts.mean()), 3),
            }
        row["pulse_ratio_vs_single_shot"] = round(
            row["verify"]["pulses_per_program"] / row["single_shot"]["pulses_per_program"], 3
        )
        out.append(row)
    return out


def training(args: argparse.Namespace, tmp: Path) -> dict:
    from hwloop.orchestrator import TrainConfig, train
    from hwloop.runlog import OP_CODES, RunLog
    from hwloop.training.data import load_dataset

    try:
        load_dataset("mnist")
        load_dataset("fashion-mnist")
    except DataError as exc:
        return {"skipped": f"no data sets ({exc})"}
    out: dict = {
        "train_samples": args.train_samples,
        "epochs_per_task": args.epochs,
        "hidden": args.hidden,
        "tolerance_sigma": args.tolerance,
        "max_pulses": args.max_pulses,
        "seed": args.seed,
    }
    # single shot twice: the first run pays the data loading and torch warm-up; the second gives the wall
    # time baseline and shows the run is deterministic for the seed
    for mode in ("single-shot-warmup", "verify", "single-shot"):
        cfg = TrainConfig(
            tasks="mnist,fashion-mnist",
            epochs_per_task=args.epochs,
            warmup=1,
            hidden=args.hidden,
            train_samples=args.train_samples,
            seed=args.seed,
            chip="sim",
            out=str(tmp / f"{mode}.h5"),
            progress=False,
            threads=1,
            program=mode.removesuffix("-warmup"),
            verify_tolerance=args.tolerance,
            verify_max_pulses=args.max_pulses,
        )
        t0 = time.perf_counter()
        res = train(cfg)
        wall = time.perf_counter() - t0
        with RunLog(res.log) as log:
            op = log.ops["op"]
        out[mode] = {
            "final_acc": {k: round(v, 4) for k, v in res.final_acc.items()},
            "programs": res.programs,
            "pulses": int(np.isin(op, (OP_CODES["SET"], OP_CODES["RESET"])).sum()),
            "wall_s": round(wall, 1),
        }
    warm = out.pop("single-shot-warmup")
    out["single_shot_deterministic"] = warm["final_acc"] == out["single-shot"]["final_acc"]
    out["pulse_ratio_verify_vs_single_shot"] = round(out["verify"]["pulses"] / out["single-shot"]["pulses"], 3)
    out["wall_ratio_verify_vs_single_shot"] = round(out["verify"]["wall_s"] / out["single-shot"]["wall_s"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=2000, help="devices per level")
    ap.add_argument("--max-pulses", type=int, default=10)
    ap.add_argument("--tolerances", default="0.5,0.75,1,1.5,2")
    ap.add_argument("--train-samples", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--tolerance", type=float, default=1.0, help="verify tolerance of the training runs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-train", action="store_true")
    args = ap.parse_args()
    tols = [float(x) for x in args.tolerances.split(",")]
    res = {
        "benchmark": "verify_cost",
        "table": "default (synthetic)",
        "devices_per_level": args.devices,
        "max_pulses": args.max_pulses,
        "by_tolerance": table_cost(args.devices, args.max_pulses, tols, args.seed),
    }
    if not args.no_train:
        with tempfile.TemporaryDirectory() as d:
            res["training"] = training(args, Path(d))
    sys.stdout.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
