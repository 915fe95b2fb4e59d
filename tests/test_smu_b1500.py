"""B1500A driver: every call's exact FLEX exchange, over a real loopback socket (tests/_expected_protocol.py)."""

from __future__ import annotations

import math

import pytest
from _expected_protocol import expected_protocol

from hwloop.emulator.b1500 import fmt12
from hwloop.errors import ConfigError, InstrumentError, SafetyLimitError
from hwloop.instruments.b1500 import B1500, i_range_code, parse_datum, v_range_code
from hwloop.instruments.b1500_config import B1500Config
from hwloop.instruments.bench import BenchConfig, Limits, SmuConfig, bench_from_dict
from hwloop.instruments.visa import VisaAdapter

CFG = B1500Config(wl_slot=1, bl_slot=2, wl_module="B1511B", bl_module="B1517A")
IDN = "Keysight Technologies,B1500A,MY12345678,A.06.01.2019.0409"
UNT = "B1511B,0;B1517A,0;0,0;0,0;0,0;0,0;0,0;0,0;0,0;0,0"
HELLO = [("*IDN?", IDN), ("UNT?", UNT)]
RESET = [("*RST", None), ("FMT 1,0;AZ 0;CN 1,2", None), ("ERR?", "0,0,0,0")]
SAFE = [("DZ;CL", None)]
SPOT_CONFIG = [("CMM 2,1;AAD 2,0;AIT 0,3,0.0002;RI 2,16", None), ("ERR?", "0,0,0,0")]
#: one spot read: DV on, TI, DV back to 0 V in ONE program message, then the error queue
READ = "DV 2,5,0.1,0.0001;TI 2,16;DV 2,5,0,0.0001"


def make(resource: str, limits: Limits | None = None, cfg: B1500Config = CFG) -> B1500:
    return B1500(VisaAdapter(resource, visa_library="@py", timeout_ms=1000), limits or Limits(), cfg)


def test_identify_and_reset_exchange() -> None:
    with expected_protocol([*HELLO, *RESET, *SAFE]) as res:
        smu = make(res)
        assert "B1500A" in smu.identify()
        assert smu.modules == {1: "B1511B", 2: "B1517A"}
        smu.reset()
        smu.close()


def test_high_speed_spot_read_exact_exchange_and_configuration_reuse() -> None:
    read = [(READ, "NBI+012.345E-06"), ("ERR?", "0,0,0,0")]
    with expected_protocol([*HELLO, *RESET, *SPOT_CONFIG, *read, *read, *SAFE]) as res:
        smu = make(res)
        smu.identify()
        smu.reset()
        assert smu.source_voltage_measure_current(0.1, 1e-4) == pytest.approx(12.345e-6)
        assert smu.source_voltage_measure_current(0.1, 1e-4) == pytest.approx(12.345e-6)  # no re-configuring
        smu.close()


def test_spot_read_through_mm_and_xe() -> None:
    cfg = B1500Config(wl_slot=3, bl_slot=1, wl_module="B1517A", bl_module="B1511B", spot="xe")
    unt = "B1511B,0;0,0;B1517A,0;0,0;0,0;0,0;0,0;0,0;0,0;0,0"
    with expected_protocol(
        [
            ("*IDN?", IDN),
            ("UNT?", unt),
            ("CN 3,1;CMM 1,1;AAD 1,0;AIT 0,3,0.0002;RI 1,17;MM 1,1", None),  # not reset: CN first
            ("ERR?", "0,0,0,0"),
            ("DV 1,5,-0.2,0.001;XE;DV 1,5,0,0.001", "NAI-001.500E-06"),
            ("ERR?", "0,0,0,0"),
            *SAFE,
        ]
    ) as res:
        smu = make(res, cfg=cfg)
        assert smu.source_voltage_measure_current(-0.2, 1e-3) == pytest.approx(-1.5e-6)  # identifies first
        smu.close()


def test_pulsed_spot_exact_exchange() -> None:
    with expected_protocol(
        [
            *HELLO,
            *RESET,
            ("CMM 2,1;RI 2,16;PT 0,0.001,0.005;PV 2,5,0,0.2,0.0001;MM 3,2", None),
            ("ERR?", "0,0,0,0"),  # checked before the pulse goes out
            ("XE", "NBI+024.690E-06"),
            ("ERR?", "0,0,0,0"),
            # a spot read after the pulse configures again (MM 3 is not a spot mode)
            *SPOT_CONFIG,
            (READ, "NBI+001.000E-06"),
            ("ERR?", "0,0,0,0"),
            *SAFE,
        ]
    ) as res:
        smu = make(res)
        smu.identify()
        smu.reset()
        assert smu.pulse_voltage_measure_current(0.2, 1e-3, 1e-4) == pytest.approx(24.69e-6)
        assert smu.source_voltage_measure_current(0.1, 1e-4) == pytest.approx(1e-6)
        smu.close()


