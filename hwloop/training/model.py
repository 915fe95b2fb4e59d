"""The QNN MLP: 784-H-H-10, no biases, batch-norm after every layer.

The weights used in the forward pass are *not* the hidden weights: each ``QLinear`` holds a buffer
``w_used`` (the weights read from the chip, or the ideal levels with ``--chip none``). The straight-through
estimator passes the gradient with respect to ``w_used`` on to the hidden weight ``weight``, which the
metaplastic optimizer updates (Algorithm 1, lines 2-4).

Batch-norm has two modes: ``per-task`` (one BN per task, its own affine parameters and statistics; each
task is evaluated with its own BN: the paper's task-incremental setting) and ``shared``. By default BN uses
batch statistics in training and in evaluation (``track_running_stats=False``, as Laborieux's reference
code); ``bn_eval="running"`` keeps running averages in training and tests with them (``model.eval()``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from hwloop.training.config import BN_EVAL_MODES, BN_MODES


class _StraightThrough(torch.autograd.Function):
    """Forward: the weights read from the chip (``w_used``, as they are); backward: the gradient goes to
    the hidden weight unchanged. No full-size temporaries, unlike ``weight + (w_used - weight).detach()``
    (which also rounds: it is not exactly ``w_used`` in float32)."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, w_used: torch.Tensor) -> torch.Tensor:
        return w_used.view_as(w_used)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class HiddenLinear(nn.Module):
    """A bias-free linear layer's hidden weight ``weight`` (out × in, zeros until initialised), flagged
    ``metaplastic`` for the optimizers; the QNN's ``QLinear`` and the BNN's ``BinaryLinear`` add how the
    forward pass uses it."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))
        self.weight.metaplastic = True  # type: ignore[attr-defined]


class QLinear(HiddenLinear):
    """Linear layer whose forward uses ``w_used`` with a straight-through gradient to ``weight``."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features)
        self.register_buffer("w_used", torch.zeros(out_features, in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, _StraightThrough.apply(self.weight, self.w_used))


class LayeredMLP(nn.Module):
    """The forward pass of both MLPs (the QNN here, the BNN baseline in ``hwloop.training.bnn``): each layer,
    then the current task's BN (``bns[task]``), then ``activation`` between layers (not after the last)."""

    layers: nn.ModuleList
    bns: nn.ModuleList
    task: int
    activation: Callable[[torch.Tensor], torch.Tensor]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bns = self.bns[self.task]
        last = len(self.layers) - 1
        for i, (layer, bn) in enumerate(zip(self.layers, bns, strict=True)):
            x = bn(layer(x))
            if i < last:
                x = self.activation(x)
        return x

    def hidden_weights(self) -> list[nn.Parameter]:
        return [layer.weight for layer in self.layers]


class QMLP(LayeredMLP):
    """784-H-H-10 MLP with a BN after each layer and ReLU between layers."""

    activation = staticmethod(F.relu)

    def __init__(
        self,
        hidden: int = 512,
        n_in: int = 784,
        n_out: int = 10,
        n_tasks: int = 1,
        bn_mode: str = "per-task",
        bn_eval: str = "batch",
    ) -> None:
        super().__init__()
        if bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {BN_MODES}")
        if bn_eval not in BN_EVAL_MODES:
            raise ValueError(f"bn_eval must be one of {BN_EVAL_MODES}")
        running = bn_eval == "running"
        self.bn_mode = bn_mode
        self.layers = nn.ModuleList([QLinear(n_in, hidden), QLinear(hidden, hidden), QLinear(hidden, n_out)])
        n_bn = n_tasks if bn_mode == "per-task" else 1
        self.bns = nn.ModuleList(
            nn.ModuleList(
                nn.BatchNorm1d(layer.out_features, affine=True, track_running_stats=running) for layer in self.layers
            )
            for _ in range(n_bn)
        )
        self.task = 0

    def set_task(self, task: int) -> None:
        self.task = task if self.bn_mode == "per-task" else 0

    def bn_parameters(self, task: int | None = None) -> list[nn.Parameter]:
        if task is None:
            return [p for bn in self.bns for p in bn.parameters()]
        return list(self.bns[task if self.bn_mode == "per-task" else 0].parameters())
