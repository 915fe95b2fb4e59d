"""One training step of the BNN baseline (784-H-H-10, batch 100) against plain PyTorch, measured in one process.

Four loops on the same random batch, their steps interleaved, each timed as the median of ``--reps``
steps after ``--warmup``:

- ``hwloop``: ``BinaryMLP`` with ``AdamMeta`` (meta 1.5), what ``hwloop train --model bnn`` runs;
- ``fresh``: the same, with sign(W_H) made by every forward instead of read from what the compiled step
  wrote (``binary_weights``' cache);
- ``idiom``: the same, with the binary weights made by the usual straight-through idiom
  ``W + (sign(W) - W).detach()`` (hwloop's forward before this benchmark). Its optimizer still writes the
  signs it does not read: a pass the old code did not make, so this ratio is a little low;
- ``torch``: a plain float MLP of the same shape (``epoch_vs_torch.PlainMLP``: no biases, BatchNorm1d
  with batch statistics, ReLU) with ``torch.optim.Adam``: what a user would otherwise run, without binarization.

Prints one JSON line with the step times and the ratios ``fresh / hwloop``, ``idiom / hwloop`` and
``hwloop / torch``.

    python benchmarks/bnn_step.py [--hidden 4096] [--threads 2] [--reps 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import hwloop  # noqa: F401  (first: its OpenMP setting must precede torch, as in the CLI)

# isort: split
import torch
from torch import nn
from torch.nn import functional as F

from hwloop.training.bnn import AdamMeta, BinaryLinear, BinaryMLP, SignWeightSTE

sys.path.insert(0, str(Path(__file__).resolve().parent))
from epoch_vs_torch import PlainMLP  # the plain PyTorch MLP of the speed benchmark, at any width

NAMES = ("hwloop", "fresh", "idiom", "torch")


class FreshSignLinear(BinaryLinear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, SignWeightSTE.apply(self.weight, self.weight.detach().sign()))


class IdiomLinear(BinaryLinear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight + (self.weight.sign() - self.weight).detach()
        return F.linear(x, w)


def one_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    t0 = time.perf_counter()
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - t0


def bnn_model(hidden: int, layer: type[BinaryLinear]) -> BinaryMLP:
    model = BinaryMLP(hidden=hidden, n_tasks=1)
    for lin in model.layers:
        lin.__class__ = layer  # same parameters, that class's forward
    model.init_uniform(torch.Generator().manual_seed(0))
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=15)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(a.batch, 784, generator=gen)
    y = torch.randint(0, 10, (a.batch,), generator=gen)
    loops: dict[str, tuple[nn.Module, torch.optim.Optimizer]] = {}
    for name in NAMES:
        if name == "torch":
            model: nn.Module = PlainMLP(a.hidden)
            loops[name] = (model, torch.optim.Adam(model.parameters(), lr=5e-3))
        else:
            model = bnn_model(a.hidden, {"hwloop": BinaryLinear, "fresh": FreshSignLinear, "idiom": IdiomLinear}[name])
            loops[name] = (model, AdamMeta(model.parameters(), meta=1.5))
    times: dict[str, list[float]] = {name: [] for name in NAMES}
    for i in range(a.warmup + a.reps):  # interleaved, so a change of the machine's load hits them all
        for name, (model, opt) in loops.items():
            dt = one_step(model, opt, x, y)
            if i >= a.warmup:
                times[name].append(dt)
    res = {f"step_ms_{name}": 1e3 * statistics.median(t) for name, t in times.items()}
    out = {
        "benchmark": "bnn_step",
        "hidden": a.hidden,
        "batch": a.batch,
        "threads": a.threads,
        **{k: round(v, 2) for k, v in res.items()},
        "ratio_fresh_over_hwloop": round(res["step_ms_fresh"] / res["step_ms_hwloop"], 3),
        "ratio_idiom_over_hwloop": round(res["step_ms_idiom"] / res["step_ms_hwloop"], 3),
        "ratio_hwloop_over_torch": round(res["step_ms_hwloop"] / res["step_ms_torch"], 3),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
