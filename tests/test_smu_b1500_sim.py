"""B1500A driver against the pyvisa-sim definition in instruments/b1500a-sim.yaml (the YAML as a spec)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hwloop.errors import ConfigError, InstrumentError
from hwloop.instruments.b1500 import B1500
from hwloop.instruments.b1500_config import B1500Config
from hwloop.instruments.bench import Limits
from hwloop.instruments.visa import VisaAdapter

YAML = Path(__file__).resolve().parents[1] / "instruments" / "b1500a-sim.yaml"
CFG = B1500Config(wl_slot=1, bl_slot=2, wl_module="B1511B", bl_module="B1517A")


def make(resource: str) -> tuple[B1500, list[tuple[str, str]]]:
    log: list[tuple[str, str]] = []
    adapter = VisaAdapter(resource, visa_library=f"{YAML}@sim", timeout_ms=500, transcript=log)
    return B1500(adapter, Limits(), CFG), log


@pytest.mark.parametrize("resource", ["GPIB0::17::INSTR", "TCPIP0::192.168.0.60::5025::SOCKET"])
def test_every_driver_call_matches_the_yaml(resource: str) -> None:
    smu, log = make(resource)
    assert "B1500A" in smu.identify()
    smu.reset()
    assert smu.source_voltage_measure_current(0.1, 1e-4) == pytest.approx(12.345e-6)
    assert smu.pulse_voltage_measure_current(0.2, 1e-3, 1e-4) == pytest.approx(24.69e-6)
    smu.force_gate(3.3, 1e-4)
    smu.close()
    assert all(text != "UNEXPECTED" for d, text in log if d == "read")
    assert [t for d, t in log if d == "write"][-1] == "DZ;CL"


def test_instrument_error_text_from_emg() -> None:
    smu, log = make("GPIB0::18::INSTR")
    smu.identify()
    with pytest.raises(InstrumentError, match=r"B1500A reported: 100 Undefined GPIB command\."):
        smu.reset()
    assert [t for d, t in log if d == "write"][-1] == "DZ;CL"  # safe state after the error


def test_wrong_module_refused_after_unt() -> None:
    smu, log = make("GPIB0::19::INSTR")
    with pytest.raises(ConfigError, match="holds a B1525A"):
        smu.reset()
    smu.close()
    assert [t for d, t in log if d == "write"] == ["*IDN?", "UNT?"]
