"""Algorithm 1 of the paper as one optimizer: Adam, then the metaplastic attenuation of hidden weights.

For every hidden weight W_H (parameters flagged ``metaplastic``):
    U      = Adam's step (bias-corrected m / (sqrt(v) + eps))
    W_S    = nearest level of Q                                     (Eq. 1)
    if U * (W_H - W_S) < 0:   W_H <- W_H - lr * U * M(W_H)          (the step moves W_H away from W_S)
    else:                     W_H <- W_H - lr * U
    M(W_H) = 1 - tanh^2(2 m* / I * |W_H - W_S| - m*)                (Eq. 2), I the interval holding W_H
Hidden weights are then clamped to [Q_0, Q_n] (the paper's levels span [-1.5, 1.5]).
Other parameters (batch-norm) get plain Adam. ``m_star`` can be changed between steps (warm-up uses 0).

After each step the nearest-level index of every hidden weight is kept in ``state[p]["level_index"]``
(int8): the orchestrator programs the chip from it, and the next step reuses it as W_S.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from hwloop.training.levels import LevelSet


def metaplastic_factor(w_h: np.ndarray, w_s: np.ndarray, width: np.ndarray, m_star: float) -> np.ndarray:
    """M of Eq. 2."""
    return 1.0 - np.tanh((2.0 * m_star) / width * np.abs(w_h - w_s) - m_star) ** 2


class MetaplasticAdam(torch.optim.Optimizer):
    def __init__(self, params: Iterable, levels: LevelSet, lr: float = 5e-4, m_star: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, clamp: bool = True) -> None:
        if lr <= 0:
            raise ValueError("learning rate must be positive")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))
        self.levels = levels
        self.m_star = float(m_star)
        self.clamp = clamp
        self.attenuated = 0  # weights attenuated in the last step (diagnostic)

    def level_index(self, p: torch.Tensor) -> np.ndarray:
        """Nearest-level index (int8) of hidden weight tensor ``p`` after the last step."""
        st = self.state.get(p, {})
        idx = st.get("level_index")
        if idx is None:
            idx = self.levels.index_np(p.detach().numpy())
        return idx

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        self.attenuated = 0
        lv = self.levels
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr = group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "step" not in state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                denom = (v / (1 - beta2**t)).sqrt_().add_(group["eps"])
                u = (m / (1 - beta1**t)).div_(denom)
                if not getattr(p, "metaplastic", False):
                    p.add_(u, alpha=-lr)
                    continue
                w = p.detach().numpy()
                un = u.numpy()
                if self.m_star > 0:
                    idx = state.get("level_index")
                    if idx is None:
                        idx = lv.index_np(w)
                    w_s = lv.q_np[idx]
                    away = un * (w - w_s) < 0
                    f = metaplastic_factor(w, w_s, lv.interval_width_np(w, idx), self.m_star)
                    np.multiply(un, f, out=un, where=away)
                    self.attenuated += int(np.count_nonzero(away))
                w -= np.float32(lr) * un
                if self.clamp:
                    np.clip(w, lv.lo, lv.hi, out=w)
                state["level_index"] = lv.index_np(w)
        return loss

    def state_dict(self) -> dict:
        sd = super().state_dict()
        for st in sd["state"].values():
            st.pop("level_index", None)  # derived from the weights; recomputed after loading
        return sd


def m_star_for_epoch(epoch_in_run: int, warmup: int, m_star: float) -> float:
    """m* in force for a 1-based global epoch: 0 during the first ``warmup`` epochs of the run."""
    return 0.0 if epoch_in_run <= warmup else m_star
