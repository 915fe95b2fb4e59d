"""The emulated Keysight B1500A on a loopback TCP socket: the FLEX subset that hwloop's driver uses.

Lines end in LF (a CR before it is ignored); one line may hold several commands separated by ``;`` as on
the instrument. Answers end in CR LF. The subset and the error codes are listed in ``docs/flex.md``; any
other command, a bad parameter, a value past the module's range or a measurement on a disabled channel
puts an error code in the queue (read with ``ERR?``, text with ``EMG?``), so a driver slip surfaces as it
would on the bench.

Physics: the bit-line SMU sees the cell selected on the emulated board. Its current is ``G * V`` at the
gate voltage of the word-line SMU when that one is enabled and forcing a non-zero voltage, else at the
board's word-line DAC. A current past the compliance reads as the compliance value with status ``C``.

Faults (``Faults``): ``smu_error`` (an error in the queue), ``smu_disconnect``, and on the next answer
``smu_timeout`` (no answer), ``smu_garble`` (a corrupted answer) and ``smu_compliance`` (the next
measurement reports a compliance hit).
"""

from __future__ import annotations

import math
import socket
from dataclasses import dataclass, field

import numpy as np

from hwloop.emulator.device import EmulatedChip
from hwloop.emulator.faults import Faults
from hwloop.emulator.lineserver import LineServer
from hwloop.instruments.b1500_config import MODULES, N_SLOTS, B1500Config

IDN = "Keysight Technologies,B1500A,MY00000000,A.06.01.2019.0409 (hwloop virtual)"
ERRORS = {
    100: "Undefined GPIB command.",
    102: "Incorrect numeric data syntax.",
    120: "Incorrect parameter value.",
    121: "Channel number is not valid or the slot holds no SMU.",
    150: "Channel is not enabled.",
    151: "Value is past the range of the module.",
    900: "Injected fault (hwloop virtual bench).",
}
_V_CODES = {
    0: 200.0,
    5: 0.5,
    11: 2.0,
    20: 2.0,
    50: 5.0,
    12: 20.0,
    200: 20.0,
    13: 40.0,
    400: 40.0,
    14: 100.0,
    1000: 100.0,
    15: 200.0,
    2000: 200.0,
}
_I_CODES = {0, *range(8, 21)}
_LETTERS = "ABCDEFGHIJ"


def fmt12(x: float) -> str:
    """A FMT 1 number: sign, 3 digits, point, 3 digits, exponent a multiple of 3 (``+012.345E-06``)."""
    if x == 0 or not math.isfinite(x):
        return "+000.000E+00" if x == 0 else "+199.999E+99"
    e = int(math.floor(math.log10(abs(x)) / 3) * 3)
    m = abs(x) / 10.0**e
    if round(m, 3) >= 1000.0:
        e, m = e + 3, m / 1000.0
    return f"{'-' if x < 0 else '+'}{m:07.3f}E{e:+03d}"


@dataclass
class SmuChannel:
    model: str
    enabled: bool = False
    v: float = 0.0
    icomp_a: float = 1e-4
    cmm: int = 0
    ri: int = 0


@dataclass
class FlexState:
    modules: dict[int, str]
    channels: dict[int, SmuChannel] = field(default_factory=dict)
    errors: list[int] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    fmt: tuple[int, int] = (1, 0)
    mm: tuple[int, int] = (0, 0)
    pt: tuple[float, float, float] = (0.0, 1e-3, 5e-3)
    pv: tuple[int, float, float, float] | None = None  # slot, base, pulse, compliance

    def reset(self) -> None:
        self.channels = {
            s: SmuChannel(m) for s, m in self.modules.items() if MODULES.get(m, None) is not None and MODULES[m].is_smu
        }
        self.fmt, self.mm, self.pv = (1, 0), (0, 0), None


