"""Source Measure Units behind one small interface; the Keithley 2600B series (2636B) over TSP.

``Smu`` is what the chip layer uses: identify, reset, a DC source-voltage/measure-current, a pulsed
source-measure, the error queue and the safe state. The Keysight B1500A driver (FLEX) implements the
same interface in ``hwloop.instruments.b1500`` (``[smu] driver = "b1500"``; ``docs/flex.md``).

``Keithley2600Channel`` lists the TSP attributes it uses as declarative ``Control``s: a setting past the
model's range (``hwloop.instruments.caps``) or the bench's SMU limits is refused before anything is
written. After each batch of commands the driver reads ``errorqueue.count`` and raises
``InstrumentError`` with the instrument's own text; any exception or reported error in a batch first
puts the channel in its safe state (0 V, output off).

Order of a measurement: configure, read the error queue, and only then send "output on, measure (or
pulse), output off" as one TSP chunk (one line, ``;``-separated statements). The instrument runs a
chunk it has received to its end, so a host killed between round trips never leaves the output on.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from hwloop.errors import ConfigError, InstrumentError, SafetyLimitError
from hwloop.instruments.bench import BenchConfig, Limits
from hwloop.instruments.caps import KEITHLEY_2600B
from hwloop.instruments.visa import Control, Measurement, VisaAdapter, strict_discrete_set, strict_range

#: "Keithley Instruments Inc., Model 2636B, 4480001, 4.0.5" -> 2636B (the maker must come first)
_IDN_MODEL = re.compile(r"\s*keithley instruments[^,]*,\s*model\s+(\w+)\s*,", re.IGNORECASE)


class Smu(ABC):
    """The SMU operations hwloop needs; SI units (V, A, s)."""

    limits: Limits

    @abstractmethod
    def identify(self) -> str: ...

    @abstractmethod
    def reset(self) -> None: ...

    @abstractmethod
    def source_voltage_measure_current(self, v: float, i_limit_a: float) -> float:
        """Source ``v`` with compliance ``i_limit_a``, measure the current (A), switch the output off."""

    @abstractmethod
    def pulse_voltage_measure_current(self, v: float, width_s: float, i_limit_a: float) -> float:
        """One voltage pulse through the trigger model; the current (A) measured during it."""

    @abstractmethod
    def check_errors(self) -> None:
        """Raise ``InstrumentError`` with the instrument's text if its error queue is not empty."""

    @abstractmethod
    def safe_state(self) -> None:
        """0 V and outputs off."""

    @abstractmethod
    def close(self) -> None: ...

    @contextmanager
    def _batch(self) -> Iterator[None]:
        """A group of commands, then the error queue; on any exception (a reported error included): the safe
        state, then the exception."""
        try:
            yield
            self.check_errors()
        except BaseException:
            self._safe_quietly()
            raise

    def _safe_quietly(self) -> None:
        with suppress(Exception):
            self.safe_state()

    def __enter__(self) -> Smu:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Keithley2600Channel:
    """One SMU channel (``smua`` / ``smub``) of a 2600B, property names after the reference manual."""

    def __init__(self, parent: Keithley2600, ch: str) -> None:
        self.parent = parent
        self.ch = ch

    def write(self, command: str) -> None:
        self.parent.write(command)

    def ask(self, command: str) -> str:
        return self.parent.ask(command)

    # dynamic bounds from the bench's SMU limits
    @property
    def v_bounds(self) -> tuple[float, float]:
        v = min(self.parent.limits.smu_max_v, self.parent.caps.max_v)
        return (-v, v)

    @property
    def i_bounds(self) -> tuple[float, float]:
        """From the model's smallest current limit (e.g. 10 nA on the 2601B-2614B) to the bench's largest."""
        return (
            self.parent.caps.min_current_limit_a,
            min(self.parent.limits.smu_max_current_a, self.parent.caps.max_current_a),
        )

    @property
    def width_bounds(self) -> tuple[float, float]:
        return (100e-6, self.parent.limits.smu_max_width_s)

    source_function = Control(
        "print({ch}.source.func)",
        "{ch}.source.func = {value}",
        "Source function: 'voltage' (OUTPUT_DCVOLTS) or 'current' (OUTPUT_DCAMPS).",
        validator=strict_discrete_set,
        values=("voltage", "current"),
        set_map={"voltage": "{ch}.OUTPUT_DCVOLTS", "current": "{ch}.OUTPUT_DCAMPS"},
        get_map={1.0: "voltage", 0.0: "current"},
        error=ConfigError,
    )
    source_voltage_range = Control(
        "print({ch}.source.rangev)",
        "{ch}.source.rangev = {value:.6g}",
        "Source voltage range (V); the instrument picks the range that holds this value.",
        values="v_bounds",
    )
    source_voltage = Control(
        "print({ch}.source.levelv)",
        "{ch}.source.levelv = {value:.6g}",
        "DC source voltage level (V), refused past the bench's smu_max_v.",
        values="v_bounds",
    )
    current_limit = Control(
        "print({ch}.source.limiti)",
        "{ch}.source.limiti = {value:.6g}",
        "Current limit (compliance, A) of the voltage source.",
        values="i_bounds",
    )
    measure_current_range = Control(
        "print({ch}.measure.rangei)",
        "{ch}.measure.rangei = {value:.6g}",
        "Current measurement range (A).",
        values="i_bounds",
    )
    nplc = Control(
        "print({ch}.measure.nplc)",
        "{ch}.measure.nplc = {value:.6g}",
        "Integration time in power-line cycles (0.001 to 25).",
        values=(0.001, 25.0),
        error=ConfigError,
    )
    output_enabled = Control(
        "print({ch}.source.output)",
        "{ch}.source.output = {value}",
        "Output relay state.",
        validator=strict_discrete_set,
        values=(True, False),
        set_map={True: "{ch}.OUTPUT_ON", False: "{ch}.OUTPUT_OFF"},
        get_map={1.0: True, 0.0: False},
    )
    trigger_source_limit = Control(
        None,
        "{ch}.trigger.source.limiti = {value:.6g}",
        "Current limit during a trigger-model pulse (A).",
        values="i_bounds",
    )
    pulse_width = Control(
        None,
        "trigger.timer[1].delay = {value:.6g}",
        "Pulse width (s) set by timer 1 (the 2600B's shortest pulses are about 100 us).",
        values="width_bounds",
    )
    current = Measurement("print({ch}.measure.i())", "One current measurement (A).")

    def reset(self) -> None:
        self.write(f"{self.ch}.reset()")

    def pulse_list(self, v: float) -> None:
        """The trigger model's source list: one pulse level (V)."""
        try:
            v = strict_range(v, self.v_bounds)
        except ValueError as exc:
            raise SafetyLimitError(f"pulse level {v!r} V refused, nothing was sent: {exc}") from None
        self.write(f"{self.ch}.trigger.source.listv({{{v:.6g}}})")


