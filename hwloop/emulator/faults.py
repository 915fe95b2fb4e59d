"""Fault injection for the virtual bench: dropped or garbled frames, delays, SMU errors, a disconnect.

Faults come from rates (seeded, so a run is reproducible) or from a script of one-shot faults queued
with ``Faults.inject`` (what the tests use, so every fault is applied exactly where they expect it).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np

#: Faults on the FPGA link, applied to one request/answer exchange.
BOARD_FAULTS = ("drop_request", "drop_answer", "garble_request", "garble_answer", "delay", "disconnect")
#: Faults on the SMU, applied to one command.
SMU_FAULTS = ("smu_error", "smu_disconnect")
#: Faults on the next SMU answer (emulated B1500A only): no answer, a garbled one, a compliance hit.
SMU_ANSWER_FAULTS = ("smu_timeout", "smu_garble", "smu_compliance")


@dataclass
class Faults:
    drop_rate: float = 0.0  # request lost on the way to the board (not executed)
    drop_answer_rate: float = 0.0  # request executed, answer lost
    garble_rate: float = 0.0  # one byte of the answer flipped (the host sees a bad CRC)
    garble_request_rate: float = 0.0  # one byte of the request flipped (the board NAKs BAD_CRC)
    delay_s: float = 0.0  # extra latency before every answer
    smu_error_rate: float = 0.0  # an SMU command leaves an error in the error queue
    disconnect_after: int = 0  # close the FPGA link after this many frames (0: never)
    smu_disconnect_after: int = 0  # close the SMU connection after this many commands (0: never)
    seed: int = 0
    _script: deque[str] = field(default_factory=deque, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def inject(self, *names: str) -> None:
        """Queue one-shot faults, applied in order to the next exchanges of the matching instrument."""
        for n in names:
            if n not in BOARD_FAULTS + SMU_FAULTS + SMU_ANSWER_FAULTS:
                raise ValueError(f"unknown fault {n!r}; known: {BOARD_FAULTS + SMU_FAULTS + SMU_ANSWER_FAULTS}")
        with self._lock:
            self._script.extend(names)

    def _scripted(self, kinds: tuple[str, ...]) -> str | None:
        with self._lock:
            if self._script and self._script[0] in kinds:
                return self._script.popleft()
        return None

    def board_fault(self) -> str | None:
        """The fault (if any) for the next FPGA exchange."""
        f = self._scripted(BOARD_FAULTS)
        if f:
            return f
        for name, p in (
            ("drop_request", self.drop_rate),
            ("drop_answer", self.drop_answer_rate),
            ("garble_answer", self.garble_rate),
            ("garble_request", self.garble_request_rate),
        ):
            if p > 0 and self.rng.random() < p:
                return name
        return None

    def smu_fault(self) -> str | None:
        f = self._scripted(SMU_FAULTS)
        if f:
            return f
        if self.smu_error_rate > 0 and self.rng.random() < self.smu_error_rate:
            return "smu_error"
        return None

    def smu_answer_fault(self, kinds: tuple[str, ...] = SMU_ANSWER_FAULTS) -> str | None:
        """A scripted fault (one of ``kinds``) for the SMU answer about to be sent, if one is queued."""
        return self._scripted(kinds)

    def garble(self, data: bytes) -> bytes:
        """Flip one bit of one byte past the start-of-frame marker."""
        b = bytearray(data)
        i = int(self.rng.integers(2, len(b)))
        b[i] ^= 1 << int(self.rng.integers(0, 8))
        return bytes(b)
