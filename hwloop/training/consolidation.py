"""The optimizer and the task-switch step of a run, from ``--consolidation`` and ``--bn-consolidate``.

With both at their defaults (``paper``, ``off``) a run uses ``MetaplasticAdam`` itself: the paper's rule.
Otherwise ``ConsolidatingAdam`` steps the hidden weights with ``optim_importance`` (importance),
``optim_fisher`` (fisher) or ``MetaplasticAdam`` (paper), and the BN affine parameters with ``optim_bn``
(meta-batch, meta-frozen) or plain Adam (off). ``begin_task`` is what the trainer does at every task switch
after the first task: freeze the BN statistics (meta-frozen, once), measure the finished task's Fisher
information and raise each weight's strength from it (fisher), extend each hidden weight's protected
subspace with the finished task's layer inputs (``--projection-energy``, ``optim_projection``: the
gradients are projected off it before any rule), and start a consolidated phase of the BN parameters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

from hwloop.training.bn_frozen import freeze_statistics, stats_frozen
from hwloop.training.config import TrainConfig
from hwloop.training.levels import LevelSet
from hwloop.training.optim import MetaplasticAdam
from hwloop.training.optim_bn import metaplastic_bn_update, set_reference
from hwloop.training.optim_fisher import fisher_information, fisher_update, strength_from_fisher
from hwloop.training.optim_importance import importance_update
from hwloop.training.optim_projection import extend_basis, layer_inputs, project_


class ConsolidatingAdam(MetaplasticAdam):
    """``MetaplasticAdam`` whose hidden weights (``weights="importance"`` or ``"fisher"``) and/or BN
    parameters (``bn=True``) follow the rules of ``optim_importance`` / ``optim_fisher`` / ``optim_bn``
    instead; every other parameter is stepped by ``MetaplasticAdam.step`` unchanged. With ``projection``,
    every hidden weight's gradient first loses its component along its basis (``extend_bases``)."""

    def __init__(
        self,
        params: Iterable,
        levels: LevelSet,
        *,
        lr: float,
        m_star: float = 0.0,
        weights: str = "paper",
        importance_scale: float = 0.1,
        bn: bool = False,
        bn_scale: float = 0.1,
        projection: bool = False,
        **kw: object,
    ) -> None:
        super().__init__(params, levels, lr=lr, m_star=m_star, **kw)  # type: ignore[arg-type]
        if weights not in ("paper", "importance", "fisher"):
            raise ValueError("weights must be paper, importance or fisher")
        self.weights = weights
        self.importance_scale = float(importance_scale)
        self.bn_scale = float(bn_scale)
        every = [p for g in self.param_groups for p in g["params"]]
        self._hidden = [p for p in every if getattr(p, "metaplastic", False)]
        self.projection = bool(projection)
        self._importance = [p for p in self._hidden if weights != "paper"]
        self._bn = [p for p in every if bn and not getattr(p, "metaplastic", False)]
        self._importance_ids = {id(p) for p in self._importance}
        if self._importance:
            self.compiled = False  # the fused rule is Algorithm 1's; these weights follow another one

    @torch.no_grad()
    def step(self, closure=None):
        if self.projection:  # the gradients with no component along the finished tasks' layer inputs
            for p in self._hidden:
                basis = self.state[p].get("basis")
                if basis is not None and p.grad is not None:
                    project_(p.grad, basis)
        own = [p for p in (*self._importance, *self._bn) if p.grad is not None]
        grads = [p.grad for p in own]
        for p in own:  # MetaplasticAdam.step skips parameters without a gradient
            p.grad = None
        try:
            loss = super().step(closure)
        finally:
            for p, g in zip(own, grads, strict=True):
                p.grad = g
        own_ids = {id(p) for p in own}
        for group in self.param_groups:
            common = dict(lr=group["lr"], betas=group["betas"], eps=group["eps"], m_star=self.m_star)
            for p in group["params"]:
                if id(p) not in own_ids:
                    continue
                if id(p) in self._importance_ids and self.weights == "fisher":
                    away = fisher_update(p.data, p.grad, self.state[p], self.levels, clamp=self.clamp, **common)
                elif id(p) in self._importance_ids:
                    away = importance_update(
                        p.data,
                        p.grad,
                        self.state[p],
                        self.levels,
                        scale=self.importance_scale,
                        clamp=self.clamp,
                        **common,
                    )
                else:
                    away = metaplastic_bn_update(p.data, p.grad, self.state[p], scale=self.bn_scale, **common)
                if away is not None:
                    self._away.append(away)
                if id(p) in self._importance_ids:
                    self._diff_record(self.state[p])  # the levels to program, as MetaplasticAdam's step lists them
        return loss

    def consolidate(self) -> None:
        """Start a consolidated phase: every BN parameter's reference becomes its present value."""
        for p in self._bn:
            set_reference(p, self.state[p])

    def raise_strength(self, fisher: list[torch.Tensor], hold: float) -> None:
        """``weights="fisher"``: each hidden weight's strength becomes the larger of what it had and
        ``strength_from_fisher`` of the finished task's Fisher information (one tensor per hidden weight, in
        the order of ``model.hidden_weights()``, the order of the optimizer's parameters)."""
        if len(fisher) != len(self._importance):
            raise ValueError(f"{len(fisher)} Fisher tensors for {len(self._importance)} hidden weights")
        for p, f in zip(self._importance, fisher, strict=True):
            s = strength_from_fisher(f, hold)
            old = self.state[p].get("strength")
            self.state[p]["strength"] = s if old is None else torch.maximum(old, s)

    def extend_bases(self, inputs: list[torch.Tensor], energy: float) -> None:
        """Gradient projection: extend each hidden weight's basis with the finished task's inputs to its
        layer (one N x in tensor per hidden weight, in the order of ``model.hidden_weights()``)."""
        if len(inputs) != len(self._hidden):
            raise ValueError(f"{len(inputs)} layer inputs for {len(self._hidden)} hidden weights")
        for p, a in zip(self._hidden, inputs, strict=True):
            self.state[p]["basis"] = extend_basis(self.state[p].get("basis"), a, energy)

    def inherit(self, previous: MetaplasticAdam | None) -> None:
        """Keep the weights' memory of ``previous`` (the optimizer of the last task: Adam's moments are
        reset at a task switch, the weights' memory is not): importance variables h, strengths s, bases."""
        if previous is None:
            return
        for p in self._hidden:
            for key in ("h", "strength", "basis"):
                kept = previous.state.get(p, {}).get(key)
                if kept is not None:
                    self.state[p][key] = kept


