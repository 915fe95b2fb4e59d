"""Time of one MetaplasticAdam step (m* = 3) over one torch.optim.Adam step on the paper's hidden weights.

Four optimizers hold the 784-512-512-10 hidden weights (668,672 parameters, uniform in [-1.5, 1.5]) with
the same random gradients and run interleaved in the same process: the one-pass numba kernel (the CPU
default, ``kernel="numba"``), the eager torch step (``kernel="torch", compile="never"``), the fused
``torch.compile`` step (``kernel="torch", compile="always"``; ``step_s_compiled_first`` is its first step,
compilation included) and ``torch.optim.Adam`` (its default implementation on this device), the baseline
a user would otherwise run. Each ``ratio_*_to_adam`` is a median step time over Adam's median step time.
The numba step also diffs the level index against a programmed-level record, as in training.

    python benchmarks/metaplastic_step.py [--threads 2] [--steps 50]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import hwloop  # noqa: F401  (first: its OpenMP setting must precede torch, as in the CLI)

# isort: split
import torch

from hwloop.chip.default_table import default_table
from hwloop.training.levels import LevelSet
from hwloop.training.optim import MetaplasticAdam

SHAPES = ((512, 784), (512, 512), (10, 512))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=50)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    q, _ = default_table().weight_levels()
    lv = LevelSet(q)
    w0 = [torch.empty(s).uniform_(-1.5, 1.5) for s in SHAPES]

    def params(meta: bool) -> list[torch.nn.Parameter]:
        ps = [torch.nn.Parameter(w.clone()) for w in w0]
        for p in ps:
            p.metaplastic = meta  # type: ignore[attr-defined]
        return ps

    opts: dict[str, torch.optim.Optimizer] = {
        "numba": MetaplasticAdam(params(True), lv, lr=2e-3, m_star=3.0, kernel="numba"),
        "eager": MetaplasticAdam(params(True), lv, lr=2e-3, m_star=3.0, kernel="torch", compile="never"),
        "compiled": MetaplasticAdam(params(True), lv, lr=2e-3, m_star=3.0, kernel="torch", compile="always"),
        "adam": torch.optim.Adam(params(False), lr=2e-3),
    }
    numba_opt = opts["numba"]
    assert isinstance(numba_opt, MetaplasticAdam)
    for p in numba_opt.param_groups[0]["params"]:
        numba_opt.track_levels(p, lv.index(p.detach()).view(-1).clone())
    times: dict[str, list[float]] = {k: [] for k in opts}
    first_compiled = 0.0
    for i in range(a.steps + 2):
        grads = [torch.randn_like(w) for w in w0]
        for name, opt in opts.items():
            for p, g in zip(opt.param_groups[0]["params"], grads, strict=True):
                p.grad = g.clone()
            t0 = time.perf_counter()
            opt.step()
            dt = time.perf_counter() - t0
            if i == 0 and name == "compiled":
                first_compiled = dt
            if i >= 2:  # the first steps allocate state and work buffers (and compile)
                times[name].append(dt)
    med = {k: statistics.median(v) for k, v in times.items()}
    compiled = opts["compiled"]
    assert isinstance(compiled, MetaplasticAdam)
    print(
        json.dumps(
            {
                "benchmark": "metaplastic_step",
                "threads": a.threads,
                "params": sum(w.numel() for w in w0),
                **{f"step_ms_{k}": round(1e3 * v, 3) for k, v in med.items()},
                **{f"ratio_{k}_to_adam": round(med[k] / med["adam"], 3) for k in ("numba", "eager", "compiled")},
                "compiled": compiled.compiled,
                "step_s_compiled_first": round(first_compiled, 2),
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