class Keithley2600(Smu):
    """Keithley 2600B series SMU (2636B) over TSP, one channel used."""

    def __init__(
        self, adapter: VisaAdapter, limits: Limits, channel: str = "a", nplc: float = 0.01, model: str = "2636B"
    ) -> None:
        if model not in KEITHLEY_2600B:
            raise ConfigError(f"Keithley model {model!r} is not supported; choose one of {sorted(KEITHLEY_2600B)}")
        self.caps = KEITHLEY_2600B[model]
        if channel not in self.caps.channels:
            raise ConfigError(f"Keithley {model} channel must be one of {list(self.caps.channels)}, got {channel!r}")
        self.adapter = adapter
        self.limits = limits
        self.ch = f"smu{channel}"
        self.channel = Keithley2600Channel(self, self.ch)
        self.default_nplc = nplc
        self._configured: tuple[float, float] | None = None

    @classmethod
    def from_bench(cls, bench: BenchConfig, transcript: list[tuple[str, str]] | None = None) -> Keithley2600:
        s = bench.smu
        adapter = VisaAdapter(s.resource, visa_library=s.visa_library, timeout_ms=s.timeout_ms, transcript=transcript)
        return cls(adapter, bench.limits, channel=s.channel, nplc=s.nplc, model=bench.smu_model())

    # ------------------------------------------------------------------ I/O
    def write(self, command: str) -> None:
        self.adapter.write(command)

    def ask(self, command: str) -> str:
        return self.adapter.ask(command)

    # ------------------------------------------------------------------ Smu interface
    def identify(self) -> str:
        """``*IDN?``; accepts only the TSP 2600B models hwloop supports, and only the bench's model."""
        idn = self.ask("*IDN?")
        m = _IDN_MODEL.match(idn)
        model = m.group(1).upper() if m else ""
        if model not in KEITHLEY_2600B:
            raise InstrumentError(
                f"{self.adapter.resource_name} is not a Keithley TSP 2600B SMU hwloop supports "
                f"({', '.join(sorted(KEITHLEY_2600B))}): *IDN? -> {idn!r}"
            )
        if model != self.caps.model:
            raise InstrumentError(
                f"{self.adapter.resource_name} is a Keithley {model}, but the bench file says {self.caps.model}: "
                f'set [smu] model = "{model}" (its limits are checked against that model\'s ranges)'
            )
        return idn

    def reset(self) -> None:
        with self._batch():
            self.write("reset()")
            self.write("errorqueue.clear()")
        self._configured = None

    def check_errors(self) -> None:
        text = self.ask("print(errorqueue.count)")
        try:
            count = int(float(text))
        except ValueError:
            raise InstrumentError(
                f"Keithley SMU: errorqueue.count answered {text!r}, not a number (the exchange is out of step)"
            ) from None
        if count <= 0:
            return
        errors: list[str] = []
        for _ in range(min(count, 32)):
            fields = self.ask("print(errorqueue.next())").split("\t")
            code = fields[0]
            with suppress(ValueError):
                code = str(int(float(code)))
            errors.append(f"{code} {fields[1].strip()}" if len(fields) > 1 else code)
        raise InstrumentError(f"Keithley SMU {self.ch} reported: " + "; ".join(errors))

    def _check_request(self, v: float, i_limit_a: float, width_s: float | None = None) -> None:
        """The bench limits, then the model's bounds (a current limit below its minimum would be refused
        by the instrument, leaving the previous compliance in force)."""
        self.limits.check_smu(v, i_limit_a, width_s)
        cap = self.caps
        if not i_limit_a >= cap.min_current_limit_a:
            raise SafetyLimitError(
                f"SMU request refused, nothing was sent: current limit {i_limit_a:.4g} A is "
                f"below the {cap.model}'s smallest ({cap.min_current_limit_a:g} A)"
            )
        if not abs(v) <= cap.max_v:
            raise SafetyLimitError(
                f"SMU request refused, nothing was sent: |V| {abs(v):.4g} V is past the "
                f"{cap.model}'s range ({cap.max_v:g} V)"
            )
        if width_s is not None and not width_s >= cap.min_width_s:
            raise SafetyLimitError(
                f"SMU request refused, nothing was sent: pulse width {width_s:.4g} s is "
                f"shorter than the {cap.model}'s shortest ({cap.min_width_s:g} s)"
            )

    def configure_voltage_source(self, i_limit_a: float, nplc: float | None = None) -> None:
        """Voltage source on the bench's range with compliance ``i_limit_a``, output still off."""
        nplc = self.default_nplc if nplc is None else nplc
        self._check_request(0.0, i_limit_a)
        ch = self.channel
        with self._batch():
            ch.source_function = "voltage"
            ch.source_voltage_range = self.limits.smu_max_v
            ch.current_limit = i_limit_a
            ch.measure_current_range = i_limit_a
            ch.nplc = nplc
            ch.source_voltage = 0.0
        self._configured = (i_limit_a, nplc)

    def source_voltage_measure_current(self, v: float, i_limit_a: float) -> float:
        """Configure, set the level, read the error queue; only then output on, measure and output off,
        in one TSP chunk (one line), so the output is never left on between two round trips."""
        self._check_request(v, i_limit_a)
        if self._configured is None or self._configured[0] != i_limit_a:
            self.configure_voltage_source(i_limit_a)
        ch, c = self.channel, self.ch
        with self._batch():
            ch.source_voltage = v
        with self._batch():
            text = self.ask(
                f"{c}.source.output = {c}.OUTPUT_ON; print({c}.measure.i()); "
                f"{c}.source.output = {c}.OUTPUT_OFF; {c}.source.levelv = 0"
            )
        try:
            return float(text)
        except ValueError:
            raise InstrumentError(f"Keithley SMU: measure.i() answered {text!r}, not a number") from None

    def pulse_voltage_measure_current(self, v: float, width_s: float, i_limit_a: float) -> float:
        """Configure the trigger model and read the error queue; only then output on, the pulse and output
        off in one TSP chunk. The pulse ends at timer 1 (its width) with ``endpulse.action = SOURCE_IDLE``."""
        self._check_request(v, i_limit_a, width_s)
        ch, c = self.channel, self.ch
        with self._batch():
            ch.source_function = "voltage"
            ch.source_voltage_range = self.limits.smu_max_v
            ch.source_voltage = 0.0
            ch.current_limit = i_limit_a
            ch.measure_current_range = i_limit_a
            ch.nplc = 0.001
            self.write(f"{c}.nvbuffer1.clear()")
            ch.pulse_list(v)
            ch.trigger_source_limit = i_limit_a
            self.write(f"{c}.trigger.source.action = {c}.ENABLE")
            self.write(f"{c}.trigger.measure.action = {c}.ENABLE")
            self.write(f"{c}.trigger.measure.i({c}.nvbuffer1)")
            ch.pulse_width = width_s
            self.write("trigger.timer[1].count = 1")
            self.write(f"trigger.timer[1].stimulus = {c}.trigger.ARMED_EVENT_ID")
            self.write(f"{c}.trigger.endpulse.action = {c}.SOURCE_IDLE")
            self.write(f"{c}.trigger.endpulse.stimulus = trigger.timer[1].EVENT_ID")
            self.write(f"{c}.trigger.count = 1")
        with self._batch():
            self.write(
                f"{c}.source.output = {c}.OUTPUT_ON; {c}.trigger.initiate(); waitcomplete(); "
                f"{c}.source.output = {c}.OUTPUT_OFF"
            )
            text = self.ask(f"printbuffer(1, {c}.nvbuffer1.n, {c}.nvbuffer1.readings)")
        self._configured = None
        try:
            return float(text.split(",")[0])
        except ValueError:
            raise InstrumentError(f"Keithley SMU: pulse buffer answered {text!r}") from None

    def safe_state(self) -> None:
        self.write(f"{self.ch}.source.levelv = 0")
        self.write(f"{self.ch}.source.output = {self.ch}.OUTPUT_OFF")

    def close(self) -> None:
        if self.adapter is None:
            return
        self._safe_quietly()
        self.adapter.close()
        self.adapter = None  # type: ignore[assignment]


def _open_b1500(bench: BenchConfig, **kw: Any) -> Smu:
    from hwloop.instruments.b1500 import B1500  # imports this module: load it on first use

    return B1500.from_bench(bench, **kw)


SMU_DRIVERS: dict[str, Callable[..., Smu]] = {"keithley2600": Keithley2600.from_bench, "b1500": _open_b1500}


def open_smu(bench: BenchConfig, **kw: Any) -> Smu:
    """The SMU driver named by the bench's ``[smu] driver``."""
    try:
        factory = SMU_DRIVERS[bench.smu.driver]
    except KeyError:
        raise ConfigError(f"unknown SMU driver {bench.smu.driver!r}; known: {sorted(SMU_DRIVERS)}") from None
    return factory(bench, **kw)
