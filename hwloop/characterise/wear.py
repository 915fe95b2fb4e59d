"""Programming with read-back checks for training: single shot or program-and-verify, and worn devices.

A real board does not say that a device has worn out, so it is inferred from reads. After every program
the read-back is compared with the *state class* of its target, split at the equal-error point of the LCS
and first HCS CDFs (``class_split_us``). Two kinds of evidence are counted per device:

- stuck in HCS: targeted LCS, read at or above the split; a later LCS target that reads below clears it;
- stuck in LCS: targeted HCS, read below the split; a later HCS target that reads above clears it.

A device is marked worn once either count reaches ``strikes`` (programs whose read-back stayed outside its
target class, with no program in between that showed the device can still leave that state). A program
that lands in the other class says nothing about the stuck state (a device stuck in HCS reads HCS when
targeted HCS). A worn device is excluded from further programming by the caller and marked failed on the
chip (``Chip.mark_failed``). In verify mode the reads are those at the end of program-and-verify.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwloop.chip.base import Chip
from hwloop.chip.cdf import CdfTable
from hwloop.chip.verify import level_windows, program_verify
from hwloop.errors import ConfigError

PROGRAM_MODES = ("single-shot", "verify")


def class_split_us(table: CdfTable) -> float:
    """Conductance splitting LCS from HCS where both misclassify the same fraction (equal-error point)."""
    lo, hi = float(table.medians_us[0]), float(table.medians_us[1])
    g = np.linspace(lo, hi, 4097)
    err = (1.0 - table.cdf(0, g)) - table.cdf(1, g)
    return float(g[int(np.argmax(err <= 0.0))])


@dataclass
class ProgramOptions:
    mode: str = "single-shot"
    tolerance: float = 1.0
    max_pulses: int = 10
    window: str = "sigma"
    wear_strikes: int = 3

    def validate(self) -> None:
        if self.mode not in PROGRAM_MODES:
            raise ConfigError(f"unknown --program {self.mode!r}; choose {' or '.join(PROGRAM_MODES)}")
        if not (np.isfinite(self.tolerance) and self.tolerance > 0):
            raise ConfigError(f"--verify-tolerance must be a finite number > 0, got {self.tolerance}")
        if not 1 <= int(self.max_pulses) <= 255:
            raise ConfigError(f"--verify-max-pulses must be 1..255, got {self.max_pulses}")
        if int(self.wear_strikes) < 0:
            raise ConfigError("--wear-strikes must be >= 0 (0: no worn-device inference)")


class LevelProgrammer:
    """``prog(dev, level) -> (g_us, worn)``: programs flat chip devices to device levels (0 = LCS)."""

    def __init__(self, chip: Chip, opts: ProgramOptions) -> None:
        opts.validate()
        self.chip = chip
        self.opts = opts
        self.lo_us, self.hi_us = level_windows(chip.table, opts.window, opts.tolerance)
        self.split_us = class_split_us(chip.table)
        self.strikes = np.zeros((2, chip.n_devices), dtype=np.uint8)  # stuck-HCS, stuck-LCS evidence
        self.worn = np.zeros(chip.n_devices, dtype=bool)
        self.verify_attempts = 0
        self.verify_programs = 0
        self.verify_failures = 0

    def __call__(self, dev: np.ndarray, level: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lv = np.asarray(level, dtype=np.int64)
        if self.opts.mode == "verify":
            r = program_verify(self.chip, dev, lv, self.lo_us, self.hi_us, max_pulses=int(self.opts.max_pulses))
            g = r.g_us
            self.verify_attempts += int(r.attempts.sum())
            self.verify_programs += int(dev.size)
            self.verify_failures += int((~r.success).sum())
        else:
            self.chip.reset_idx(dev)
            hcs = lv > 0
            if hcs.any():
                self.chip.set_idx(dev[hcs], level=lv[hcs])
            g = self.chip.read_idx(dev)
        to_hcs = lv > 0
        read_hcs = g >= self.split_us  # NaN reads as LCS: a miss for an HCS target
        worn = np.zeros(dev.size, dtype=bool)
        if self.opts.wear_strikes > 0:
            s = self.strikes[:, dev].astype(np.int64)
            miss_h = ~to_hcs & read_hcs  # evidence of stuck HCS
            ok_h = ~to_hcs & ~read_hcs
            miss_l = to_hcs & ~read_hcs  # evidence of stuck LCS
            ok_l = to_hcs & read_hcs
            s[0] = np.where(miss_h, s[0] + 1, np.where(ok_h, 0, s[0]))
            s[1] = np.where(miss_l, s[1] + 1, np.where(ok_l, 0, s[1]))
            self.strikes[:, dev] = np.minimum(s, 255).astype(np.uint8)
            worn = (s >= self.opts.wear_strikes).any(axis=0)
            if worn.any():
                self.worn[dev[worn]] = True
                self.chip.mark_failed(dev[worn])
        return g, worn

    def state(self) -> dict:
        return {"strikes": self.strikes.copy(), "worn": self.worn.copy()}

    def load_state(self, st: dict) -> None:
        if "strikes" in st:
            self.strikes[:] = st["strikes"]
            self.worn[:] = st["worn"]


#: level code of an inferred worn device in run-log snapshots (``/snapshots/level``)
LEVEL_WORN = -3


def programmer_for(cfg: object, chip: Chip | None) -> LevelProgrammer | None:
    """The trainer's programmer: None (the plain single-shot path) unless ``cfg.program`` is ``verify`` or
    the run uses a real chip, where worn devices must be inferred from reads. ``cfg`` is a ``TrainConfig``."""
    if chip is None:
        return None
    mode = str(getattr(cfg, "program", "single-shot"))
    strikes = int(getattr(cfg, "wear_strikes", 3))
    if mode == "single-shot" and (getattr(cfg, "chip", "sim") != "real" or strikes == 0):
        return None
    opts = ProgramOptions(
        mode=mode,
        tolerance=float(getattr(cfg, "verify_tolerance", 1.0)),
        max_pulses=int(getattr(cfg, "verify_max_pulses", 10)),
        wear_strikes=strikes,
    )
    return LevelProgrammer(chip, opts)
