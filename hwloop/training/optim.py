"""Algorithm 1 of the paper as one optimizer: Adam, then the metaplastic attenuation of hidden weights.

For every hidden weight W_H (parameters flagged ``metaplastic``):
    U      = Adam's step (bias-corrected m / (sqrt(v) + eps))
    W_S    = nearest level of Q                                     (Eq. 1)
    if U * (W_H - W_S) < 0:   W_H <- W_H - lr * U * M(W_H)          (the step moves W_H away from W_S)
    else:                     W_H <- W_H - lr * U
    M(W_H) = 1 - tanh^2(2 m* / I * |W_H - W_S| - m*)                (Eq. 2), I the interval holding W_H
Hidden weights are then clamped to [Q_0, Q_n] (the paper's levels span [-1.5, 1.5]).
Other parameters (batch-norm) get plain Adam. ``m_star`` can be changed between steps (warm-up uses 0).

The step runs in torch, in place, on whatever device the parameters live on (multi-threaded on CPU).
W_S and I come from small lookup tables indexed by the level index (``LevelSet.tables``), never from
full-size temporaries: every intermediate lives in per-parameter work buffers allocated once, because on
CPU a fresh multi-megabyte tensor costs more (page faults) than the arithmetic done in it. The plain
numpy reading of Algorithm 1 lives in ``tests/test_optim_equivalence.py`` and is checked against this one.

After each step the nearest-level index of every hidden weight is kept in ``state[p]["level_index"]``
(int32 tensor, on the parameter's device): the orchestrator programs the chip from it, and the next step
reuses it as W_S.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from hwloop.training.levels import LevelSet


def metaplastic_factor(w_h: np.ndarray, w_s: np.ndarray, width: np.ndarray, m_star: float) -> np.ndarray:
    """M of Eq. 2."""
    return 1.0 - np.tanh((2.0 * m_star) / width * np.abs(w_h - w_s) - m_star) ** 2


def _work(state: dict, p: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-parameter work buffers (allocated on first use, reused every step)."""
    wk = state.get("work")
    if wk is None:
        def f() -> torch.Tensor:
            return torch.empty_like(p, memory_format=torch.contiguous_format)

        def i() -> torch.Tensor:
            return torch.empty(p.shape, dtype=torch.int32, device=p.device)

        def b() -> torch.Tensor:
            return torch.empty(p.shape, dtype=torch.bool, device=p.device)

        wk = {"u": f(), "d": f(), "f": f(), "a": f(), "i": i(), "b1": b(), "b2": b()}
        state["work"] = wk
    return wk


class MetaplasticAdam(torch.optim.Optimizer):
    def __init__(self, params: Iterable, levels: LevelSet, lr: float = 5e-4, m_star: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, clamp: bool = True) -> None:
        if not lr > 0:
            raise ValueError("learning rate must be positive")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))
        self.levels = levels
        self.m_star = float(m_star)
        self.clamp = clamp
        self._away: list[torch.Tensor] = []

    @property
    def attenuated(self) -> int:
        """Weights attenuated in the last step (diagnostic, counted when read; it synchronises the device)."""
        return int(sum(int(torch.count_nonzero(a)) for a in self._away))

    def level_index(self, p: torch.Tensor) -> torch.Tensor:
        """Nearest-level index (int32 tensor on ``p``'s device) of hidden weight ``p`` after the last step."""
        st = self.state.get(p, {})
        idx = st.get("level_index")
        if idx is None:
            idx = self.levels.index(p.detach())
        return idx

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        self._away = []
        lv, m_star = self.levels, self.m_star
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
                m, v, g = state["exp_avg"], state["exp_avg_sq"], p.grad
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                if not getattr(p, "metaplastic", False):
                    denom = (v / (1 - beta2**t)).sqrt_().add_(group["eps"])
                    p.add_((m / (1 - beta1**t)).div_(denom), alpha=-lr)
                    continue
                wk = _work(state, p)
                w, u, d, f = p.data, wk["u"], wk["d"], wk["f"]
                # U: Adam's bias-corrected step (same operation order as torch's own Adam)
                torch.div(v, 1 - beta2**t, out=f).sqrt_().add_(group["eps"])
                torch.div(m, 1 - beta1**t, out=u).div_(f)
                idx = state.get("level_index")
                if m_star > 0:
                    if idx is None:
                        idx = lv.index(w)
                    tab = lv.tables(w.device)
                    # W_S (nearest level) and d = W_H - W_S
                    torch.index_select(tab["q"], 0, idx.view(-1), out=d.view(-1))
                    torch.sub(w, d, out=d)
                    # I: the interval holding W_H (above W_S where d >= 0, else below): width_side[2 idx + side]
                    code = torch.add(idx, idx, out=wk["i"]).add_(torch.ge(d, 0, out=wk["b2"]))
                    torch.index_select(tab["width_side"], 0, code.view(-1), out=f.view(-1))
                    # away = 1 where U * d < 0 (the step moves W_H away from W_S), else 0
                    away = torch.mul(u, d, out=wk["a"]).sign_().clamp_(max=0).neg_()
                    # M = 1 - tanh^2(y) = 4 s (1 - s) with s = sigmoid(2 y), y = 2 m* / I * |d| - m*
                    f.reciprocal_().mul_(4.0 * m_star).mul_(d.abs_()).sub_(2.0 * m_star).sigmoid_()
                    f.addcmul_(f, f, value=-1.0).mul_(4.0)
                    # U <- U * M where away, U elsewhere: U * (1 - away * (1 - M))
                    f.sub_(1.0).mul_(away).add_(1.0)
                    u.mul_(f)
                    self._away.append(away)
                w.add_(u, alpha=-lr)
                if self.clamp:
                    w.clamp_(lv.lo, lv.hi)
                # the new index overwrites the old one in place (W_S is not needed any more)
                state["level_index"] = lv.index(w, out=idx, work_f=f, work_i=wk["i"], work_b=wk["b1"])
        return loss

    def state_dict(self) -> dict:
        sd = super().state_dict()
        # the level index is derived from the weights and the work buffers are scratch: both are rebuilt
        # after loading (new dicts: torch's state_dict shares the live per-parameter state dicts)
        sd["state"] = {k: {n: v for n, v in st.items() if n not in ("level_index", "work")}
                       for k, st in sd["state"].items()}
        return sd


def m_star_for_epoch(epoch_in_run: int, warmup: int, m_star: float) -> float:
    """m* in force for a 1-based global epoch: 0 during the first ``warmup`` epochs of the run."""
    return 0.0 if epoch_in_run <= warmup else m_star


__all__ = ["MetaplasticAdam", "m_star_for_epoch", "metaplastic_factor"]
