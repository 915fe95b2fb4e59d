"""Keithley 2600B driver: exact TSP exchanges against a pyvisa-sim definition (instruments/*.yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest

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


def test_identify_and_reset_exchange() -> None:
    smu, log = make()
    assert "Model 2636B" in smu.identify()
    smu.reset()
    assert log == [
        ("write", "*IDN?"), ("read", "Keithley Instruments Inc., Model 2636B, 4480001, 4.0.5"),
        ("write", "reset()"), ("write", "errorqueue.clear()"),
        ("write", "print(errorqueue.count)"), ("read", "0.00000e+00"),
    ]


def test_source_voltage_measure_current_exact_exchange() -> None:
    smu, log = make()
    i_a = smu.source_voltage_measure_current(0.1, 1e-4)
    assert i_a == pytest.approx(1.2345e-5)
    assert writes(log) == [
        "smua.source.func = smua.OUTPUT_DCVOLTS",
        "smua.source.rangev = 0.5",
        "smua.source.limiti = 0.0001",
        "smua.measure.rangei = 0.0001",
        "smua.measure.nplc = 0.01",
        "smua.source.levelv = 0",
        "print(errorqueue.count)",
        "smua.source.levelv = 0.1",
        "smua.source.output = smua.OUTPUT_ON",
        "print(smua.measure.i())",
        "smua.source.output = smua.OUTPUT_OFF",
        "smua.source.levelv = 0",
        "print(errorqueue.count)",
    ]
    # the second read reuses the configuration: only the measurement batch is sent
    del log[:]
    smu.source_voltage_measure_current(0.1, 1e-4)
    assert writes(log)[0] == "smua.source.levelv = 0.1"
    assert len(writes(log)) == 6


def test_pulse_through_trigger_model_exact_exchange() -> None:
    smu, log = make()
    i_a = smu.pulse_voltage_measure_current(0.2, 500e-6, 1e-4)
    assert i_a == pytest.approx(2.469e-5)
    w = writes(log)
    assert w[w.index("smua.nvbuffer1.clear()"):] == [
        "smua.nvbuffer1.clear()",
        "smua.trigger.source.listv({0.2})",
        "smua.trigger.source.limiti = 0.0001",
        "smua.trigger.source.action = smua.ENABLE",
        "smua.trigger.measure.action = smua.ENABLE",
        "smua.trigger.measure.i(smua.nvbuffer1)",
        "trigger.timer[1].delay = 0.0005",
        "trigger.timer[1].count = 1",
        "trigger.timer[1].stimulus = smua.trigger.ARMED_EVENT_ID",
        "smua.trigger.endpulse.action = smua.SOURCE_IDLE",
        "smua.trigger.endpulse.stimulus = trigger.timer[1].EVENT_ID",
        "smua.trigger.count = 1",
        "smua.source.output = smua.OUTPUT_ON",
        "smua.trigger.initiate()",
        "waitcomplete()",
        "smua.source.output = smua.OUTPUT_OFF",
        "printbuffer(1, smua.nvbuffer1.n, smua.nvbuffer1.readings)",
        "print(errorqueue.count)",
    ]


def test_declarative_property_round_trip() -> None:
    smu, _ = make()
    smu.channel.source_voltage = 0.25
    assert smu.channel.source_voltage == pytest.approx(0.25)
    assert smu.channel.output_enabled is False


@pytest.mark.parametrize(("attr", "value", "error"), [
    ("source_voltage", 0.51, SafetyLimitError),       # past smu_max_v = 0.5
    ("source_voltage", -0.6, SafetyLimitError),
    ("current_limit", 2e-3, SafetyLimitError),        # past smu_max_current_a = 1e-3
    ("nplc", 30.0, ConfigError),                      # instrument range 0.001..25
    ("source_function", "resistance", ConfigError),
])
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
