"""Program-and-verify: a chip-level operation over arrays of devices (ArC's ConvergeToState, simplified).

Each attempt is RESET, then (for an HCS target) one SET at the level's gate voltage, then one READ. Only
the devices whose read falls outside their level's window are tried again, up to ``max_pulses``
attempts. With ``ispp_step_v > 0`` the SET gate voltage of attempt a is ``v_gate[level] + a * step``
(incremental step pulse programming); every voltage that could be used is checked against the chip's
limits (``Chip.check_v_gate``) before the first pulse, so a ladder that would pass ``max_v_gate_set`` is
refused with nothing sent.

The window of a level comes from the calibration (the chip's table):

- ``sigma``: median ± k σ of the level (LCS: from 0 up to median + k σ; the top level: no upper bound
  beyond median + k σ either, it is symmetric);
- ``midpoint``: from the midpoint to the lower neighbour to the midpoint to the upper one, shrunk about
  the median by k (k = 1: the full midpoint window; LCS starts at 0, the top level ends at +inf).

One array call per attempt and operation; every pulse reaches the chip's listeners (op logs count them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hwloop.chip.base import Chip
from hwloop.chip.cdf import CdfTable
from hwloop.errors import ChipError

WINDOW_MODES = ("sigma", "midpoint")


def level_windows(table: CdfTable, mode: str = "sigma", k: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(lo_us, hi_us) per level of ``table`` (index 0 = LCS)."""
    if mode not in WINDOW_MODES:
        raise ChipError(f"unknown verify window {mode!r}; choose {' or '.join(WINDOW_MODES)}")
    if not (np.isfinite(k) and k > 0):
        raise ChipError(f"verify tolerance must be a finite number > 0, got {k}")
    med = table.medians_us.astype(np.float64)
    if mode == "sigma":
        sig = table.sigmas_us.astype(np.float64)
        lo, hi = med - k * sig, med + k * sig
    else:
        mid = (med[1:] + med[:-1]) / 2.0
        lo_full = np.concatenate([[0.0], mid])
        hi_full = np.concatenate([mid, [np.inf]])
        lo = med - k * (med - lo_full)
        hi = np.where(np.isfinite(hi_full), med + k * (hi_full - med), np.inf)
    lo[0] = 0.0
    return np.maximum(lo, 0.0), hi


@dataclass
class VerifyResult:
    attempts: np.ndarray  # uint16 per device: attempts used (1..max_pulses)
    g_us: np.ndarray  # float32 per device: last read
    success: np.ndarray  # bool per device: last read inside the window
    set_pulses: int = 0
    reset_pulses: int = 0
    reads: int = 0

    @property
    def pulses(self) -> int:
        return self.set_pulses + self.reset_pulses

    def summary(self) -> dict:
        n = int(self.attempts.size)
        return {
            "devices": n,
            "success_rate": float(self.success.mean()) if n else None,
            "mean_attempts": float(self.attempts.mean()) if n else None,
            "max_attempts": int(self.attempts.max()) if n else 0,
            "pulses": self.pulses,
            "set_pulses": self.set_pulses,
            "reset_pulses": self.reset_pulses,
            "reads": self.reads,
            "pulses_per_program": self.pulses / n if n else None,
        }


def program_verify(
    chip: Chip,
    idx: np.ndarray,
    level: np.ndarray,
    lo_us: np.ndarray,
    hi_us: np.ndarray,
    *,
    max_pulses: int = 10,
    ispp_step_v: float = 0.0,
    on_attempt: Callable[[int], None] | None = None,
) -> VerifyResult:
    """Program ``level[i]`` into device ``idx[i]`` (flat indices) and verify against the level windows."""
    idx = chip.check_idx(idx).ravel()
    level = np.broadcast_to(np.asarray(level), idx.shape).astype(np.int64)
    if not (isinstance(max_pulses, int | np.integer) and 1 <= max_pulses <= 255):
        raise ChipError(f"verify pulse budget must be an integer 1..255, got {max_pulses!r}")
    if not (np.isfinite(ispp_step_v) and 0 <= ispp_step_v <= 0.5):
        raise ChipError(f"ISPP gate step must be within [0, 0.5] V, got {ispp_step_v}")
    if level.size and (level.min() < 0 or level.max() > chip.table.n_hcs):
        raise ChipError(f"verify target levels must be 0..{chip.table.n_hcs}")
    if np.unique(idx).size != idx.size:
        raise ChipError("program-and-verify needs each device once per call")
    v_base = chip.table.v_gate
    if ispp_step_v > 0:
        hcs_lv = np.unique(level[level > 0])
        if hcs_lv.size:  # the whole ladder passes the driver limits, or nothing is sent
            chip.check_v_gate(v_base[hcs_lv].max() + (max_pulses - 1) * ispp_step_v)
    n = idx.size
    attempts = np.zeros(n, dtype=np.uint16)
    g = np.full(n, np.nan, dtype=np.float32)
    ok = np.zeros(n, dtype=bool)
    res = VerifyResult(attempts, g, ok)
    todo = np.arange(n)
    lo_t, hi_t = lo_us[level], hi_us[level]
    for a in range(max_pulses):
        if todo.size == 0:
            break
        if on_attempt is not None:
            on_attempt(a)
        dev, lv = idx[todo], level[todo]
        chip.reset_idx(dev)
        res.reset_pulses += int(dev.size)
        hcs = lv > 0
        if hcs.any():
            if ispp_step_v > 0 and a > 0:
                chip.set_idx(dev[hcs], v_gate=v_base[lv[hcs]] + a * ispp_step_v)
            else:
                chip.set_idx(dev[hcs], level=lv[hcs])
            res.set_pulses += int(hcs.sum())
        gr = chip.read_idx(dev)
        res.reads += int(dev.size)
        attempts[todo] += 1
        g[todo] = gr
        inside = (gr >= lo_t[todo]) & (gr <= hi_t[todo])  # NaN reads are outside
        ok[todo[inside]] = True
        todo = todo[~inside]
    return res
