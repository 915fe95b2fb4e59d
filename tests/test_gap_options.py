"""The Fashion-MNIST gap options: BN running statistics at test time, lr decay per task, fields not wired yet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hwloop.errors import ConfigError
from hwloop.orchestrator import lr_for_epoch, train
from hwloop.runlog import RunLog
from hwloop.training.config import TrainConfig
from hwloop.training.model import QMLP


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


@pytest.mark.parametrize(("field", "value"), [("ws_source", "read"), ("clamp", "none"), ("clamp", "soft")])
def test_options_that_need_the_optimizer_are_refused_until_wired(field: str, value: str) -> None:
    with pytest.raises(ConfigError, match="not wired"):
        TrainConfig(**{field: value}).validate()


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5, float("nan")])
def test_bad_lr_decay(bad: float) -> None:
    with pytest.raises(ConfigError, match="lr-decay"):
        TrainConfig(lr_decay=bad).validate()


def test_defaults_unchanged() -> None:
    c = TrainConfig()
    assert (c.model, c.bn_eval, c.lr_decay, c.ws_source, c.clamp) == ("qnn", "batch", 1.0, "nominal", "hard")
