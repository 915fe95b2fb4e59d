"""Metaplastic batch-norm: the affine parameters of a shared BN consolidated as the weights are.

``--bn-consolidate meta-batch|meta-frozen`` (with ``--bn-mode shared``). For every BN affine parameter
theta (gamma and beta of each BN, element by element):

    U      = Adam's step (bias-corrected m / (sqrt(v) + eps)), as for every parameter
    theta_ref = theta at the start of the current task (set by ``consolidate``; none in the first task)
    delta  = theta - theta_ref
    if U * delta < 0:  theta <- theta - lr * U * (1 - tanh^2(m* * |delta| / scale))   (moves away from the ref)
    else:              theta <- theta - lr * U
No reference (the first task) or m* = 0 (warm-up): plain Adam, exactly as ``MetaplasticAdam`` steps BN.

The factor is 1 at delta = 0 and falls to 1 - tanh^2(m*) (0.0099 at m* = 3) at |delta| = scale: a
parameter may drift about scale / 2 from where the last task left it before it is held, and it always
moves back towards the reference freely. ``scale`` (``--bn-meta-scale``, default 0.1) plays the role of
the interval I of Eq. 2; there are no levels here, so the reference is the parameter's own value at the
start of the task. The batch statistics are handled by ``hwloop.training.bn_frozen`` (meta-frozen).
The plain numpy reading of this rule lives in ``tests/test_consolidation_rules.py``.
"""

from __future__ import annotations

import torch

from hwloop.training.adamstate import adam_direction


@torch.no_grad()
def metaplastic_bn_update(
    p: torch.Tensor,
    g: torch.Tensor,
    state: dict,
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    m_star: float,
    scale: float,
) -> torch.Tensor | None:
    """One step of the rule above on BN parameter ``p`` with gradient ``g``, in place. ``state`` holds
    ``step``, ``exp_avg``, ``exp_avg_sq`` (created here) and ``ref`` (set by ``set_reference``). Returns
    the mask of the elements whose step was attenuated (None where the rule was plain Adam)."""
    u = adam_direction(state, p, g, betas, eps)
    ref = state.get("ref")
    away = None
    if ref is not None and m_star > 0:
        delta = p - ref
        away = u * delta < 0
        u = torch.where(away, u * (1 - torch.tanh(m_star * delta.abs() / scale) ** 2), u)
    p.sub_(lr * u)
    return away


def set_reference(p: torch.Tensor, state: dict) -> None:
    """Start a consolidated phase: the reference of ``p`` becomes its present value."""
    state["ref"] = p.detach().clone()


__all__ = ["metaplastic_bn_update", "set_reference"]
