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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from hwloop.errors import ConfigError, SafetyLimitError
from hwloop.instruments.b1500_config import B1500Config
from hwloop.instruments.caps import BOARD_CAPS, DEFAULT_MODEL, SMU_MODEL_CAPS

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
        if not all(_finite(v) for v in (self.v_wl, self.v_bl, self.v_sl, self.width_ns)):
            return self
        return Condition(
            round(self.v_wl * 1000) / 1000,
            round(self.v_bl * 1000) / 1000,
            round(self.v_sl * 1000) / 1000,
            round(self.width_ns),
        )


@dataclass(frozen=True)
class Limits:
    """Safety limits of the bench. Past any of them a request raises ``SafetyLimitError`` unsent.

    Every comparison is written so that NaN fails it (``not x <= lim``): a NaN value or a NaN limit
    refuses the request instead of letting it through.
    """

    max_v_wl: float = 5.0  # |V| on the word line (gate) for any operation
    max_v_bl: float = 2.5  # |V| on the bit line for SET / RESET / READ
    max_v_sl: float = 3.0  # |V| on the source line
    max_v_gate_set: float = 2.4  # gate voltage of a pulse with V_BL > V_SL (SET polarity): bounds I_CC
    max_v_form: float = 4.0  # |V_BL| of a FORM pulse
    max_v_read: float = 0.3  # |V_BL| of a READ (a read must not disturb the cell)
    max_width_ns: int = 10_000  # longest FPGA pulse
    smu_max_v: float = 0.5  # |V| the SMU may source
    smu_max_current_a: float = 1e-3  # largest SMU current limit (compliance)
    smu_max_width_s: float = 0.01  # longest SMU trigger-model pulse

    def check(self, op: BoardOp, cond: Condition) -> None:
        """Raise ``SafetyLimitError`` if ``cond`` used for ``op`` is past any limit."""
        op = BoardOp(op)
        problems: list[str] = []
        values = (cond.v_wl, cond.v_bl, cond.v_sl, cond.width_ns)
        if not all(_finite(v) for v in values):
            raise SafetyLimitError(f"{op.name} condition {cond} has a non-finite value; nothing was sent")
        if not abs(cond.v_wl) <= self.max_v_wl:
            problems.append(f"|V_WL| {abs(cond.v_wl):.3f} V > max_v_wl {self.max_v_wl} V")
        if not abs(cond.v_sl) <= self.max_v_sl:
            problems.append(f"|V_SL| {abs(cond.v_sl):.3f} V > max_v_sl {self.max_v_sl} V")
        if op is BoardOp.FORM:
            bl_max, bl_name = self.max_v_form, "max_v_form"
        elif op is BoardOp.READ:
            bl_max, bl_name = self.max_v_read, "max_v_read"
        else:
            bl_max, bl_name = self.max_v_bl, "max_v_bl"
        if not abs(cond.v_bl) <= bl_max:
            problems.append(f"|V_BL| {abs(cond.v_bl):.3f} V > {bl_name} {bl_max} V")
        if op is not BoardOp.READ and not (cond.v_bl <= cond.v_sl or cond.v_wl <= self.max_v_gate_set):
            problems.append(
                f"gate V_WL {cond.v_wl:.3f} V > max_v_gate_set {self.max_v_gate_set} V "
                "with V_BL > V_SL (I_CC would be unbounded)"
            )
        if not (cond.width_ns > 0 and cond.width_ns <= self.max_width_ns):
            problems.append(f"width {cond.width_ns} ns outside (0, {self.max_width_ns}] ns")
        if not problems and self.refused(np.array([int(op)]), np.array([values], dtype=float))[0]:
            problems.append("outside the limits")  # the vector gate is the definition; never looser
        if problems:
            raise SafetyLimitError(f"{op.name} request refused, nothing was sent: " + "; ".join(problems))

    def refused(self, op: np.ndarray, cond: np.ndarray) -> np.ndarray:
        """Vector gate: for each entry (``op[k]``, ``cond[k] = (v_wl, v_bl, v_sl, width_ns)``), True if refused.

        The same rules as ``check``, on each entry's own values (no lookup key that could alias); every
        comparison is True only for a value inside its limit, so NaN anywhere refuses the entry.
        """
        op = np.asarray(op)
        c = np.asarray(cond, dtype=float).reshape(-1, 4)
        wl, bl, sl, w = c[:, 0], c[:, 1], c[:, 2], c[:, 3]
        bl_max = np.where(
            op == BoardOp.FORM, self.max_v_form, np.where(op == BoardOp.READ, self.max_v_read, self.max_v_bl)
        )
        with np.errstate(invalid="ignore"):
            ok = (op >= 0) & (op <= int(max(BoardOp)))
            ok &= np.isfinite(c).all(axis=1)
            ok &= (np.abs(wl) <= self.max_v_wl) & (np.abs(sl) <= self.max_v_sl) & (np.abs(bl) <= bl_max)
            ok &= (op == BoardOp.READ) | (bl <= sl) | (wl <= self.max_v_gate_set)
            ok &= (w > 0) & (w <= self.max_width_ns)
        return ~ok

    def check_smu(self, v: float, i_limit_a: float, width_s: float | None = None) -> None:
        """Raise ``SafetyLimitError`` if an SMU source request is past the SMU limits."""
        problems: list[str] = []
        if not (_finite(v) and _finite(i_limit_a) and (width_s is None or _finite(width_s))):
            raise SafetyLimitError(
                f"SMU request refused, nothing was sent: non-finite value (V {v!r}, "
                f"current limit {i_limit_a!r}, width {width_s!r})"
            )
        if not abs(v) <= self.smu_max_v:
            problems.append(f"|V| {abs(v):.4g} V > smu_max_v {self.smu_max_v} V")
        if not (i_limit_a > 0 and i_limit_a <= self.smu_max_current_a):
            problems.append(f"current limit {i_limit_a:.4g} A outside (0, {self.smu_max_current_a}] A")
        if width_s is not None and not (width_s > 0 and width_s <= self.smu_max_width_s):
            problems.append(f"pulse width {width_s:.4g} s outside (0, {self.smu_max_width_s}] s")
        if problems:
            raise SafetyLimitError("SMU request refused, nothing was sent: " + "; ".join(problems))