class B1500Emulator(LineServer):
    thread_name = "hwloop-b1500-emulator"

    """FLEX server; ``modules`` is ``{slot: model}`` as ``UNT?`` reports it (an unknown model is allowed)."""

    def __init__(
        self,
        chip: EmulatedChip,
        *,
        config: B1500Config | None = None,
        modules: dict[int, str] | None = None,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        cfg = config or B1500Config(wl_slot=1, bl_slot=2, wl_module="B1511B", bl_module="B1517A")
        self.chip = chip
        self.config = cfg
        self.faults = faults or Faults()
        self.state = FlexState(
            modules=dict(modules) if modules is not None else {cfg.wl_slot: cfg.wl_module, cfg.bl_slot: cfg.bl_module}
        )
        self.state.reset()
        self._listen(host)
        self._compliance_next = False

    # ------------------------------------------------------------------ server
    def _line(self, conn: socket.socket, text: str) -> bool:
        return all(self._one(conn, cmd.strip()) for cmd in text.split(";"))

    def _one(self, conn: socket.socket, text: str) -> bool:
        if not text:
            return True
        fault = self._draw_fault()
        if fault == "smu_disconnect":
            return False
        is_measure = text == "XE" or text.startswith("TI")
        if is_measure and self.faults.smu_answer_fault(("smu_compliance",)):
            self._compliance_next = True
        answer = self.execute(text)
        if fault == "smu_error":
            self.state.errors.append(900)
        if answer is None:
            return True
        late = self.faults.smu_answer_fault(("smu_timeout", "smu_garble"))
        if late == "smu_timeout":
            return True
        if late == "smu_garble":
            answer = answer[:1] + "#" + answer[2:] if len(answer) > 2 else "#"
        try:
            conn.sendall(answer.encode() + b"\r\n")
        except OSError:
            return False
        return True

    # ------------------------------------------------------------------ FLEX subset
    def _error(self, code: int) -> None:
        self.state.errors.append(code)

    def execute(self, cmd: str) -> str | None:
        """Run one FLEX command; returns the answer (or None)."""
        st = self.state
        st.commands.append(cmd)
        head, _, rest = cmd.partition(" ")
        head = head.upper()
        args = [a.strip() for a in rest.split(",")] if rest.strip() else []
        try:
            nums = [float(a) for a in args]
        except ValueError:
            self._error(102)
            return "+000.000E+00" if head in ("TI", "XE") else None
        if not all(math.isfinite(x) for x in nums):
            self._error(102)
            return None
        handler = getattr(self, f"_cmd_{head.strip('*?').lower()}{'_q' if head.endswith('?') else ''}", None)
        if handler is None:
            self._error(100)
            return None
        return handler(nums)

    def _channel(self, slot: float) -> SmuChannel | None:
        ch = self.state.channels.get(int(slot)) if float(slot).is_integer() else None
        if ch is None:
            self._error(121)
        return ch

    # identification, reset, errors
    def _cmd_idn_q(self, a: list[float]) -> str:
        return IDN

    def _cmd_unt_q(self, a: list[float]) -> str:
        return ";".join(
            f"{self.state.modules[s]},0" if s in self.state.modules else "0,0" for s in range(1, N_SLOTS + 1)
        )

    def _cmd_rst(self, a: list[float]) -> None:
        self.state.reset()
        self.state.errors.clear()

    def _cmd_opc_q(self, a: list[float]) -> str:
        return "1"

    def _cmd_err_q(self, a: list[float]) -> str:
        codes = [*self.state.errors, 0, 0, 0, 0][:4]
        del self.state.errors[:4]
        return ",".join(str(c) for c in codes)

    def _cmd_emg_q(self, a: list[float]) -> str:
        return f'"{ERRORS.get(int(a[0]) if a else 0, "No error.")}"'

    # settings
    def _cmd_fmt(self, a: list[float]) -> None:
        if not a or a[0] != 1 or (len(a) > 1 and a[1] != 0):
            self._error(120)  # only FMT 1,0 is emulated
            return
        self.state.fmt = (1, 0)

    def _cmd_az(self, a: list[float]) -> None:
        if a not in ([0.0], [1.0]):
            self._error(120)

    def _cmd_cn(self, a: list[float]) -> None:
        for ch in [self._channel(s) for s in a] if a else list(self.state.channels.values()):
            if ch is not None:
                ch.enabled, ch.v = True, 0.0

    def _cmd_cl(self, a: list[float]) -> None:
        for ch in [self._channel(s) for s in a] if a else list(self.state.channels.values()):
            if ch is not None:
                ch.enabled, ch.v = False, 0.0

    def _cmd_dz(self, a: list[float]) -> None:
        for ch in [self._channel(s) for s in a] if a else list(self.state.channels.values()):
            if ch is not None:
                ch.v = 0.0

    def _cmd_cmm(self, a: list[float]) -> None:
        if len(a) != 2:
            self._error(120)
            return
        ch = self._channel(a[0])
        if ch is not None and a[1] not in (0, 1, 2, 3, 4):
            self._error(120)
        elif ch is not None:
            ch.cmm = int(a[1])

    def _cmd_aad(self, a: list[float]) -> None:
        ch = self._channel(a[0]) if len(a) == 2 else None
        if ch is None or a[1] not in (0, 1, 2):
            self._error(120)

    def _cmd_ait(self, a: list[float]) -> None:
        if len(a) != 3 or a[0] not in (0, 1, 2) or a[1] not in (0, 1, 2, 3) or not 2e-6 <= a[2] <= 20e-3:
            self._error(120)

    def _cmd_ri(self, a: list[float]) -> None:
        ch = self._channel(a[0]) if len(a) == 2 else None
        if ch is None or abs(a[1]) not in _I_CODES:
            self._error(120)
            return
        ch.ri = int(a[1])

    def _cmd_mm(self, a: list[float]) -> None:
        if len(a) != 2 or a[0] not in (1, 3) or self._channel(a[1]) is None:
            self._error(120)
            return
        self.state.mm = (int(a[0]), int(a[1]))

    def _force_ok(self, ch: SmuChannel, rng: float, v: float, icomp: float) -> bool:
        spec = MODULES[ch.model]
        cap = _V_CODES.get(int(rng)) if float(rng).is_integer() else None
        if cap is None:
            self._error(120)
            return False
        if abs(v) > min(cap, spec.max_v) or not 0 < abs(icomp) <= spec.max_current_a:
            self._error(151)
            return False
        if not ch.enabled:
            self._error(150)
            return False
        return True

    def _cmd_dv(self, a: list[float]) -> None:
        if len(a) < 3:
            self._error(120)
            return
        ch = self._channel(a[0])
        if ch is None:
            return
        icomp = a[3] if len(a) > 3 else ch.icomp_a
        if self._force_ok(ch, a[1], a[2], icomp):
            ch.v, ch.icomp_a = a[2], abs(icomp)

    def _cmd_pt(self, a: list[float]) -> None:
        if len(a) < 2 or not (0 <= a[0] <= 655.35 and 0 < a[1] <= 2.0):
            self._error(120)
            return
        period = a[2] if len(a) > 2 else max(5e-3, a[1] + 2e-3)
        if period < a[1] + 2e-3 or period > 5.0:
            self._error(120)
            return
        self.state.pt = (a[0], a[1], period)

    def _cmd_pv(self, a: list[float]) -> None:
        if len(a) != 5:
            self._error(120)
            return
        ch = self._channel(a[0])
        if ch is None or not self._force_ok(ch, a[1], max(abs(a[2]), abs(a[3])), a[4]):
            return
        self.state.pv = (int(a[0]), a[2], a[3], abs(a[4]))

    # measurements
    def _datum(self, slot: int, v: float, icomp: float) -> str:
        ch = self.state.channels[slot]
        status = "N"
        if not ch.enabled:
            self._error(150)
            i_a = 0.0
        else:
            i_a = self._current(slot, v)
            if abs(i_a) > icomp or self._compliance_next:
                i_a = math.copysign(icomp, i_a if i_a else 1.0)
                status = "C"
        self._compliance_next = False
        return f"{status}{_LETTERS[slot - 1]}I{fmt12(i_a)}"

    def _current(self, slot: int, v: float) -> float:
        chip, st = self.chip, self.state
        wl = next((c for s, c in st.channels.items() if s != slot and c.enabled and c.v != 0.0), None)
        with chip.lock:
            sel = chip.selected
            v_wl = wl.v if wl is not None else chip.dac[0]
            return 0.0 if sel is None else float(chip.current_a(np.array([sel]), v_wl, v)[0])

    def _cmd_ti(self, a: list[float]) -> str:
        ch = self._channel(a[0]) if a else None
        if ch is None or (len(a) > 1 and abs(a[1]) not in _I_CODES):
            self._error(120)
            return "NAI+000.000E+00"
        return self._datum(int(a[0]), ch.v, ch.icomp_a)

    def _cmd_xe(self, a: list[float]) -> str:
        st = self.state
        mode, slot = st.mm
        if mode == 1:
            ch = st.channels[slot]
            return self._datum(slot, ch.v, ch.icomp_a)
        if mode == 3 and st.pv is not None and st.pv[0] == slot:
            _, base, pulse, icomp = st.pv
            ch = st.channels[slot]
            if st.pt[1] < MODULES[ch.model].min_pulse_s:
                self._error(120)  # shorter than the module's shortest pulse
                return "NAI+000.000E+00"
            answer = self._datum(slot, pulse, icomp)
            ch.v = base
            return answer
        self._error(120)
        return "NAI+000.000E+00"
