"""Adam's per-parameter state, shared by the two metaplastic optimizers (``MetaplasticAdam`` in ``optim.py``,
the BNN baseline's ``AdamMeta`` in ``bnn.py``): the state keys are torch's own Adam's (``step``, ``exp_avg``,
``exp_avg_sq``), so a checkpoint's optimizer state reads the same in either."""

from __future__ import annotations

import torch


def adam_step(state: dict, p: torch.Tensor) -> int:
    """Count one step of parameter ``p`` and return its number (1 on the first); the first call creates the
    state: step 0 and zero first and second moments shaped like ``p``."""
    if "step" not in state:
        state["step"] = 0
        state["exp_avg"] = torch.zeros_like(p)
        state["exp_avg_sq"] = torch.zeros_like(p)
    state["step"] += 1
    return state["step"]


def adam_direction(
    state: dict, p: torch.Tensor, g: torch.Tensor, betas: tuple[float, float], eps: float
) -> torch.Tensor:
    """Adam's bias-corrected step U = m_hat / (sqrt(v_hat) + eps) of parameter ``p`` with gradient ``g``,
    after updating its moments in ``state`` (a new tensor; the consolidation rules of issue 16 scale it)."""
    beta1, beta2 = betas
    t = adam_step(state, p)
    m, v = state["exp_avg"], state["exp_avg_sq"]
    m.mul_(beta1).add_(g, alpha=1 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    return (m / (1 - beta1**t)) / ((v / (1 - beta2**t)).sqrt() + eps)


__all__ = ["adam_direction", "adam_step"]
