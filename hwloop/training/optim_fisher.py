"""Fisher-weighted consolidation of the hidden weights (``--consolidation fisher``).

Algorithm 1 holds every weight with the same m*; ``--consolidation importance`` lets a hidden variable that
integrates every step set each weight's m*, and that variable grows with time as much as with use. This
rule measures, once at the end of each task, how much the task's loss depends on each weight, and holds
only the weights the finished tasks need:

At every task switch (``fisher_information`` over up to ``FISHER_SAMPLES`` training images of the task just
finished, the network in evaluation mode as it is tested, then ``strength_from_fisher``):

    F_i   = mean over mini-batches of (dL/dW_i)^2      (the empirical Fisher information, batch-wise)
    theta = the round(hold * n)-th largest F of the layer's n weights  (``--fisher-hold``: held in full)
    s_i  <- max(s_i, min(1, F_i / theta))              (a weight keeps what earlier tasks gave it)

and at every step, for every hidden weight (Eq. 2 with the weight's own m*, as ``optim_importance``):

    m_i = m* * s_i
    if U * (W_H - W_S) < 0:  W_H <- W_H - lr * U * (1 - tanh^2(2 m_i / I * |W_H - W_S| - m_i))
    else:                    W_H <- W_H - lr * U
    W_H clamped to [Q_0, Q_n]

In the first task s = 0: no weight is held (plain Adam on the levels, as m* = 0). The strength is fixed
within a task, so it cannot grow with the time spent on a task, and it is relative per layer (theta), so it
does not depend on the loss's scale. The mini-batch gradient squared is Kirkpatrick et al.'s (EWC)
diagonal Fisher up to a factor (the batch size) that theta removes.

Readable torch expressions (not the in-place buffer-reusing form of ``MetaplasticAdam``); the plain numpy
reading lives in ``tests/test_consolidation_rules.py``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from hwloop.training.adamstate import adam_direction
from hwloop.training.levels import LevelSet
from hwloop.training.optim_importance import eq2_step
from hwloop.training.probe import evaluating, subset_indices

#: training images of the finished task that the Fisher estimate looks at (a seeded random subset)
FISHER_SAMPLES = 10_000
#: mini-batch of the estimate
FISHER_BATCH = 50


@torch.no_grad()
def fisher_update(
    w: torch.Tensor,
    g: torch.Tensor,
    state: dict,
    levels: LevelSet,
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    m_star: float,
    clamp: bool = True,
) -> torch.Tensor:
    """One step of the rule above on hidden weight ``w`` with gradient ``g``, in place. ``state`` holds
    ``step``, ``exp_avg``, ``exp_avg_sq`` and ``strength`` (s; zeros until the first task switch), and gets
    ``level_index``. Returns the attenuated mask."""
    u = adam_direction(state, w, g, betas, eps)
    s = state.get("strength")
    m_i = m_star * s if s is not None else torch.zeros_like(w)
    away = eq2_step(w, u, m_i, levels, lr=lr, clamp=clamp)
    state["level_index"] = levels.index(w)
    return away


def fisher_information(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seed: int = 0, samples: int = FISHER_SAMPLES
) -> list[torch.Tensor]:
    """F of every hidden weight (``model.hidden_weights()``): the mean over mini-batches of
    ``FISHER_BATCH`` of the squared gradient of the cross-entropy, over up to ``samples`` images of ``x``
    (a random subset drawn with ``seed``). The model is in evaluation mode (how it is tested) and left
    as it was found; the gradients of its parameters are left untouched."""
    params = model.hidden_weights()
    order = subset_indices(int(x.shape[0]), samples, seed, x.device)
    fisher = [torch.zeros_like(p) for p in params]
    n_batches = 0
    with evaluating(model):
        for a in range(0, order.numel() - FISHER_BATCH + 1, FISHER_BATCH):
            sel = order[a : a + FISHER_BATCH]
            with torch.enable_grad():
                loss = F.cross_entropy(model(x.index_select(0, sel)), y.index_select(0, sel).long())
                grads = torch.autograd.grad(loss, params)
            for f, g in zip(fisher, grads, strict=True):
                f.addcmul_(g, g)
            n_batches += 1
    for f in fisher:
        f.div_(max(n_batches, 1))
    return fisher


def strength_from_fisher(fisher: torch.Tensor, hold: float) -> torch.Tensor:
    """s = min(1, F / theta), theta the ``round(hold * n)``-th largest F of the ``n`` in ``fisher`` (so a
    fraction ``hold`` of the weights get s = 1, ties aside). Where theta is 0 (the task used fewer weights
    than that) every weight with F > 0 gets s = 1 and the others 0."""
    flat = fisher.reshape(-1)
    n_held = max(1, round(hold * flat.numel()))
    theta = float(flat.kthvalue(flat.numel() - n_held + 1).values)  # torch.quantile refuses over 16 M elements
    if theta <= 0.0:
        return (fisher > 0).to(fisher.dtype)
    return (fisher / theta).clamp(max=1.0)


__all__ = ["FISHER_BATCH", "FISHER_SAMPLES", "fisher_information", "fisher_update", "strength_from_fisher"]
