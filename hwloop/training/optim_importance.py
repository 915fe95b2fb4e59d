"""Importance-aware consolidation of the hidden weights (``--consolidation importance``).

Algorithm 1 damps every move of W_H away from its level W_S and none towards it, with the same m* for
every weight: each weight ratchets onto its level and stays there, important or idle. The binarized rule
of Laborieux et al. differs: its hidden weight is unbounded, and |W_h| grows with every update that keeps
pushing the same way, so only weights the task pushed consistently consolidate. This rule gives each
hidden weight such a variable, h (same shape, starts at 0, kept across tasks), and lets it set the weight's
own m*. For every hidden weight, each step:

    U    = Adam's step (bias-corrected m / (sqrt(v) + eps))
    W_S  = nearest level of Q, I = the interval holding W_H, d = W_H - W_S       (as Algorithm 1)
    m_i  = m* * min(1, |h| / h0)                                               (the weight's strength)
    if U * d < 0:  W_H <- W_H - lr * U * (1 - tanh^2(2 m_i / I * |d| - m_i))   (Eq. 2 with m_i)
    else:          W_H <- W_H - lr * U
    W_H clamped to [Q_0, Q_n]
    if U * h > 0:  h <- h - lr * U * (1 - tanh^2(m* * |h| / h0))                (the step shrinks |h|)
    else:          h <- h - lr * U

h integrates the proposed steps (before any attenuation, and past the clamp): consistent updates make |h|
grow without bound, as |W_h| does in the binarized rule; updates of random sign cancel (|h| grows only as
the square root of their number). Steps that would undo h are damped as the binarized rule damps steps
towards a sign change, so a task's memory is not erased by the next task's first steps. h0
(``--importance-scale``, weight units, default 0.1: about half the interval next to zero) is the |h| at which a
weight gets the paper's full m*. During warm-up (m* = 0) h accumulates undamped and no weight is held.
An idle weight (h near 0) has m_i near 0, so M is near 1: it stays free for the next task.

Readable torch expressions on one tensor (not the in-place buffer-reusing form of ``MetaplasticAdam``);
the plain numpy reading lives in ``tests/test_consolidation_rules.py``.
"""

from __future__ import annotations

import torch

from hwloop.training.adamstate import adam_direction
from hwloop.training.levels import LevelSet


@torch.no_grad()
def importance_update(
    w: torch.Tensor,
    g: torch.Tensor,
    state: dict,
    levels: LevelSet,
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    m_star: float,
    scale: float,
    clamp: bool = True,
) -> torch.Tensor:
    """One step of the rule above on hidden weight ``w`` with gradient ``g``, in place. ``state`` holds
    ``step``, ``exp_avg``, ``exp_avg_sq`` and ``h`` (created here), and gets ``level_index`` (int32, the
    nearest level after the step, as ``MetaplasticAdam`` keeps it). Returns the attenuated mask."""
    if "h" not in state:
        state["h"] = torch.zeros_like(w)
    h = state["h"]
    u = adam_direction(state, w, g, betas, eps)

    m_i = m_star * (h.abs() / scale).clamp(max=1.0)
    away = eq2_step(w, u, m_i, levels, lr=lr, clamp=clamp)

    shrinks = u * h > 0
    h.sub_(lr * torch.where(shrinks, u * (1 - torch.tanh(m_star * h.abs() / scale) ** 2), u))
    state["level_index"] = levels.index(w)
    return away


@torch.no_grad()
def eq2_step(
    w: torch.Tensor, u: torch.Tensor, m_i: torch.Tensor, levels: LevelSet, *, lr: float, clamp: bool
) -> torch.Tensor:
    """Algorithm 1's update of hidden weight ``w`` by Adam's step ``u`` with a per-weight m* ``m_i`` (Eq. 2):
    a step away from the nearest level W_S is scaled by 1 - tanh^2(2 m_i / I * |W_H - W_S| - m_i), I the
    interval holding W_H; then the clamp to [Q_0, Q_n]. In place; returns the mask of the weights whose
    step was attenuated (moving away, m_i > 0)."""
    tab = levels.tables(w.device)
    idx = levels.index(w)  # W_S of the weights before the step
    d = w - tab["q"][idx]
    width = tab["width_side"][idx * 2 + (d >= 0).to(idx.dtype)]  # I
    away = u * d < 0
    w.sub_(lr * torch.where(away, u * (1 - torch.tanh(2 * m_i / width * d.abs() - m_i) ** 2), u))
    if clamp:
        w.clamp_(levels.lo, levels.hi)
    return away & (m_i > 0)


__all__ = ["eq2_step", "importance_update"]
