"""The consolidation options of issue 16 against plain, element-by-element numpy readings of their rules.

``optim_bn.metaplastic_bn_update`` (``--bn-consolidate``), ``optim_importance.importance_update``
(``--consolidation importance``), ``optim_fisher`` (``--consolidation fisher``: the rule, the Fisher
estimate, the strengths), ``optim_projection`` (``--projection-energy``), the optimizer that combines
them (``ConsolidatingAdam``) and the frozen BN statistics (``bn_frozen``). The references are written for
clarity: a Python loop over the elements, float64, the nearest level by argmin. As in
``test_optim_equivalence``, the importance rule restarts each step from the reference's weights (Eq. 2 is
discontinuous where W_H sits on its level), while the Adam moments run free over the whole sequence.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hwloop.chip.default_table import default_table
from hwloop.training.bn_frozen import FrozenStatsBatchNorm1d, freeze_statistics, stats_frozen, use_frozen_stats_bn
from hwloop.training.config import TrainConfig
from hwloop.training.consolidation import ConsolidatingAdam, begin_task, build_optimizer
from hwloop.training.levels import LevelSet
from hwloop.training.model import QMLP
from hwloop.training.optim import MetaplasticAdam
from hwloop.training.optim_bn import metaplastic_bn_update, set_reference
from hwloop.training.optim_fisher import FISHER_BATCH, fisher_information, fisher_update, strength_from_fisher
from hwloop.training.optim_importance import importance_update
from hwloop.training.optim_projection import extend_basis, layer_inputs, project_

Q_DEFAULT, _ = default_table().weight_levels()
B1, B2, EPS = 0.9, 0.999, 1e-8


class RefAdam:
    """Adam's bias-corrected step U, element by element."""

    def __init__(self, n: int) -> None:
        self.m = np.zeros(n)
        self.v = np.zeros(n)
        self.t = 0

    def u(self, g: np.ndarray) -> np.ndarray:
        self.t += 1
        out = np.zeros_like(self.m)
        for i in range(g.size):
            self.m[i] = B1 * self.m[i] + (1 - B1) * g[i]
            self.v[i] = B2 * self.v[i] + (1 - B2) * g[i] * g[i]
            out[i] = (self.m[i] / (1 - B1**self.t)) / (math.sqrt(self.v[i] / (1 - B2**self.t)) + EPS)
        return out


# ---------------------------------------------------------------------------- metaplastic BN
def ref_bn_step(theta: np.ndarray, u: np.ndarray, ref: np.ndarray | None, lr: float, m_star: float, scale: float):
    out = theta.copy()
    for i in range(theta.size):
        step = u[i]
        if ref is not None and m_star > 0:
            delta = theta[i] - ref[i]
            if u[i] * delta < 0:  # the step moves theta away from its reference
                step = u[i] * (1 - math.tanh(m_star * abs(delta) / scale) ** 2)
        out[i] = theta[i] - lr * step
    return out


@pytest.mark.parametrize("m_star,scale", [(3.0, 0.5), (1.0, 0.1), (0.0, 0.5)])
def test_metaplastic_bn_matches_reference(m_star: float, scale: float) -> None:
    rng = np.random.default_rng(1)
    n, lr = 64, 0.02
    theta_ref = rng.normal(1.0, 0.2, n)
    p = torch.tensor(theta_ref, dtype=torch.float32)
    state: dict = {}
    adam = RefAdam(n)
    ref = None
    drift = rng.normal(0, 1, n)  # a consistent push per element, plus noise: the parameters drift away
    n_attenuated = 0
    for step in range(300):
        if step == 100:  # a task switch: the consolidated phase starts here
            set_reference(p, state)
            ref = theta_ref.copy()
        g = drift + rng.normal(0, 0.5, n)
        u = adam.u(g)
        theta_ref = ref_bn_step(theta_ref, u, ref, lr, m_star, scale)
        away = metaplastic_bn_update(
            p, torch.tensor(g, dtype=torch.float32), state, lr=lr, betas=(B1, B2), eps=EPS, m_star=m_star, scale=scale
        )
        if away is not None:
            n_attenuated += int(away.sum())
        np.testing.assert_allclose(p.numpy(), theta_ref, rtol=1e-4, atol=1e-5, err_msg=f"step {step}")
    if m_star > 0:
        assert n_attenuated > 0
        # held: after the switch no parameter strayed far past `scale` from its reference
        assert np.max(np.abs(theta_ref - ref)) < (2.5 if m_star >= 3 else 5.0) * scale
    else:
        assert n_attenuated == 0


