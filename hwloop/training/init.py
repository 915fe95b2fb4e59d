"""The hidden weights' initialisation (``--init``) and their nearest levels in crossbar order."""

from __future__ import annotations

import numpy as np
import torch

from hwloop.training.levels import LevelSet
from hwloop.training.model import QMLP
from hwloop.training.optim import MetaplasticAdam


def init_hidden(model: QMLP, levels: LevelSet, mode: str, gen: torch.Generator) -> None:
    """Hidden weights drawn from Gaussians centred between two adjacent levels (the paper's initialisation).

    ``midpoints``: the interval is drawn uniformly among all 16 per weight; ``center``: one of the two
    intervals next to zero, [-Q_1, 0] or [0, Q_1]; ``uniform``: uniform over [Q_-8, Q_8]."""
    n_int = levels.q.numel() - 1
    with torch.no_grad():
        for w in model.hidden_weights():
            if mode == "uniform":
                w.uniform_(levels.lo, levels.hi, generator=gen)
                continue
            if mode == "center":
                i = n_int // 2 - torch.randint(0, 2, w.shape, generator=gen)
            else:
                i = torch.randint(0, n_int, w.shape, generator=gen)
            mid = (levels.q[i] + levels.q[i + 1]) / 2
            width = levels.width[i]
            w.copy_(mid + width / 8 * torch.randn(w.shape, generator=gen))
            w.clamp_(levels.lo, levels.hi)


def hidden_levels(model: QMLP, levels: LevelSet, opt: MetaplasticAdam | None = None) -> np.ndarray:
    """Signed nearest level (int8, -n..n) of every hidden weight, in crossbar order (on the host)."""
    parts = [
        (opt.level_index(p) if opt is not None else levels.index(p.detach())).reshape(-1).cpu().numpy()
        for p in model.hidden_weights()
    ]
    k = np.concatenate(parts).astype(np.int8)
    k -= np.int8(levels.n_half)
    return k


__all__ = ["hidden_levels", "init_hidden"]
