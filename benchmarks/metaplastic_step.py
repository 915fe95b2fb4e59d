"""Time of one MetaplasticAdam step (m* = 3) over one torch.optim.Adam step on the paper's hidden weights.

Three optimizers, the eager metaplastic step (``compile="never"``), the fused compiled one
(``compile="always"``; ``step_s_compiled_first`` is its first step, compilation included) and Adam,
hold the 784-512-512-10 hidden weights (668,672 parameters, uniform in [-1.5, 1.5]) with the same random
gradients, and run interleaved in the same process: ``ratio_to_adam`` is the median eager metaplastic step
time over the median Adam step time (Adam's default implementation on this device), and
``ratio_compiled_to_adam`` the same for the compiled step.

    python benchmarks/metaplastic_step.py [--threads 2] [--steps 50]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

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
    meta = [torch.nn.Parameter(torch.empty(s).uniform_(-1.5, 1.5)) for s in SHAPES]
    plain = [torch.nn.Parameter(p.detach().clone()) for p in meta]
    for p in meta:
        p.metaplastic = True  # type: ignore[attr-defined]
    fused = [torch.nn.Parameter(p.detach().clone()) for p in meta]
    for p in fused:
        p.metaplastic = True  # type: ignore[attr-defined]
    opt_m = MetaplasticAdam(meta, LevelSet(q), lr=2e-3, m_star=3.0, compile="never")
    opt_c = MetaplasticAdam(fused, LevelSet(q), lr=2e-3, m_star=3.0, compile="always")
    opt_a = torch.optim.Adam(plain, lr=2e-3)
    t_m, t_a, t_c = [], [], []
    first_c = 0.0
    for i in range(a.steps + 2):
        for pm, pa, pc in zip(meta, plain, fused, strict=True):
            g = torch.randn_like(pm)
            pm.grad, pa.grad, pc.grad = g, g.clone(), g.clone()
        t0 = time.perf_counter()
        opt_m.step()
        t1 = time.perf_counter()
        opt_a.step()
        t2 = time.perf_counter()
        opt_c.step()
        t3 = time.perf_counter()
        if i == 0:
            first_c = t3 - t2
        if i >= 2:  # the first steps allocate state and work buffers (and compile)
            t_m.append(t1 - t0)
            t_a.append(t2 - t1)
            t_c.append(t3 - t2)
    mm, ma, mc = statistics.median(t_m), statistics.median(t_a), statistics.median(t_c)
    print(
        json.dumps(
            {
                "benchmark": "metaplastic_step",
                "threads": a.threads,
                "params": sum(p.numel() for p in meta),
                "step_ms_metaplastic": round(1e3 * mm, 3),
                "step_ms_adam": round(1e3 * ma, 3),
                "ratio_to_adam": round(mm / ma, 3),
                "compiled": opt_c.compiled,
                "step_ms_compiled": round(1e3 * mc, 3),
                "ratio_compiled_to_adam": round(mc / ma, 3),
                "step_s_compiled_first": round(first_c, 2),
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
