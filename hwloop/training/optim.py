"""Algorithm 1 of the paper as one optimizer: Adam, then the metaplastic attenuation of hidden weights.

For every hidden weight W_H (parameters flagged ``metaplastic``):
    U      = Adam's step (bias-corrected m / (sqrt(v) + eps))
    W_S    = nearest level of Q                                     (Eq. 1)
    if U * (W_H - W_S) < 0:   W_H <- W_H - lr * U * M(W_H)          (the step moves W_H away from W_S)
    else:                     W_H <- W_H - lr * U
    M(W_H) = 1 - tanh^2(2 m* / I * |W_H - W_S| - m*)                (Eq. 2), I the interval holding W_H
Hidden weights are then clamped to [Q_0, Q_n] (the paper's levels span [-1.5, 1.5]).
Other parameters (batch-norm) get plain Adam. ``m_star`` can be changed between steps (warm-up uses 0).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from hwloop.training.levels import LevelSet


def metaplastic_factor(w_h: torch.Tensor, w_s: torch.Tensor, width: torch.Tensor, m_star: float) -> torch.Tensor:
    """M of Eq. 2."""
    return 1.0 - torch.tanh(2.0 * m_star / width * (w_h - w_s).abs() - m_star) ** 2


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

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch.optim signature
        loss = closure() if closure is not None else None
        self.attenuated = 0
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                denom = (v / (1 - beta2**t)).sqrt_().add_(group["eps"])
                u = (m / (1 - beta1**t)) / denom
                if getattr(p, "metaplastic", False):
                    if self.m_star > 0:
                        w_s = self.levels.nearest(p)
                        away = u * (p - w_s) < 0
                        width = self.levels.interval_width(p)
                        f = metaplastic_factor(p, w_s, width, self.m_star)
                        u = torch.where(away, u * f, u)
                        self.attenuated += int(away.sum())
                    p.add_(u, alpha=-group["lr"])
                    if self.clamp:
                        p.clamp_(self.levels.lo, self.levels.hi)
                else:
                    p.add_(u, alpha=-group["lr"])
        return loss


def m_star_for_epoch(epoch_in_run: int, warmup: int, m_star: float) -> float:
    """m* in force for a 1-based global epoch: 0 during the first ``warmup`` epochs of the run."""
    return 0.0 if epoch_in_run <= warmup else m_star

