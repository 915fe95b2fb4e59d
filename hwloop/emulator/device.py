"""The emulated chip of the virtual bench: a ``SimChip`` driven by terminal voltages.

The emulated board does not trust operation codes for the physics: what a pulse does follows from its
voltages, as on silicon.

- ``V_BL > V_SL`` (SET polarity): a pristine device forms if ``V_BL`` reaches its own forming voltage
  (drawn per device, normal around ``form_v_median``) and then the SimChip's forming yield; a formed
  device SETs at gate voltage ``V_WL`` if ``V_BL - V_SL >= set_v_min``.
- ``V_SL > V_BL`` (RESET polarity): a formed device RESETs if ``V_SL - V_BL >= reset_v_min`` and the gate
  is on (``V_WL >= reset_v_wl_min``).
- A read returns ``I = G * V_BL`` of the addressed cell (gate on), with the SimChip's read noise.

The selected cell (board SELECT) is the one the SMU sees on its channel.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from hwloop.chip.sim import SimChip
from hwloop.instruments.bench import Condition


@dataclass(frozen=True)
class DevicePhysics:
    form_v_median: float = 2.6
    form_v_sigma: float = 0.25
    set_v_min: float = 1.0
    reset_v_min: float = 1.5
    reset_v_wl_min: float = 2.5
    read_v_wl_min: float = 1.0
    adc_lsb_a: float = 0.5e-9


class EmulatedChip:
    """SimChip + selected cell + DAC state, guarded by one lock (the board and the SMU run in threads)."""

    def __init__(self, sim: SimChip, physics: DevicePhysics | None = None, seed: int = 0) -> None:
        self.sim = sim
        self.physics = physics or DevicePhysics()
        rng = np.random.default_rng(seed + 7919)
        p = self.physics
        v_form = p.form_v_median + p.form_v_sigma * rng.standard_normal(sim.n_devices)
        self.v_form = v_form.astype(np.float32)
        self.lock = threading.RLock()
        self.selected: int | None = None
        self.dac: tuple[float, float, float] = (0.0, 0.0, 0.0)
        self.outputs_on = False
        self.pulses = 0

    def flat(self, tile: np.ndarray, row: np.ndarray, col: np.ndarray) -> np.ndarray:
        return (tile.astype(np.int64) * self.sim.rows + row) * self.sim.cols + col

    def pulse(self, idx: np.ndarray, cond: Condition) -> None:
        """Apply one pulse of ``cond`` to every device in ``idx``."""
        p = self.physics
        sim = self.sim
        with self.lock:
            self.pulses += idx.size
            formed = sim.formed[idx]
            if cond.v_bl > cond.v_sl:
                pristine = idx[~formed]
                if pristine.size:
                    reach = pristine[self.v_form[pristine] <= cond.v_bl]
                    if reach.size:
                        sim.form_idx(reach)
                live = idx[formed]
                if live.size and cond.v_bl - cond.v_sl >= p.set_v_min:
                    sim.set_idx(live, v_gate=np.full(live.size, cond.v_wl))
            elif cond.v_sl - cond.v_bl >= p.reset_v_min and cond.v_wl >= p.reset_v_wl_min:
                live = idx[formed]
                if live.size:
                    sim.reset_idx(live)

    def current_a(self, idx: np.ndarray, v_wl: float, v_bl: float) -> np.ndarray:
        """Cell currents (A) at a read bias: G (with read noise) times V_BL, zero with the gate off."""
        with self.lock:
            g_us = self.sim.read_idx(idx).astype(np.float64)
        if v_wl < self.physics.read_v_wl_min:
            return np.zeros(idx.size)
        return g_us * 1e-6 * v_bl

    def adc_codes(self, idx: np.ndarray, cond: Condition) -> np.ndarray:
        i_a = self.current_a(idx, cond.v_wl, cond.v_bl - cond.v_sl)
        return np.clip(np.round(np.abs(i_a) / self.physics.adc_lsb_a), 0, 65535).astype("<u2")
