"""Bench files: the shipped ones load, bad ones are refused with a clear message, round trip is exact."""

from __future__ import annotations

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


@pytest.mark.parametrize(("op", "cond", "what"), [
    (BoardOp.SET, Condition(2.5, 1.8, 0.0, 1000), "max_v_gate_set"),
    (BoardOp.SET, Condition(2.0, 2.6, 0.0, 1000), "max_v_bl"),
    (BoardOp.FORM, Condition(1.6, 4.1, 0.0, 1000), "max_v_form"),
    (BoardOp.RESET, Condition(5.1, 0.0, 2.6, 100), "max_v_wl"),
    (BoardOp.RESET, Condition(4.8, 0.0, 3.1, 100), "max_v_sl"),
    (BoardOp.READ, Condition(3.3, 0.31, 0.0, 1000), "max_v_read"),
    (BoardOp.RESET, Condition(4.8, 0.0, 2.6, 10_001), "width"),
    (BoardOp.RESET, Condition(4.8, 0.0, 2.6, 0), "width"),
    (BoardOp.SET, Condition(float("nan"), 1.8, 0.0, 1000), "non-finite"),
])
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