def test_force_gate_exact_exchange() -> None:
    with expected_protocol([*HELLO, *RESET, ("DV 1,50,3.3,0.0001", None), ("ERR?", "0,0,0,0"), *SAFE]) as res:
        smu = make(res)
        smu.identify()
        smu.reset()
        smu.force_gate(3.3, 1e-4)
        smu.close()


def test_error_queue_raises_the_instruments_text_and_goes_safe() -> None:
    with expected_protocol(
        [
            *HELLO,
            ("*RST", None),
            ("FMT 1,0;AZ 0;CN 1,2", None),
            ("ERR?", "100,151,0,0"),
            ("EMG? 100", '"Undefined GPIB command."'),
            ("EMG? 151", '"Value is past the range of the module."'),
            *SAFE,
        ]
    ) as res:
        smu = make(res)
        smu.identify()
        with pytest.raises(InstrumentError, match=r"100 Undefined GPIB command\.; 151 Value is past"):
            smu.reset()
        smu.close()  # already in the safe state: close sends nothing more


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        ("CBI+100.000E-06", "reached its compliance"),
        ("TBI+001.000E-06", "another channel reached its compliance"),
        ("VBI+199.999E+99", "over the measurement range"),
        ("NBI+01#.345E-06", "not a FLEX data item"),
        ("NAI+012.345E-06", "data of slot 1, expected slot 2"),
    ],
)
def test_bad_reading_raises_and_leaves_the_safe_state(reply: str, match: str) -> None:
    with expected_protocol(
        [
            *HELLO,
            *RESET,
            *SPOT_CONFIG,
            (READ, reply),
            *SAFE,
        ]
    ) as res:
        smu = make(res)
        smu.identify()
        smu.reset()
        with pytest.raises(InstrumentError, match=match):
            smu.source_voltage_measure_current(0.1, 1e-4)
        smu.close()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda s: s.source_voltage_measure_current(0.51, 1e-4), "smu_max_v"),
        (lambda s: s.source_voltage_measure_current(math.nan, 1e-4), "non-finite"),
        (lambda s: s.source_voltage_measure_current(0.1, 2e-3), "current limit"),
        (lambda s: s.pulse_voltage_measure_current(0.1, 0.02, 1e-4), "pulse width"),
        (lambda s: s.pulse_voltage_measure_current(0.1, 100e-6, 1e-4), "shortest pulse is 0.0005 s"),
        (lambda s: s.force_gate(5.01, 1e-4), "wl_max_v"),
        (lambda s: s.force_gate(math.inf, 1e-4), "wl_max_v"),
        (lambda s: s.force_gate(1.0, 0.0), "compliance"),
    ],
)
def test_requests_past_a_limit_send_nothing(call, match: str) -> None:
    with expected_protocol([]) as res:
        smu = make(res)
        with pytest.raises(SafetyLimitError, match=match):
            call(smu)
        smu.close()  # nothing was ever sent, so not even the safe state


@pytest.mark.parametrize(
    ("unt", "match"),
    [
        ("B1511B,0;0,0;0,0;0,0;0,0;0,0;0,0;0,0;0,0;0,0", "slot 2 .bit-line SMU. is empty"),
        ("B1511B,0;B1599Z,0;0,0;0,0;0,0;0,0;0,0;0,0;0,0;0,0", "holds 'B1599Z', a module hwloop does not know"),
        ("B1511B,0;B1525A,0;0,0;0,0;0,0;0,0;0,0;0,0;0,0;0,0", "holds a B1525A, but the bench file says B1517A"),
        ("B1517A,0;B1517A,0;0,0;0,0;0,0;0,0;0,0;0,0;0,0;0,0", "slot 1 .word-line SMU. holds a B1517A"),
    ],
)
def test_modules_that_do_not_match_the_bench_are_refused_before_any_setting(unt: str, match: str) -> None:
    with expected_protocol([("*IDN?", IDN), ("UNT?", unt)]) as res:
        smu = make(res)
        with pytest.raises(ConfigError, match=match):
            smu.reset()  # identifies first: nothing past UNT? is sent
        smu.close()


