"""The emulated Keithley 2636B on a loopback TCP socket: the TSP subset that hwloop's driver uses.

Commands are newline-terminated lines. Assignments to the known attributes are stored and range-checked
as the instrument does; ``print(...)`` answers use the instrument's number format (``%.5e``). Anything
else goes to the error queue as a TSP syntax error, so a driver typo surfaces as it would on the bench.
``smua.measure.i()`` returns ``G * V`` of the cell selected on the emulated board (gate on), clamped at
the current limit, and a trigger-model pulse records the same into ``nvbuffer1``.

A line may hold several statements separated by ``;`` (one TSP chunk); they run in order, and a statement
that raises an error stops the rest of the chunk, as a TSP runtime error does.

The trigger model's end of pulse follows the 2600B reference manual: ``SOURCE_IDLE`` = 0 and
``SOURCE_HOLD`` = 1 (``endpulse.action`` resets to ``SOURCE_HOLD``, ``endsweep.action`` to
``SOURCE_IDLE``). With ``endpulse.action = SOURCE_IDLE`` the source returns to its idle level when the
end-pulse event arrives: timer 1's delay after the ARMED event when ``endpulse.stimulus`` is the timer's
event and the timer is stimulated by ``ARMED_EVENT_ID``; at once (after the measurement) when the
stimulus is 0. With ``SOURCE_HOLD`` the level stays until the sweep ends (and, with ``endsweep.action =
SOURCE_HOLD``, until the output goes off). A pulse whose end event never comes lasts until the output
goes off. Every pulse is recorded in ``pulses`` with the width it really had; with ``max_pulse_s`` set,
a longer one (or one still open) counts in ``violations``.
"""

from __future__ import annotations

import math
import re
import socket
import time
from dataclasses import dataclass, field

import numpy as np

from hwloop.emulator.device import EmulatedChip
from hwloop.emulator.faults import Faults
from hwloop.emulator.lineserver import LineServer
from hwloop.instruments.caps import KEITHLEY_2600B

IDN = "Keithley Instruments Inc., Model 2636B, 4480001, 4.0.5 (hwloop virtual)"
SOURCE_IDLE, SOURCE_HOLD = 0.0, 1.0  # as the 2600B reference manual defines them
ARMED_EVENT_ID, TIMER1_EVENT_ID = 2.0, 47.0
LINE_HZ = 50.0

_CONST = {
    "OUTPUT_DCVOLTS": 1.0,
    "OUTPUT_DCAMPS": 0.0,
    "OUTPUT_ON": 1.0,
    "OUTPUT_OFF": 0.0,
    "ENABLE": 1.0,
    "DISABLE": 0.0,
    "SOURCE_IDLE": SOURCE_IDLE,
    "SOURCE_HOLD": SOURCE_HOLD,
    "trigger.ARMED_EVENT_ID": ARMED_EVENT_ID,
}
_ATTRS = {
    "source.func": 1.0,
    "source.rangev": 200e-3,
    "source.levelv": 0.0,
    "source.limiti": 100e-6,
    "measure.rangei": 100e-6,
    "measure.nplc": 1.0,
    "source.output": 0.0,
    "trigger.source.limiti": 100e-6,
    "trigger.source.action": 0.0,
    "trigger.measure.action": 0.0,
    "trigger.endpulse.action": SOURCE_HOLD,
    "trigger.endpulse.stimulus": 0.0,
    "trigger.endsweep.action": SOURCE_IDLE,
    "trigger.source.stimulus": 0.0,
    "trigger.count": 1.0,
}
_GLOBAL_ATTRS = {
    "trigger.timer[1].delay": 1e-3,
    "trigger.timer[1].count": 1.0,
    "trigger.timer[1].stimulus": 0.0,
    "trigger.timer[1].passthrough": 0.0,
}
_ASSIGN = re.compile(r"^([A-Za-z_][\w.\[\]]*)\s*=\s*(.+)$")
_PRINT = re.compile(r"^print\((.+)\)$")
_RANGE_V = 200.0


def fmt(x: float) -> str:
    return f"{x:.5e}"


@dataclass
class TriggerPulse:
    """One trigger-model pulse as the emulated source applied it."""

    v: float
    width_s: float  # how long the pulse level was applied (inf while still open)
    timer_delay_s: float  # the width the timer was set to
    ended_by: str  # "timer", "measure" (stimulus 0), "sweep end", "output off", "open"


@dataclass
class TspState:
    attrs: dict[str, float] = field(default_factory=dict)
    errors: list[tuple[int, str]] = field(default_factory=list)
    listv: list[float] = field(default_factory=list)
    buffer: list[float] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)

    def reset(self) -> None:
        self.attrs = {f"smu{c}.{k}": v for c in "ab" for k, v in _ATTRS.items()} | dict(_GLOBAL_ATTRS)
        self.listv, self.buffer = [], []


