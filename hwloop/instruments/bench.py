"""Bench configuration: instrument addresses, voltage tables and safety limits (a TOML file).

The format is documented in ``docs/bench-config.md``. Voltages are volts, widths nanoseconds (the FPGA
board's unit), currents amperes: SI floats, units in the names.

``Limits.check`` is the single gate every pulse condition passes before it is encoded for the wire. A
bench file whose own voltage tables break its limits is refused when it is loaded.
"""

from __future__ import annotations

import enum
import math
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from hwloop.errors import ConfigError, SafetyLimitError
from hwloop.instruments.b1500_config import B1500Config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FORMAT_NAME = "hwloop-bench"
FORMAT_VERSION = 1


class BoardOp(enum.IntEnum):
    """Operation codes of a batch entry on the FPGA link (same numbering as ``hwloop.chip.base.Op``)."""

    FORM = 0
    SET = 1
    RESET = 2
    READ = 3


@dataclass(frozen=True)
class Condition:
    """One programming or read condition: the three terminal voltages (V) and the pulse width (ns)."""

    v_wl: float
    v_bl: float
    v_sl: float
    width_ns: int

    def quantized(self) -> Condition:
        """The condition as the board's DACs will apply it (1 mV steps, integer ns); non-finite stays as is."""
        if not all(math.isfinite(v) for v in (self.v_wl, self.v_bl, self.v_sl, float(self.width_ns))):
            return self
        return Condition(round(self.v_wl * 1000) / 1000, round(self.v_bl * 1000) / 1000,
                         round(self.v_sl * 1000) / 1000, round(self.width_ns))


@dataclass(frozen=True)
class Limits:
    """Safety limits of the bench. Past any of them a request raises ``SafetyLimitError`` unsent."""

    max_v_wl: float = 5.0           # |V| on the word line (gate) for any operation
    max_v_bl: float = 2.5           # |V| on the bit line for SET / RESET / READ
    max_v_sl: float = 3.0           # |V| on the source line
    max_v_gate_set: float = 2.4     # gate voltage of a pulse with V_BL > V_SL (SET polarity): bounds I_CC
    max_v_form: float = 4.0         # |V_BL| of a FORM pulse
    max_v_read: float = 0.3         # |V_BL| of a READ (a read must not disturb the cell)
    max_width_ns: int = 10_000      # longest FPGA pulse
    smu_max_v: float = 0.5          # |V| the SMU may source
    smu_max_current_a: float = 1e-3  # largest SMU current limit (compliance)
    smu_max_width_s: float = 0.01   # longest SMU trigger-model pulse

    def check(self, op: BoardOp, cond: Condition) -> None:
        """Raise ``SafetyLimitError`` if ``cond`` used for ``op`` is past any limit."""
        op = BoardOp(op)
        problems: list[str] = []
        values = (cond.v_wl, cond.v_bl, cond.v_sl, float(cond.width_ns))
        if not all(math.isfinite(v) for v in values):
            raise SafetyLimitError(f"{op.name} condition {cond} has a non-finite value; nothing was sent")
        if abs(cond.v_wl) > self.max_v_wl:
            problems.append(f"|V_WL| {abs(cond.v_wl):.3f} V > max_v_wl {self.max_v_wl} V")
        if abs(cond.v_sl) > self.max_v_sl:
            problems.append(f"|V_SL| {abs(cond.v_sl):.3f} V > max_v_sl {self.max_v_sl} V")
        if op is BoardOp.FORM:
            bl_max, bl_name = self.max_v_form, "max_v_form"
        elif op is BoardOp.READ:
            bl_max, bl_name = self.max_v_read, "max_v_read"
        else:
            bl_max, bl_name = self.max_v_bl, "max_v_bl"
        if abs(cond.v_bl) > bl_max:
            problems.append(f"|V_BL| {abs(cond.v_bl):.3f} V > {bl_name} {bl_max} V")
        if op is not BoardOp.READ and cond.v_bl > cond.v_sl and cond.v_wl > self.max_v_gate_set:
            problems.append(f"gate V_WL {cond.v_wl:.3f} V > max_v_gate_set {self.max_v_gate_set} V "
                            "with V_BL > V_SL (I_CC would be unbounded)")
        if not 0 < cond.width_ns <= self.max_width_ns:
            problems.append(f"width {cond.width_ns} ns outside (0, {self.max_width_ns}] ns")
        if problems:
            raise SafetyLimitError(f"{op.name} request refused, nothing was sent: " + "; ".join(problems))

    def check_smu(self, v: float, i_limit_a: float, width_s: float | None = None) -> None:
        """Raise ``SafetyLimitError`` if an SMU source request is past the SMU limits."""
        problems: list[str] = []
        if not (math.isfinite(v) and math.isfinite(i_limit_a)):
            problems.append("non-finite value")
        elif abs(v) > self.smu_max_v:
            problems.append(f"|V| {abs(v):.4g} V > smu_max_v {self.smu_max_v} V")
        if not 0 < i_limit_a <= self.smu_max_current_a:
            problems.append(f"current limit {i_limit_a:.4g} A outside (0, {self.smu_max_current_a}] A")
        if width_s is not None and not 0 < width_s <= self.smu_max_width_s:
            problems.append(f"pulse width {width_s:.4g} s outside (0, {self.smu_max_width_s}] s")
        if problems:
            raise SafetyLimitError("SMU request refused, nothing was sent: " + "; ".join(problems))


