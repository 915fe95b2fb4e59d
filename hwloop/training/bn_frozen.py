"""Batch statistics of a shared BN frozen after the first task (``--bn-consolidate meta-frozen``).

Until it is frozen, ``FrozenStatsBatchNorm1d`` is exactly the default BN (batch statistics in training
and at test time, ``track_running_stats=False``). At the first task switch, ``freeze_statistics``
measures, layer after layer, the mean and the (population) variance of every BN's input over the whole
training set of the task just finished, with the weights read from the chip and the BNs below already
frozen; from then on every BN normalises with those fixed numbers, in training and at test time, and
only its affine parameters (consolidated by ``hwloop.training.optim_bn``) still learn. Later task
switches keep the first task's statistics.

Why freeze rather than keep batch statistics (``meta-batch``): with one shared BN the network cannot be
told the task, so its normalisation must not depend on it either. Batch statistics re-normalise every
test batch with its own task's statistics: a quiet form of task identification that works only when a
test batch holds one task, and never for one sample at a time, as an edge device sees its inputs. Frozen
statistics make the network one fixed function of its input, so what it remembers sits in the consolidated
weights and affine parameters alone. Why not a fixed scale in place of BN: the paper's QNN has no
biases and relies on BN's shift and per-neuron scale; a fixed scale would change the model the paper
trains in the first task as well, not only what is consolidated.
The ``frozen`` flag is a buffer, so it travels with the checkpoint (``--resume``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from hwloop.training.probe import evaluating


class FrozenStatsBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d with batch statistics until ``frozen``, then fixed ``running_mean`` / ``running_var``."""

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, affine=True, track_running_stats=True)
        self.register_buffer("frozen", torch.zeros((), dtype=torch.bool))
        self.is_frozen = False  # host copy of ``frozen`` (no device sync per forward)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_frozen:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)

    def set_statistics(self, mean: torch.Tensor, var: torch.Tensor) -> None:
        self.running_mean.copy_(mean)
        self.running_var.copy_(var)
        self.frozen.fill_(True)
        self.is_frozen = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.is_frozen = bool(self.frozen)


def use_frozen_stats_bn(model: nn.Module) -> None:
    """Replace every ``BatchNorm1d`` of ``model.bns`` (``QMLP``) by a ``FrozenStatsBatchNorm1d``."""
    for bns in model.bns:
        for i, bn in enumerate(bns):
            bns[i] = FrozenStatsBatchNorm1d(bn.num_features)


def stats_frozen(model: nn.Module) -> bool:
    return any(isinstance(bn, FrozenStatsBatchNorm1d) and bn.is_frozen for bns in model.bns for bn in bns)


@torch.no_grad()
def freeze_statistics(model: nn.Module, x: torch.Tensor, batch: int) -> None:
    """Measure each BN's input statistics over ``x`` (one task's training images, on the model's device),
    layer by layer with the BNs below frozen, and freeze them. ``model`` is ``QMLP`` with frozen-stats BNs."""
    with evaluating(model):
        for bn in model.bns[model.task]:
            if not isinstance(bn, FrozenStatsBatchNorm1d):
                raise TypeError("freeze_statistics needs the model's BNs to be FrozenStatsBatchNorm1d")
            acc: dict[str, torch.Tensor] = {}

            def grab(_mod: nn.Module, args: tuple, acc: dict = acc) -> None:
                z = args[0].double()
                acc["n"] = acc.get("n", 0) + z.shape[0]
                acc["s"] = acc.get("s", 0) + z.sum(0)
                acc["ss"] = acc.get("ss", 0) + (z * z).sum(0)

            handle = bn.register_forward_pre_hook(grab)
            try:
                for s in range(0, x.shape[0], batch):
                    model(x[s : s + batch])
            finally:
                handle.remove()
            mean = acc["s"] / acc["n"]
            var = (acc["ss"] / acc["n"] - mean * mean).clamp(min=0)
            bn.set_statistics(mean.float(), var.float())


__all__ = ["FrozenStatsBatchNorm1d", "freeze_statistics", "stats_frozen", "use_frozen_stats_bn"]