class SmuEmulator(LineServer):
    thread_name = "hwloop-smu-emulator"

    def __init__(
        self,
        chip: EmulatedChip,
        *,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        model: str = "2636B",
        max_pulse_s: float | None = None,
    ) -> None:
        self.caps = KEITHLEY_2600B.get(model, KEITHLEY_2600B["2636B"])  # it emulates the 2600B family only
        self.idn = IDN.replace("2636B", self.caps.model)
        self.max_pulse_s = max_pulse_s
        self.pulses: list[TriggerPulse] = []
        self.violations = 0
        self._open: tuple[str, float, float, float] | None = None  # (channel, v, t_start, timer delay)
        self._busy_until = 0.0
        self.chip = chip
        self.faults = faults or Faults()
        self.state = TspState()
        self.state.reset()
        self._listen(host)

    # ------------------------------------------------------------------ server
    def _line(self, conn: socket.socket, text: str) -> bool:
        text = text.strip()
        if not text:
            return True
        fault = self._draw_fault()
        if fault == "smu_disconnect":
            return False
        answer = self.execute_chunk(text)
        if fault == "smu_error":
            self.state.errors.append((-286, "TSP Runtime error at line 1: injected fault"))
        if answer is not None:
            try:
                conn.sendall(answer.encode() + b"\n")
            except OSError:
                return False
        return True

    # ------------------------------------------------------------------ TSP subset
    def _error(self, code: int, msg: str) -> None:
        self.state.errors.append((code, msg))

    def _value(self, expr: str) -> float | None:
        expr = expr.strip()
        try:
            return float(expr)
        except ValueError:
            pass
        if expr in ("true", "false"):
            return 1.0 if expr == "true" else 0.0
        m = re.fullmatch(r"(smu[ab])\.(\w+(?:\.\w+)?)", expr)
        if m and m.group(2) in _CONST:
            return _CONST[m.group(2)]
        if expr == "trigger.timer[1].EVENT_ID":
            return TIMER1_EVENT_ID
        return None

    def execute_chunk(self, line: str) -> str | None:
        """Run one line (a TSP chunk of ``;``-separated statements); the printed lines, or None.

        A statement that adds an error stops the rest of the chunk (a TSP runtime error does)."""
        self.state.commands.append(line)
        out: list[str] = []
        for stmt in (x.strip() for x in line.split(";")):
            if not stmt:
                continue
            n_err = len(self.state.errors)
            answer = self.execute(stmt, record=False)
            if answer is not None:
                out.append(answer)
            if len(self.state.errors) > n_err:
                break
        return "\n".join(out) if out else None

    def execute(self, cmd: str, record: bool = True) -> str | None:
        """Run one TSP statement; returns the printed answer (or None)."""
        st = self.state
        if record:
            st.commands.append(cmd)
        if cmd == "*IDN?":
            return self.idn
        if cmd in ("reset()", "*RST"):
            st.reset()
            return None
        if cmd in ("errorqueue.clear()", "*CLS"):
            st.errors.clear()
            return None
        if cmd == "waitcomplete()":
            dt = self._busy_until - time.monotonic()
            if dt > 0:
                time.sleep(dt)
            return None
        m = re.fullmatch(r"(smu[ab])\.(reset|nvbuffer1\.clear|trigger\.initiate)\(\)", cmd)
        if m:
            ch, what = m.groups()
            if what == "reset":
                for k, v in _ATTRS.items():
                    st.attrs[f"{ch}.{k}"] = v
            elif what == "nvbuffer1.clear":
                st.buffer.clear()
            else:
                self._pulse(ch)
            return None
        m = re.fullmatch(r"(smu[ab])\.trigger\.source\.listv\(\{([^}]*)\}\)", cmd)
        if m:
            vals = [self._value(x) for x in m.group(2).split(",")]
            if any(v is None for v in vals) or any(abs(v) > _RANGE_V for v in vals if v is not None):
                self._error(-222, "Parameter data out of range")
            else:
                st.listv = [float(v) for v in vals if v is not None]
            return None
        if re.fullmatch(r"(smu[ab])\.trigger\.measure\.i\((smu[ab])\.nvbuffer1\)", cmd):
            return None
        m = re.fullmatch(r"printbuffer\(1, (smu[ab])\.nvbuffer1\.n, (smu[ab])\.nvbuffer1\.readings\)", cmd)
        if m:
            return ", ".join(fmt(x) for x in st.buffer) if st.buffer else ""
        m = _PRINT.fullmatch(cmd)
        if m:
            return self._print(m.group(1).strip())
        m = _ASSIGN.fullmatch(cmd)
        if m:
            self._assign(m.group(1), m.group(2))
            return None
        self._error(-285, f"TSP Syntax error at line 1: unexpected symbol near `{cmd[:40]}'")
        return None

    def _print(self, expr: str) -> str:
        st = self.state
        if expr == "errorqueue.count":
            return fmt(len(st.errors))
        if expr == "errorqueue.next()":
            if not st.errors:
                return "\t".join([fmt(0), "Queue Is Empty", fmt(0), fmt(0)])
            code, msg = st.errors.pop(0)
            return "\t".join([fmt(code), msg, fmt(2), fmt(0)])
        m = re.fullmatch(r"(smu[ab])\.measure\.i\(\)", expr)
        if m:
            return fmt(
                self._measure_i(
                    m.group(1), st.attrs[f"{m.group(1)}.source.levelv"], st.attrs[f"{m.group(1)}.source.limiti"]
                )
            )
        if expr in st.attrs:
            return fmt(st.attrs[expr])
        self._error(-285, f"TSP Syntax error at line 1: unexpected symbol near `{expr[:40]}'")
        return "nil"

    def _assign(self, name: str, expr: str) -> None:
        st = self.state
        if name not in st.attrs:
            self._error(-285, f"TSP Syntax error at line 1: unexpected symbol near `{name}'")
            return
        v = self._value(expr)
        if v is None:
            self._error(-285, f"TSP Syntax error at line 1: unexpected symbol near `{expr[:40]}'")
            return
        ch = name.split(".", 1)[0]
        if name.endswith("levelv") and abs(v) > min(_RANGE_V, 1.01 * st.attrs[f"{ch}.source.rangev"]):
            self._error(5007, "Operation would exceed safe operating area of the instrument")
            return
        if name.endswith("nplc") and not 0.001 <= v <= 25:
            self._error(-222, "Parameter data out of range")
            return
        if (name.endswith("limiti") or name.endswith("rangei")) and not (
            self.caps.min_current_limit_a <= v <= self.caps.max_current_a
        ):
            self._error(-222, "Parameter data out of range")  # the previous compliance stays in force
            return
        if name.endswith("source.output") and v != 1.0:
            self._close_pulse(ch, "output off")
        if name.endswith("rangev") and not 0 < abs(v) <= _RANGE_V:
            self._error(-222, "Parameter data out of range")
            return
        st.attrs[name] = v

    def _measure_i(self, ch: str, v: float, limit_a: float) -> float:
        st = self.state
        if st.attrs[f"{ch}.source.output"] != 1.0 or st.attrs[f"{ch}.source.func"] != 1.0:
            return 0.0
        chip = self.chip
        with chip.lock:
            sel = chip.selected
            v_wl = chip.dac[0]
            i_a = 0.0 if sel is None else float(chip.current_a(np.array([sel]), v_wl, v)[0])
        return float(np.clip(i_a, -limit_a, limit_a))

    def _pulse(self, ch: str) -> None:
        """One sweep of the trigger model: per point, source the list level, measure, then end the pulse
        when the end-pulse event comes (see the module docstring)."""
        st = self.state
        a = st.attrs
        if a[f"{ch}.source.output"] != 1.0:
            self._error(5063, "Output must be on to initiate a sweep")
            return
        self._close_pulse(ch, "output off")
        limit = a[f"{ch}.trigger.source.limiti"]
        delay = a["trigger.timer[1].delay"]
        stim = a[f"{ch}.trigger.endpulse.stimulus"]
        timer_runs = a["trigger.timer[1].stimulus"] == ARMED_EVENT_ID
        measure_s = a[f"{ch}.measure.nplc"] / LINE_HZ
        if stim == 0.0:
            t_end: float | None = measure_s
        elif stim == TIMER1_EVENT_ID and timer_runs:
            t_end = max(delay, measure_s)
        else:
            t_end = None  # the end-pulse event never comes
        points = st.listv[: int(a[f"{ch}.trigger.count"])]
        busy = 0.0
        for k, v in enumerate(points):
            st.buffer.append(self._measure_i(ch, v, limit))
            last = k == len(points) - 1
            hold = a[f"{ch}.trigger.endpulse.action"] == SOURCE_HOLD
            if t_end is not None and (not hold or not last or a[f"{ch}.trigger.endsweep.action"] == SOURCE_IDLE):
                self._record(TriggerPulse(v, t_end, delay, "sweep end" if hold else ("timer" if stim else "measure")))
                busy += t_end
            else:  # the level stays on the cell until the output goes off
                self._open = (ch, v, time.monotonic() + busy, delay)
        self._busy_until = time.monotonic() + busy

    def _record(self, p: TriggerPulse) -> None:
        self.pulses.append(p)
        if self.max_pulse_s is not None and not p.width_s <= self.max_pulse_s * (1 + 1e-9):
            self.violations += 1

    def _close_pulse(self, ch: str, why: str) -> None:
        if self._open is not None and self._open[0] == ch:
            _, v, t0, delay = self._open
            self._open = None
            self._record(TriggerPulse(v, max(time.monotonic() - t0, delay), delay, why))

    def open_pulse(self) -> TriggerPulse | None:
        """The pulse still applied now (its level never ended), if any."""
        if self._open is None:
            return None
        _, v, _t0, delay = self._open
        return TriggerPulse(v, math.inf, delay, "open")
