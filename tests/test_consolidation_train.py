"""The consolidation options (issue 16) in the hardware loop: a tiny run with every option on, resumed
exactly across a task switch and inside a task, and their bad values on the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from _tiny import tiny_config

from hwloop.crossbar import CrossbarMap
from hwloop.errors import RunLogError
from hwloop.orchestrator import Trainer, train
from hwloop.runlog import RunLog
from hwloop.training.config import check_same_experiment

OPTIONS = dict(bn_mode="shared", bn_consolidate="meta-frozen", consolidation="importance", importance_scale=0.2)
FISHER = dict(bn_mode="shared", bn_consolidate="meta-frozen", consolidation="fisher", fisher_hold=0.3)
PROJECTION = dict(bn_mode="shared", bn_consolidate="meta-frozen", projection_energy=0.95)


def _interrupt_after(epoch: int):
    def on_epoch(rec: dict) -> None:
        if rec["epoch"] == epoch:
            raise KeyboardInterrupt

    return on_epoch


@pytest.fixture(scope="module", params=[OPTIONS, FISHER, PROJECTION], ids=["importance", "fisher", "projection"])
def reference(request: pytest.FixtureRequest, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("consolidation") / "ref.h5"
    ref = train(tiny_config(tiny_data, log, **request.param))
    assert ref.status == "finished" and set(ref.final_acc) == {"mnist", "fashion-mnist"}
    return ref, log, request.param


@pytest.mark.parametrize("stop_after", [2, 3])  # 2: at the task switch; 3: inside the second task
def test_every_option_on_resumes_exactly(stop_after: int, reference, tiny_data: Path, tmp_path: Path) -> None:
    ref, ref_log, options = reference
    out = tmp_path / "cut.h5"
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tiny_data, out, **options), on_epoch=_interrupt_after(stop_after))
    with RunLog(out) as log:
        assert log.status == "interrupted" and len(log.epochs()) == stop_after
    res = train(tiny_config(tiny_data, out, **options), resume=str(out))
    assert res.final_acc == ref.final_acc
    with RunLog(out) as log, RunLog(ref_log) as ref_r:
        assert log.results()["programs"] == ref_r.results()["programs"]
        assert log.config["bn_consolidate"] == "meta-frozen"
        assert log.config["consolidation"] == options.get("consolidation", "paper")
        assert log.config["projection_energy"] == options.get("projection_energy", 0.0)


def test_options_are_part_of_the_experiment(tiny_data: Path, tmp_path: Path) -> None:
    stored = tiny_config(tiny_data, tmp_path / "a.h5", **OPTIONS)
    for change in (
        {"bn_consolidate": "meta-batch"},
        {"consolidation": "paper"},
        {"bn_meta_scale": 0.25},
        {"fisher_hold": 0.5},
        {"projection_energy": 0.9},
    ):
        with pytest.raises(RunLogError, match="changed configuration"):
            check_same_experiment(
                "a.h5", asdict(stored), tiny_config(tiny_data, tmp_path / "a.h5", **{**OPTIONS, **change})
            )
    # an older log without the keys is the paper's rule
    old = {k: v for k, v in asdict(tiny_config(tiny_data, tmp_path / "b.h5")).items() if "consol" not in k}
    check_same_experiment("b.h5", old, tiny_config(tiny_data, tmp_path / "b.h5"))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--bn-consolidate", "meta-frozen"], "--bn-mode shared"),
        (["--bn-consolidate", "meta-frozen", "--bn-mode", "shared", "--bn-eval", "running"], "--bn-eval"),
        (["--consolidation", "bogus"], "--consolidation"),
        (["--bn-meta-scale", "0"], "--bn-meta-scale"),
        (["--importance-scale", "inf"], "--importance-scale"),
        (["--fisher-hold", "0"], "--fisher-hold"),
        (["--fisher-hold", "1.5"], "--fisher-hold"),
        (["--fisher-hold", "nan"], "--fisher-hold"),
        (["--projection-energy", "1"], "--projection-energy"),
        (["--projection-energy", "-0.1"], "--projection-energy"),
        (["--model", "bnn", "--chip", "none", "--projection-energy", "0.9"], "QNN"),
        (["--model", "bnn", "--chip", "none", "--consolidation", "importance"], "QNN"),
    ],
)
def test_bad_option_values_are_one_line_exit_2(args: list[str], needle: str, tmp_path: Path) -> None:
    env = {**os.environ, "HWLOOP_DATA": str(tmp_path / "nodata"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    r = subprocess.run(
        [sys.executable, "-m", "hwloop.cli", "train", "--no-progress", "--out", str(tmp_path / "x.h5"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "options",
    [{"consolidation": "importance"}, {"consolidation": "fisher"}, {"projection_energy": 0.95}, OPTIONS],
    ids=["importance", "fisher", "projection", "all"],
)
def test_the_chip_follows_the_levels_of_every_rule(options: dict, tiny_data: Path, tmp_path: Path) -> None:
    """Whatever rule steps the hidden weights, the devices hold the level index the optimizer ended on
    (the weights that changed level are listed and programmed at every step)."""
    t = Trainer(tiny_config(tiny_data, tmp_path / "imp.h5", **options))
    res = t.run()
    assert res.programs > 0
    assert t.opt is not None and t.k_prog is not None and t.hw is not None
    for lm, p in zip(t.cmap.layers, t.model.hidden_weights(), strict=True):
        sl = slice(lm.weight_offset, lm.weight_offset + lm.n_weights)
        assert torch.equal(t.k_prog[sl], t.opt.level_index(p).reshape(-1))
    target = CrossbarMap.pair_levels((t.k_prog.numpy() - t.levels.n_half).astype(np.int8))
    ok = t.hw.usable
    assert np.array_equal(t.hw.dev_level[ok], target[ok])