def _finite(x: object) -> bool:
    """True for a real, finite number (not a bool, not a string)."""
    if isinstance(x, bool) or not isinstance(x, int | float | np.integer | np.floating):
        return False
    return math.isfinite(float(x))


def conditions_array(conditions: Sequence[Condition]) -> np.ndarray:
    """``(n, 4)`` float array of (v_wl, v_bl, v_sl, width_ns), as the board's DACs apply them (1 mV, 1 ns).

    Non-finite values stay non-finite (and are refused by ``Limits.refused``); so do values that are not
    numbers at all.
    """
    raw = np.full((len(conditions), 4), np.nan)
    for k, c in enumerate(conditions):
        vals = (c.v_wl, c.v_bl, c.v_sl, c.width_ns)
        if all(_finite(v) for v in vals):
            raw[k] = vals
    with np.errstate(invalid="ignore"):
        raw[:, :3] = np.round(raw[:, :3] * 1000.0) / 1000.0
        raw[:, 3] = np.round(raw[:, 3])
    return raw


@dataclass(frozen=True)
class SmuConfig:
    driver: str = "keithley2600"
    model: str = ""  # instrument model ("2636B"); "" = the driver's default (caps.DEFAULT_MODEL)
    resource: str = "TCPIP::192.168.0.2::5025::SOCKET"
    visa_library: str = "@py"  # "@py" (pyvisa-py), "" (system VISA) or "<file.yaml>@sim" (pyvisa-sim)
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
    verify_g_us: float = 10.0  # a device reading above this after a FORM pulse is formed

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

    def smu_model(self) -> str:
        """The SMU model the bench declares (or the driver's default)."""
        return self.smu.model or DEFAULT_MODEL.get(self.smu.driver, "")

    def validate(self) -> BenchConfig:
        """Refuse a bench whose values have the wrong type, are non-finite, past a hard cap per instrument
        model, or whose own tables break its limits. Each section has its validator (``SECTION_CHECKS``)."""
        for name, value, default in (("name", self.name, ""), ("tiles", self.tiles, 0)):
            _typed(f"bench {self.name!r}", name, value, default)
        for sec in _SECTIONS:
            obj = getattr(self, sec)
            for f in fields(obj):
                _typed(f"bench {self.name!r} [{sec}]", f.name, getattr(obj, f.name), getattr(type(obj)(), f.name))
        for check in SECTION_CHECKS:
            problems = check(self)
            if problems:
                raise ConfigError(f"bench {self.name!r}: " + "; ".join(problems))
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
    "smu": SmuConfig,
    "fpga": FpgaConfig,
    "form": FormTable,
    "set": SetTable,
    "reset": ResetTable,
    "read": ReadTable,
    "limits": Limits,
    "b1500": B1500Config,
}


# ------------------------------------------------------------------ per-section checks at load
# Each takes the whole bench (types already checked) and returns its problems. Comparisons are written
# so that NaN fails them. A second SMU driver gets its caps from ``caps.SMU_MODEL_CAPS[driver]``.


