"""Keithley 2600B driver against a pyvisa-sim definition (instruments/*.yaml) and the virtual bench.

The pyvisa-sim definition checks what a constant reply per command can: declarative properties, refusals
that send nothing, the error queue's text, model identification. The exact exchange of each call sequence,
where the driver's state matters, is in tests/test_smu_keithley_protocol.py."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hwloop.chip.sim import SimChip, SimConfig
from hwloop.emulator.device import EmulatedChip
from hwloop.emulator.smu import SOURCE_HOLD, SOURCE_IDLE, SmuEmulator
from hwloop.errors import ConfigError, InstrumentError, SafetyLimitError
from hwloop.instruments.bench import Limits
from hwloop.instruments.smu import Keithley2600
from hwloop.instruments.visa import VisaAdapter

YAML = Path(__file__).resolve().parents[1] / "instruments" / "keithley2636b-sim.yaml"
GOOD = "TCPIP0::192.168.0.50::5025::SOCKET"
ERRORS = "TCPIP0::192.168.0.51::5025::SOCKET"


def make(resource: str = GOOD, limits: Limits | None = None) -> tuple[Keithley2600, list[tuple[str, str]]]:
    log: list[tuple[str, str]] = []
    adapter = VisaAdapter(resource, visa_library=f"{YAML}@sim", timeout_ms=500, transcript=log)
    return Keithley2600(adapter, limits or Limits(), channel="a", nplc=0.01), log


def writes(log: list[tuple[str, str]]) -> list[str]:
    return [t for d, t in log if d == "write"]


def test_declarative_property_round_trip() -> None:
    smu, _ = make()
    smu.channel.source_voltage = 0.25
    assert smu.channel.source_voltage == pytest.approx(0.25)
    assert smu.channel.output_enabled is False


@pytest.mark.parametrize(
    ("attr", "value", "error"),
    [
        ("source_voltage", 0.51, SafetyLimitError),  # past smu_max_v = 0.5
        ("source_voltage", -0.6, SafetyLimitError),
        ("current_limit", 2e-3, SafetyLimitError),  # past smu_max_current_a = 1e-3
        ("nplc", 30.0, ConfigError),  # instrument range 0.001..25
        ("source_function", "resistance", ConfigError),
    ],
)
def test_out_of_range_settings_are_refused_not_clipped(attr: str, value: object, error: type) -> None:
    smu, log = make()
    with pytest.raises(error, match="refused"):
        setattr(smu.channel, attr, value)
    assert log == []  # nothing reached the instrument


def test_source_request_past_limits_sends_nothing() -> None:
    smu, log = make(limits=Limits(smu_max_v=0.2))
    with pytest.raises(SafetyLimitError):
        smu.source_voltage_measure_current(0.3, 1e-4)
    with pytest.raises(SafetyLimitError):
        smu.pulse_voltage_measure_current(0.1, 1.0, 1e-4)  # width past smu_max_width_s
    assert log == []


def test_error_queue_raises_instrument_text() -> None:
    smu, log = make(ERRORS)
    with pytest.raises(InstrumentError, match=r"-285 TSP Syntax error at line 1: unexpected symbol near `\*'"):
        smu.reset()
    assert writes(log).count("print(errorqueue.next())") == 2


def test_close_puts_output_off() -> None:
    smu, log = make()
    smu.close()
    assert writes(log) == ["smua.source.levelv = 0", "smua.source.output = smua.OUTPUT_OFF"]
    smu.close()  # twice is fine


def test_unreachable_resource_is_one_instrument_error() -> None:
    with pytest.raises(InstrumentError, match=r"127\.0\.0\.1"):
        VisaAdapter("TCPIP::127.0.0.1::1::SOCKET", visa_library="@py", timeout_ms=500).ask("*IDN?")


# ---------------------------------------------------------------------- models, order, chunks (issue 12)
def test_identify_accepts_only_supported_tsp_2600b_models() -> None:
    smu, _ = make("TCPIP0::192.168.0.52::5025::SOCKET")  # a SCPI-only Keithley 2450
    with pytest.raises(InstrumentError, match="not a Keithley TSP 2600B"):
        smu.identify()
    smu, _ = make("TCPIP0::192.168.0.53::5025::SOCKET")  # a 2602B where the bench says 2636B
    with pytest.raises(InstrumentError, match=r'model = "2602B"'):
        smu.identify()
    adapter = VisaAdapter("TCPIP0::192.168.0.53::5025::SOCKET", visa_library=f"{YAML}@sim", timeout_ms=500)
    assert "2602B" in Keithley2600(adapter, Limits(), model="2602B").identify()


def test_current_limit_below_the_models_minimum_is_refused_host_side() -> None:
    log: list[tuple[str, str]] = []
    adapter = VisaAdapter(GOOD, visa_library=f"{YAML}@sim", timeout_ms=500, transcript=log)
    smu = Keithley2600(adapter, Limits(), model="2602B")  # 10 nA is the 2601B-2614B's smallest limit
    with pytest.raises(SafetyLimitError, match="2602B"):
        smu.source_voltage_measure_current(0.1, 5e-9)
    with pytest.raises(SafetyLimitError, match="2602B"):
        smu.pulse_voltage_measure_current(0.1, 1e-3, 5e-9)
    with pytest.raises(SafetyLimitError, match="refused"):
        smu.channel.current_limit = 5e-9
    assert log == []
    with pytest.raises(ConfigError, match="channel"):
        Keithley2600(adapter, Limits(), channel="b", model="2601B")  # a single-channel model


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_smu_requests_send_nothing(bad: float) -> None:
    smu, log = make()
    for call in (
        lambda: smu.source_voltage_measure_current(bad, 1e-4),
        lambda: smu.source_voltage_measure_current(0.1, bad),
        lambda: smu.pulse_voltage_measure_current(0.1, bad, 1e-4),
    ):
        with pytest.raises(SafetyLimitError):
            call()
    assert log == []


# ---------------------------------------------------------------------- against the emulated SMU
@pytest.fixture
def vsmu() -> Iterator[tuple[Keithley2600, SmuEmulator]]:
    chip = EmulatedChip(SimChip(n_tiles=1, config=SimConfig.ideal(), seed=0))
    emu = SmuEmulator(chip, max_pulse_s=Limits().smu_max_width_s).start()
    smu = Keithley2600(VisaAdapter(emu.resource, visa_library="@py", timeout_ms=2000), Limits())
    yield smu, emu
    smu.close()
    emu.stop()


def test_an_error_after_configuring_keeps_the_output_off(vsmu: tuple[Keithley2600, SmuEmulator]) -> None:
    smu, emu = vsmu
    smu.source_voltage_measure_current(0.1, 1e-4)  # configured
    n = len(emu.state.commands)
    emu.faults.inject("smu_error")  # the level assignment leaves an error in the queue
    with pytest.raises(InstrumentError, match="injected fault"):
        smu.source_voltage_measure_current(0.2, 1e-4)
    smu.ask("print(errorqueue.count)")  # the safe-state commands have been executed
    sent = emu.state.commands[n:-1]
    assert not any("OUTPUT_ON" in c for c in sent)  # the error was seen before the output turned on
    assert sent[-1].endswith("OUTPUT_OFF")  # and the driver went to its safe state
    assert emu.state.attrs["smua.source.output"] == 0.0


def test_output_on_always_travels_with_output_off(vsmu: tuple[Keithley2600, SmuEmulator]) -> None:
    smu, emu = vsmu
    smu.source_voltage_measure_current(0.1, 1e-4)
    smu.pulse_voltage_measure_current(0.2, 1e-3, 1e-4)
    smu.source_voltage_measure_current(0.1, 1e-4)
    on_lines = [c for c in emu.state.commands if "OUTPUT_ON" in c]
    assert len(on_lines) == 3
    for line in on_lines:
        assert line.index("OUTPUT_ON") < line.index("OUTPUT_OFF"), line


def test_emulated_trigger_model_ends_the_pulse_at_its_width(vsmu: tuple[Keithley2600, SmuEmulator]) -> None:
    smu, emu = vsmu
    smu.pulse_voltage_measure_current(0.2, 2e-3, 1e-4)
    (p,) = emu.pulses
    assert p.ended_by == "timer" and p.width_s == pytest.approx(2e-3) and emu.violations == 0
    assert emu.state.attrs["smua.source.output"] == 0.0


@pytest.mark.parametrize(
    ("lines", "ended_by"),
    [
        # the reset default: endpulse.action = SOURCE_HOLD (1); with endsweep HOLD the level stays on
        (
            ["smua.trigger.endpulse.action = smua.SOURCE_HOLD", "smua.trigger.endsweep.action = smua.SOURCE_HOLD"],
            "output off",
        ),
        # the timer never starts, so the end-pulse event never comes
        (["trigger.timer[1].stimulus = 0"], "output off"),
        # the end pulse waits for an event nobody generates
        (["smua.trigger.endpulse.stimulus = smua.trigger.ARMED_EVENT_ID"], "output off"),
    ],
)
def test_virtual_bench_catches_a_pulse_that_outlasts_its_width(
    vsmu: tuple[Keithley2600, SmuEmulator], lines: list[str], ended_by: str
) -> None:
    smu, emu = vsmu
    c = "smua"
    for cmd in [
        "reset()",
        f"{c}.source.func = {c}.OUTPUT_DCVOLTS",
        f"{c}.source.rangev = 0.5",
        f"{c}.trigger.source.listv({{0.2}})",
        f"{c}.trigger.source.action = {c}.ENABLE",
        "trigger.timer[1].delay = 0.001",
        "trigger.timer[1].count = 1",
        f"trigger.timer[1].stimulus = {c}.trigger.ARMED_EVENT_ID",
        f"{c}.trigger.endpulse.action = {c}.SOURCE_IDLE",
        f"{c}.trigger.endpulse.stimulus = trigger.timer[1].EVENT_ID",
        *lines,
        f"{c}.source.output = {c}.OUTPUT_ON; {c}.trigger.initiate()",
    ]:
        smu.write(cmd)
    smu.ask("print(errorqueue.count)")  # the instrument has run everything above
    assert emu.open_pulse() is not None  # the level is still on the cell
    time.sleep(0.03)
    smu.write(f"{c}.source.output = {c}.OUTPUT_OFF")
    smu.ask("print(errorqueue.count)")
    (p,) = emu.pulses
    assert p.ended_by == ended_by and p.width_s > 0.02  # 20x the 1 ms it was set to
    assert emu.violations == 1 and not emu.state.errors


def test_smu_constants_are_the_manuals() -> None:
    assert (SOURCE_IDLE, SOURCE_HOLD) == (0.0, 1.0)
    emu = SmuEmulator(EmulatedChip(SimChip(n_tiles=1, config=SimConfig.ideal(), seed=0)))
    try:
        assert emu.execute("print(smua.trigger.endpulse.action)") == "1.00000e+00"  # resets to SOURCE_HOLD
        emu.execute("smua.trigger.endpulse.action = smua.SOURCE_IDLE")
        assert emu.execute("print(smua.trigger.endpulse.action)") == "0.00000e+00"
    finally:
        emu.stop()


_KILL_CHILD = """
import sys
from hwloop.instruments.bench import Limits
from hwloop.instruments.smu import Keithley2600
from hwloop.instruments.visa import VisaAdapter
smu = Keithley2600(VisaAdapter(sys.argv[1], visa_library="@py", timeout_ms=2000), Limits())
print("ready", flush=True)
while True:
    smu.source_voltage_measure_current(0.1, 1e-4)
"""


@pytest.mark.parametrize("delay_s", [0.05, 0.13, 0.31])
def test_kill_9_during_dc_reads_leaves_the_output_off(delay_s: float) -> None:
    chip = EmulatedChip(SimChip(n_tiles=1, config=SimConfig.ideal(), seed=0))
    emu = SmuEmulator(chip).start()
    try:
        proc = subprocess.Popen([sys.executable, "-c", _KILL_CHILD, emu.resource], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(delay_s)
        n_before = len(emu.state.commands)
        proc.kill()
        proc.wait(10)
        time.sleep(0.3)  # whatever line was in flight has been executed
        assert len(emu.state.commands) > n_before - 1 and n_before > 4  # it was reading when it died
        assert emu.state.attrs["smua.source.output"] == 0.0
    finally:
        emu.stop()