def build_optimizer(
    cfg: TrainConfig, model: nn.Module, levels: LevelSet, previous: MetaplasticAdam | None = None
) -> MetaplasticAdam:
    """The optimizer of a run (a new one at every task switch with ``--adam-reset``)."""
    rule = dict(ws_source=cfg.ws_source, clamp_mode=cfg.clamp)
    if cfg.consolidation == "paper" and cfg.bn_consolidate == "off" and cfg.projection_energy == 0:
        return MetaplasticAdam(model.parameters(), levels, lr=cfg.lr, m_star=0.0, **rule)
    opt = ConsolidatingAdam(
        model.parameters(),
        levels,
        lr=cfg.lr,
        m_star=0.0,
        weights=cfg.consolidation,
        importance_scale=cfg.importance_scale,
        bn=cfg.bn_consolidate != "off",
        bn_scale=cfg.bn_meta_scale,
        projection=cfg.projection_energy > 0,
        **rule,
    )
    opt.inherit(previous)
    return opt


def begin_task(
    cfg: TrainConfig,
    model: nn.Module,
    opt: MetaplasticAdam,
    previous_task: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    previous_index: int,
) -> None:
    """At the first epoch of every task but the first: freeze the BN statistics over the previous task's
    training images (meta-frozen, the first time only); with ``--consolidation fisher``, measure the
    previous task's Fisher information and raise the weights' strengths; with ``--projection-energy``,
    extend the bases with the previous task's layer inputs (both with that task's BN, in evaluation mode,
    on a subset drawn from the run's seed); then start the BN parameters' consolidated phase.
    ``previous_task`` gives that task's training images and labels."""
    if cfg.bn_consolidate == "meta-frozen" and not stats_frozen(model):
        freeze_statistics(model, previous_task()[0], cfg.eval_batch)
    if not isinstance(opt, ConsolidatingAdam):
        return
    seed = cfg.seed + 1000 * previous_index
    if opt.weights == "fisher":
        x, y = previous_task()
        with _on_task(model, previous_index):
            opt.raise_strength(fisher_information(model, x, y, seed=seed), cfg.fisher_hold)
    if opt.projection:
        with _on_task(model, previous_index):
            opt.extend_bases(layer_inputs(model, previous_task()[0], seed=seed), cfg.projection_energy)
    opt.consolidate()


@contextlib.contextmanager
def _on_task(model: nn.Module, task: int) -> Iterator[None]:
    """Within the block the model uses task ``task``'s BN (per-task BN); its own task after."""
    was = getattr(model, "task", 0)
    model.set_task(task)  # type: ignore[operator]
    try:
        yield
    finally:
        model.set_task(was)  # type: ignore[operator]


__all__ = ["ConsolidatingAdam", "begin_task", "build_optimizer"]
