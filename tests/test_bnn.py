"""The BNN baseline: AdamMeta against a straightforward reference of Laborieux's rule, the model, a tiny run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from hwloop.errors import ConfigError
from hwloop.training.bnn import AdamMeta, BinaryLinear, BinaryMLP, SignSTE
from hwloop.training.config import TrainConfig


def reference_adam_meta(w, grads, lr, meta, betas=(0.9, 0.999), eps=1e-8, wd=0.0):
    """Element by element, in plain Python floats: Adam_meta as written in their models_utils.py."""
    w = [float(x) for x in w]
    m = [0.0] * len(w)
    v = [0.0] * len(w)
    for t, g in enumerate(grads, start=1):
        for i in range(len(w)):
            gi = float(g[i]) + wd * w[i]
            m[i] = betas[0] * m[i] + (1 - betas[0]) * gi
            v[i] = betas[1] * v[i] + (1 - betas[1]) * gi * gi
            step = lr * math.sqrt(1 - betas[1] ** t) / (1 - betas[0] ** t)
            sign_w = (w[i] > 0) - (w[i] < 0)
            mi = m[i]
            if sign_w * m[i] > 0:  # the update would shrink |W_H|: consolidate
                mi = (1 - math.tanh(meta * abs(w[i])) ** 2) * m[i]
            w[i] -= step * mi / (math.sqrt(v[i]) + eps)
    return np.array(w)


@pytest.mark.parametrize("meta", [0.0, 1.5, 4.0])
def test_adam_meta_matches_reference(meta: float) -> None:
    rng = np.random.default_rng(3)
    w0 = rng.normal(0, 1.0, 40).astype(np.float64)
    grads = rng.normal(0, 1.0, (25, 40))
    p = torch.nn.Parameter(torch.tensor(w0))
    p.metaplastic = True  # type: ignore[attr-defined]
    opt = AdamMeta([p], lr=0.05, meta=meta, weight_decay=1e-3)
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
    ref = reference_adam_meta(w0, grads, lr=0.05, meta=meta, wd=1e-3)
    np.testing.assert_allclose(p.detach().numpy(), ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("meta", [0.0, 1.5, 4.0])
def test_compiled_adam_meta_equals_the_eager_step_and_the_reference(meta: float) -> None:
    """float32 CPU tensors take the compiled step (fused_bnn): over many steps it gives the eager step's
    weights and moments to float32 tolerance, and the reference's, on a tensor of several chunks."""
    rng = np.random.default_rng(5)
    n = 3 * 4096 + 123  # several chunks and a ragged end, split over threads
    w0 = rng.normal(0, 0.5, n).astype(np.float32)
    grads = rng.normal(0, 1.0, (30, n)).astype(np.float32)
    runs = {}
    for fused in (True, False):
        p = torch.nn.Parameter(torch.tensor(w0))
        p.metaplastic = True  # type: ignore[attr-defined]
        opt = AdamMeta([p], lr=0.05, meta=meta, weight_decay=1e-3, fused=fused)
        att = []
        for g in grads:
            p.grad = torch.tensor(g)
            opt.step()
            att.append(opt.attenuated)
            assert opt.fused_tensors == int(fused)
        st = opt.state[p]
        runs[fused] = (p.detach().numpy().copy(), st["exp_avg"].numpy().copy(), np.array(att))
    (wf, mf, af), (we, me, ae) = runs[True], runs[False]
    np.testing.assert_allclose(wf, we, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mf, me, rtol=1e-4, atol=1e-6)
    # attenuation depends on signs only: it may differ where a moment is within rounding of zero
    assert np.abs(af - ae).max() <= max(1, n // 10000) and (af.sum() > 0) == (meta > 0)
    ref = reference_adam_meta(w0[:200].astype(np.float64), grads[:, :200], lr=0.05, meta=meta, wd=1e-3)
    np.testing.assert_allclose(wf[:200], ref, rtol=1e-4, atol=1e-5)
    # float64 (the reference test above) and other devices take the eager loop
    q = torch.nn.Parameter(torch.tensor(w0[:10], dtype=torch.float64))
    opt = AdamMeta([q])
    q.grad = torch.ones_like(q)
    opt.step()
    assert opt.fused_tensors == 0


def test_adam_meta_consolidates_only_toward_a_sign_flip() -> None:
    # W_H = +2 with a gradient that pushes it down (toward 0): damped; pushed up: plain Adam
    down = torch.nn.Parameter(torch.tensor([2.0, -2.0]))
    up = torch.nn.Parameter(torch.tensor([2.0, -2.0]))
    for p in (down, up):
        p.metaplastic = True  # type: ignore[attr-defined]
    opt_d = AdamMeta([down], lr=0.1, meta=1.5, weight_decay=0.0)
    opt_u = AdamMeta([up], lr=0.1, meta=1.5, weight_decay=0.0)
    down.grad = torch.tensor([1.0, -1.0])  # step -lr*sign(g): toward zero
    up.grad = torch.tensor([-1.0, 1.0])  # away from zero
    opt_d.step()
    opt_u.step()
    moved_down = (torch.tensor([2.0, -2.0]) - down.detach()).abs()
    moved_up = (up.detach() - torch.tensor([2.0, -2.0])).abs()
    factor = 1 - math.tanh(1.5 * 2.0) ** 2
    np.testing.assert_allclose(moved_up.numpy(), [0.1, 0.1], rtol=1e-5)
    np.testing.assert_allclose(moved_down.numpy(), [0.1 * factor] * 2, rtol=1e-4)
    assert opt_d.attenuated == 2 and opt_u.attenuated == 0


def test_non_metaplastic_parameters_get_plain_adam() -> None:
    p = torch.nn.Parameter(torch.tensor([3.0]))
    opt = AdamMeta([p], lr=0.1, meta=5.0, weight_decay=0.0)
    p.grad = torch.tensor([1.0])
    opt.step()
    assert float(p.detach()) == pytest.approx(2.9, rel=1e-5)


def test_binary_mlp_forward_uses_signs_and_ste() -> None:
    model = BinaryMLP(hidden=8, n_in=6, n_out=3, n_tasks=2)
    model.init_uniform(torch.Generator().manual_seed(0))
    x = torch.randn(16, 6)
    out = model(x)
    w0 = model.layers[0].weight.detach().clone()
    with torch.no_grad():  # scaling the hidden weights keeps their signs: same output
        for w in model.hidden_weights():
            w.mul_(7.0)
    assert torch.allclose(model(x), out, atol=1e-5)
    # the graph of the first forward: gradients reach the hidden weights
    (out[:, 0] * torch.arange(16.0)).sum().backward()
    assert model.layers[0].weight.grad is not None and model.layers[0].weight.grad.abs().sum() > 0
    assert not torch.equal(w0 * 7.0, w0)
    g = torch.tensor([0.5, 2.0, -0.3], requires_grad=True)
    SignSTE.apply(g).sum().backward()
    assert g.grad.tolist() == [1.0, 0.0, 1.0]


def test_binary_linear_is_exactly_sign_weights_with_straight_through_gradient() -> None:
    layer = BinaryLinear(5, 4)
    with torch.no_grad():
        layer.weight.uniform_(-0.1, 0.1, generator=torch.Generator().manual_seed(1))
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(2))
    out = layer(x)
    wb = layer.weight.detach().sign().requires_grad_(True)  # reference: a leaf holding the binary weights
    ref = F.linear(x, wb)
    assert torch.equal(out, ref)  # exactly the ±1 weights
    g = torch.randn(7, 4, generator=torch.Generator().manual_seed(3))
    out.backward(g)
    ref.backward(g)
    assert torch.equal(layer.weight.grad, wb.grad)  # the binary weight's gradient, handed to W_H unchanged