def _in(x: float, lo: float, hi: float, lo_open: bool = True) -> bool:
    return (lo < x if lo_open else lo <= x) and x <= hi


def _check_top(b: BenchConfig) -> list[str]:
    if not _in(b.tiles, 1, BOARD_CAPS.max_tiles, lo_open=False):
        return [f"tiles must be 1..{BOARD_CAPS.max_tiles}, got {b.tiles}"]
    return []


def _check_limits(b: BenchConfig) -> list[str]:
    lim, out = b.limits, []
    for name in ("max_v_wl", "max_v_bl", "max_v_sl", "max_v_gate_set", "max_v_form", "max_v_read"):
        if not _in(getattr(lim, name), 0.0, BOARD_CAPS.max_v):
            out.append(
                f"[limits] {name} = {getattr(lim, name)!r} must be > 0 and <= {BOARD_CAPS.max_v} V "
                "(what the FPGA protocol carries: int16 mV)"
            )
    if not _in(lim.max_width_ns, 0, BOARD_CAPS.max_width_ns):
        out.append(f"[limits] max_width_ns = {lim.max_width_ns} must be 1..{BOARD_CAPS.max_width_ns} ns")
    return out


def _check_fpga(b: BenchConfig) -> list[str]:
    f, out = b.fpga, []
    if not _in(f.baud, 0, 100_000_000):
        out.append(f"[fpga] baud = {f.baud} must be 1..1e8")
    if not _in(f.timeout_s, 0.0, 600.0):
        out.append(f"[fpga] timeout_s = {f.timeout_s} must be > 0 and <= 600 s")
    if not _in(f.retries, 0, 100, lo_open=False):
        out.append(f"[fpga] retries = {f.retries} must be 0..100")
    if not _in(f.max_batch_ops, 1, BOARD_CAPS.max_batch_ops, lo_open=False):
        out.append(f"[fpga] max_batch_ops must be 1..{BOARD_CAPS.max_batch_ops}")
    return out


def _check_smu(b: BenchConfig) -> list[str]:
    s, lim = b.smu, b.limits
    models = SMU_MODEL_CAPS.get(s.driver)
    if models is None:
        return [f"[smu] driver {s.driver!r} has no model caps; known drivers: {sorted(SMU_MODEL_CAPS)}"]
    model = b.smu_model()
    if model not in models:
        return [f"[smu] model {model!r} is not a {s.driver} model hwloop supports; choose one of {sorted(models)}"]
    cap, out = models[model], []
    if s.channel not in cap.channels:
        out.append(f"[smu] channel {s.channel!r}: the {model} has channel(s) {list(cap.channels)}")
    if not _in(s.timeout_ms, 0, 600_000):
        out.append(f"[smu] timeout_ms = {s.timeout_ms} must be 1..600000")
    if not _in(s.nplc, 0.001, 25.0, lo_open=False):
        out.append(f"[smu] nplc = {s.nplc} must be 0.001..25")
    if not _in(lim.smu_max_v, 0.0, cap.max_v):
        out.append(f"[limits] smu_max_v = {lim.smu_max_v} must be > 0 and <= {cap.max_v} V (the {model}'s range)")
    if not _in(lim.smu_max_current_a, cap.min_current_limit_a, cap.max_current_a, lo_open=False):
        out.append(
            f"[limits] smu_max_current_a = {lim.smu_max_current_a} must be {cap.min_current_limit_a:g}.."
            f"{cap.max_current_a:g} A (the {model}'s current limit range)"
        )
    if not _in(lim.smu_max_width_s, cap.min_width_s, cap.max_width_s, lo_open=False):
        out.append(
            f"[limits] smu_max_width_s = {lim.smu_max_width_s} must be {cap.min_width_s:g}..{cap.max_width_s:g} s"
        )
    if not _in(s.current_limit_a, cap.min_current_limit_a, lim.smu_max_current_a, lo_open=False):
        out.append(
            f"[smu] current_limit_a = {s.current_limit_a} must be {cap.min_current_limit_a:g} A (the "
            f"{model}'s smallest) .. smu_max_current_a {lim.smu_max_current_a} A"
        )
    return out


