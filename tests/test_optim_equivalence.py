"""The fast metaplastic steps (the numba kernel; torch, in place, lookup tables) against a plain reading
of Algorithm 1.

``ReferenceAlgorithm1`` is written for clarity, not speed: a Python loop over weights, the nearest level
by argmin over all levels, the interval from the neighbouring levels, M in float64. Both run the same
gradient sequence for many steps on unequally spaced level sets and several m*, and after every step the
hidden weights must agree to float tolerance. The rule is discontinuous where W_H sits on its level (the
sign of U * (W_H - W_S) switches M on or off), so rounding differences there could grow without bound over
a trajectory; the fast optimizer therefore restarts each step from the reference's weights, while its Adam
moments run free over the whole sequence.

The reference also reads the two options of the Fashion-MNIST gap study (docs/training.md): W_S taken from
the weight read from the chip (``ws_source="read"``; I stays the nominal interval holding W_H), and the
clamp of W_H (``hard``, ``none``, ``soft``: past an outer level an outward step is also scaled by
1 - tanh^2(m* |W_H - Q_outer| / I_outer)).
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
    """Algorithm 1 of the paper, element by element: Adam's U, W_S, M (Eq. 2), the attenuation, the clamp.

    ``clamp``: "hard" (to [Q_0, Q_n]), "none", or "soft". ``step(g, w_read)``: with ``w_read`` given, W_S is
    the read weight instead of the nominal level (``ws_source="read"``)."""

    def __init__(
        self,
        w: np.ndarray,
        q: np.ndarray,
        lr: float,
        m_star: float,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        clamp: str = "hard",
    ) -> None:
        self.w = w.astype(np.float32).copy()
        self.q = q.astype(np.float32)
        self.lr, self.m_star, self.betas, self.eps = lr, m_star, betas, eps
        self.clamp = clamp
        self.soft_scaled = 0  # outward steps past an outer level that the soft clamp scaled
        self.ws_flips = 0  # steps whose sign test the read W_S decided otherwise than the nominal one
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

    def overshoot(self, w: float) -> float:
        """How far w lies past an outer level, in units of the interval next to it (signed; 0 inside)."""
        q = self.q
        if w > q[-1]:
            return (w - float(q[-1])) / float(q[-1] - q[-2])
        if w < q[0]:
            return (w - float(q[0])) / float(q[1] - q[0])
        return 0.0

    def step(self, g: np.ndarray, w_read: np.ndarray | None = None) -> None:
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
                w_s = float(self.q[k]) if w_read is None else float(w_read[j])
                self.ws_flips += (u * (w_h - w_s) < 0) != (u * (w_h - float(self.q[k])) < 0)
                if u * (w_h - w_s) < 0:  # this step moves W_H away from W_S
                    width = self.interval(w_h, k)  # the nominal interval holding W_H, whatever W_S is
                    u *= 1.0 - np.tanh(2.0 * self.m_star / width * abs(w_h - w_s) - self.m_star) ** 2
                x = self.overshoot(w_h)
                if self.clamp == "soft" and u * x < 0:  # an outward step past an outer level
                    u *= 1.0 - np.tanh(self.m_star * abs(x)) ** 2
                    self.soft_scaled += 1
            new = w_h - self.lr * u
            w[j] = min(max(new, float(self.q[0])), float(self.q[-1])) if self.clamp == "hard" else new


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


GAP_OPTIONS = [("read", "hard"), ("nominal", "none"), ("nominal", "soft"), ("read", "soft"), ("read", "none")]


# the CPU kernel at every m*; the torch step (every device off the CPU) at two, to keep the run short
KERNEL_M_STAR = [("numba", m) for m in (0.0, 1.5, 3.0, 6.0)] + [("torch", 0.0), ("torch", 3.0)]


@pytest.mark.parametrize("q", [Q_DEFAULT, Q_ODD], ids=["default-17", "odd-9"])
@pytest.mark.parametrize(("kernel", "m_star"), KERNEL_M_STAR, ids=[f"{k}-{m}" for k, m in KERNEL_M_STAR])
@pytest.mark.parametrize(("ws_source", "clamp"), GAP_OPTIONS, ids=[f"{a}-{b}" for a, b in GAP_OPTIONS])
def test_gap_options_match_reference(q: np.ndarray, m_star: float, ws_source: str, clamp: str, kernel: str) -> None:
    """``ws_source`` and ``clamp_mode`` against the reference over 200 steps. The read weight is the
    nominal level of the weight's last programmed level plus a programming error drawn anew whenever
    the level changes (as a chip's read-back), so W_S differs from the level by up to a quarter interval."""
    rng = np.random.default_rng(int(10 * m_star) + q.size + 100 * len(ws_source + clamp))
    n, steps, lr = 300, 200, 2e-2
    shape = (15, 20)
    w0 = rng.uniform(q[0], q[-1], n).astype(np.float32)
    bias = rng.normal(0, 0.8, n).astype(np.float32)  # a steady drift: weights cross levels and leave the range
    ref = ReferenceAlgorithm1(w0, q, lr, m_star, clamp=clamp)
    lv = LevelSet(q)
    p = torch.nn.Parameter(torch.from_numpy(w0.copy()).view(shape))
    p.metaplastic = True  # type: ignore[attr-defined]
    w_read = torch.zeros(shape)
    opt = MetaplasticAdam([p], lv, lr=lr, m_star=m_star, ws_source=ws_source, clamp_mode=clamp, kernel=kernel)
    if ws_source == "read":
        opt.set_read_weights([(p, w_read)])
    k_prog = lv.index_np(w0)
    err = rng.normal(0, 0.06, n).astype(np.float32)
    outside = 0
    for s in range(steps):
        read = (q[k_prog] + err).astype(np.float32)
        g = (rng.standard_normal(n).astype(np.float32) + bias) * np.float32(rng.uniform(0.1, 3))
        with torch.no_grad():
            p.copy_(torch.from_numpy(ref.w).view(shape))
            w_read.copy_(torch.from_numpy(read).view(shape))
        opt.state[p].pop("level_index", None) if s % 7 == 0 else None
        ref.step(g, read if ws_source == "read" else None)
        p.grad = torch.from_numpy(g.copy()).view(shape)
        opt.step()
        fast = p.detach().numpy().reshape(-1)
        np.testing.assert_allclose(fast, ref.w, rtol=0, atol=2e-6, err_msg=f"step {s + 1}")
        k_new = lv.index_np(ref.w)
        err = np.where(k_new != k_prog, rng.normal(0, 0.06, n), err).astype(np.float32)  # reprogrammed
        k_prog = k_new
        outside += int(np.count_nonzero((ref.w < q[0]) | (ref.w > q[-1])))
    # the index kept is the nearest level, saturated at the outer levels for weights beyond them
    np.testing.assert_array_equal(opt.level_index(p).numpy().reshape(-1), lv.index_np(fast))
    if clamp == "hard":
        assert outside == 0
    else:
        assert outside > 0.01 * n * steps, "too few weights left the level range for the test to mean anything"
    if m_star > 0 and ws_source == "read":
        assert ref.ws_flips > 0.01 * n * steps, "the read W_S never changed the sign test"
    if m_star > 0 and clamp == "soft":
        assert ref.soft_scaled > 0.01 * n * steps, "the soft clamp never scaled a step"


def _first_step(q: np.ndarray, w0: list[float], g: list[float], m_star: float, **kw) -> np.ndarray:
    """The move of one first Adam step (U = sign(g)) of MetaplasticAdam; ``w_read`` kw: read weights."""
    w_read = kw.pop("w_read", None)
    p = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float32))
    p.metaplastic = True  # type: ignore[attr-defined]
    opt = MetaplasticAdam([p], LevelSet(q), lr=1e-2, m_star=m_star, **kw)
    if w_read is not None:
        opt.set_read_weights([(p, torch.tensor(w_read, dtype=torch.float32))])
    p.grad = torch.tensor(g, dtype=torch.float32)
    opt.step()
    return p.detach().numpy().astype(np.float64) - np.asarray(w0, dtype=np.float32)


