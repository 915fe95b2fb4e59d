"""Bad input at the CLI and in the configuration: one line, exit code 2, nothing run (issue 12, items 12-13)."""

from __future__ import annotations

import math
from pathlib import Path

import click
import numpy as np
import pytest

from hwloop.chip.cdf import load_table
from hwloop.cli import main
from hwloop.clicktypes import FiniteFloat
from hwloop.errors import CdfTableError, ConfigError, DataError
from hwloop.training.config import TrainConfig
from hwloop.training.data import load_task
from tests._synthdata import make_idx_dataset

ROOT = Path(__file__).resolve().parents[1]


def _one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hwloop: error:"), err
    return err[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--lr", "nan"],
        ["train", "--lr", "inf"],
        ["train", "--m-star", "nan"],
        ["train", "--m-star", "-inf"],
        ["endurance", "x.h5", "--endurance", "nan"],
        ["endurance", "x.h5", "--fraction", "nan"],
        ["emulate", "--bench", str(ROOT / "instruments" / "virtual.toml"), "--drop-rate", "nan"],
        ["emulate", "--bench", str(ROOT / "instruments" / "virtual.toml"), "--delay-ms", "inf"],
        ["calibrate", "--v-start", "nan"],
    ],
)
def test_non_finite_float_options_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    line = _one_line_exit_2(argv, capsys)
    assert "not a finite number" in line


def test_finite_float_type_keeps_ranges() -> None:
    t = FiniteFloat(min=0, min_open=True)
    assert t.convert("1e-3", None, None) == pytest.approx(1e-3)
    for bad in ("nan", "inf", "-inf", "NaN", "0", "-1", "x"):
        with pytest.raises(click.BadParameter):
            t.convert(bad, None, None)


@pytest.mark.parametrize(
    ("field", "value"),
    [("lr", math.nan), ("lr", math.inf), ("m_star", math.nan), ("m_star", -math.inf), ("lr", "0.1"), ("lr", True)],
)
def test_train_config_refuses_non_finite_numbers(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field.replace("_", "-")):
        TrainConfig(**{field: value}).validate()  # type: ignore[arg-type]


def test_out_under_a_regular_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        TrainConfig(out=str(f / "sub" / "run.h5")).validate()
    with pytest.raises(ConfigError, match="is a folder"):
        TrainConfig(out=str(tmp_path)).validate()
    line = _one_line_exit_2(["train", "--chip", "none", "--out", str(f / "run.h5")], capsys)
    assert "is a file, not a folder" in line


def test_train_samples_beyond_the_data_set_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_idx_dataset(tmp_path, "mnist", n_train=300, n_test=50)
    assert load_task("mnist", tmp_path, train_samples=300, verify=False).x_train.shape[0] == 300
    with pytest.raises(DataError, match="more than the 300"):
        load_task("mnist", tmp_path, train_samples=301, verify=False)
    line = _one_line_exit_2(
        [
            "train",
            "--chip",
            "none",
            "--tasks",
            "mnist",
            "--data-dir",
            str(tmp_path),
            "--no-verify-data",
            "--train-samples",
            "1000",
            "--epochs-per-task",
            "1",
            "--warmup",
            "0",
            "--hidden",
            "8",
            "--threads",
            "1",
            "--no-progress",
            "--out",
            str(tmp_path / "r.h5"),
        ],
        capsys,
    )
    assert "more than the 300" in line


def test_negative_cdf_sample_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = [f"LCS,{x:.6g}" for x in rng.lognormal(1.0, 0.4, 50)] + [f"L1,{x:.6g}" for x in rng.normal(40, 3, 50)]
    head = [
        "# hwloop-cdf 1",
        "# g_unit: uS",
        "# level: name=LCS kind=LCS v_gate=4.8 icc_ua=0",
        "# level: name=L1 kind=HCS v_gate=1.6 icc_ua=40",
        "level,g_us",
    ]
    p = tmp_path / "t.csv"
    p.write_text("\n".join(head + rows) + "\n")
    load_table(p)
    p.write_text("\n".join(head + rows + ["L1,-500.0"]) + "\n")
    with pytest.raises(CdfTableError, match="negative conductance"):
        load_table(p)


@pytest.mark.parametrize("spec", ["nan", "1e-3,inf", "-inf"])
def test_sweep_lists_refuse_non_finite_values(spec: str) -> None:
    from hwloop.sweep import parse_list

    with pytest.raises(ConfigError, match="finite"):
        parse_list(spec, float, "--lr")


def test_batch_of_one_is_refused_before_training() -> None:
    """Batch-norm cannot train on one sample: a batch of 1 is refused at the configuration, not a traceback."""
    from hwloop.errors import ConfigError
    from hwloop.training.config import TrainConfig

    with pytest.raises(ConfigError, match="at least 2"):
        TrainConfig(batch_size=1).validate()
    TrainConfig(batch_size=2).validate()