def _check_tables(b: BenchConfig) -> list[str]:
    f, out = b.form, []
    if not (f.v_bl_step > 0 and f.v_bl_start <= f.v_bl_stop):
        return ["[form] needs v_bl_step > 0 and v_bl_stop >= v_bl_start"]
    if not (f.v_bl_stop - f.v_bl_start) / f.v_bl_step <= 10_000:
        return ["[form] the V_BL ramp has more than 10000 steps (v_bl_step too small)"]
    if not f.verify_g_us > 0:
        out.append("[form] verify_g_us must be > 0 µS")
    if not 1 <= len(b.set.v_wl) <= 64:
        out.append("[set] v_wl needs one gate voltage per HCS level (1..64 of them)")
    elif list(b.set.v_wl) != sorted(b.set.v_wl):
        out.append("[set] v_wl must rise with the level (higher I_CC)")
    if not b.read.v_bl > 0:
        out.append("[read] v_bl must be > 0 to measure a conductance")
    if not abs(b.read.v_bl - b.read.v_sl) > 0:
        out.append(f"[read] v_bl = v_sl = {b.read.v_bl} V: no voltage across the cell (G = I / 0)")
    if out:
        return out
    try:
        for c in b.form_conditions():
            b.limits.check(BoardOp.FORM, c)
        for c in b.set_level_conditions():
            b.limits.check(BoardOp.SET, c)
        b.limits.check(BoardOp.RESET, b.reset_condition())
        b.limits.check(BoardOp.READ, b.read_condition())
        b.limits.check_smu(b.read.v_bl, b.smu.current_limit_a)
    except SafetyLimitError as exc:
        return [f"its own voltage tables break its limits: {exc}"]
    return []


def _check_b1500(b: BenchConfig) -> list[str]:
    """The ``[b1500]`` slots and module ranges, when the B1500A is the SMU (``b1500_config``)."""
    if b.smu.driver != "b1500":
        return []
    lim = b.limits
    try:
        b.b1500.validate(
            "",
            smu_max_v=lim.smu_max_v,
            smu_max_current_a=lim.smu_max_current_a,
            smu_max_width_s=lim.smu_max_width_s,
            max_v_wl=lim.max_v_wl,
        )
    except ConfigError as exc:
        return [str(exc).removeprefix(": ")]
    return []


#: run in order by ``BenchConfig.validate``; a driver-specific check can be appended
SECTION_CHECKS: list[Callable[[BenchConfig], list[str]]] = [
    _check_top,
    _check_limits,
    _check_fpga,
    _check_smu,
    _check_tables,
    _check_b1500,
]


def _typed(where: str, key: str, value: Any, default: Any) -> Any:
    """``value`` checked against the type of ``default``: no bool for a number, no float for an integer,
    no string for either, finite numbers only. Returns the value as that type; ``ConfigError`` if not."""

    def bad(why: str) -> ConfigError:
        return ConfigError(f"{where} {key} = {value!r}: {why}")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("must be true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise bad("must be an integer (no quotes, no decimal point)")
        return int(value)
    if isinstance(default, float):
        if not _finite(value):
            raise bad("must be a finite number")
        return float(value)
    if isinstance(default, tuple):
        if not isinstance(value, list | tuple) or not all(_finite(v) for v in value):
            raise bad("must be a list of finite numbers")
        return tuple(float(v) for v in value)
    if not isinstance(value, str):
        raise bad("must be a string (in quotes)")
    return value


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    defaults = cls()
    return cls(**{key: _typed(where, key, value, getattr(defaults, key)) for key, value in data.items()})


def bench_from_dict(data: dict[str, Any], source_path: str = "") -> BenchConfig:
    where = source_path or "bench"
    fmt = data.get("format", FORMAT_NAME)
    if fmt != FORMAT_NAME:
        raise ConfigError(f"{where}: format is {fmt!r}, expected {FORMAT_NAME!r}")
    ver = data.get("format_version", FORMAT_VERSION)
    if isinstance(ver, bool) or not isinstance(ver, int):
        raise ConfigError(f"{where}: format_version must be an integer, got {ver!r}")
    if ver > FORMAT_VERSION:
        raise ConfigError(f"{where}: format_version {ver} is newer than this hwloop reads ({FORMAT_VERSION})")
    top = {k: v for k, v in data.items() if k not in _SECTIONS and k not in ("format", "format_version")}
    unknown = sorted(set(top) - {"name", "tiles"})
    if unknown:
        raise ConfigError(f"{where}: unknown top-level key(s) {unknown}")
    kw: dict[str, Any] = {
        "name": _typed(where, "name", top.get("name", Path(source_path).stem or "bench"), ""),
        "tiles": _typed(where, "tiles", top.get("tiles", 1), 0),
        "source_path": source_path,
    }
    for sec, cls in _SECTIONS.items():
        if sec in data:
            if not isinstance(data[sec], dict):
                raise ConfigError(f"{where}: [{sec}] must be a table")
            kw[sec] = _build(cls, data[sec], f"{where} [{sec}]")
    missing = sorted({f.name for f in fields(Limits)} - set(data.get("limits", {})))
    if missing:
        raise ConfigError(
            f"{where}: [limits] must state every safety limit; missing {missing} (see docs/bench-config.md)"
        )
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
