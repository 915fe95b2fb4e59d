"""Epoch time of the hardware loop over a plain PyTorch loop of the same network, measured in one process.

The baseline is an ordinary PyTorch training loop: the paper's 784-512-512-10 MLP (no biases, BatchNorm1d
after every layer with batch statistics, ReLU), the same MNIST arrays and batch (``--batch``: hwloop
train's default 700, then 100, each measured in turn and printed under ``by_batch``), shuffled the same way,
``torch.optim.Adam``, and the test set evaluated at the end of the epoch as the loop does. Against it:

- ``--chip sim``: m* = 3 after a 1-epoch warm-up (m* = 0), every operation logged (the run log as a
  normal run writes it); the timed epoch is the second one, the first at m* = 3
- ``--chip none``: the same configuration, ideal levels, no device

Each hwloop epoch time is the ``wall_s`` of the run log's epoch row (training steps, programming, the
full-array read, evaluation; the off-thread checkpoint serialisation overlaps the next epoch). The torch
epoch time is the median of ``--torch-reps`` epochs after one warm-up epoch.

hwloop sets a short OpenMP spin (``GOMP_SPINCOUNT``, ``hwloop/__init__.py``) before torch loads; this
benchmark imports hwloop first, so its in-process torch loop runs with that setting too. The same torch
loop is also timed in a child process with the default environment (``epoch_s_torch_default_env``), and
each ratio divides by the faster of the two baselines, so the setting cannot flatter the ratio.

``log_mb_full_protocol`` is extrapolated, not measured (see ``extrapolate_log_mb``): from the measured
sizes in a run log of the current format (``--protocol-log``, a reduced-protocol run of at least 10
epochs, or else the benchmark's own sim log): bytes per /ops row, the mean stored size of a keyframe
snapshot row and of a delta row after the warm-up (format 3: one keyframe every
``SNAPSHOT_KEY_EVERY`` rows), the checkpoint slot a closed log keeps, the calibration copy; and the op
rows of the full protocol, either ``--ops-rows-full`` (measured in a full-protocol log; say which) or,
without it, per-epoch op counts of the protocol log with each task's last epoch standing for its
remaining epochs (an upper bound: op counts keep falling within a task).

    python benchmarks/epoch_vs_torch.py [--threads 2] [--torch-reps 2] [--protocol-log runs/x.h5]
        [--ops-rows-full N]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hwloop  # noqa: F401  (first: its OpenMP setting must precede torch, as in the CLI)

# isort: split
import h5py
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from hwloop.orchestrator import TrainConfig, train
from hwloop.runlog import SNAPSHOT_KEY_EVERY
from hwloop.training.data import load_task

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_overhead import data_dir


class PlainMLP(nn.Module):
    def __init__(self, hidden: int = 512) -> None:
        super().__init__()
        self.fc = nn.ModuleList(
            [
                nn.Linear(784, hidden, bias=False),
                nn.Linear(hidden, hidden, bias=False),
                nn.Linear(hidden, 10, bias=False),
            ]
        )
        self.bn = nn.ModuleList(nn.BatchNorm1d(n, track_running_stats=False) for n in (hidden, hidden, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, (fc, bn) in enumerate(zip(self.fc, self.bn, strict=True)):
            x = bn(fc(x))
            if i < 2:
                x = F.relu(x)
        return x


def torch_epoch(model: nn.Module, opt: torch.optim.Optimizer, task, epoch: int, batch: int) -> float:
    t0 = time.perf_counter()
    model.train()
    order = np.random.default_rng([0, epoch]).permutation(len(task.y_train))
    for b in range(len(order) // batch):
        sel = order[b * batch : (b + 1) * batch]
        x, y = torch.from_numpy(task.x_train[sel]), torch.from_numpy(task.y_train[sel])
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        xt, yt = torch.from_numpy(task.x_test), torch.from_numpy(task.y_test)
        correct = sum(
            int((model(xt[s : s + 1000]).argmax(1) == yt[s : s + 1000]).sum()) for s in range(0, len(yt), 1000)
        )
    assert correct > 0
    return time.perf_counter() - t0


def warmed_up_torch(task, batch: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The plain PyTorch baseline (seeded) after its warm-up epoch."""
    torch.manual_seed(0)
    model = PlainMLP()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    torch_epoch(model, opt, task, 0, batch)
    return model, opt


