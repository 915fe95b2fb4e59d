"""Keysight (Agilent) B1500A semiconductor device analyzer behind the ``Smu`` interface, in FLEX over PyVISA.

Two SMU modules are used: the bit-line SMU (``[b1500] bl_slot``) forces the read voltage and measures the
current; the word-line SMU (``wl_slot``) can hold the gate (``force_gate``). The commands, in the order the
manual introduces them (the whole subset is in ``docs/flex.md``):

- ``*IDN?``, ``UNT?`` (modules per slot, checked against the bench file before anything else is sent)
- ``*RST``, then ``FMT 1,0`` (ASCII data with a status header), ``AZ 0`` (no auto-zero), ``CN wl,bl``
- ``DV ch,range,V,Icomp``: DC voltage with current compliance; ``DZ``/``CL``: zero and channels off
- spot current: ``CMM ch,1``, ``AAD ch,0``, ``AIT 0,3,t``, ``RI ch,range``, then ``TI ch,range``
  (high-speed spot) or ``MM 1,ch`` + ``XE``; each datum's status letter is decoded (``C`` = compliance)
- pulsed spot: ``PT hold,width,period``, ``PV ch,range,base,pulse,Icomp``, ``MM 3,ch``, ``XE``
- ``ERR?`` (four codes) and ``EMG? code`` (the message)

Every request is checked against the bench limits (refuse, never clip) and the module's range before a
byte is written; the error queue is read after configuring and before any non-zero output, and after
each measurement. Any exception inside a command group puts the instrument in its safe state (``DZ``
then ``CL``: zero output, channels off). Why this is hwloop's own driver and not PyMeasure's
``AgilentB1500``: ``docs/flex.md``.
"""

from __future__ import annotations

import math
import re

from hwloop.errors import ConfigError, InstrumentError, SafetyLimitError
from hwloop.instruments.b1500_config import MODULES, B1500Config, ModuleSpec, check_modules, parse_unt
from hwloop.instruments.bench import BenchConfig, Limits
from hwloop.instruments.smu import Smu
from hwloop.instruments.visa import VisaAdapter

#: Voltage output ranges (V) and their FLEX codes (limited auto ranging from that range up).
V_RANGES: tuple[tuple[float, int], ...] = (
    (0.5, 5),
    (2.0, 20),
    (5.0, 50),
    (20.0, 200),
    (40.0, 400),
    (100.0, 1000),
    (200.0, 2000),
)
#: Current measurement ranges (A) and their FLEX codes (limited auto ranging).
I_RANGES: tuple[tuple[float, int], ...] = (
    (1e-11, 9),
    (1e-10, 10),
    (1e-9, 11),
    (1e-8, 12),
    (1e-7, 13),
    (1e-6, 14),
    (1e-5, 15),
    (1e-4, 16),
    (1e-3, 17),
    (1e-2, 18),
    (1e-1, 19),
    (1.0, 20),
)
#: Status letters of a FMT 1 datum that make a reading unusable (N, W, E are normal).
BAD_STATUS = {
    "C": "this channel reached its compliance",
    "T": "another channel reached its compliance",
    "V": "the reading is over the measurement range",
    "X": "the channel is oscillating or its output did not settle",
    "F": "the SMU is in force saturation",
    "G": "the detection time was over the limit",
    "S": "the output slew rate was too slow",
}
#: ``PT``'s period: at least 5 ms and at least the width + 2 ms (FLEX), here on a 0.1 ms grid
PERIOD_MIN_S, PERIOD_GAP_S, PERIOD_GRID_S = 5e-3, 2e-3, 1e-4


def pulse_period_s(width_s: float) -> float:
    """The pulse period sent with a pulse of ``width_s`` (as sent, after formatting): the next point of the
    0.1 ms grid strictly above width + 2 ms, and at least 5 ms. Strictly above, so that the check
    period >= width + 2 ms holds whatever the rounding of the two numbers: rounded each on its own, a width
    of 7.46471 ms gave a period 1 ulp under width + 2 ms, and a width of 6.4 ms a period of exactly 8.4 ms
    that a float comparison puts under it (error 120 from the instrument's emulator)."""
    steps = math.floor(round((width_s + PERIOD_GAP_S) / PERIOD_GRID_S, 6)) + 1
    return max(PERIOD_MIN_S, steps * PERIOD_GRID_S)


_DATUM = re.compile(r"^([A-Z])([A-J])([IVT])([+-]\d+(?:\.\d*)?E[+-]\d+)$")
_CHANNEL = "ABCDEFGHIJ"


def v_range_code(v_max: float) -> int:
    """The smallest output range covering ``v_max`` volts."""
    for cap, code in V_RANGES:
        if v_max <= cap:
            return code
    raise ConfigError(f"no B1500A voltage range covers {v_max} V")


