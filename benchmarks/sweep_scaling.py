"""Sweep throughput: points per second of one small sweep run by 1 local worker, 2 local workers and Ray.

Prints ONE JSON line. The same grid (m* x seeds) runs four times into fresh folders: local with
``--workers 1`` (default threads: 2 torch threads per run on a 2-core machine), local with
``--workers 1 --threads 1`` (``local1t1``), local with ``--workers 2`` (1 thread each), and Ray started
on this machine with as many CPUs as local workers (one 1-CPU task per point). The wall time of a sweep
includes starting its worker processes (torch import) but not Ray's own start-up, which is reported
apart (``ray_init_s``; Ray starts its worker processes then).

Ratios: ``local2_over_local1`` (scaling of the local executor with its default threads),
``local2_over_local1t1`` (1 thread per run both ways: the gain from parallel points alone),
``ray_over_local2`` (Ray against local processes at the same parallelism) and
``ray_incl_init_over_local2`` (the same with Ray's start-up counted). Runs with the same seed and the
same torch thread count must give the same accuracies: ``same_results_local2_ray`` and
``same_results_local1t1_local2`` check it; ``same_results_local1_local2`` and
``max_acc_diff_local1_local2`` compare 2 threads with 1 thread per point.

The data are a synthetic MNIST-like set written to a temporary folder (the real set with ``--data-dir``).
The machine is shared: ``loadavg`` gives the 1-minute load average when the benchmark started and ended.

Usage: ``python benchmarks/sweep_scaling.py [--points 8] [--hidden 64] [--train-samples 600] [--chip sim]
[--no-ray]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hwloop.sweep import cpu_cores, load_manifest, run_sweep
from hwloop.training.data import write_idx


def synthetic_mnist(root: Path, n_train: int, n_test: int = 500, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    protos = (rng.random((10, 28, 28)) > 0.7).astype(np.float32)
    d = root / "mnist"
    d.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = np.clip(protos[y] * 180 + rng.normal(0, 40, (n, 28, 28)), 0, 255).astype(np.uint8)
        write_idx(d / f"{split}-images-idx3-ubyte.gz", x)
        write_idx(d / f"{split}-labels-idx1-ubyte.gz", y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=8, help="grid size: m* in {0, 3} x points/2 seeds")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--train-samples", type=int, default=600)
    ap.add_argument("--epochs-per-task", type=int, default=1)
    ap.add_argument("--chip", default="sim", choices=["sim", "none"])
    ap.add_argument("--data-dir", default=None, help="folder with mnist/ (default: synthetic, made here)")
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="hwloop-sweep-bench-"))
    try:
        data = Path(args.data_dir) if args.data_dir else tmp / "data"
        if not args.data_dir:
            synthetic_mnist(data, n_train=args.train_samples)
        grid = {"m_star": [0.0, 3.0], "hidden": [args.hidden], "seed": list(range(max(1, args.points // 2)))}
        n_points = 2 * len(grid["seed"])
        base = dict(
            tasks="permuted-mnist:2",
            epochs_per_task=args.epochs_per_task,
            warmup=0,
            batch_size=50,
            train_samples=args.train_samples,
            chip=args.chip,
            data_dir=str(data),
            verify_data=False,
            lr=0.02,
        )
        load0 = os.getloadavg()[0]
        results: dict[str, list] = {}
        walls: dict[str, float] = {}
        threads: dict[str, int] = {}
        cores = cpu_cores()
        # local1t1: one worker held to 1 torch thread, to tell parallelism from thread oversubscription
        for name, workers, n_threads in (("local1", 1, None), ("local1t1", 1, 1), ("local2", 2, None)):
            t0 = time.perf_counter()
            res = run_sweep(tmp / name, grid, base, workers=workers, threads=n_threads, progress=False)
            walls[name] = time.perf_counter() - t0
            if res.failed:
                sys.exit(f"{name}: points failed: {res.failed}")
            man = load_manifest(tmp / name)
            results[name] = [p.final_acc for p in man.points]
            threads[name] = man.executor["threads"]
        out: dict = {}
        if not args.no_ray:
            import ray

            t0 = time.perf_counter()
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            out["ray_init_s"] = round(time.perf_counter() - t0, 2)
            try:
                t0 = time.perf_counter()
                res = run_sweep(tmp / "ray", grid, base, ray_address="auto", cpus_per_run=1, progress=False)
                walls["ray"] = time.perf_counter() - t0
            finally:
                ray.shutdown()
            if res.failed:
                sys.exit(f"ray: points failed: {res.failed}")
            man = load_manifest(tmp / "ray")
            results["ray"] = [p.final_acc for p in man.points]
            threads["ray"] = man.executor["threads"]
        pps = {k: n_points / v for k, v in walls.items()}
        line = {
            "benchmark": "sweep_scaling",
            "points": n_points,
            "hidden": args.hidden,
            "chip": args.chip,
            "train_samples": args.train_samples,
            "epochs": 2 * args.epochs_per_task,
            "cores": cores,
            **{f"{k}_points_per_s": round(v, 3) for k, v in pps.items()},
            **{f"{k}_wall_s": round(v, 2) for k, v in walls.items()},
            "local2_over_local1": round(pps["local2"] / pps["local1"], 3),
            "local2_over_local1t1": round(pps["local2"] / pps["local1t1"], 3),
            **(
                {
                    "ray_over_local2": round(pps["ray"] / pps["local2"], 3),
                    "ray_incl_init_over_local2": round(walls["local2"] / (walls["ray"] + out["ray_init_s"]), 3),
                }
                if "ray" in pps
                else {}
            ),
            **out,
            # the same seeds give the same numbers at the same torch thread count; local1 runs with more
            # threads, and a different thread count may change float reductions (see docs/sweep.md)
            "threads": threads,
            "same_results_local2_ray": results.get("ray", results["local2"]) == results["local2"],
            "same_results_local1t1_local2": results["local1t1"] == results["local2"],
            "same_results_local1_local2": results["local1"] == results["local2"],
            "max_acc_diff_local1_local2": max(
                abs(a[t] - b[t])
                for ra, rb in zip(results["local1"], results["local2"], strict=True)
                for a, b in [(ra, rb)]
                for t in a
            ),
            "loadavg": [round(load0, 2), round(os.getloadavg()[0], 2)],
            "python": platform.python_version(),
        }
        print(json.dumps(line))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
