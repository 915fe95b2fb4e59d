"""The fast metaplastic steps (the numba kernel; torch, in place, lookup tables) against a plain reading
of Algorithm 1.

``ReferenceAlgorithm1`` is written for clarity, not speed: a Python loop over weights, the nearest level
by argmin over all levels, the interval from the neighbouring levels, M in float64. Both run the same
gradient sequence for many steps on unequally spaced level sets and several m*, and after every step the
hidden weights must agree to float tolerance. The rule is discontinuous where W_H sits on its level (the
sign of U * (W_H - W_S) switches M on or off), so rounding differences there could grow without bound over
a trajectory; the fast optimizer therefore restarts each step from the reference's weights, while its Adam
moments run free over the whole sequence.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch

from hwloop.chip.default_table import default_table
from hwloop.training.levels import LevelSet
from hwloop.training.optim import MetaplasticAdam

Q_DEFAULT, _ = default_table().weight_levels()
# an asymmetric set with a narrow interval next to a wide one
Q_ODD = np.array([-1.5, -1.1, -0.35, -0.3, 0.0, 0.12, 0.6, 0.65, 1.5], dtype=np.float32)


class ReferenceAlgorithm1:
    """Algorithm 1 of the paper, element by element: Adam's U, W_S, M (Eq. 2), the attenuation, the clamp."""

    def __init__(
        self, w: np.ndarray, q: np.ndarray, lr: float, m_star: float, betas=(0.9, 0.999), eps: float = 1e-8
    ) -> None:
        self.w = w.astype(np.float32).copy()
        self.q = q.astype(np.float32)
        self.lr, self.m_star, self.betas, self.eps = lr, m_star, betas, eps
        self.m = np.zeros_like(self.w)
        self.v = np.zeros_like(self.w)
        self.t = 0

    def nearest(self, w: float) -> int:
        d = np.abs(self.q - w)
        return int(np.flatnonzero(d == d.min())[0])  # a tie (w on a midpoint) goes to the lower level

    def interval(self, w: float, k: int) -> float:
        """Width of the interval between adjacent levels holding w (k its nearest level)."""
        q = self.q
        if w >= q[k]:
            return float(q[k + 1] - q[k]) if k + 1 < q.size else float(q[k] - q[k - 1])
        return float(q[k] - q[k - 1]) if k > 0 else float(q[1] - q[0])

    def step(self, g: np.ndarray) -> None:
        b1, b2 = self.betas
        self.t += 1
        self.m = b1 * self.m + (1 - b1) * g
        self.v = b2 * self.v + (1 - b2) * g * g
        u_all = (self.m / (1 - b1**self.t)) / (np.sqrt(self.v / (1 - b2**self.t)) + self.eps)
        w = self.w
        for j in range(w.size):
            u = float(u_all[j])
            w_h = float(w[j])
            if self.m_star > 0:
                k = self.nearest(w_h)
                w_s = float(self.q[k])
                if u * (w_h - w_s) < 0:  # this step moves W_H away from W_S
                    width = self.interval(w_h, k)
                    u *= 1.0 - np.tanh(2.0 * self.m_star / width * abs(w_h - w_s) - self.m_star) ** 2
            w[j] = min(max(w_h - self.lr * u, float(self.q[0])), float(self.q[-1]))