def test_read_ws_decides_the_sign_test_and_keeps_the_nominal_interval() -> None:
    """Hand-computed cases on the odd level set: level 0.6 has a wide interval below (0.48) and a narrow
    one above (0.05). W_H = 0.59 sits below its level; read weights below or above it."""
    q, m, lr = Q_ODD, 3.0, 1e-2
    w0 = [0.59, 0.59, 0.59]
    g = [-1.0, -1.0, 1.0]  # up, up, down
    read = [0.55, 0.62, 0.62]
    nominal = _first_step(q, w0, g, m)
    got = _first_step(q, w0, g, m, ws_source="read", w_read=read)
    w_h = np.float32(0.59)
    # nominal W_S = 0.6: moving up is toward it (no attenuation); moving down is away, I = 0.48 (below)
    m_nom = 1 - np.tanh(2 * m / 0.48 * abs(w_h - 0.6) - m) ** 2
    np.testing.assert_allclose(nominal, [lr, lr, -lr * m_nom], rtol=1e-4, atol=2e-7)  # float32 moves
    # read W_S = 0.55: up is away, attenuated with |W_H - W_S| = 0.04 and the nominal I = 0.48 (not 0.05)
    m_read = 1 - np.tanh(2 * m / 0.48 * abs(w_h - np.float32(0.55)) - m) ** 2
    # read W_S = 0.62 (above W_H): up is toward (full step); down is away, |d| = 0.03, I still 0.48
    m_read_down = 1 - np.tanh(2 * m / 0.48 * abs(w_h - np.float32(0.62)) - m) ** 2
    np.testing.assert_allclose(got, [lr * m_read, lr, -lr * m_read_down], rtol=1e-4, atol=2e-7)
    assert 1 - np.tanh(2 * m / 0.05 * 0.04 - m) ** 2 > 3 * m_read  # with I = 0.05 (the read's side) it would differ