def test_metaplastic_bn_holds_where_plain_adam_drifts() -> None:
    """The rule must make a difference: the same pushes move plain Adam much further."""
    g = torch.ones(8)
    p, q = torch.zeros(8), torch.zeros(8)
    sp: dict = {}
    sq: dict = {}
    set_reference(p, sp)
    for _ in range(500):
        metaplastic_bn_update(p, g, sp, lr=0.01, betas=(B1, B2), eps=EPS, m_star=3.0, scale=0.5)
        metaplastic_bn_update(q, g, sq, lr=0.01, betas=(B1, B2), eps=EPS, m_star=3.0, scale=0.5)  # no ref
    assert float(q.abs().max()) > 4.9
    assert float(p.abs().max()) < 0.5


# ---------------------------------------------------------------------------- importance
class RefImportance:
    """The importance-aware rule (``optim_importance``), element by element."""

    def __init__(self, w: np.ndarray, q: np.ndarray, lr: float, scale: float) -> None:
        self.w = w.astype(np.float64).copy()
        self.h = np.zeros_like(self.w)
        self.q = q.astype(np.float64)
        self.lr, self.scale = lr, scale
        self.adam = RefAdam(w.size)

    def nearest(self, w: float) -> int:
        d = np.abs(self.q - w)
        return int(np.flatnonzero(d == d.min())[0])

    def interval(self, w: float, k: int) -> float:
        q = self.q
        if w >= q[k]:
            return float(q[k + 1] - q[k]) if k + 1 < q.size else float(q[k] - q[k - 1])
        return float(q[k] - q[k - 1]) if k > 0 else float(q[1] - q[0])

    def step(self, g: np.ndarray, m_star: float) -> None:
        u = self.adam.u(g)
        for i in range(self.w.size):
            w, h = self.w[i], self.h[i]
            k = self.nearest(w)
            d = w - self.q[k]
            width = self.interval(w, k)
            m_i = m_star * min(1.0, abs(h) / self.scale)
            if u[i] * d < 0:
                w_new = w - self.lr * u[i] * (1 - math.tanh(2 * m_i / width * abs(d) - m_i) ** 2)
            else:
                w_new = w - self.lr * u[i]
            self.w[i] = min(max(w_new, self.q[0]), self.q[-1])
            if u[i] * h > 0:  # the step shrinks |h|
                self.h[i] = h - self.lr * u[i] * (1 - math.tanh(m_star * abs(h) / self.scale) ** 2)
            else:
                self.h[i] = h - self.lr * u[i]