def hwloop_epoch(chip: str, tmp: Path, ddir: str | None, verify: bool, threads: int, batch: int) -> tuple[float, Path]:
    out = tmp / f"{chip}.h5"
    cfg = TrainConfig(
        tasks="mnist",
        epochs_per_task=2,
        warmup=1,
        m_star=3.0,
        hidden=512,
        batch_size=batch,
        chip=chip,
        data_dir=ddir,
        verify_data=verify,
        out=str(out),
        progress=False,
        threads=threads,
        device="cpu",
    )
    train(cfg)
    with h5py.File(out, "r") as f:
        return float(f["epochs"]["wall_s"][1]), out


def storage(f: h5py.File, name: str) -> int:
    return int(f[name].id.get_storage_size())


def row_bytes(ds: h5py.Dataset, row: int) -> int:
    """Stored bytes of one snapshot row (the chunks of every tile at ``row``)."""
    n_tiles = ds.shape[1]
    return sum(int(ds.id.get_chunk_info_by_coord((row, t, 0, 0)).size) for t in range(n_tiles))


def snapshot_row_sizes(f: h5py.File, warmup_epochs: int) -> tuple[float, float]:
    """(mean bytes of a keyframe row, mean bytes of a delta row after the warm-up), code plus levels."""
    sg = f["snapshots"]
    g = sg["g_res"] if "g_res" in sg else sg["g_code"]
    key = sg["key"][()] if "key" in sg else np.full(sg["epoch"].shape[0], -1)
    ep = sg["epoch"][()]
    size = np.array([row_bytes(g, k) + row_bytes(sg["level"], k) for k in range(ep.size)], dtype=float)
    is_key = key < 0
    late = ~is_key & (ep > warmup_epochs)
    delta = size[late] if late.any() else size[~is_key] if (~is_key).any() else size[is_key]
    return float(size[is_key].mean()), float(delta.mean())


def extrapolate_log_mb(
    sim_log: Path,
    protocol_log: Path | None,
    epochs_per_task: int = 50,
    warmup: int = 10,
    ops_rows_full: int | None = None,
) -> dict:
    """Full-protocol log size from measured parts (see the module docstring). Op rows: ``ops_rows_full`` if
    given, else per epoch from the protocol log: its warm-up epochs' mean for each of the ``warmup`` epochs,
    then per task its measured m* epochs, and its last epoch of that task for each remaining epoch."""
    src = protocol_log or sim_log
    with h5py.File(src, "r") as f:
        ops_rows = int(f["ops"].shape[0])
        bytes_per_row = storage(f, "ops") / max(ops_rows, 1)
        cfg_warm = int(json.loads(f.attrs["config_json"]).get("warmup", 0))
        key_bytes, delta_bytes = snapshot_row_sizes(f, cfg_warm)
        cg = f["checkpoint"]
        ck_bytes = storage(cg, "blob_b" if int(cg["index"][0]) == 1 else "blob_a")  # a closed log keeps one
        fixed = sum(o.id.get_storage_size() for o in _datasets(f["calibration"]))
        ep = f["epochs"][()]
    rows = np.diff(np.concatenate([[0], ep["ops_rows"]])).astype(float)
    warm = ep["m_star"] == 0
    total_rows = warmup * (float(rows[warm].mean()) if warm.any() else 0.0)
    tasks = np.unique(ep["task"])
    for t in tasks:
        meta = rows[(ep["task"] == t) & ~warm]
        if meta.size == 0:
            continue
        left = epochs_per_task - (warmup if t == tasks[0] else 0) - meta.size
        total_rows += float(meta.sum()) + max(left, 0) * float(meta[-1])
    total_rows *= 2 / max(tasks.size, 1) if tasks.size != 2 else 1.0  # the full protocol has two tasks
    rows_from = "extrapolated from the protocol log (upper bound)"
    if ops_rows_full is not None:
        total_rows, rows_from = float(ops_rows_full), "given (--ops-rows-full)"
    ops_bytes = bytes_per_row * total_rows
    epochs = 2 * epochs_per_task
    n_key = len(range(0, epochs + 1, SNAPSHOT_KEY_EVERY))
    snaps = n_key * key_bytes + (epochs + 1 - n_key) * delta_bytes
    total = fixed + ck_bytes + snaps + ops_bytes
    return {
        "log_mb_full_protocol": round(total / 1e6, 1),
        "log_mb_is": "extrapolated",
        "log_mb_extrapolated_from": str(src),
        "snapshot_key_mb": round(key_bytes / 1e6, 3),
        "snapshot_delta_mb": round(delta_bytes / 1e6, 3),
        "snapshots_mb_full_protocol": round(snaps / 1e6, 1),
        "checkpoints_mb": round(ck_bytes / 1e6, 2),
        "ops_bytes_per_row": round(bytes_per_row, 3),
        "ops_rows_full_protocol": int(total_rows),
        "ops_rows_from": rows_from,
        "ops_mb_full_protocol": round(ops_bytes / 1e6, 1),
    }


