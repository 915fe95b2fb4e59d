"""Property: whatever is requested, nothing past a bench limit ever reaches the wire.

The emulated instruments here accept anything (their own limits are wide open) and record every
operation and command they receive; the checks below re-state the bench limits as plain comparisons,
independent of ``Limits.check``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hwloop.chip.sim import SimChip, SimConfig
from hwloop.emulator.b1500 import B1500Emulator
from hwloop.emulator.board import BoardEmulator
from hwloop.emulator.device import EmulatedChip
from hwloop.emulator.smu import SmuEmulator
from hwloop.errors import ConfigError, InstrumentError, SafetyLimitError
from hwloop.instruments.b1500 import B1500
from hwloop.instruments.b1500_config import B1500Config
from hwloop.instruments.bench import BoardOp, Condition, Limits, bench_from_dict, conditions_array
from hwloop.instruments.caps import KEITHLEY_2600B
from hwloop.instruments.fpga import FpgaBoard
from hwloop.instruments.smu import Keithley2600
from hwloop.instruments.visa import VisaAdapter

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BENCH = Limits()  # the limits the drivers enforce (virtual.toml's)
WIDE_OPEN = Limits(
    max_v_wl=1e3, max_v_bl=1e3, max_v_sl=1e3, max_v_gate_set=1e3, max_v_form=1e3, max_v_read=1e3, max_width_ns=2**32 - 1
)


def within_bench_limits(op: int, c: Condition) -> bool:
    bl_max = {BoardOp.FORM: 4.0, BoardOp.READ: 0.3}.get(BoardOp(op), 2.5)
    ok = abs(c.v_wl) <= 5.0 and abs(c.v_sl) <= 3.0 and abs(c.v_bl) <= bl_max and 0 < c.width_ns <= 10_000
    if op != BoardOp.READ and c.v_bl > c.v_sl:
        ok = ok and c.v_wl <= 2.4
    return ok


@dataclass
class Rig:
    board: FpgaBoard
    emu: BoardEmulator
    smu: Keithley2600
    smu_emu: SmuEmulator
    accepted: int = 0
    refused: int = 0


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    sim = SimChip(n_tiles=1, config=SimConfig.ideal(), seed=0)
    chip = EmulatedChip(sim)
    emu = BoardEmulator(chip, WIDE_OPEN, pace=False).start()
    smu_emu = SmuEmulator(chip).start()
    board = FpgaBoard(emu.port, limits=BENCH, timeout_s=1.0, retries=1)
    board.identify()
    smu = Keithley2600(VisaAdapter(smu_emu.resource, visa_library="@py", timeout_ms=2000), BENCH)
    r = Rig(board, emu, smu, smu_emu)
    yield r
    smu.close()
    board.close()
    emu.stop()
    smu_emu.stop()
    # the property held over many requests, and it was not vacuous: both outcomes occurred
    print(
        f"\nsafety property: {r.accepted} requests sent, {r.refused} refused, "
        f"{sum(n for _, _, n in emu.log.ops)} cell operations reached the board"
    )
    assert r.accepted > 100 and r.refused > 100


volts = st.one_of(
    st.floats(-6.0, 6.0),
    st.sampled_from(
        [0.0, 0.3, 0.3004, 0.3006, 2.4, 2.4004, 2.4006, 2.5, 3.0, 4.0, 4.0006, 5.0, 5.0006, math.nan, math.inf]
    ),
)
widths = st.one_of(st.integers(0, 20_000), st.sampled_from([1, 10_000, 10_001]))
# half the draws are anywhere, half inside every limit, so both outcomes occur in every run
safe_conditions = st.builds(
    Condition, st.floats(0.0, 2.4), st.floats(0.0, 0.3), st.floats(0.0, 3.0), st.integers(1, 10_000)
)
conditions = st.one_of(st.builds(Condition, volts, volts, volts, widths), safe_conditions)
ops = st.sampled_from(list(BoardOp))


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[Condition], np.ndarray, np.ndarray, np.ndarray]:
    conds = draw(st.lists(conditions, min_size=1, max_size=4))
    n = draw(st.integers(1, 40))
    op = np.array(draw(st.lists(ops, min_size=n, max_size=n)))
    ci = np.array(draw(st.lists(st.integers(0, len(conds) - 1), min_size=n, max_size=n)))
    col = np.array(draw(st.lists(st.integers(0, 127), min_size=n, max_size=n)))
    return conds, op, ci, col


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    requests=st.lists(
        st.one_of(
            st.tuples(st.just("batch"), batches()),
            st.tuples(st.just("pulse"), st.tuples(volts, volts, volts, ops, widths)),
            st.tuples(
                st.just("pulse"),
                st.tuples(st.floats(0.0, 2.4), st.floats(0.0, 0.3), st.floats(0.0, 3.0), ops, st.integers(1, 10_000)),
            ),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_no_fpga_request_past_a_limit_reaches_the_board(rig: Rig, requests: list) -> None:
    before = len(rig.emu.log.ops)
    expected_new = 0
    for kind, req in requests:
        try:
            if kind == "batch":
                conds, op, ci, col = req
                rig.board.batch(np.zeros_like(col), np.zeros_like(col), col, op, ci, conds)
                expected_new += 1
            else:
                v_wl, v_bl, v_sl, op, width = req
                rig.board.select(0, 0, 1)
                rig.board.set_dac(v_wl, v_bl, v_sl)
                rig.board.pulse(op, width)
                expected_new += 1
            rig.accepted += 1
        except SafetyLimitError:
            rig.refused += 1
    new = rig.emu.log.ops[before:]
    assert len(new) >= expected_new  # every accepted request did reach the board
    for op, cond, _n in new:
        assert within_bench_limits(op, cond), (BoardOp(op).name, cond)
    assert rig.emu.violations == 0


smu_v = st.one_of(st.floats(-1.0, 1.0), st.floats(-0.5, 0.5), st.sampled_from([0.5, 0.50001, -0.5, math.nan]))
smu_i = st.one_of(st.floats(0, 2e-3), st.floats(1e-10, 1e-3), st.sampled_from([1e-3, 1.0001e-3, 1e-11]))
smu_w = st.one_of(st.floats(0, 0.02), st.floats(1e-4, 0.01), st.sampled_from([0.01, 0.0100001]))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(v=smu_v, i_limit=smu_i, width=st.one_of(st.none(), smu_w))
def test_no_smu_command_past_a_limit_reaches_the_instrument(
    rig: Rig, v: float, i_limit: float, width: float | None
) -> None:
    start = len(rig.smu_emu.state.commands)
    try:
        if width is None:
            rig.smu.source_voltage_measure_current(v, i_limit)
        else:
            rig.smu.pulse_voltage_measure_current(v, width, i_limit)
        rig.accepted += 1
    except SafetyLimitError:
        rig.refused += 1
    for cmd in (x.strip() for line in rig.smu_emu.state.commands[start:] for x in line.split(";")):
        if "levelv = " in cmd or "listv(" in cmd:
            x = float(cmd.split("=")[-1] if "levelv" in cmd else cmd.split("{")[1].rstrip("})"))
            assert abs(x) <= 0.5, cmd
        if "limiti = " in cmd or "rangei = " in cmd:
            assert 0 < float(cmd.split("=")[-1]) <= 1e-3, cmd
        if "timer[1].delay" in cmd:
            assert 0 < float(cmd.split("=")[-1]) <= 0.01, cmd
    assert not rig.smu_emu.state.errors


# ---------------------------------------------------------------------- the B1500A driver (FLEX)
@dataclass
class B1500Rig:
    smu: B1500
    emu: B1500Emulator
    accepted: int = 0
    refused: int = 0


B1500_CFG = B1500Config(
    wl_slot=1, bl_slot=2, wl_module="B1511B", bl_module="B1517A", wl_max_v=5.0, wl_max_current_a=1e-3
)


@pytest.fixture(scope="module")
def b1500_rig() -> Iterator[B1500Rig]:
    chip = EmulatedChip(SimChip(n_tiles=1, config=SimConfig.ideal(), seed=0))
    emu = B1500Emulator(chip, config=B1500_CFG).start()  # its own limits are the modules' (100 V, 100 mA)
    smu = B1500(VisaAdapter(emu.resource, visa_library="@py", timeout_ms=2000), BENCH, B1500_CFG)
    smu.identify()
    smu.reset()
    r = B1500Rig(smu, emu)
    yield r
    smu.close()
    emu.stop()
    print(f"\nB1500 safety property: {r.accepted} requests sent, {r.refused} refused")
    assert r.accepted > 50 and r.refused > 50


def _flex_args(cmd: str) -> list[float]:
    return [float(x) for x in cmd.partition(" ")[2].split(",")]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(["spot", "pulse", "gate"]),
    v=st.one_of(smu_v, st.floats(-6.0, 6.0)),
    i_limit=smu_i,
    width=st.one_of(smu_w, st.sampled_from([499e-6, 500e-6, 1e-3])),
)
# widths whose pulse period, rounded on its own, once fell under width + 2 ms (error 120 from the instrument)
@example(kind="pulse", v=0.0, i_limit=1e-10, width=0.00746471082253052)
@example(kind="pulse", v=0.1, i_limit=1e-4, width=0.0064)
def test_no_b1500_command_past_a_limit_reaches_the_instrument(
    b1500_rig: B1500Rig, kind: str, v: float, i_limit: float, width: float
) -> None:
    r = b1500_rig
    start = len(r.emu.state.commands)
    try:
        if kind == "spot":
            r.smu.source_voltage_measure_current(v, i_limit)
        elif kind == "pulse":
            r.smu.pulse_voltage_measure_current(v, width, i_limit)
        else:
            r.smu.force_gate(v, i_limit)
        r.accepted += 1
    except SafetyLimitError:
        r.refused += 1
    for cmd in r.emu.state.commands[start:]:
        if cmd.startswith("DV "):
            slot, _rng, volts, icomp = _flex_args(cmd)
            v_max, i_max = (0.5, 1e-3) if slot == 2 else (5.0, 1e-3)  # bench smu_max_* / [b1500] wl_max_*
            assert abs(volts) <= v_max and 0 < icomp <= i_max, cmd
        elif cmd.startswith("PV "):
            _slot, _rng, base, pulse, icomp = _flex_args(cmd)
            assert abs(base) <= 0.5 and abs(pulse) <= 0.5 and 0 < icomp <= 1e-3, cmd
        elif cmd.startswith("PT "):
            assert 500e-6 <= _flex_args(cmd)[1] <= 0.01, cmd  # the HRSMU's shortest pulse, smu_max_width_s
    assert not r.emu.state.errors


# ---------------------------------------------------------------------- bench files (issue 12)
VIRTUAL = Path(__file__).resolve().parents[1] / "instruments" / "virtual.toml"
CAP_2636B = KEITHLEY_2600B["2636B"]

hostile = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**12), 10**12),
    st.booleans(),
    st.text(max_size=4),
    st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0, 0, 1e-12, 1e300, "1.0"]),
    st.lists(st.floats(0, 3), max_size=2),
)
limit_keys = st.sampled_from([f.name for f in fields(Limits)])


def _bench_dict() -> dict:
    return tomllib.loads(VIRTUAL.read_text())


def within(op: int, c: Condition, lim: Limits) -> bool:
    """The bench limits restated as plain comparisons (a condition outside any of them is unsafe)."""
    bl_max = {BoardOp.FORM: lim.max_v_form, BoardOp.READ: lim.max_v_read}.get(BoardOp(op), lim.max_v_bl)
    ok = (
        abs(c.v_wl) <= lim.max_v_wl
        and abs(c.v_sl) <= lim.max_v_sl
        and abs(c.v_bl) <= bl_max
        and 0 < c.width_ns <= lim.max_width_ns
    )
    if op != BoardOp.READ and c.v_bl > c.v_sl:
        ok = ok and c.v_wl <= lim.max_v_gate_set
    return bool(ok)


@settings(max_examples=150, deadline=None)
@given(
    edits=st.lists(st.tuples(limit_keys, hostile), min_size=1, max_size=4),
    top=st.one_of(st.none(), st.tuples(st.sampled_from(["tiles", "name"]), hostile)),
    requests=st.lists(st.tuples(ops, conditions), max_size=12),
)
def test_a_bench_file_loads_only_with_sane_limits(edits: list, top: tuple | None, requests: list) -> None:
    data = _bench_dict()
    for key, value in edits:
        data["limits"][key] = value
    if top is not None:
        data[top[0]] = top[1]
    try:
        bench = bench_from_dict(data, "fuzz.toml")
    except ConfigError as exc:
        assert "\n" not in str(exc)  # one line
        return
    lim = bench.limits
    for f in fields(Limits):
        v = getattr(lim, f.name)
        assert type(v) is type(getattr(Limits(), f.name)) and math.isfinite(v) and v > 0, (f.name, v)
    assert max(lim.max_v_wl, lim.max_v_bl, lim.max_v_sl, lim.max_v_gate_set, lim.max_v_form, lim.max_v_read) <= 32.767
    assert lim.smu_max_v <= CAP_2636B.max_v and lim.smu_max_current_a <= CAP_2636B.max_current_a
    assert type(bench.tiles) is int and 1 <= bench.tiles <= 255
    for op, c in requests:  # whatever the loaded limits pass is inside them; the two gates agree
        try:
            lim.check(op, c)
            passed = True
        except SafetyLimitError:
            passed = False
        q = c.quantized()
        vec = not lim.refused(np.array([int(op)]), conditions_array([c]))[0]
        assert passed == vec, (op, c)
        if passed:
            assert within(op, q, lim), (op, q)


# ---------------------------------------------------------------------- large condition tables
@st.composite
def big_batches(draw: st.DrawFn) -> tuple[list[Condition], np.ndarray, np.ndarray, np.ndarray]:
    n_cond = draw(st.sampled_from([256, 65_537, 70_000, 131_073]))
    filler = draw(safe_conditions)
    conds = [filler] * n_cond
    n = draw(st.integers(1, 24))
    hot = draw(
        st.lists(
            st.one_of(
                st.integers(0, n_cond - 1), st.sampled_from([k for k in (255, 65_536, 65_537, 131_072) if k < n_cond])
            ),
            min_size=n,
            max_size=n,
        )
    )
    for k in set(hot):
        conds[k] = draw(conditions)
    op = np.array(draw(st.lists(ops, min_size=n, max_size=n)))
    col = np.array(draw(st.lists(st.integers(0, 127), min_size=n, max_size=n, unique=True)))
    return conds, op, np.array(hot), col


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
@given(req=big_batches())
def test_batches_with_large_condition_tables(rig: Rig, req: tuple) -> None:
    conds, op, ci, col = req
    before = len(rig.emu.log.ops)
    try:
        rig.board.batch(np.zeros_like(col), np.zeros_like(col), col, op, ci, conds)
        rig.accepted += 1
        ok = True
    except SafetyLimitError:
        rig.refused += 1
        ok = False
    expect_ok = all(within_bench_limits(int(o), conds[int(k)].quantized()) for o, k in zip(op, ci, strict=True))
    assert ok == expect_ok
    for o, cond, _n in rig.emu.log.ops[before:]:
        assert within_bench_limits(o, cond), (BoardOp(o).name, cond)
    assert rig.emu.violations == 0


# ---------------------------------------------------------------------- lost ACKs
@pytest.fixture(scope="module")
def lossy() -> Iterator[tuple[FpgaBoard, BoardEmulator]]:
    sim = SimChip(n_tiles=1, config=SimConfig.ideal(), seed=1)
    emu = BoardEmulator(EmulatedChip(sim), WIDE_OPEN, pace=False).start()
    board = FpgaBoard(emu.port, limits=BENCH, timeout_s=0.1, retries=1)
    board.identify()
    yield board, emu
    board.close()
    emu.stop()


faults = st.one_of(
    st.just(["drop_answer", "drop_answer"]),  # executed, both answers lost: retries run out
    st.lists(st.sampled_from(["drop_answer", "drop_request", "garble_answer", "garble_request"]), max_size=5),
)
steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("dac"),
            st.tuples(
                st.sampled_from([(1.4, 1.8, 0.0), (2.2, 1.8, 0.0), (4.8, 0.0, 2.6), (3.3, 0.1, 0.0), (1.6, 3.8, 0.0)]),
                faults,
            ),
        ),
        st.tuples(st.just("pulse"), st.tuples(ops, st.sampled_from([100, 1000]), faults)),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seq=steps)
@example(
    seq=[
        ("dac", ((1.4, 1.8, 0.0), [])),  # SET levels, acknowledged
        ("dac", ((1.6, 3.8, 0.0), ["drop_answer", "drop_answer"])),  # FORM levels applied, ACKs lost
        ("pulse", (BoardOp.SET, 1000, [])),
    ]
)  # checked against the stale SET levels, it would apply 3.8 V
def test_lost_acks_never_let_a_pulse_past_a_limit(lossy: tuple[FpgaBoard, BoardEmulator], seq: list) -> None:
    board, emu = lossy
    before = len(emu.log.ops)
    for kind, req in seq:
        try:
            if kind == "dac":
                levels, fs = req
                emu.faults.inject(*fs)
                board.set_dac(*levels)
            else:
                op, width, fs = req
                board.select(0, 0, 5)
                emu.faults.inject(*fs)
                board.pulse(op, width)
        except (SafetyLimitError, InstrumentError):
            pass
        finally:
            emu.faults._script.clear()
    # what the board really applied (its own DAC levels at the pulse) is inside the limits
    for o, cond, _n in emu.log.ops[before:]:
        assert within_bench_limits(o, cond), (BoardOp(o).name, cond)
    assert emu.violations == 0
