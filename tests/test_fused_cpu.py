"""The one-pass numba kernel's level diff and its independence from the thread count and chunking.

The rule itself is checked against the plain reference of Algorithm 1 in ``test_optim_equivalence.py``;
here: the list of weights whose level changed (what the orchestrator programs) equals a plain comparison
of the level index with the record, in ascending order, over tensors of several chunks, for both kernels;
and one or two threads give bit-identical weights, moments, indices and lists.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hwloop.chip.default_table import default_table
from hwloop.training import fused_cpu
from hwloop.training.levels import LevelSet
from hwloop.training.optim import MetaplasticAdam

Q, _ = default_table().weight_levels()


def _run(kernel: str, threads: int, steps: int = 12, n: int = 3 * fused_cpu.CHUNK + 123):
    torch.set_num_threads(threads)
    rng = np.random.default_rng(5)
    lv = LevelSet(Q)
    p = torch.nn.Parameter(torch.from_numpy(rng.uniform(-1.5, 1.5, n).astype(np.float32)))
    p.metaplastic = True  # type: ignore[attr-defined]
    opt = MetaplasticAdam([p], lv, lr=5e-2, m_star=3.0, kernel=kernel)
    rec = lv.index(p.detach()).view(-1).clone()
    opt.track_levels(p, rec)
    lists = []
    for _ in range(steps):
        before = rec.clone()
        p.grad = torch.from_numpy(rng.standard_normal(n).astype(np.float32)).view(p.shape)
        opt.step()
        idx = opt.level_index(p).view(-1)
        changed = opt.changed_levels(p)
        expect = torch.nonzero(idx != before).view(-1)
        assert torch.equal(changed.to(torch.int64), expect), "changed list differs from a plain comparison"
        assert torch.equal(rec, idx), "the record must hold the new levels"
        lists.append(changed.clone())
    st = opt.state[p]
    return p.detach().clone(), st["exp_avg"].clone(), st["exp_avg_sq"].clone(), rec.clone(), lists


@pytest.mark.parametrize("kernel", ["numba", "torch"])
def test_changed_list_is_the_plain_diff(kernel: str) -> None:
    w, _, _, _, lists = _run(kernel, threads=2)
    assert sum(int(c.numel()) for c in lists) > 1000, "too few level changes for the test to mean anything"
    assert torch.isfinite(w).all()


def test_thread_count_does_not_change_anything() -> None:
    a = _run("numba", threads=1)
    b = _run("numba", threads=2)
    for x, y in zip(a[:4], b[:4], strict=True):
        assert torch.equal(x, y)
    assert all(torch.equal(x, y) for x, y in zip(a[4], b[4], strict=True))


def test_numba_kernel_refuses_weights_off_the_cpu_or_a_bad_record() -> None:
    lv = LevelSet(Q)
    p = torch.nn.Parameter(torch.zeros(10))
    p.metaplastic = True  # type: ignore[attr-defined]
    opt = MetaplasticAdam([p], lv, kernel="numba")
    with pytest.raises(ValueError, match="int32"):
        opt.track_levels(p, torch.zeros(10, dtype=torch.int64))
    with pytest.raises(ValueError, match="kernel"):
        MetaplasticAdam([p], lv, kernel="fast")


def test_vectorisable_tanh_is_float32_accurate() -> None:
    """The kernel's rational tanh against numpy's in float64, and M = 1 - tanh^2 over the range the rule
    uses (the test can fail: a wrong coefficient shows at once)."""
    x = np.linspace(-12, 12, 400_001).astype(np.float32)
    t = np.array([fused_cpu.tanh_f32(float(v)) for v in x[::97]], dtype=np.float64)
    ref = np.tanh(x[::97].astype(np.float64))
    assert np.max(np.abs(t - ref)) < 4e-7
    assert np.max(np.abs((1 - t * t) - (1 - ref * ref))) < 1e-6
    assert fused_cpu.tanh_f32(0.0) == 0.0 and fused_cpu.tanh_f32(50.0) == pytest.approx(1.0, abs=4e-7)
