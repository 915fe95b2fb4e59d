"""Training overhead of the hardware loop against plain PyTorch: epoch times of --chip sim (full logging),
--chip none and a plain PyTorch loop of the same network, data subset, batch and Adam.

All three run in the same process, interleaved (torch, none, sim, torch, none, sim, ...), on the paper's
network (784-512-512-10) with the real MNIST when $HWLOOP_DATA (or the standard places) has it, else a
synthetic MNIST-sized set, m* = 3 from the first epoch. The baseline is the plain PyTorch loop
(``ratio_sim_to_torch``, ``ratio_none_to_torch``); ``ratio_sim_to_none`` is what the chip and its log add
to the loop. (Until issue 11 the only ratio here was sim / none, which hid the cost of the loop itself.)
Also ``log_bytes_per_op`` (bytes of the /ops table on disk per recorded operation) and the whole-file
bytes per operation (snapshots and checkpoints included).

    python benchmarks/train_overhead.py [--train-samples 10000] [--epochs 2] [--reps 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import torch

from hwloop.errors import DataError
from hwloop.orchestrator import TrainConfig, train
from hwloop.training.data import load_dataset, load_task, write_idx


def data_dir(tmp: Path) -> tuple[str | None, bool, str]:
    try:
        ds = load_dataset("mnist")
        return None, True, ds.source
    except DataError:
        rng = np.random.default_rng(0)
        d = tmp / "mnist"
        d.mkdir()
        for split, n in (("train", 60000), ("t10k", 10000)):
            y = rng.integers(0, 10, n).astype(np.uint8)
            x = np.clip(rng.normal(60 + 15 * y[:, None, None], 50, (n, 28, 28)), 0, 255).astype(np.uint8)
            write_idx(d / f"{split}-images-idx3-ubyte.gz", x)
            write_idx(d / f"{split}-labels-idx1-ubyte.gz", y)
        return str(tmp), False, "synthetic"


BATCH = 100  # of both loops (hwloop train's default is 700: docs/training.md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-samples", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    from epoch_vs_torch import PlainMLP, torch_epoch

    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        ddir, verify, source = data_dir(tmp)
        task = load_task("mnist", ddir, train_samples=a.train_samples, verify=verify)
        torch.manual_seed(0)
        model = PlainMLP(a.hidden)
        adam = torch.optim.Adam(model.parameters(), lr=2e-3)
        torch_epoch(model, adam, task, 0, BATCH)  # warm-up
        times: dict[str, list[float]] = {"none": [], "sim": [], "torch": []}
        ops_bytes = file_bytes = ops_rows = 0
        for rep in range(a.reps):
            times["torch"] += [torch_epoch(model, adam, task, 1 + rep * a.epochs + e, BATCH) for e in range(a.epochs)]
            for chip in ("none", "sim"):
                out = tmp / f"{chip}{rep}.h5"
                cfg = TrainConfig(
                    tasks="mnist",
                    epochs_per_task=a.epochs,
                    warmup=0,
                    m_star=3.0,
                    hidden=a.hidden,
                    train_samples=a.train_samples,
                    batch_size=BATCH,
                    chip=chip,
                    data_dir=ddir,
                    verify_data=verify,
                    out=str(out),
                    progress=False,
                    threads=a.threads,
                )
                train(cfg)
                with h5py.File(out, "r") as f:
                    times[chip] += [float(t) for t in f["epochs"]["wall_s"]]
                    if chip == "sim":
                        ops_rows += f["ops"].shape[0]
                        ops_bytes += f["ops"].id.get_storage_size()
                if chip == "sim":
                    file_bytes += out.stat().st_size
                out.unlink()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        json.dumps(
            {
                "benchmark": "train_overhead",
                "data": source,
                "hidden": a.hidden,
                "train_samples": a.train_samples,
                "epochs_per_run": a.epochs,
                "reps": a.reps,
                "threads": a.threads,
                "epoch_s_torch": round(med["torch"], 3),
                "epoch_s_none": round(med["none"], 3),
                "epoch_s_sim": round(med["sim"], 3),
                "ratio_sim_to_torch": round(med["sim"] / med["torch"], 3),
                "ratio_none_to_torch": round(med["none"] / med["torch"], 3),
                "ratio_sim_to_none": round(med["sim"] / med["none"], 3),
                "target_ratio_sim_to_torch": 1.5,
                "ops_rows": ops_rows,
                "log_bytes_per_op": round(ops_bytes / max(ops_rows, 1), 3),
                "file_bytes_per_op": round(file_bytes / max(ops_rows, 1), 3),
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
