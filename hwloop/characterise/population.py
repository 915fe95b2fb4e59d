"""Choosing and forming a device population for a characterisation, and waiting on the chip's clock."""

from __future__ import annotations

import time

import numpy as np

from hwloop.chip.base import Chip
from hwloop.errors import CalibrationError


def form_population(chip: Chip, n: int, *, retries: int = 3, start: int = 0) -> np.ndarray:
    """The first ``n`` formed devices from flat index ``start`` on (already formed ones are reused).

    Candidates are taken in blocks (about 5 % spare for forming failures), formed with ``retries`` extra
    attempts; raises ``CalibrationError`` when the chip holds too few formable devices."""
    if n < 1:
        raise CalibrationError("a population needs at least one device")
    if start + n > chip.n_devices:
        raise CalibrationError(
            f"{n} devices from index {start} do not fit on the chip ({chip.n_devices} devices): "
            "give fewer --devices (or levels)"
        )
    out: list[np.ndarray] = []
    have = 0
    pos = start
    while have < n and pos < chip.n_devices:
        block = np.arange(pos, min(chip.n_devices, pos + int((n - have) * 1.05) + 8))
        pos = int(block[-1]) + 1
        todo = block[~chip.formed_mask()[block]]
        for _ in range(retries + 1):
            if todo.size == 0:
                break
            ok = chip.form_idx(todo)
            todo = todo[~ok]
        good = block[chip.formed_mask()[block] & ~chip.failed_mask()[block]]
        out.append(good[: n - have])
        have += int(out[-1].size)
    if have < n:
        raise CalibrationError(f"only {have} of {n} devices formed on the chip: give fewer --devices")
    return np.concatenate(out)


class ChipClock:
    """Time on the chip: the simulated chip's own clock (``elapse``) or the wall clock of a real bench."""

    def __init__(self, chip: Chip) -> None:
        self.chip = chip
        self.simulated = hasattr(chip, "elapse") and hasattr(chip, "time_s")
        self.t0 = self.now()

    def now(self) -> float:
        return float(self.chip.time_s) if self.simulated else time.monotonic()  # type: ignore[attr-defined]

    def since_start(self) -> float:
        return self.now() - self.t0

    def wait_until(self, t_s: float) -> float:
        """Advance to ``t_s`` seconds after the clock was started (sleeps on a real bench); returns the wall
        time spent waiting (0 on the simulated chip, whose clock just jumps)."""
        dt = t_s - self.since_start()
        if dt <= 0:
            return 0.0
        if self.simulated:
            self.chip.elapse(dt)  # type: ignore[attr-defined]
            return 0.0
        else:
            from hwloop.signals import check_stop

            end = time.monotonic() + dt
            while (left := end - time.monotonic()) > 0:
                time.sleep(min(left, 0.5))
                check_stop()
            return dt