def _train_steps(model: BinaryMLP, steps: int, *, cache: bool) -> list[torch.Tensor]:
    opt = AdamMeta(model.parameters(), lr=0.05, meta=1.5)
    gen = torch.Generator().manual_seed(5)
    for _ in range(steps):
        x = torch.randn(32, 6, generator=gen)
        y = torch.randint(0, 3, (32,), generator=gen)
        if not cache:  # every forward makes its signs afresh
            for w in model.hidden_weights():
                w._hw_sign_key = None
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        assert opt.fused_tensors > 0
    return [p.detach().clone() for p in model.parameters()]


def test_signs_written_by_the_compiled_step_train_bit_identically_to_fresh_ones() -> None:
    runs = []
    for cache in (True, False):
        model = BinaryMLP(hidden=16, n_in=6, n_out=3, n_tasks=1)
        model.init_uniform(torch.Generator().manual_seed(0))
        runs.append(_train_steps(model, 6, cache=cache))
        if cache:  # the cache the last step wrote is sign(W_H) of the weights it left
            for w in model.hidden_weights():
                assert w._hw_sign_key == (w.data_ptr(), w._version)
                assert torch.equal(w._hw_sign, w.detach().sign())
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


def test_a_graph_that_saved_the_signs_refuses_backward_after_the_step_rewrote_them() -> None:
    layer = BinaryLinear(6, 3)  # alone, so the signs are the only saved tensor the step changes
    with torch.no_grad():
        layer.weight.uniform_(-0.1, 0.1, generator=torch.Generator().manual_seed(4))
    opt = AdamMeta(layer.parameters(), lr=0.05, meta=1.5)
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(6), requires_grad=True)
    loss = layer(x).square().sum()  # its gradient with respect to x needs the saved binary weights
    loss.backward(retain_graph=True)
    opt.step()
    assert opt.fused_tensors > 0
    with pytest.raises(RuntimeError, match=r"modified inplace|modified by an inplace operation"):
        loss.backward()  # the saved signs are those the step overwrote: not used silently