@pytest.mark.parametrize("m_star", [0.0, 3.0])
def test_importance_matches_reference(m_star: float) -> None:
    rng = np.random.default_rng(2)
    n, lr, scale = 200, 0.01, 0.3
    lv = LevelSet(Q_DEFAULT.tolist())
    ref = RefImportance(rng.uniform(-1.4, 1.4, n), Q_DEFAULT, lr, scale)
    state: dict = {}
    push = np.where(np.arange(n) < n // 2, rng.choice([-1.0, 1.0], n), 0.0)  # half consistent, half idle
    for step in range(150):
        g = push + rng.normal(0, 1.0, n)
        w = torch.tensor(ref.w, dtype=torch.float32)
        if "h" in state:
            state["h"] = torch.tensor(ref.h, dtype=torch.float32)
        ref.step(g, m_star)
        importance_update(
            w,
            torch.tensor(g, dtype=torch.float32),
            state,
            lv,
            lr=lr,
            betas=(B1, B2),
            eps=EPS,
            m_star=m_star,
            scale=scale,
        )
        np.testing.assert_allclose(w.numpy(), ref.w, rtol=0, atol=2e-5, err_msg=f"w, step {step}")
        np.testing.assert_allclose(state["h"].numpy(), ref.h, rtol=1e-4, atol=2e-5, err_msg=f"h, step {step}")
        assert torch.equal(state["level_index"], lv.index(w))
    # consistent pushes built a larger |h| than the idle weights' noise
    assert np.median(np.abs(ref.h[: n // 2])) > 3 * np.median(np.abs(ref.h[n // 2 :]))


def test_importance_frees_idle_weights_that_algorithm1_holds() -> None:
    """A weight on a level with h = 0 moves freely under the importance rule; Algorithm 1 holds it."""
    lv = LevelSet(Q_DEFAULT.tolist())
    q3 = float(Q_DEFAULT[11])
    w_imp = torch.full((16,), q3 + 0.01)
    w_pap = w_imp.clone().requires_grad_(False)
    p = torch.nn.Parameter(w_pap)
    p.metaplastic = True  # type: ignore[attr-defined]
    paper = MetaplasticAdam([p], lv, lr=1e-3, m_star=3.0)
    state: dict = {}
    g = -torch.ones(16)  # pushes every weight up, away from its level
    for _ in range(40):
        p.grad = g.clone()
        paper.step()
        importance_update(w_imp, g, state, lv, lr=1e-3, betas=(B1, B2), eps=EPS, m_star=3.0, scale=0.5)
        state["h"].zero_()  # an idle weight: no accumulated importance
    assert float(w_imp.mean() - q3) > 3 * float(p.detach().mean() - q3)


# ---------------------------------------------------------------------------- the combining optimizer
def _model(bn_mode: str = "shared") -> QMLP:
    torch.manual_seed(0)
    m = QMLP(hidden=12, n_in=20, n_out=10, n_tasks=2, bn_mode=bn_mode)
    for layer in m.layers:
        layer.weight.data.uniform_(-1, 1)
        layer.w_used.copy_(layer.weight.data)
    return m


def test_build_optimizer_keeps_the_paper_rule_by_default() -> None:
    lv = LevelSet(Q_DEFAULT.tolist())
    opt = build_optimizer(TrainConfig(), _model(), lv)
    assert type(opt) is MetaplasticAdam
    cfg = TrainConfig(bn_mode="shared", bn_consolidate="meta-batch", consolidation="importance")
    assert isinstance(build_optimizer(cfg, _model(), lv), ConsolidatingAdam)


def test_consolidating_adam_steps_each_parameter_by_its_rule() -> None:
    """Every parameter of a real QMLP: importance for hidden weights, metaplastic BN for BN, each equal to
    the rule applied alone to a copy."""
    lv = LevelSet(Q_DEFAULT.tolist())
    model = _model()
    opt = ConsolidatingAdam(
        model.parameters(), lv, lr=0.01, m_star=3.0, weights="importance", importance_scale=0.5, bn=True, bn_scale=0.2
    )
    copies = {id(p): (p.detach().clone(), {}) for p in model.parameters()}
    x = torch.randn(32, 20)
    y = torch.randint(0, 10, (32,))
    for step in range(12):
        if step == 4:
            opt.consolidate()
            for p in model.bn_parameters():
                set_reference(copies[id(p)][0], copies[id(p)][1])
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        kw = dict(lr=0.01, betas=(B1, B2), eps=EPS, m_star=3.0)
        for p in model.hidden_weights():
            c, st = copies[id(p)]
            importance_update(c, p.grad, st, lv, scale=0.5, **kw)
        for p in model.bn_parameters():
            c, st = copies[id(p)]
            metaplastic_bn_update(c, p.grad, st, scale=0.2, **kw)
        opt.step()
        for p in model.parameters():
            assert torch.equal(p.detach(), copies[id(p)][0]), (
                f"step {step} {tuple(p.shape)} {(p.detach() - copies[id(p)][0]).abs().max()}"
            )
    # the importance variables survive a new optimizer (Adam reset at a task switch) and a state_dict trip
    new = build_optimizer(
        TrainConfig(bn_mode="shared", bn_consolidate="meta-batch", consolidation="importance"), model, lv, opt
    )
    w0 = model.hidden_weights()[0]
    assert torch.equal(new.state[w0]["h"], opt.state[w0]["h"])
    again = ConsolidatingAdam(model.parameters(), lv, lr=0.01, weights="importance", bn=True)
    again.load_state_dict(opt.state_dict())
    assert torch.equal(again.state[w0]["h"], opt.state[w0]["h"])
    b0 = model.bn_parameters()[0]
    assert torch.equal(again.state[b0]["ref"], opt.state[b0]["ref"])


# ---------------------------------------------------------------------------- frozen BN statistics
def test_freeze_statistics_layer_by_layer() -> None:
    model, plain = _model(), _model()
    use_frozen_stats_bn(model)
    x = torch.randn(250, 20) * 2 + 0.5
    assert not stats_frozen(model)
    assert torch.equal(model(x[:50]), plain(x[:50]))  # not frozen yet: the default BN (batch statistics)
    freeze_statistics(model, x, batch=64)
    assert stats_frozen(model)
    # reference: numpy, layer after layer with the frozen BNs below
    a = x.numpy().astype(np.float64)
    for i, (layer, bn) in enumerate(zip(model.layers, model.bns[0], strict=True)):
        z = a @ layer.w_used.numpy().astype(np.float64).T
        mean, var = z.mean(0), z.var(0)
        np.testing.assert_allclose(bn.running_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(bn.running_var.numpy(), var, rtol=1e-4, atol=1e-5)
        a = (z - mean) / np.sqrt(var + bn.eps) * bn.weight.detach().numpy() + bn.bias.detach().numpy()
        if i < 2:
            a = np.maximum(a, 0)
    # frozen: one sample gives what it gives in a batch (no dependence on the batch), in train mode too
    model.train()
    np.testing.assert_allclose(model(x[:1]).detach().numpy(), a[:1], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(model(x[:7])[3:4].detach().numpy(), a[3:4], rtol=1e-3, atol=1e-4)
    # the flag travels with the state dict
    other = _model()
    use_frozen_stats_bn(other)
    other.load_state_dict(model.state_dict())
    assert stats_frozen(other)
    assert all(isinstance(bn, FrozenStatsBatchNorm1d) for bn in other.bns[0])


def test_begin_task_freezes_once_and_sets_references() -> None:
    lv = LevelSet(Q_DEFAULT.tolist())
    cfg = TrainConfig(bn_mode="shared", bn_consolidate="meta-frozen")
    model = _model()
    use_frozen_stats_bn(model)
    opt = build_optimizer(cfg, model, lv)
    calls = []
    x, y = torch.randn(100, 20), torch.randint(0, 10, (100,))
    begin_task(cfg, model, opt, lambda: calls.append(1) or (x, y), 0)
    assert stats_frozen(model) and calls == [1]
    b0 = model.bn_parameters()[0]
    assert torch.equal(opt.state[b0]["ref"], b0.detach())
    begin_task(cfg, model, opt, lambda: calls.append(2) or (x, y), 1)
    assert calls == [1]  # the first task's statistics stay


# ---------------------------------------------------------------------------- Fisher-weighted
class RefFisher(RefImportance):
    """The Fisher-weighted rule (``optim_fisher``), element by element: Eq. 2 with m_i = m* s_i, s fixed."""

    def __init__(self, w: np.ndarray, q: np.ndarray, lr: float, s: np.ndarray) -> None:
        super().__init__(w, q, lr, scale=1.0)
        self.s = s.astype(np.float64)

    def step(self, g: np.ndarray, m_star: float) -> None:
        u = self.adam.u(g)
        for i in range(self.w.size):
            w = self.w[i]
            k = self.nearest(w)
            d = w - self.q[k]
            m_i = m_star * self.s[i]
            if u[i] * d < 0:
                w = w - self.lr * u[i] * (1 - math.tanh(2 * m_i / self.interval(w, k) * abs(d) - m_i) ** 2)
            else:
                w = w - self.lr * u[i]
            self.w[i] = min(max(w, self.q[0]), self.q[-1])


@pytest.mark.parametrize("m_star", [0.0, 3.0, 10.0])
def test_fisher_rule_matches_reference(m_star: float) -> None:
    rng = np.random.default_rng(3)
    n, lr = 200, 0.01
    lv = LevelSet(Q_DEFAULT.tolist())
    s = np.where(rng.random(n) < 0.3, 1.0, rng.random(n) * 0.5)
    ref = RefFisher(rng.uniform(-1.4, 1.4, n), Q_DEFAULT, lr, s)
    state: dict = {"strength": torch.tensor(s, dtype=torch.float32)}
    n_away = 0
    for step in range(150):
        g = rng.choice([-1.0, 1.0], n) * 0.5 + rng.normal(0, 1.0, n)
        w = torch.tensor(ref.w, dtype=torch.float32)
        ref.step(g, m_star)
        away = fisher_update(
            w, torch.tensor(g, dtype=torch.float32), state, lv, lr=lr, betas=(B1, B2), eps=EPS, m_star=m_star
        )
        n_away += int(away.sum())
        np.testing.assert_allclose(w.numpy(), ref.w, rtol=0, atol=2e-5, err_msg=f"w, step {step}")
        assert torch.equal(state["level_index"], lv.index(w))
    assert (n_away > 0) == (m_star > 0)


def test_fisher_rule_holds_strong_weights_and_frees_the_rest() -> None:
    """The same push moves a weight of strength 0 as plain Adam on the levels, and barely moves one of
    strength 1 (at m* = 10)."""
    lv = LevelSet(Q_DEFAULT.tolist())
    q = float(Q_DEFAULT[11])
    w = torch.full((16,), q + 0.01)
    state: dict = {"strength": torch.cat([torch.ones(8), torch.zeros(8)])}
    for _ in range(60):
        fisher_update(w, -torch.ones(16), state, lv, lr=1e-3, betas=(B1, B2), eps=EPS, m_star=10.0)
    held, free = float(w[:8].mean() - q), float(w[8:].mean() - q)
    assert free > 0.05 and held < 0.02 and free > 5 * held


def test_strength_from_fisher_holds_the_given_fraction() -> None:
    f = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    s = strength_from_fisher(f, 0.2)  # the two largest held in full; theta = 8
    np.testing.assert_allclose(s.numpy(), np.minimum(1.0, f.numpy() / 8.0))
    assert int((strength_from_fisher(f, 0.5) == 1).sum()) == 5
    assert torch.equal(strength_from_fisher(torch.tensor([0.0, 0.0, 3.0, 0.0]), 0.75), torch.tensor([0.0, 0, 1, 0]))


def test_fisher_information_matches_a_plain_loop() -> None:
    """Against backward() per mini-batch on the same seeded subset; the model's mode and gradients are left
    as they were."""
    model = _model()
    x, y = torch.randn(260, 20), torch.randint(0, 10, (260,))
    model.train()
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    fisher = fisher_information(model, x, y, seed=5, samples=200)
    assert model.training
    assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in model.parameters())

    ref = [np.zeros(tuple(p.shape)) for p in model.hidden_weights()]
    order = np.random.default_rng(5).permutation(260)[:200]
    model.eval()
    n_batches = 200 // FISHER_BATCH
    for b in range(n_batches):
        sel = torch.from_numpy(order[b * FISHER_BATCH : (b + 1) * FISHER_BATCH])
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x[sel]), y[sel]).backward()
        for r, p in zip(ref, model.hidden_weights(), strict=True):
            r += p.grad.double().numpy() ** 2
    for f, r in zip(fisher, ref, strict=True):
        np.testing.assert_allclose(f.numpy(), r / n_batches, rtol=1e-4, atol=1e-12)


def test_begin_task_with_fisher_raises_strengths_and_keeps_them() -> None:
    lv = LevelSet(Q_DEFAULT.tolist())
    cfg = TrainConfig(bn_mode="shared", bn_consolidate="meta-frozen", consolidation="fisher", fisher_hold=0.25)
    model = _model()
    use_frozen_stats_bn(model)
    opt = build_optimizer(cfg, model, lv)
    assert isinstance(opt, ConsolidatingAdam) and opt.weights == "fisher"
    x, y = torch.randn(300, 20), torch.randint(0, 10, (300,))
    begin_task(cfg, model, opt, lambda: (x, y), 0)
    w = model.hidden_weights()
    s1 = [opt.state[p]["strength"].clone() for p in w]
    for p, s in zip(w, s1, strict=True):  # a quarter of each layer held in full
        assert int((s == 1).sum()) == round(0.25 * p.numel()) and float(s.min()) >= 0
    # the next task's optimizer keeps them; the next switch only raises them (the max over tasks)
    opt2 = build_optimizer(cfg, model, lv, opt)
    assert all(torch.equal(opt2.state[p]["strength"], s) for p, s in zip(w, s1, strict=True))
    x2 = torch.randn(300, 20) * 3
    begin_task(cfg, model, opt2, lambda: (x2, y), 1)
    s2 = [opt2.state[p]["strength"] for p in w]
    assert all(bool((b >= a).all()) for a, b in zip(s1, s2, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(s1, s2, strict=True))
    again = ConsolidatingAdam(model.parameters(), lv, lr=0.01, weights="fisher")
    again.load_state_dict(opt2.state_dict())
    assert torch.equal(again.state[w[0]]["strength"], s2[0])


# ---------------------------------------------------------------------------- gradient projection
def test_extend_basis_holds_the_asked_energy_with_the_fewest_vectors() -> None:
    rng = np.random.default_rng(4)
    # inputs in a low-dimensional subspace, plus a little noise: a few directions hold most of the energy
    a = rng.normal(0, 1, (300, 6)) @ rng.normal(0, 1, (6, 40)) + rng.normal(0, 0.05, (300, 40))
    x = torch.tensor(a, dtype=torch.float32)
    for energy in (0.5, 0.9, 0.99):
        u = extend_basis(None, x, energy).double().numpy()
        assert np.allclose(u.T @ u, np.eye(u.shape[1]), atol=1e-5)
        s = np.linalg.svd(a.T, compute_uv=False) ** 2
        k_ref = int(np.searchsorted(np.cumsum(s) / s.sum(), energy)) + 1  # the fewest top directions
        assert u.shape[1] == k_ref
        held = np.sum((u.T @ a.T) ** 2) / np.sum(a * a)
        assert held >= energy - 1e-6
    # a second task: only what the first basis does not hold is added; the old columns stay
    u1 = extend_basis(None, x, 0.9)
    b = rng.normal(0, 1, (300, 3)) @ rng.normal(0, 1, (3, 40))
    u2 = extend_basis(u1, torch.tensor(b, dtype=torch.float32), 0.9)
    assert torch.equal(u2[:, : u1.shape[1]], u1) and u2.shape[1] > u1.shape[1]
    u2d = u2.double().numpy()
    assert np.allclose(u2d.T @ u2d, np.eye(u2d.shape[1]), atol=1e-4)
    assert np.sum((u2d.T @ b.T) ** 2) / np.sum(b * b) >= 0.9 - 1e-5
    assert extend_basis(u2, torch.tensor(b, dtype=torch.float32), 0.9).shape == u2.shape  # nothing to add


def test_a_projected_step_leaves_old_outputs_alone() -> None:
    """SGD with the projected gradient changes W x for new inputs and not for the inputs the basis spans."""
    rng = np.random.default_rng(5)
    old = torch.tensor(rng.normal(0, 1, (200, 4)) @ rng.normal(0, 1, (4, 30)), dtype=torch.float32)
    new = torch.randn(50, 30)
    basis = extend_basis(None, old, 0.999)
    w = torch.randn(8, 30)
    g = torch.randn(8, 30)
    project_(g, basis)
    assert float((g @ basis).abs().max()) < 1e-5
    w2 = w - 0.5 * g
    assert torch.allclose(old @ w2.T, old @ w.T, atol=1e-3)
    assert not torch.allclose(new @ w2.T, new @ w.T, atol=1e-1)


def test_layer_inputs_are_what_each_layer_reads() -> None:
    model = _model()
    use_frozen_stats_bn(model)
    x = torch.randn(120, 20)
    freeze_statistics(model, x, batch=64)
    model.train()
    seen = layer_inputs(model, x, seed=3, samples=80)
    assert model.training and [a.shape for a in seen] == [(80, 20), (80, 12), (80, 12)]
    sel = torch.from_numpy(np.random.default_rng(3).permutation(120)[:80])
    a = x[sel]
    for i, (layer, bn) in enumerate(zip(model.layers, model.bns[0], strict=True)):
        assert torch.allclose(seen[i], a, atol=1e-5)
        a = torch.relu(bn(layer(a))) if i < 2 else a


def test_consolidating_adam_projects_before_the_paper_rule() -> None:
    """With bases, the hidden weights step as MetaplasticAdam does on the projected gradient."""
    lv = LevelSet(Q_DEFAULT.tolist())
    model, twin = _model(), _model()
    opt = ConsolidatingAdam(model.parameters(), lv, lr=0.01, m_star=3.0, projection=True)
    ref = MetaplasticAdam(twin.parameters(), lv, lr=0.01, m_star=3.0)
    x = torch.randn(64, 20)
    y = torch.randint(0, 10, (64,))
    opt.extend_bases(layer_inputs(model, x[:32]), 0.9)
    bases = [opt.state[p]["basis"] for p in model.hidden_weights()]
    assert all(b.shape[1] > 0 for b in bases)
    for _ in range(5):
        for m in (model, twin):
            m.zero_grad()
            torch.nn.functional.cross_entropy(m(x), y).backward()
        for p, b in zip(twin.hidden_weights(), bases, strict=True):
            p.grad -= (p.grad @ b) @ b.T
        opt.step()
        ref.step()
        for p, q in zip(model.parameters(), twin.parameters(), strict=True):
            assert torch.allclose(p.detach(), q.detach(), atol=1e-6)
    # the bases survive a new optimizer and a state_dict trip
    cfg = TrainConfig(bn_mode="shared", projection_energy=0.9)
    new = build_optimizer(cfg, model, lv, opt)
    assert isinstance(new, ConsolidatingAdam) and new.projection
    assert torch.equal(new.state[model.hidden_weights()[1]]["basis"], bases[1])
    again = ConsolidatingAdam(model.parameters(), lv, lr=0.01, projection=True)
    again.load_state_dict(opt.state_dict())
    assert torch.equal(again.state[model.hidden_weights()[2]]["basis"], bases[2])


def test_begin_task_with_projection_grows_the_bases() -> None:
    lv = LevelSet(Q_DEFAULT.tolist())
    cfg = TrainConfig(bn_mode="shared", bn_consolidate="meta-frozen", projection_energy=0.9)
    model = _model()
    use_frozen_stats_bn(model)
    opt = build_optimizer(cfg, model, lv)
    x1 = torch.randn(300, 20)
    x1[:, 10:] = 0  # the first task uses half the input pixels
    y = torch.randint(0, 10, (300,))
    begin_task(cfg, model, opt, lambda: (x1, y), 0)
    w = model.hidden_weights()
    k1 = [opt.state[p]["basis"].shape[1] for p in w]
    assert 0 < k1[0] <= 10
    begin_task(cfg, model, opt, lambda: (torch.randn(300, 20), y), 1)
    k2 = [opt.state[p]["basis"].shape[1] for p in w]
    assert k2[0] > k1[0] and all(b >= a for a, b in zip(k1, k2, strict=True))