def test_not_a_b1500() -> None:
    with expected_protocol([("*IDN?", "Keithley Instruments Inc., Model 2636B, 1, 4.0.5")]) as res:
        smu = make(res)
        with pytest.raises(InstrumentError, match="is not a B1500A"):
            smu.identify()
        smu.close()


def test_the_helper_itself_catches_a_wrong_and_an_unused_exchange() -> None:
    with pytest.raises(AssertionError, match="expected 'AZ 0', got 'AZ 1'"), expected_protocol([("AZ 0", None)]) as res:
        a = VisaAdapter(res, visa_library="@py", timeout_ms=500)
        a.write("AZ 1")
        a.close()
    with (
        pytest.raises(AssertionError, match="never happened"),
        expected_protocol([("AZ 0", None), ("CL", None)]) as res,
    ):
        a = VisaAdapter(res, visa_library="@py", timeout_ms=500)
        a.write("AZ 0")
        a.close()


def test_range_codes_and_number_format() -> None:
    assert [v_range_code(v) for v in (0.5, 0.51, 2.0, 5.0, 100.0)] == [5, 20, 20, 50, 1000]
    assert [i_range_code(i) for i in (1e-4, 1.0001e-4, 1e-3, 1e-9)] == [16, 17, 17, 11]
    with pytest.raises(ConfigError):
        v_range_code(250.0)
    for x in (0.0, 1.2345e-5, -9.9999e-4, 5e-13, 0.1, 999.9996e-6):
        text = fmt12(x)
        assert len(text) == 12
        assert parse_datum(f"NBI{text}", 2, "t") == pytest.approx(x, rel=1e-3, abs=1e-15)


# ---------------------------------------------------------------------- bench file validation
def _bench(b1500: dict, limits: dict | None = None) -> dict:
    d = BenchConfig(smu=SmuConfig(driver="b1500")).as_dict()
    d["b1500"] = {"wl_slot": 1, "bl_slot": 2, "wl_module": "B1511B", "bl_module": "B1517A", **b1500}
    d["limits"].update(limits or {})
    return d


@pytest.mark.parametrize(
    ("b1500", "limits", "match"),
    [
        ({"bl_slot": 0}, None, "bl_slot is missing"),
        ({"wl_slot": 11}, None, "not a B1500A slot"),
        ({"bl_slot": 1}, None, "both 1"),
        ({"bl_module": ""}, None, "module model is missing"),
        ({"bl_module": "B1599Z"}, None, "unknown B1500A module 'B1599Z'"),
        ({"bl_module": "B1530A"}, None, "B1530A is a WGFMU, not an SMU"),
        ({"wl_max_v": 150.0}, {"max_v_wl": 5.0}, "wl_max_v = 150.0 is past the B1511B MPSMU's range"),
        ({"wl_max_v": 6.0}, None, "above .limits. max_v_wl"),
        ({"wl_max_current_a": 0.5}, None, "wl_max_current_a = 0.5 is past"),
        ({}, {"smu_max_current_a": 0.2}, "smu_max_current_a = 0.2 is past the B1517A HRSMU's range"),
        ({"bl_module": "B1514A"}, {"smu_max_width_s": 0.01}, "smu_max_width_s = 0.01 is past the B1514A"),
        ({"spot": "fast"}, None, "spot = 'fast'"),
        ({"integration_s": 1.0}, None, "integration_s"),
        ({"wl_max_v": "nan"}, None, "wl_max_v = 'nan': must be a finite number"),
        ({"wl_max_v": float("nan")}, None, "wl_max_v = nan: must be a finite number"),
        ({"wl_slot": 1.0}, None, "wl_slot = 1.0: must be an integer"),
    ],
)
def test_bad_b1500_bench_is_refused_at_load(b1500: dict, limits: dict | None, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        bench_from_dict(_bench(b1500, limits), "b.toml")


def test_good_b1500_bench_round_trips_and_keithley_files_stay_without_the_section() -> None:
    cfg = bench_from_dict(_bench({}), "b.toml")
    again = bench_from_dict(__import__("tomllib").loads(cfg.to_toml()), "b.toml")
    assert again.b1500 == cfg.b1500 and again.smu.driver == "b1500"
    assert "[b1500]" not in BenchConfig().to_toml()