def test_clamp_modes_past_the_outer_level() -> None:
    """W_H = Q_n + 0.1 and Q_0 - 0.05: outward and inward steps under hard, none and soft."""
    q, m, lr = Q_DEFAULT, 3.0, 1e-2
    hi, lo = float(q[-1]), float(q[0])
    i_hi, i_lo = float(q[-1] - q[-2]), float(q[1] - q[0])
    w0 = [hi + 0.1, hi + 0.1, lo - 0.05, lo - 0.05]
    g = [-1.0, 1.0, 1.0, -1.0]  # out, in, out, in
    w32 = np.asarray(w0, dtype=np.float32).astype(np.float64)
    d = np.array([w32[0] - hi, w32[2] - lo])  # W_H - W_S, W_S the outer level
    eq2 = 1 - np.tanh(2 * m / np.array([i_hi, i_lo]) * np.abs(d) - m) ** 2
    soft = 1 - np.tanh(m * np.abs(d) / np.array([i_hi, i_lo])) ** 2
    none = _first_step(q, w0, g, m, clamp_mode="none")
    np.testing.assert_allclose(none, [lr * eq2[0], -lr, -lr * eq2[1], lr], rtol=1e-4, atol=2e-7)
    got = _first_step(q, w0, g, m, clamp_mode="soft")
    np.testing.assert_allclose(got, [lr * eq2[0] * soft[0], -lr, -lr * eq2[1] * soft[1], lr], rtol=1e-4, atol=2e-7)
    assert np.all(soft < 0.5)  # S really scales here
    hard = _first_step(q, w0, g, m, clamp_mode="hard")
    np.testing.assert_allclose(w32 + hard, [hi, hi, lo, lo], atol=1e-6)
    # m* = 0: soft is none (plain Adam steps, no clamp)
    np.testing.assert_allclose(_first_step(q, w0, g, 0.0, clamp_mode="soft"), [lr, -lr, -lr, lr], rtol=1e-4)
    # the nearest level of a weight beyond the range is the outer one
    lv = LevelSet(q)
    idx = lv.index(torch.tensor([hi + 3.0, lo - 3.0, hi + 0.1]))
    assert idx.tolist() == [q.size - 1, 0, q.size - 1]


def test_option_values_are_checked_and_disable_the_fused_rule() -> None:
    p = torch.nn.Parameter(torch.zeros(4))
    p.metaplastic = True  # type: ignore[attr-defined]
    lv = LevelSet(Q_DEFAULT)
    with pytest.raises(ValueError, match="ws_source"):
        MetaplasticAdam([p], lv, ws_source="chip")
    with pytest.raises(ValueError, match="clamp_mode"):
        MetaplasticAdam([p], lv, clamp_mode="tight")
    assert MetaplasticAdam([p], lv, compile="always", kernel="torch").compiled
    assert not MetaplasticAdam([p], lv, compile="always", kernel="torch", clamp_mode="soft").compiled
    assert not MetaplasticAdam([p], lv, compile="always", kernel="torch", ws_source="read").compiled
    opt = MetaplasticAdam([p], lv, m_star=3.0, ws_source="read")
    p.grad = torch.ones(4)
    with pytest.raises(ValueError, match="set_read_weights"):
        opt.step()
    with pytest.raises(ValueError, match="do not fit"):
        opt.set_read_weights([(p, torch.zeros(5))])


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