def default_env_torch(threads: int, reps: int, batch: int) -> list[float]:
    """The plain torch epochs again, in a child process without hwloop's OpenMP setting."""
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    cmd = [
        sys.executable,
        __file__,
        "--torch-only",
        "--threads",
        str(threads),
        "--torch-reps",
        str(reps),
        "--batch",
        str(batch),
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, timeout=1800).stdout
    return [float(t) for t in json.loads(out.strip().splitlines()[-1])]


def _datasets(g: h5py.Group) -> list[h5py.Dataset]:
    out: list[h5py.Dataset] = []
    g.visititems(lambda _n, o: out.append(o) if isinstance(o, h5py.Dataset) else None)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--torch-reps", type=int, default=2)
    ap.add_argument(
        "--batch",
        default=f"{TrainConfig.batch_size},100",
        help="comma-separated batch sizes of all three loops, each measured in turn; the first (default: "
        "hwloop train's) gives the top-level figures, 100 is the batch of the issue's first measurement",
    )
    ap.add_argument(
        "--protocol-log",
        type=Path,
        default=None,
        help="a reduced-protocol run log whose per-epoch op counts feed log_mb_full_protocol",
    )
    ap.add_argument(
        "--ops-rows-full",
        type=int,
        default=None,
        help="/ops rows measured in a full-protocol log (instead of extrapolating them)",
    )
    ap.add_argument("--sizes-only", action="store_true", help="only the log size (from --protocol-log), no timing")
    ap.add_argument("--torch-only", action="store_true", help=argparse.SUPPRESS)  # the child of default_env_torch
    a = ap.parse_args()
    if a.torch_only:
        torch.set_num_threads(a.threads)
        with tempfile.TemporaryDirectory() as tmp_s:
            ddir, verify, _ = data_dir(Path(tmp_s))
            task = load_task("mnist", ddir, verify=verify)
            batch = int(a.batch)
            model, opt = warmed_up_torch(task, batch)
            print(json.dumps([torch_epoch(model, opt, task, e, batch) for e in range(1, a.torch_reps + 1)]))
        return
    if a.sizes_only:
        if a.protocol_log is None:
            ap.error("--sizes-only needs --protocol-log")
        print(
            json.dumps(
                {
                    "benchmark": "epoch_vs_torch",
                    **extrapolate_log_mb(a.protocol_log, a.protocol_log, ops_rows_full=a.ops_rows_full),
                }
            )
        )
        return
    torch.set_num_threads(a.threads)
    batches = [int(b) for b in str(a.batch).split(",") if b.strip()]
    by_batch: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        ddir, verify, source = data_dir(tmp)
        task = load_task("mnist", ddir, verify=verify)
        for batch in batches:
            run = tmp / f"b{batch}"
            run.mkdir()
            model, opt = warmed_up_torch(task, batch)
            t_torch = [torch_epoch(model, opt, task, e, batch) for e in range(1, a.torch_reps + 1)]
            t_sim, sim_log = hwloop_epoch("sim", run, ddir, verify, a.threads, batch)
            t_none, _ = hwloop_epoch("none", run, ddir, verify, a.threads, batch)
            t_torch.append(torch_epoch(model, opt, task, a.torch_reps + 1, batch))  # once more, after the loops
            t_default = default_env_torch(a.threads, a.torch_reps, batch)
            med_same, med_default = statistics.median(t_torch), statistics.median(t_default)
            med = min(med_same, med_default)
            by_batch[str(batch)] = {
                "epoch_s_torch": round(med, 3),
                "epoch_s_torch_all": [round(t, 3) for t in t_torch],
                "epoch_s_torch_default_env": round(med_default, 3),
                "epoch_s_torch_default_env_all": [round(t, 3) for t in t_default],
                "epoch_s_sim_mstar3": round(t_sim, 3),
                "epoch_s_none_mstar3": round(t_none, 3),
                "ratio_sim_to_torch": round(t_sim / med, 3),
                "ratio_none_to_torch": round(t_none / med, 3),
            }
            if batch == batches[0]:
                sizes = extrapolate_log_mb(sim_log, a.protocol_log, ops_rows_full=a.ops_rows_full)
    print(
        json.dumps(
            {
                "benchmark": "epoch_vs_torch",
                "data": source,
                "threads": a.threads,
                "hidden": 512,
                "batch": batches[0],
                "gomp_spincount": os.environ.get("GOMP_SPINCOUNT"),
                **by_batch[str(batches[0])],
                "goal_ratio_sim": 1.5,
                "by_batch": by_batch,
                **sizes,
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
