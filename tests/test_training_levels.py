"""Training layer: the 17 weight levels, the hidden weights' initialisation and the metaplastic rule (Algorithm 1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hwloop.chip.default_table import default_table
from hwloop.training.levels import LevelSet
from hwloop.training.optim import MetaplasticAdam, metaplastic_factor

Q, SCALE_US = default_table().weight_levels()


# ---------------------------------------------------------------------------- levels and rule
def test_levels_are_17_unequal_in_range() -> None:
    assert Q.size == 17
    assert Q[0] == pytest.approx(-1.5) and Q[-1] == pytest.approx(1.5) and Q[8] == 0.0
    gaps = np.diff(Q)
    assert gaps.max() - gaps.min() > 0.01  # unequally spaced
    np.testing.assert_allclose(Q, -Q[::-1])


def test_nearest_level_matches_brute_force() -> None:
    lv = LevelSet(Q)
    w = np.random.default_rng(0).uniform(-1.7, 1.7, 100_000)
    brute = np.argmin(np.abs(w[:, None] - Q[None, :]), axis=1)
    np.testing.assert_array_equal(lv.index_np(w.astype(np.float32)), brute)
    # exact ties at a midpoint go to the lower level
    np.testing.assert_array_equal(lv.index_np(lv.mid_np), np.arange(16))


def test_interval_width_is_the_interval_holding_w() -> None:
    lv = LevelSet(Q)
    w = np.random.default_rng(1).uniform(-1.5, 1.5, 10_000).astype(np.float32)
    i = np.clip(np.searchsorted(Q, w, side="right") - 1, 0, 15)
    expected = Q[i + 1] - Q[i]
    np.testing.assert_allclose(lv.interval_width_np(w, lv.index_np(w)), expected, rtol=1e-6)


@pytest.mark.parametrize("mode", ["midpoints", "center", "uniform"])
def test_hidden_weight_initialisation(mode: str) -> None:
    """midpoints: Gaussians on the midpoints of all 16 intervals, about equally often; center: only the two
    intervals next to zero; uniform: spread over [-1.5, 1.5]. All stay inside the outer levels."""
    from hwloop.training.init import init_hidden
    from hwloop.training.model import QMLP

    lv = LevelSet(Q)
    model = QMLP(hidden=64)
    init_hidden(model, lv, mode, torch.Generator().manual_seed(0))
    w = torch.cat([p.detach().reshape(-1) for p in model.hidden_weights()]).numpy()
    assert w.min() >= Q[0] and w.max() <= Q[-1]
    interval = np.clip(np.searchsorted(Q, w, side="right") - 1, 0, 15)
    counts = np.bincount(interval, minlength=16) / w.size
    if mode == "center":
        # centred on the midpoints +-Q_1/2 with sigma = Q_1/8: beyond +-Q_1 only past 4 sigma (6e-5)
        assert counts[7] + counts[8] > 0.999 and counts[7] == pytest.approx(0.5, abs=0.01)
        assert np.median(np.abs(w)) == pytest.approx(Q[9] / 2, rel=0.02)
    elif mode == "midpoints":
        assert np.all(np.abs(counts - 1 / 16) < 0.01), counts
    else:
        np.testing.assert_allclose(counts, np.diff(Q) / 3.0, atol=0.01)
    if mode == "midpoints":
        rel = np.abs(w - (Q[interval] + Q[interval + 1]) / 2) / (Q[interval + 1] - Q[interval])
        assert np.quantile(rel, 0.95) < 0.26  # about 1.96 sigma = 0.245 of the interval width


def test_m_star_zero_is_plain_adam() -> None:
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.empty(50, 20).uniform_(-1, 1))
    a.metaplastic = True  # type: ignore[attr-defined]
    b = torch.nn.Parameter(a.detach().clone())
    opt_a = MetaplasticAdam([a], LevelSet(Q), lr=1e-2, m_star=0.0, clamp=False)
    opt_b = torch.optim.Adam([b], lr=1e-2)
    for _ in range(5):
        g = torch.randn(50, 20)
        a.grad, b.grad = g.clone(), g.clone()
        opt_a.step()
        opt_b.step()
    torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)


def test_metaplastic_rule_attenuates_only_steps_away_from_the_level() -> None:
    lv = LevelSet(Q)
    m_star, lr = 3.0, 1e-2
    w0 = torch.tensor([Q[10] + 0.01, Q[10] + 0.01, Q[10] - 0.02, Q[10] - 0.02], dtype=torch.float32)
    # Adam's first step is sign(g): w moves by -lr*sign(g)
    g = torch.tensor([-1.0, 1.0, 1.0, -1.0])  # away, toward, away, toward
    p = torch.nn.Parameter(w0.clone())
    p.metaplastic = True  # type: ignore[attr-defined]
    opt = MetaplasticAdam([p], lv, lr=lr, m_star=m_star)
    p.grad = g
    opt.step()
    step = (p.detach() - w0).numpy()
    ws = np.full(4, Q[10], dtype=np.float32)
    width = np.array([Q[11] - Q[10]] * 2 + [Q[10] - Q[9]] * 2, dtype=np.float32)
    m = 1.0 - np.tanh(2 * m_star / width * np.abs(w0.numpy() - ws) - m_star) ** 2
    expected = -lr * np.sign(g.numpy()) * np.where([True, False, True, False], m, 1.0)
    np.testing.assert_allclose(step, expected, rtol=1e-3, atol=1e-7)
    assert opt.attenuated == 2
    assert m[0] < 0.05  # near a level the rule nearly freezes the weight


def test_metaplastic_factor_peaks_at_midpoint() -> None:
    width = np.float32(0.2)
    f = metaplastic_factor(np.array([0.0, 0.05, 0.1], np.float32), np.zeros(3, np.float32), width, 3.0)
    assert f[2] == pytest.approx(1.0) and f[0] < f[1] < f[2]


def test_other_parameters_get_torch_adam() -> None:
    """Batch-norm-like parameters (not metaplastic, several sizes) follow torch.optim.Adam, also when they
    are at different step counts (a task's BN joining later) and when one has no gradient."""
    torch.manual_seed(1)
    shapes = [(7,), (7,), (3,), (3,)]
    a = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    opt_a = MetaplasticAdam(a, LevelSet(Q), lr=1e-2, m_star=3.0)
    opt_b = torch.optim.Adam(b, lr=1e-2, foreach=False)
    for s in range(8):
        for i, (pa, pb) in enumerate(zip(a, b, strict=True)):
            live = i < 2 or s >= 3  # the last two start later; a None grad is skipped by both
            g = torch.randn(pa.shape) if live else None
            pa.grad, pb.grad = g, None if g is None else g.clone()
        opt_a.step()
        opt_b.step()
        for pa, pb in zip(a, b, strict=True):
            torch.testing.assert_close(pa.detach(), pb.detach(), rtol=1e-6, atol=1e-7)
    assert opt_a.state[a[0]]["step"] == 8 and opt_a.state[a[3]]["step"] == 5