def test_binary_weights_are_made_afresh_after_any_other_change_of_w() -> None:
    layer = BinaryLinear(4, 3)
    with torch.no_grad():
        layer.weight.uniform_(-0.1, 0.1, generator=torch.Generator().manual_seed(4))
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(6))
    first = layer(x).detach()
    with torch.no_grad():
        layer.weight.mul_(-1.0)  # an in-place change torch sees: the version moves
    assert torch.equal(layer(x).detach(), -first)
    clone = BinaryLinear(4, 3)
    clone.load_state_dict(layer.state_dict())  # a checkpoint loaded: other storage
    assert torch.equal(clone(x), layer(x))


def test_new_task_starts_from_the_current_bn_state() -> None:
    model = BinaryMLP(hidden=4, n_in=3, n_out=2, n_tasks=2)
    with torch.no_grad():
        model.bns[0][0].weight.fill_(3.0)
    model.set_task(1)
    assert torch.all(model.bns[1][0].weight == 3.0)
    with torch.no_grad():
        model.bns[1][0].weight.fill_(5.0)
    model.set_task(0)  # testing an old task: its own BN, nothing copied
    model.set_task(1)
    assert torch.all(model.bns[0][0].weight == 3.0) and torch.all(model.bns[1][0].weight == 5.0)


def test_bnn_needs_chip_none() -> None:
    with pytest.raises(ConfigError, match="--chip none"):
        TrainConfig(model="bnn", chip="sim").validate()


@pytest.mark.parametrize("clamp", ["none", "soft"])
def test_bnn_refuses_a_clamp_it_would_ignore(clamp: str) -> None:
    with pytest.raises(ConfigError, match="BNN never clamps"):
        TrainConfig(model="bnn", chip="none", clamp=clamp).validate()
    TrainConfig(model="bnn", chip="none").validate()  # the default (hard) stays accepted


def test_bnn_trains_end_to_end(tiny_data, tmp_path) -> None:
    from hwloop.experiments import train
    from hwloop.runlog import RunLog

    cfg = TrainConfig(
        model="bnn",
        chip="none",
        hidden=32,
        lr=5e-3,
        m_star=1.5,
        warmup=0,
        epochs_per_task=2,
        train_samples=300,
        batch_size=100,
        data_dir=str(tiny_data),
        verify_data=False,
        out=str(tmp_path / "b.h5"),
        progress=False,
        threads=1,
    )
    res = train(cfg)
    assert res.status == "finished" and res.epochs == 4
    with RunLog(tmp_path / "b.h5") as log:
        ep = log.epochs()
        assert log.config["model"] == "bnn"
    assert ep.size == 4 and np.all(np.isfinite(ep["acc"][:, 0]))
    assert ep["acc"][1, 0] > 0.3  # the synthetic prototypes are easy: it learns


def test_bnn_interrupted_and_resumed_equals_uninterrupted(tiny_data, tmp_path) -> None:
    from hwloop.experiments import train

    def cfg(name: str) -> TrainConfig:
        return TrainConfig(
            model="bnn",
            chip="none",
            hidden=32,
            lr=5e-3,
            m_star=1.5,
            warmup=0,
            epochs_per_task=2,
            train_samples=200,
            batch_size=100,
            data_dir=str(tiny_data),
            verify_data=False,
            out=str(tmp_path / name),
            progress=False,
            threads=1,
        )

    ref = train(cfg("ref.h5"))

    def stop_after_3(rec: dict) -> None:
        if rec["epoch"] == 3:  # within the second task: BN copied forward, Adam re-created
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg("cut.h5"), on_epoch=stop_after_3)
    res = train(cfg("cut.h5"), resume=str(tmp_path / "cut.h5"))
    assert res.status == "finished" and res.epochs == 4
    assert res.final_acc == ref.final_acc