def i_range_code(i_a: float) -> int:
    """The smallest current measurement range covering ``i_a`` amperes."""
    for cap, code in I_RANGES:
        if i_a <= cap * (1 + 1e-9):
            return code
    raise ConfigError(f"no B1500A current range covers {i_a} A")


def parse_datum(text: str, slot: int, what: str) -> float:
    """One FMT 1 datum (``NBI+012.345E-06``) of ``slot`` -> the value; status decoded (raise if bad)."""
    datum = text.strip().split(",")[-1]
    m = _DATUM.fullmatch(datum)
    if m is None:
        raise InstrumentError(
            f"B1500A: {what} answered {text!r}, not a FLEX data item (FMT 1): the reply "
            "was garbled or the exchange is out of step"
        )
    status, channel, _kind, value = m.groups()
    if _CHANNEL.index(channel) + 1 != slot:
        raise InstrumentError(
            f"B1500A: {what} answered data of slot {_CHANNEL.index(channel) + 1}, expected slot {slot}: {text!r}"
        )
    if status in BAD_STATUS:
        raise InstrumentError(
            f"B1500A slot {slot}: {what}: {BAD_STATUS[status]} (status {status} in {datum!r}); the reading is not used"
        )
    return float(value)


class B1500(Smu):
    """Keysight B1500A with two SMU modules (word line and bit line)."""

    def __init__(self, adapter: VisaAdapter, limits: Limits, config: B1500Config) -> None:
        self.adapter = adapter
        self.limits = limits
        self.cfg = config
        self.wl, self.bl = config.wl_slot, config.bl_slot
        self.wl_spec: ModuleSpec = MODULES[config.wl_module]
        self.bl_spec: ModuleSpec = MODULES[config.bl_module]
        self.modules: dict[int, str] = {}
        self._checked = False  # UNT? matched the bench file
        self._touched = False  # a setting was sent since the last safe state (close() must send one)
        self._enabled = False  # CN sent since the last safe state
        self._configured: float | None = None  # compliance of the current spot configuration

    @classmethod
    def from_bench(cls, bench: BenchConfig, transcript: list[tuple[str, str]] | None = None) -> B1500:
        s = bench.smu
        adapter = VisaAdapter(s.resource, visa_library=s.visa_library, timeout_ms=s.timeout_ms, transcript=transcript)
        return cls(adapter, bench.limits, bench.b1500)

    # ------------------------------------------------------------------ I/O
    def write(self, command: str) -> None:
        self._touched = True
        self.adapter.write(command)

    def ask(self, command: str) -> str:
        return self.adapter.ask(command)

    # ------------------------------------------------------------------ identification
    def identify(self) -> str:
        idn = self.ask("*IDN?")
        if "B1500" not in idn.upper():
            raise InstrumentError(f"{self.adapter.resource_name} is not a B1500A: *IDN? -> {idn!r}")
        self.modules = parse_unt(self.ask("UNT?"))
        check_modules(self.cfg, self.modules, self.adapter.resource_name)
        self._checked = True
        return idn

    def _require_checked(self) -> None:
        if not self._checked:
            self.identify()

    # ------------------------------------------------------------------ Smu interface
    # Each group of settings goes out as ONE program message (FLEX commands joined by ";"), then ERR?.
    # One write per exchange also keeps TCP from holding a second small write back (Nagle's algorithm
    # against the instrument's delayed ACK: about 40 ms per extra write on a LAN socket).
    def reset(self) -> None:
        """``*RST`` and the initial settings; both SMUs enabled at 0 V."""
        self._require_checked()
        with self._batch():
            self.write("*RST")
            self.write(f"FMT 1,0;AZ 0;CN {self.wl},{self.bl}")
        self._enabled = True
        self._configured = None

    def check_errors(self) -> None:
        text = self.ask("ERR?")
        try:
            codes = [int(float(c)) for c in text.split(",")]
        except ValueError:
            raise InstrumentError(
                f"B1500A: ERR? answered {text!r}, not error codes (the exchange is out of step)"
            ) from None
        codes = [c for c in codes if c != 0]
        if not codes:
            return
        messages = [f"{c} {self.ask(f'EMG? {c}').strip().strip(chr(34))}" for c in codes]
        raise InstrumentError("B1500A reported: " + "; ".join(messages))

    def _enable_cmds(self) -> list[str]:
        """``CN`` if the channels are off (after a safe state); marks them on."""
        if self._enabled:
            return []
        self._enabled = True
        self._configured = None
        return [f"CN {self.wl},{self.bl}"]

    def configure_spot(self, i_limit_a: float) -> None:
        """Current measurement on the bit-line SMU for compliance ``i_limit_a``; outputs stay at 0 V."""
        self.limits.check_smu(0.0, i_limit_a)
        self._require_checked()
        bl, rng = self.bl, i_range_code(i_limit_a)
        cmds = [
            *self._enable_cmds(),
            f"CMM {bl},1",
            f"AAD {bl},0",
            f"AIT 0,3,{self.cfg.integration_s:.6g}",
            f"RI {bl},{rng}",
        ]
        if self.cfg.spot == "xe":
            cmds.append(f"MM 1,{bl}")
        with self._batch():  # errors are checked here, before any output leaves 0 V
            self.write(";".join(cmds))
        self._configured = i_limit_a

    def source_voltage_measure_current(self, v: float, i_limit_a: float) -> float:
        """``DV`` on, measure, ``DV`` back to 0 V in one program message, then the error queue."""
        self.limits.check_smu(v, i_limit_a)
        if self._configured != i_limit_a or not self._enabled:
            self.configure_spot(i_limit_a)
        bl, vr = self.bl, v_range_code(self.limits.smu_max_v)
        measure = f"TI {bl},{i_range_code(i_limit_a)}" if self.cfg.spot == "ti" else "XE"
        with self._batch():
            self._touched = True
            text = self.ask(f"DV {bl},{vr},{v:.6g},{i_limit_a:.6g};{measure};DV {bl},{vr},0,{i_limit_a:.6g}")
            i_a = parse_datum(text, bl, "spot current")
        return i_a

    def pulse_voltage_measure_current(self, v: float, width_s: float, i_limit_a: float) -> float:
        """One pulse ``0 -> v -> 0`` V of ``width_s`` on the bit-line SMU (pulsed spot, ``PT``/``PV``)."""
        self.limits.check_smu(v, i_limit_a, width_s)
        spec = self.bl_spec
        if not spec.min_pulse_s <= width_s:
            raise SafetyLimitError(
                f"SMU pulse of {width_s:.4g} s refused, nothing was sent: the "
                f"{self.cfg.bl_module} {spec.kind}'s shortest pulse is {spec.min_pulse_s:g} s "
                "(shorter pulses come from the FPGA board; see docs/flex.md)"
            )
        self._require_checked()
        width_txt = f"{width_s:.6g}"
        period_txt = f"{pulse_period_s(float(width_txt)):.6g}"
        bl, vr, ir = self.bl, v_range_code(self.limits.smu_max_v), i_range_code(i_limit_a)
        cmds = [
            *self._enable_cmds(),
            f"CMM {bl},1",
            f"RI {bl},{ir}",
            f"PT 0,{width_txt},{period_txt}",
            f"PV {bl},{vr},0,{v:.6g},{i_limit_a:.6g}",
            f"MM 3,{bl}",
        ]
        with self._batch():  # configure, then check errors before the pulse goes out
            self.write(";".join(cmds))
        self._configured = None
        with self._batch():
            self._touched = True
            i_a = parse_datum(self.ask("XE"), bl, "pulsed spot current")
        return i_a

    def force_gate(self, v_gate: float, i_limit_a: float) -> None:
        """Hold the word line at ``v_gate`` (V) with compliance ``i_limit_a`` from the word-line SMU."""
        cfg = self.cfg
        problems = []
        if not (math.isfinite(v_gate) and abs(v_gate) <= cfg.wl_max_v):
            problems.append(f"|V| {v_gate!r} V past [b1500] wl_max_v {cfg.wl_max_v} V")
        if not (math.isfinite(i_limit_a) and 0 < i_limit_a <= cfg.wl_max_current_a):
            problems.append(f"compliance {i_limit_a!r} A outside (0, {cfg.wl_max_current_a}] A")
        if problems:
            raise SafetyLimitError("word-line SMU request refused, nothing was sent: " + "; ".join(problems))
        self._require_checked()
        with self._batch():
            self.write(
                ";".join(
                    [*self._enable_cmds(), f"DV {self.wl},{v_range_code(cfg.wl_max_v)},{v_gate:.6g},{i_limit_a:.6g}"]
                )
            )

    def safe_state(self) -> None:
        """Zero output on every channel (``DZ``), then all channels off (``CL``)."""
        self._enabled = False
        self._configured = None
        self.adapter.write("DZ;CL")
        self._touched = False  # nothing set since: close() need not send it again

    def close(self) -> None:
        if self.adapter is None:
            return
        if self._touched:  # nothing to undo if no setting was sent since the last safe state (or ever)
            self._safe_quietly()
        self.adapter.close()
        self.adapter = None  # type: ignore[assignment]
