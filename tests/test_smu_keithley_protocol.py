"""Keithley 2600B driver: the exact TSP exchange of each call sequence, over a real loopback socket.

In the manner of PyMeasure's ``expected_protocol`` (tests/_expected_protocol.py): the command/reply pairs
sit here in the test, the server answers each reply in turn, and the test fails on a command that differs,
on one past the last pair, or on a pair left unused. Unlike the pyvisa-sim definition (whose replies are
constants per command, tests/test_smu_keithley.py), the replies change along the sequence, so the driver's
state (configuration reuse, re-configuring after a pulse or an error, the error queue) is what is tested.
"""

from __future__ import annotations

import pytest
from _expected_protocol import expected_protocol

from hwloop.errors import InstrumentError
from hwloop.instruments.bench import Limits
from hwloop.instruments.smu import Keithley2600
from hwloop.instruments.visa import VisaAdapter

IDN = "Keithley Instruments Inc., Model 2636B, 4480001, 4.0.5"
NO_ERROR = ("print(errorqueue.count)", "0.00000e+00")
HELLO = [("*IDN?", IDN)]
RESET = [("reset()", None), ("errorqueue.clear()", None), NO_ERROR]
SAFE = [("smua.source.levelv = 0", None), ("smua.source.output = smua.OUTPUT_OFF", None)]
#: one spot read: output on, measure, output off and back to 0 V in ONE chunk
CHUNK = (
    "smua.source.output = smua.OUTPUT_ON; print(smua.measure.i()); smua.source.output = smua.OUTPUT_OFF; "
    "smua.source.levelv = 0"
)


def configure(i_limit: str) -> list[tuple[str, str | None]]:
    """The voltage-source configuration for compliance ``i_limit`` (as the driver formats it)."""
    return [
        ("smua.source.func = smua.OUTPUT_DCVOLTS", None),
        ("smua.source.rangev = 0.5", None),
        (f"smua.source.limiti = {i_limit}", None),
        (f"smua.measure.rangei = {i_limit}", None),
        ("smua.measure.nplc = 0.01", None),
        ("smua.source.levelv = 0", None),
        NO_ERROR,
    ]


def read(v: str, reply: str) -> list[tuple[str, str | None]]:
    return [(f"smua.source.levelv = {v}", None), NO_ERROR, (CHUNK, reply), NO_ERROR]


PULSE = [
    ("smua.source.func = smua.OUTPUT_DCVOLTS", None),
    ("smua.source.rangev = 0.5", None),
    ("smua.source.levelv = 0", None),
    ("smua.source.limiti = 0.0001", None),
    ("smua.measure.rangei = 0.0001", None),
    ("smua.measure.nplc = 0.001", None),
    ("smua.nvbuffer1.clear()", None),
    ("smua.trigger.source.listv({0.2})", None),
    ("smua.trigger.source.limiti = 0.0001", None),
    ("smua.trigger.source.action = smua.ENABLE", None),
    ("smua.trigger.measure.action = smua.ENABLE", None),
    ("smua.trigger.measure.i(smua.nvbuffer1)", None),
    ("trigger.timer[1].delay = 0.0005", None),
    ("trigger.timer[1].count = 1", None),
    ("trigger.timer[1].stimulus = smua.trigger.ARMED_EVENT_ID", None),
    ("smua.trigger.endpulse.action = smua.SOURCE_IDLE", None),
    ("smua.trigger.endpulse.stimulus = trigger.timer[1].EVENT_ID", None),
    ("smua.trigger.count = 1", None),
    NO_ERROR,  # the trigger model is known good before the output turns on
    (
        "smua.source.output = smua.OUTPUT_ON; smua.trigger.initiate(); waitcomplete(); "
        "smua.source.output = smua.OUTPUT_OFF",
        None,
    ),
    ("printbuffer(1, smua.nvbuffer1.n, smua.nvbuffer1.readings)", "2.46900e-05"),
    NO_ERROR,
]


def make(resource: str) -> Keithley2600:
    return Keithley2600(VisaAdapter(resource, visa_library="@py", timeout_ms=1000), Limits(), channel="a", nplc=0.01)


def test_identify_reset_close() -> None:
    with expected_protocol([*HELLO, *RESET, *SAFE], eol="\n") as res:
        smu = make(res)
        assert "Model 2636B" in smu.identify()
        smu.reset()
        smu.close()


def test_reads_reuse_the_configuration_until_the_compliance_changes() -> None:
    """Same compliance: only the level and the chunk; a new compliance configures again. Each reply is the
    one of its own read (a driver that returned a stale value would fail)."""
    pairs = [
        *configure("0.0001"),
        *read("0.1", "1.00000e-05"),
        *read("0.2", "2.00000e-05"),
        *configure("0.0002"),
        *read("0.2", "3.00000e-05"),
        *SAFE,
    ]
    with expected_protocol(pairs, eol="\n") as res:
        smu = make(res)
        assert smu.source_voltage_measure_current(0.1, 1e-4) == pytest.approx(1e-5)
        assert smu.source_voltage_measure_current(0.2, 1e-4) == pytest.approx(2e-5)
        assert smu.source_voltage_measure_current(0.2, 2e-4) == pytest.approx(3e-5)
        smu.close()


def test_a_pulse_forces_the_next_read_to_configure_again() -> None:
    """The pulse leaves the trigger model and NPLC 0.001 behind: the next DC read must not reuse the
    configuration from before the pulse."""
    pairs = [
        *configure("0.0001"),
        *read("0.1", "1.00000e-05"),
        *PULSE,
        *configure("0.0001"),
        *read("0.1", "1.10000e-05"),
        *SAFE,
    ]
    with expected_protocol(pairs, eol="\n") as res:
        smu = make(res)
        assert smu.source_voltage_measure_current(0.1, 1e-4) == pytest.approx(1e-5)
        assert smu.pulse_voltage_measure_current(0.2, 500e-6, 1e-4) == pytest.approx(2.469e-5)
        assert smu.source_voltage_measure_current(0.1, 1e-4) == pytest.approx(1.1e-5)
        smu.close()


def test_an_error_while_configuring_goes_safe_and_the_next_read_configures_again() -> None:
    """Two errors in the queue: both texts in one InstrumentError, the safe state at once, the output never
    turned on; the failed configuration is not taken as done."""
    failing = [
        *configure("0.0001")[:-1],
        ("print(errorqueue.count)", "2.00000e+00"),
        ("print(errorqueue.next())", "-221\tSettings conflict"),
        ("print(errorqueue.next())", "1114\tSettings conflict with limit"),
        *SAFE,
    ]
    pairs = [*failing, *configure("0.0001"), *read("0.1", "1.00000e-05"), *SAFE]
    with expected_protocol(pairs, eol="\n") as res:
        smu = make(res)
        with pytest.raises(InstrumentError, match="-221 Settings conflict; 1114 Settings conflict with limit"):
            smu.source_voltage_measure_current(0.1, 1e-4)
        assert smu.source_voltage_measure_current(0.1, 1e-4) == pytest.approx(1e-5)
        smu.close()


def test_an_unused_pair_fails_the_test() -> None:
    """The helper itself: a conversation that stops short of the expected pairs is a failure."""
    with (
        pytest.raises(AssertionError, match="never happened"),
        expected_protocol([*HELLO, *RESET, *SAFE, *HELLO], eol="\n") as res,
    ):
        smu = make(res)
        smu.identify()
        smu.reset()
        smu.close()