@pytest.mark.parametrize("kernel", ["numba", "torch"])
@pytest.mark.parametrize("q", [Q_DEFAULT, Q_ODD], ids=["default-17", "odd-9"])
@pytest.mark.parametrize("m_star", [0.0, 1.5, 3.0, 6.0])
def test_fast_step_matches_reference(q: np.ndarray, m_star: float, kernel: str) -> None:
    rng = np.random.default_rng(int(10 * m_star) + q.size)
    n, steps, lr = 300, 200, 2e-2
    w0 = rng.uniform(q[0], q[-1], n).astype(np.float32)
    bias = rng.normal(0, 0.5, n).astype(np.float32)  # a steady drift so weights cross levels and midpoints
    ref = ReferenceAlgorithm1(w0, q, lr, m_star)
    p = torch.nn.Parameter(torch.from_numpy(w0.copy()).view(15, 20))
    p.metaplastic = True  # type: ignore[attr-defined]
    opt = MetaplasticAdam([p], LevelSet(q), lr=lr, m_star=m_star, kernel=kernel)
    crossed = np.zeros(n, dtype=bool)
    attenuated = 0
    lv = LevelSet(q)
    k0 = lv.index_np(w0)
    for s in range(steps):
        g = (rng.standard_normal(n).astype(np.float32) + bias) * np.float32(rng.uniform(0.1, 3))
        with torch.no_grad():
            p.copy_(torch.from_numpy(ref.w).view(15, 20))
        opt.state[p].pop("level_index", None) if s % 7 == 0 else None  # also exercise the index carried over
        ref.step(g)
        p.grad = torch.from_numpy(g.copy()).view(15, 20)
        opt.step()
        attenuated += opt.attenuated
        fast = p.detach().numpy().reshape(-1)
        np.testing.assert_allclose(fast, ref.w, rtol=0, atol=1e-6, err_msg=f"step {s + 1}")
        crossed |= lv.index_np(ref.w) != k0
    np.testing.assert_array_equal(opt.level_index(p).numpy().reshape(-1), lv.index_np(fast))
    # the index the optimizer keeps is the nearest level of the weights it holds
    np.testing.assert_array_equal(opt.level_index(p).numpy().reshape(-1), LevelSet(q).index_np(fast))
    assert crossed.mean() > 0.2, "too few weights changed level for the test to mean anything"
    if m_star > 0:
        assert 0.1 < attenuated / (n * steps) < 0.9


@pytest.mark.parametrize("kernel", ["numba", "torch"])
def test_attenuation_slows_weights_near_their_level(kernel: str) -> None:
    """The reference and the fast step both freeze weights near a level at high m* (the test can fail)."""
    q = Q_DEFAULT
    w0 = (q[5:15] + 0.01).astype(np.float32)
    g = -np.ones_like(w0)  # U = -1: every weight moves up, away from its level
    p = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    p.metaplastic = True  # type: ignore[attr-defined]
    opt = MetaplasticAdam([p], LevelSet(q), lr=1e-2, m_star=6.0, kernel=kernel)
    ref = ReferenceAlgorithm1(w0, q, 1e-2, 6.0)
    p.grad = torch.from_numpy(g.copy())
    opt.step()
    ref.step(g)
    moved = p.detach().numpy() - w0
    # the steps are ~1e-6: compare them to 1e-4 relative, plus one float32 ulp of the weights they moved
    np.testing.assert_allclose(moved, ref.w - w0, rtol=1e-4, atol=float(np.spacing(np.float32(1.0))))
    assert np.all(moved < 1e-3 * 1e-2 * 10) and opt.attenuated == w0.size


def test_index_matches_plain_count_on_ties_and_non_finite() -> None:
    for q in (Q_DEFAULT, Q_ODD):
        lv = LevelSet(q)
        w = np.random.default_rng(0).uniform(q[0] - 0.5, q[-1] + 0.5, 200_000).astype(np.float32)
        m = lv.mid_np
        extra = np.concatenate(
            [
                m,
                np.nextafter(m, np.float32(9)),
                np.nextafter(m, np.float32(-9)),
                q,
                np.array([np.nan, np.inf, -np.inf, 1e30, -1e30], np.float32),
            ]
        )
        w = np.concatenate([w, extra]).astype(np.float32)
        np.testing.assert_array_equal(lv.index(torch.from_numpy(w)).numpy(), lv.index_np(w))


@pytest.mark.parametrize("q", [Q_DEFAULT, Q_ODD], ids=["default-17", "odd-9"])
@pytest.mark.parametrize("m_star", [0.0, 3.0])
def test_compiled_step_matches_reference(q: np.ndarray, m_star: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fused ``torch.compile`` path (used on large networks) against the same reference; skipped, with
    its reason, where this machine has no working compiler (the eager path above is what runs then)."""
    import hwloop.training.optim as optim

    class Compiled(MetaplasticAdam):
        def __init__(self, *a, **k) -> None:
            super().__init__(*a, compile="always", **k)

    probe = torch.nn.Parameter(torch.zeros(4))
    probe.metaplastic = True  # type: ignore[attr-defined]
    probe.grad = torch.ones(4)
    opt = Compiled([probe], LevelSet(q), lr=1e-2, m_star=m_star, kernel="torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a missing compiler warns once, then skips below
        opt.step()
    if not opt.compiled:
        pytest.skip("torch.compile is not available here; the eager step is the one in use")
    monkeypatch.setattr(sys.modules[__name__], "MetaplasticAdam", Compiled)
    test_fast_step_matches_reference(q, m_star, "torch")
    assert optim._COMPILED.get("rule") is not None
