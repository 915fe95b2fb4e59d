"""Looking at a finished task through the network as it is tested, at a task switch (``bn_frozen``,
``optim_fisher``, ``optim_projection``): evaluation mode for the block, on a seeded subset of its images."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """``model`` in evaluation mode within the block; its own mode again after, whatever happens."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def subset_indices(n_total: int, samples: int, seed: int, device: torch.device | str) -> torch.Tensor:
    """Up to ``samples`` of ``range(n_total)`` in a random order drawn with ``seed`` (on ``device``)."""
    n = min(samples, n_total)
    return torch.from_numpy(np.random.default_rng(seed).permutation(n_total)[:n]).to(device)


__all__ = ["evaluating", "subset_indices"]
