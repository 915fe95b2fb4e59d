"""Gradient projection of the hidden weights (``--projection-energy E``, 0 = off).

A layer's output for an input x is W x. If every later change of W is orthogonal to the inputs the
finished tasks fed that layer, their outputs do not change: the idea of Saha et al.'s Gradient Projection
Memory (GPM, ICLR 2021) and of orthogonal weight modification. Here, for every hidden weight W (out x in):

At every task switch (``extend_basis``, over up to ``PROJECTION_SAMPLES`` training images of the task just
finished, the network in evaluation mode as it is tested): R = the layer's inputs (in x N). Keep the part
of R that the basis U (in x k) does not already hold, R' = R - U U^T R, and add to U the fewest left
singular vectors of R' that bring the energy U holds of R to at least E of ||R||^2 (E = ``energy``).

At every step, before the optimizer's rule: G <- G - (G U) U^T, the gradient with no component along
the inputs of the finished tasks. Adam's per-element scaling, Eq. 2's attenuation and the quantisation to
the levels then act on that gradient, so the protection is approximate: what the change of level of a
device does to an old input is bounded by the level spacing, not by the projection.

In the first task U is empty: no projection. The bases are part of the optimizer state (``basis``), so
they travel with the checkpoint and across the new optimizer of each task.
"""

from __future__ import annotations

import torch
from torch import nn

from hwloop.training.probe import evaluating, subset_indices

#: training images of the finished task whose layer inputs span the protected subspace
PROJECTION_SAMPLES = 2_000


@torch.no_grad()
def layer_inputs(model: nn.Module, x: torch.Tensor, *, seed: int = 0, samples: int = PROJECTION_SAMPLES) -> list:
    """The inputs of every layer of ``model.layers`` (N x in each) for up to ``samples`` images of ``x``
    (a random subset drawn with ``seed``), the model in evaluation mode and left as it was found."""
    sel = subset_indices(int(x.shape[0]), samples, seed, x.device)
    seen: list[torch.Tensor] = []
    hooks = [layer.register_forward_pre_hook(lambda _m, a: seen.append(a[0].detach())) for layer in model.layers]
    try:
        with evaluating(model):
            model(x.index_select(0, sel))
    finally:
        for h in hooks:
            h.remove()
    return seen


def extend_basis(basis: torch.Tensor | None, inputs: torch.Tensor, energy: float) -> torch.Tensor:
    """GPM's basis update: ``basis`` (in x k, orthonormal columns, or None) extended by the fewest left
    singular vectors of the inputs' residual so that it holds at least ``energy`` of the inputs' energy
    (``inputs``: N x in). Returns the new basis (in x k')."""
    r = inputs.T.double()  # in x N
    total = float((r * r).sum())
    dim = r.shape[0]
    if basis is None:
        basis = torch.zeros(dim, 0, dtype=torch.float64, device=r.device)
    basis = basis.double()
    resid = r - basis @ (basis.T @ r)
    held = total - float((resid * resid).sum())
    if total <= 0 or held >= energy * total:
        return basis.float()
    u, s, _ = torch.linalg.svd(resid, full_matrices=False)
    gain = torch.cumsum(s * s, 0)
    need = energy * total - held
    k = int(torch.searchsorted(gain, torch.tensor(need, dtype=gain.dtype, device=gain.device)).item()) + 1
    k = min(k, dim - basis.shape[1], u.shape[1])
    return torch.cat([basis, u[:, :k]], dim=1).float()


@torch.no_grad()
def project_(grad: torch.Tensor, basis: torch.Tensor) -> None:
    """G <- G - (G U) U^T, in place (``grad``: out x in, ``basis``: in x k)."""
    if basis.shape[1]:
        grad.sub_((grad @ basis) @ basis.T)


__all__ = ["PROJECTION_SAMPLES", "extend_basis", "layer_inputs", "project_"]
