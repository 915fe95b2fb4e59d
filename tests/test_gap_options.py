"""The Fashion-MNIST gap options: BN running statistics at test time, lr decay per task, W_S read from the
chip (``--ws-source read``) and the clamp of the hidden weights (``--clamp hard|none|soft``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch
from _tiny import tiny_config

from hwloop.errors import ConfigError, RunLogError
from hwloop.orchestrator import Trainer, lr_for_epoch, train
from hwloop.runlog import RunLog
from hwloop.sweep import plan
from hwloop.training.config import TrainConfig
from hwloop.training.model import QMLP

if TYPE_CHECKING:
    from conftest import RunCli


def test_lr_for_epoch_decays_within_each_task_and_resets() -> None:
    lrs = [lr_for_epoch(e, 3, 1e-2, 0.5) for e in range(1, 7)]
    assert lrs == pytest.approx([1e-2, 5e-3, 2.5e-3, 1e-2, 5e-3, 2.5e-3])
    assert lr_for_epoch(5, 3, 2e-3, 1.0) == 2e-3


def test_bn_eval_running_tests_with_training_statistics() -> None:
    torch.manual_seed(0)
    outs = {}
    w = [torch.randn(8, 5), torch.randn(8, 8), torch.randn(3, 8)]
    x = torch.randn(64, 5) * 3 + 1
    one = x[:1]
    others = (torch.randn(9, 5), torch.randn(9, 5) * 10 - 4)
    for mode in ("batch", "running"):
        m = QMLP(hidden=8, n_in=5, n_out=3, bn_eval=mode)
        for layer, wi in zip(m.layers, w, strict=True):
            layer.w_used.copy_(wi)
        m.train()
        m(x)
        m.eval()
        outs[mode] = [m(torch.cat([one, o]))[0] for o in others]
    # running statistics: an image's output does not depend on the rest of its test batch; batch statistics: it does
    assert torch.allclose(outs["running"][0], outs["running"][1], atol=1e-5)
    assert not torch.allclose(outs["batch"][0], outs["batch"][1], atol=1e-3)


def test_lr_decay_and_bn_eval_reach_the_run(tiny_data: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(
        chip="none",
        hidden=16,
        epochs_per_task=2,
        warmup=0,
        train_samples=200,
        batch_size=100,
        lr=4e-3,
        lr_decay=0.5,
        bn_eval="running",
        data_dir=str(tiny_data),
        verify_data=False,
        out=str(tmp_path / "g.h5"),
        progress=False,
        threads=1,
    )
    res = train(cfg)
    assert res.status == "finished"
    with RunLog(tmp_path / "g.h5") as log:
        ep = log.epochs()
        assert log.config["bn_eval"] == "running" and log.config["lr_decay"] == 0.5
    np.testing.assert_allclose(ep["lr"], [4e-3, 2e-3, 4e-3, 2e-3], rtol=1e-6)
    assert np.all(np.isfinite(ep["acc"][:, 0]))


def test_ws_source_read_needs_a_chip(run_cli: RunCli) -> None:
    for clamp in ("hard", "none", "soft"):
        TrainConfig(ws_source="read", clamp=clamp).validate()  # sim chip: accepted
        TrainConfig(chip="none", clamp=clamp).validate()
    with pytest.raises(ConfigError, match="--chip none"):
        TrainConfig(ws_source="read", chip="none").validate()
    code, _, err = run_cli("train", "--chip", "none", "--ws-source", "read")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--ws-source read" in err


def _trained(cfg: TrainConfig) -> Trainer:
    tr = Trainer(cfg)
    assert tr.run().status == "finished"
    return tr


def test_ws_source_and_clamp_reach_the_optimizer(tiny_data: Path, tmp_path: Path) -> None:
    """The optimizer of a run gets the options, and with ``read`` the very tensors the layers' forward pass
    uses (views of the chip's weight cache); the same seed then trains to other hidden weights."""
    runs = {
        (ws, clamp): _trained(tiny_config(tiny_data, tmp_path / f"{ws}-{clamp}.h5", ws_source=ws, clamp=clamp, lr=2e-2))
        for ws, clamp in (("nominal", "hard"), ("read", "hard"), ("nominal", "soft"))
    }
    tr = runs[("read", "hard")]
    assert (tr.opt.ws_source, tr.opt.clamp_mode) == ("read", "hard")
    for layer in tr.model.layers:
        assert tr.opt._w_read[layer.weight] is layer.w_used
        assert layer.w_used.untyped_storage().data_ptr() == tr.hw.w_torch.untyped_storage().data_ptr()  # a view
    assert runs[("nominal", "soft")].opt.clamp_mode == "soft"
    with RunLog(tmp_path / "read-hard.h5") as log:
        assert log.config["ws_source"] == "read" and log.status == "finished"

    def hidden(t: Trainer) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in t.model.hidden_weights()])

    base = hidden(runs[("nominal", "hard")])
    assert not torch.equal(base, hidden(runs[("read", "hard")]))  # the read W_S changed the rule's decisions


def test_resume_and_sweep_refuse_another_ws_source_or_clamp(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    train(tiny_config(tiny_data, out, epochs_per_task=1, tasks="mnist", clamp="none"))
    for kw, key in (({"clamp": "soft"}, "clamp"), ({"clamp": "none", "ws_source": "read"}, "ws_source")):
        with pytest.raises(RunLogError, match=key):
            train(tiny_config(tiny_data, out, epochs_per_task=2, tasks="mnist", **kw), resume=str(out))
    d = tmp_path / "sw"
    grid = {"m_star": [3.0], "hidden": [16], "seed": [0]}
    plan(d, grid, {"chip": "sim", "clamp": "soft", "ws_source": "read"}).save()
    assert plan(d).base["clamp"] == "soft"
    for key, value in (("clamp", "hard"), ("ws_source", "nominal")):
        with pytest.raises(ConfigError, match=key):
            plan(d, None, {key: value})


def test_help_lists_the_options(run_cli: RunCli) -> None:
    code, out, _ = run_cli("train", "--help")
    assert code == 0
    flat = " ".join(out.split())
    assert "--ws-source [nominal|read]" in flat and "--clamp [hard|none|soft]" in flat
    assert "not wired" not in flat


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5, float("nan")])
def test_bad_lr_decay(bad: float) -> None:
    with pytest.raises(ConfigError, match="lr-decay"):
        TrainConfig(lr_decay=bad).validate()


def test_defaults_unchanged() -> None:
    c = TrainConfig()
    assert (c.model, c.bn_eval, c.lr_decay, c.ws_source, c.clamp) == ("qnn", "batch", 1.0, "nominal", "hard")