@dataclass(frozen=True)
class SmuConfig:
    driver: str = "keithley2600"
    resource: str = "TCPIP::192.168.0.2::5025::SOCKET"
    visa_library: str = "@py"       # "@py" (pyvisa-py), "" (system VISA) or "<file.yaml>@sim" (pyvisa-sim)
    channel: str = "a"
    timeout_ms: int = 2000
    current_limit_a: float = 1e-4
    nplc: float = 0.01


@dataclass(frozen=True)
class FpgaConfig:
    port: str = "/dev/ttyUSB0"
    baud: int = 921_600
    timeout_s: float = 0.5
    retries: int = 3
    max_batch_ops: int = 4096


@dataclass(frozen=True)
class FormTable:
    v_wl: float = 1.6
    v_bl_start: float = 1.6
    v_bl_stop: float = 4.0
    v_bl_step: float = 0.2
    width_ns: int = 1000
    verify_g_us: float = 10.0       # a device reading above this after a FORM pulse is formed

    def ramp_v(self) -> list[float]:
        n = math.floor((self.v_bl_stop - self.v_bl_start) / self.v_bl_step + 1e-9) + 1
        return [round(self.v_bl_start + k * self.v_bl_step, 6) for k in range(max(n, 1))]


@dataclass(frozen=True)
class SetTable:
    v_bl: float = 1.8
    v_sl: float = 0.0
    width_ns: int = 1000
    v_wl: tuple[float, ...] = (1.4, 1.5143, 1.6286, 1.7429, 1.8571, 1.9714, 2.0857, 2.2)


@dataclass(frozen=True)
class ResetTable:
    v_wl: float = 4.8
    v_bl: float = 0.0
    v_sl: float = 2.6
    width_ns: int = 100


@dataclass(frozen=True)
class ReadTable:
    v_wl: float = 3.3
    v_bl: float = 0.1
    v_sl: float = 0.0
    width_ns: int = 1000


@dataclass(frozen=True)
class BenchConfig:
    name: str = "bench"
    tiles: int = 1
    smu: SmuConfig = field(default_factory=SmuConfig)
    fpga: FpgaConfig = field(default_factory=FpgaConfig)
    form: FormTable = field(default_factory=FormTable)
    set: SetTable = field(default_factory=SetTable)
    reset: ResetTable = field(default_factory=ResetTable)
    read: ReadTable = field(default_factory=ReadTable)
    limits: Limits = field(default_factory=Limits)
    b1500: B1500Config = field(default_factory=B1500Config)  # used when [smu] driver = "b1500"
    source_path: str = ""

    # ------------------------------------------------------------ conditions from the tables
    def form_conditions(self) -> list[Condition]:
        f = self.form
        return [Condition(f.v_wl, v, 0.0, f.width_ns) for v in f.ramp_v()]

    def set_condition(self, v_gate: float) -> Condition:
        s = self.set
        return Condition(float(v_gate), s.v_bl, s.v_sl, s.width_ns)

    def set_level_conditions(self) -> list[Condition]:
        """SET condition per HCS level (index 0 here is level 1)."""
        return [self.set_condition(v) for v in self.set.v_wl]

    def reset_condition(self) -> Condition:
        r = self.reset
        return Condition(r.v_wl, r.v_bl, r.v_sl, r.width_ns)

    def read_condition(self) -> Condition:
        r = self.read
        return Condition(r.v_wl, r.v_bl, r.v_sl, r.width_ns)

    def validate(self) -> BenchConfig:
        """Refuse a bench whose own tables break its limits or whose settings make no sense."""
        if self.tiles < 1:
            raise ConfigError(f"bench {self.name!r}: tiles must be >= 1, got {self.tiles}")
        if self.fpga.baud <= 0 or self.fpga.retries < 0 or self.fpga.timeout_s <= 0:
            raise ConfigError(f"bench {self.name!r}: [fpga] baud, timeout_s must be > 0 and retries >= 0")
        if not 1 <= self.fpga.max_batch_ops <= 8192:
            raise ConfigError(f"bench {self.name!r}: [fpga] max_batch_ops must be 1..8192")
        lim = self.limits
        if max(lim.max_v_wl, lim.max_v_bl, lim.max_v_sl, lim.max_v_form) > 32.0 or lim.max_width_ns >= 2**32:
            raise ConfigError(f"bench {self.name!r}: [limits] past what the FPGA protocol can carry "
                              "(|V| <= 32 V in int16 mV, width < 2^32 ns)")
        if self.form.v_bl_step <= 0 or self.form.v_bl_stop < self.form.v_bl_start:
            raise ConfigError(f"bench {self.name!r}: [form] needs v_bl_step > 0 and v_bl_stop >= v_bl_start")
        if not self.set.v_wl:
            raise ConfigError(f"bench {self.name!r}: [set] v_wl needs one gate voltage per HCS level")
        if list(self.set.v_wl) != sorted(self.set.v_wl):
            raise ConfigError(f"bench {self.name!r}: [set] v_wl must rise with the level (higher I_CC)")
        try:
            for c in self.form_conditions():
                self.limits.check(BoardOp.FORM, c)
            for c in self.set_level_conditions():
                self.limits.check(BoardOp.SET, c)
            self.limits.check(BoardOp.RESET, self.reset_condition())
            self.limits.check(BoardOp.READ, self.read_condition())
            self.limits.check_smu(self.read.v_bl, self.smu.current_limit_a)
        except SafetyLimitError as exc:
            raise ConfigError(f"bench {self.name!r}: its own voltage tables break its limits: "
                              f"{exc}") from None
        if self.read.v_bl <= 0:
            raise ConfigError(f"bench {self.name!r}: [read] v_bl must be > 0 to measure a conductance")
        if self.smu.driver == "b1500":
            self.b1500.validate(f"bench {self.name!r}", smu_max_v=lim.smu_max_v,
                                smu_max_current_a=lim.smu_max_current_a, smu_max_width_s=lim.smu_max_width_s,
                                max_v_wl=lim.max_v_wl)
        return self

    # ------------------------------------------------------------ I/O
    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("source_path")
        if self.smu.driver != "b1500":
            d.pop("b1500")
        d["set"]["v_wl"] = list(self.set.v_wl)
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **d}

    def to_toml(self) -> str:
        return dump_toml(self.as_dict())

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_toml())

    def with_(self, **kw: Any) -> BenchConfig:
        return replace(self, **kw)


