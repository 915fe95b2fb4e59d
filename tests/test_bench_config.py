"""Bench files: the shipped ones load, bad ones are refused with a clear message, round trip is exact."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from hwloop.errors import ConfigError, SafetyLimitError
from hwloop.instruments.bench import BenchConfig, BoardOp, Condition, Limits, load_bench

ROOT = Path(__file__).resolve().parents[1] / "instruments"


@pytest.mark.parametrize("name", ["virtual.toml", "example-keithley2636b.toml"])
def test_shipped_bench_files_load(name: str) -> None:
    b = load_bench(ROOT / name)
    assert b.tiles == 1 and len(b.set.v_wl) == 8
    assert b.form_conditions()[0].v_bl == pytest.approx(b.form.v_bl_start)
    assert b.form_conditions()[-1].v_bl <= b.limits.max_v_form


def test_round_trip_through_toml(tmp_path: Path) -> None:
    b = load_bench(ROOT / "virtual.toml")
    p = tmp_path / "b.toml"
    b.save(p)
    again = load_bench(p)
    assert again.with_(source_path="") == b.with_(source_path="")


def _write(tmp_path: Path, text: str) -> Path:
    base = (ROOT / "virtual.toml").read_text()
    p = tmp_path / "bad.toml"
    p.write_text(base + "\n" + text)
    return p


def test_tables_past_their_own_limits_are_refused(tmp_path: Path) -> None:
    text = (ROOT / "virtual.toml").read_text().replace("max_v_gate_set = 2.4", "max_v_gate_set = 2.0")
    p = tmp_path / "b.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match="max_v_gate_set"):
        load_bench(p)


def test_unknown_keys_and_bad_values_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "b.toml"
    p.write_text((ROOT / "virtual.toml").read_text().replace("baud = 921600", "baud = 921600\nparity = 'E'"))
    with pytest.raises(ConfigError, match="parity"):
        load_bench(p)
    p.write_text((ROOT / "virtual.toml").read_text().replace("baud = 921600", "baud = 'fast'"))
    with pytest.raises(ConfigError, match="baud"):
        load_bench(p)
    p.write_text("not = [toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_bench(p)
    with pytest.raises(ConfigError, match="not found"):
        load_bench(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("op", "cond", "what"),
    [
        (BoardOp.SET, Condition(2.5, 1.8, 0.0, 1000), "max_v_gate_set"),
        (BoardOp.SET, Condition(2.0, 2.6, 0.0, 1000), "max_v_bl"),
        (BoardOp.FORM, Condition(1.6, 4.1, 0.0, 1000), "max_v_form"),
        (BoardOp.RESET, Condition(5.1, 0.0, 2.6, 100), "max_v_wl"),
        (BoardOp.RESET, Condition(4.8, 0.0, 3.1, 100), "max_v_sl"),
        (BoardOp.READ, Condition(3.3, 0.31, 0.0, 1000), "max_v_read"),
        (BoardOp.RESET, Condition(4.8, 0.0, 2.6, 10_001), "width"),
        (BoardOp.RESET, Condition(4.8, 0.0, 2.6, 0), "width"),
        (BoardOp.SET, Condition(float("nan"), 1.8, 0.0, 1000), "non-finite"),
    ],
)
def test_limits_refuse_each_kind_of_excess(op: BoardOp, cond: Condition, what: str) -> None:
    with pytest.raises(SafetyLimitError, match=what):
        Limits().check(op, cond)


def test_limits_accept_the_paper_conditions() -> None:
    lim = Limits()
    b = BenchConfig()
    for c in b.set_level_conditions():
        lim.check(BoardOp.SET, c)
    lim.check(BoardOp.RESET, b.reset_condition())
    lim.check(BoardOp.READ, b.read_condition())
    # a RESET-polarity pulse may use a high gate: only V_BL > V_SL needs the compliance bound
    lim.check(BoardOp.RESET, Condition(4.8, 0.0, 2.6, 100))


# ---------------------------------------------------------------------- hostile bench files (issue 12)
def _replace(tmp_path: Path, old: str, new: str) -> Path:
    text = (ROOT / "virtual.toml").read_text()
    assert old in text, old
    p = tmp_path / "b.toml"
    p.write_text(text.replace(old, new, 1))
    return p


@pytest.mark.parametrize(
    ("old", "new", "what"),
    [
        ("max_v_gate_set = 2.4", "max_v_gate_set = nan", "max_v_gate_set = nan: must be a finite number"),
        ("max_v_read = 0.3", "max_v_read = inf", "max_v_read = inf: must be a finite number"),
        ("max_v_read = 0.3", "max_v_read = -0.3", "max_v_read"),
        ("max_v_sl = 3.0", "max_v_sl = 0.0", "max_v_sl"),
        ("max_v_wl = 5.0", "max_v_wl = '5.0'", "max_v_wl = '5.0': must be a finite number"),
        ("max_v_wl = 5.0", "max_v_wl = true", "max_v_wl = True: must be a finite number"),
        ("max_v_form = 4.0", "max_v_form = 40.0", "max_v_form"),  # past what the protocol carries
        ("max_width_ns = 10000", "max_width_ns = 10000.0", "max_width_ns = 10000.0: must be an integer"),
        ("max_width_ns = 10000", "max_width_ns = 4294967296", "max_width_ns"),
        ("smu_max_v = 0.5", "smu_max_v = 300.0", "smu_max_v"),  # past the 2636B's 200 V range
        ("smu_max_current_a = 1e-3", "smu_max_current_a = 5.0", "smu_max_current_a"),
        ("smu_max_width_s = 0.01", "smu_max_width_s = -1.0", "smu_max_width_s"),
        ("smu_max_width_s = 0.01", "smu_max_width_s = nan", "smu_max_width_s"),
        ("tiles = 1", "tiles = 1.0", "tiles = 1.0: must be an integer"),
        ("tiles = 1", "tiles = true", "tiles = True: must be an integer"),
        ("tiles = 1", "tiles = '1'", "tiles = '1'"),
        ("tiles = 1", "tiles = 256", "tiles must be 1..255"),
        ("retries = 3", "retries = -1", "retries"),
        ("timeout_s = 0.5", "timeout_s = nan", "timeout_s"),
        ("current_limit_a = 1e-4", "current_limit_a = 1e-11", "current_limit_a"),  # below the 2636B's 100 pA
        ('channel = "a"', "channel = 1", "channel = 1: must be a string"),
        ("v_wl = [1.4, 1.5143", 'v_wl = ["1.4", 1.5143', "must be a list of finite numbers"),
        ("v_wl = [1.4, 1.5143", "v_wl = [nan, 1.5143", "must be a list of finite numbers"),
        ("v_bl_step = 0.2", "v_bl_step = 1e-300", "more than 10000 steps"),
        ("v_sl = 0.0\nwidth_ns = 1000\n\n[limits]", "v_sl = 0.1\nwidth_ns = 1000\n\n[limits]", "G = I / 0"),
        ("format_version = 1", "format_version = 1.0", "format_version"),
    ],
)
def test_hostile_bench_values_are_refused_at_load(tmp_path: Path, old: str, new: str, what: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(what)):
        load_bench(_replace(tmp_path, old, new))


def test_every_limit_must_be_stated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing \['max_v_read'\]"):
        load_bench(_replace(tmp_path, "max_v_read = 0.3\n", ""))


def test_per_model_caps(tmp_path: Path) -> None:
    p = _replace(tmp_path, 'model = "2636B"', 'model = "2602B"')
    assert load_bench(p).smu_model() == "2602B"
    text = p.read_text()
    p.write_text(text.replace("smu_max_v = 0.5", "smu_max_v = 100.0"))  # the 2602B's range is 40 V
    with pytest.raises(ConfigError, match="2602B's range"):
        load_bench(p)
    p.write_text(text.replace("current_limit_a = 1e-4", "current_limit_a = 5e-9"))  # its smallest is 10 nA
    with pytest.raises(ConfigError, match="2602B's smallest"):
        load_bench(p)
    p.write_text(text.replace('model = "2602B"', 'model = "2601B"').replace('channel = "a"', 'channel = "b"'))
    with pytest.raises(ConfigError, match="channel"):
        load_bench(p)
    p.write_text(text.replace('model = "2602B"', 'model = "2450"'))
    with pytest.raises(ConfigError, match="not a keithley2600 model"):
        load_bench(p)
    p.write_text(text.replace('driver = "keithley2600"', 'driver = "nonesuch"'))
    with pytest.raises(ConfigError, match="no model caps"):
        load_bench(p)


def test_validate_also_guards_benches_built_in_python() -> None:
    with pytest.raises(ConfigError, match="finite"):
        BenchConfig(limits=Limits(max_v_gate_set=math.nan)).validate()
    with pytest.raises(ConfigError, match="integer"):
        BenchConfig(tiles=True).validate()  # type: ignore[arg-type]
    BenchConfig().validate()
