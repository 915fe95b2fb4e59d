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


__all__ = ["adam_step"]