_SECTIONS: dict[str, type] = {
    "smu": SmuConfig, "fpga": FpgaConfig, "form": FormTable, "set": SetTable, "reset": ResetTable,
    "read": ReadTable, "limits": Limits, "b1500": B1500Config,
}


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    kw: dict[str, Any] = {}
    for key, value in data.items():
        default = getattr(cls(), key)
        try:
            if isinstance(default, tuple):
                kw[key] = tuple(float(v) for v in value)
            elif isinstance(default, bool):
                kw[key] = bool(value)
            elif isinstance(default, int):
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError(f"{value} is not an integer")
                kw[key] = int(value)
            elif isinstance(default, float):
                kw[key] = float(value)
            else:
                kw[key] = str(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}.{key}: bad value {value!r} ({exc})") from None
    return cls(**kw)


def bench_from_dict(data: dict[str, Any], source_path: str = "") -> BenchConfig:
    where = source_path or "bench"
    fmt = data.get("format", FORMAT_NAME)
    if fmt != FORMAT_NAME:
        raise ConfigError(f"{where}: format is {fmt!r}, expected {FORMAT_NAME!r}")
    ver = int(data.get("format_version", FORMAT_VERSION))
    if ver > FORMAT_VERSION:
        raise ConfigError(f"{where}: format_version {ver} is newer than this hwloop reads ({FORMAT_VERSION})")
    top = {k: v for k, v in data.items() if k not in _SECTIONS and k not in ("format", "format_version")}
    unknown = sorted(set(top) - {"name", "tiles"})
    if unknown:
        raise ConfigError(f"{where}: unknown top-level key(s) {unknown}")
    kw: dict[str, Any] = {"name": str(top.get("name", Path(source_path).stem or "bench")),
                          "tiles": int(top.get("tiles", 1)), "source_path": source_path}
    for sec, cls in _SECTIONS.items():
        if sec in data:
            if not isinstance(data[sec], dict):
                raise ConfigError(f"{where}: [{sec}] must be a table")
            kw[sec] = _build(cls, data[sec], f"{where} [{sec}]")
    return BenchConfig(**kw).validate()


def load_bench(path: str | Path) -> BenchConfig:
    """Read and validate a bench TOML file (``ConfigError`` if it is missing or wrong)."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"bench file {p} not found (see instruments/virtual.toml for an example)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"bench file {p} is not valid TOML: {exc}") from None
    return bench_from_dict(data, str(p))


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


def dump_toml(d: dict[str, Any]) -> str:
    """A minimal TOML writer for the bench schema (scalars, lists, one level of tables)."""
    head = [f"{k} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict)]
    out = ["\n".join(head)]
    for k, v in d.items():
        if isinstance(v, dict):
            out.append(f"[{k}]\n" + "\n".join(f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()))
    return "\n\n".join(out) + "\n"
