"""The network's weights as conductance pairs on a chip (``ChipWeights``), beside the map that places them.

``ChipWeights`` keeps the nominal level of every used device, the last read conductance of each, and the
flat weight vector the forward pass uses (``w_flat``, shared with torch as ``w_torch``). Programming a level
change is RESET, then SET at the level's I_CC for an HCS target (single shot, no verify, unless a
``LevelProgrammer`` of ``hwloop.characterise.wear`` does verify and worn-device inference), then READ back.
With no chip (``--chip none``) a weight is the ideal level of its device pair.
"""

from __future__ import annotations

import numpy as np
import torch

from hwloop.characterise.wear import LEVEL_WORN, LevelProgrammer
from hwloop.chip.base import CELLS_PER_TILE, Chip
from hwloop.crossbar.map import CrossbarMap
from hwloop.training.levels import LevelSet


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """Unique values of an already sorted array (cheaper than np.unique)."""
    if a.size == 0:
        return a
    keep = np.empty(a.size, dtype=bool)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


class ChipWeights:
    """The network's weights as conductance pairs on a chip, with the nominal level of every device."""

    def __init__(
        self,
        chip: Chip | None,
        cmap: CrossbarMap,
        levels: LevelSet,
        scale_us: float,
        programmer: LevelProgrammer | None = None,
    ) -> None:
        self.chip = chip
        self.programmer = programmer  # verify / worn-device inference (hwloop.characterise.wear)
        self.cmap = cmap
        self.levels = levels
        self.q = levels.q_np
        self.scale_us = scale_us
        n_used = cmap.n_devices_used
        self.dev_level = np.full(n_used, -1, dtype=np.int8)  # nominal level per used device (-1: never set)
        self.g_us = np.zeros(n_used, dtype=np.float32)  # last read conductance per used device
        self.usable = np.ones(n_used, dtype=bool)
        self.w_flat = np.zeros(cmap.n_weights, dtype=np.float32)  # weights used in forward/backward
        self.w_torch = torch.from_numpy(self.w_flat)
        self.programs = 0
        self.worn = np.zeros(n_used, dtype=bool)  # inferred worn out (excluded from programming)
        self.last_changed = np.zeros(0, dtype=np.int64)  # weights whose w_flat entry the last program changed

    def form(self, attempts: int = 3) -> float:
        """Form every used device, retrying failures; returns the forming yield."""
        if self.chip is None:
            return 1.0
        todo = self.cmap.devices
        for _ in range(attempts):
            ok = self.chip.form_idx(todo)
            todo = todo[~ok]
            if todo.size == 0:
                break
        formed = self.chip.formed_mask()[self.cmap.devices]
        self.usable = formed.copy()
        return float(formed.mean())

    def program(self, k: np.ndarray) -> int:
        """Program the signed weight levels ``k`` of every weight; only devices whose level changes are touched."""
        target = CrossbarMap.pair_levels(k)
        changed = np.flatnonzero((target != self.dev_level) & self.usable)
        return self._apply(changed, target[changed])

    def program_weights(self, wi: np.ndarray, k: np.ndarray) -> int:
        """Program only the weights ``wi`` (sorted flat indices) to signed levels ``k``: the same devices as
        ``program`` would touch when no other weight's level changed, without a pass over the whole chip."""
        dev_i = np.empty(2 * wi.size, dtype=np.int64)
        dev_i[0::2] = 2 * wi
        dev_i[1::2] = 2 * wi + 1
        target = CrossbarMap.pair_levels(k)
        sel = (target != self.dev_level[dev_i]) & self.usable[dev_i]
        return self._apply(dev_i[sel], target[sel])

    def _apply(self, changed: np.ndarray, tl: np.ndarray) -> int:
        """RESET, SET (HCS targets) and READ the used devices ``changed`` (sorted) to levels ``tl``."""
        if changed.size == 0:
            self.last_changed = changed
            return 0
        self.dev_level[changed] = tl
        self.programs += int(changed.size)
        wi = _sorted_unique(changed >> 1)
        self.last_changed = wi
        if self.chip is None:
            self._ideal_weights(wi)
            return int(changed.size)
        dev = self.cmap.devices[changed]
        if self.programmer is not None:
            self.g_us[changed], worn = self.programmer(dev, tl)
            self.usable[changed[worn]] = False
            self.worn[changed[worn]] = True
            self._refresh_weights(_sorted_unique(changed >> 1))
            return int(changed.size)
        self.chip.reset_idx(dev)
        hcs = tl > 0
        if hcs.any():
            self.chip.set_idx(dev[hcs], level=tl[hcs])
        self.g_us[changed] = self.chip.read_idx(dev)
        self._refresh_weights(wi)
        return int(changed.size)

    def _ideal_weights(self, wi: np.ndarray | None = None) -> None:
        """``--chip none``: the weight is the ideal level of its device pair (k = pos level - neg level)."""
        dl, n = self.dev_level, self.levels.n_half
        if wi is None:
            self.w_flat[:] = self.q[dl[0::2].astype(np.int64) - dl[1::2] + n]
        else:  # only the weights asked for: no pass over the whole crossbar
            self.w_flat[wi] = self.q[dl[2 * wi].astype(np.int64) - dl[2 * wi + 1] + n]

    def _refresh_weights(self, wi: np.ndarray | None = None) -> None:
        if wi is None:
            self.w_flat[:] = (self.g_us[0::2] - self.g_us[1::2]) / self.scale_us
        else:
            self.w_flat[wi] = (self.g_us[2 * wi] - self.g_us[2 * wi + 1]) / self.scale_us

    def read_all(self) -> np.ndarray | None:
        """Read every device of the chip; refresh the weights from it; return the (n_tiles,128,128) reads."""
        if self.chip is None:
            return None
        g = self.chip.read_all()
        self.g_us[:] = g.reshape(-1)[self.cmap.devices]
        self._refresh_weights()
        return g

    def level_map(self) -> np.ndarray:
        """Nominal level of every device of the chip (-1: unused or never programmed)."""
        full = np.full(self.cmap.n_tiles * CELLS_PER_TILE, -1, dtype=np.int8)
        full[self.cmap.devices] = self.dev_level
        full[self.cmap.devices[self.worn]] = LEVEL_WORN
        return full

    def state(self, weights: bool = True) -> dict:
        """Copies of the state; ``weights=False`` leaves out ``w_flat``, which ``load_state`` can rebuild."""
        st = {
            "dev_level": self.dev_level.copy(),
            "g_us": self.g_us.copy(),
            "usable": self.usable.copy(),
            "programs": self.programs,
            "worn": self.worn.copy(),
            "programmer": self.programmer.state() if self.programmer is not None else None,
        }
        if weights:
            st["w_flat"] = self.w_flat.copy()
        return st

    def load_state(self, st: dict) -> None:
        self.dev_level[:] = st["dev_level"]
        self.g_us[:] = st["g_us"]
        self.usable[:] = st["usable"]
        if "w_flat" in st:
            self.w_flat[:] = st["w_flat"]
        elif self.chip is None:
            self._ideal_weights()
        else:  # every weight was refreshed from these reads at the epoch end the checkpoint was taken at
            self._refresh_weights()
        self.programs = int(st["programs"])
        if "worn" in st:
            self.worn[:] = st["worn"]
        if self.programmer is not None and st.get("programmer"):
            self.programmer.load_state(st["programmer"])


__all__ = ["ChipWeights"]
