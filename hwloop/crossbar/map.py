"""Mapping weight matrices onto 128x128 tiles, each weight a differential pair of adjacent cells.

Layer ``l`` (weights ``(out, in)``, flattened row-major) starts on a fresh tile. Its weight ``j`` lives in
the cells with flat device indices ``base_l + 2j`` (positive cell) and ``base_l + 2j + 1`` (negative
cell): two adjacent columns of one row. A signed weight level k in -n..n is the device pair
(k, 0) for k > 0, (0, |k|) for k < 0 and (0, 0) for k = 0, where device level 0 is LCS and 1..n the HCS
levels (see ``CdfTable.weight_levels``). A weight is read back as (G_pos - G_neg) / scale_us.
For the paper's 784-512-512-10 network this is 1,337,344 devices on 82 tiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwloop.chip.base import CELLS_PER_TILE


@dataclass(frozen=True)
class LayerMap:
    name: str
    shape: tuple[int, int]
    first_tile: int
    n_tiles: int
    weight_offset: int  # offset of the layer's first weight in the flat weight vector

    @property
    def n_weights(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def base_device(self) -> int:
        return self.first_tile * CELLS_PER_TILE


class CrossbarMap:
    """Where every weight of a network lives on the chip."""

    def __init__(self, shapes: list[tuple[str, tuple[int, int]]]) -> None:
        layers = []
        tile = 0
        off = 0
        for name, shape in shapes:
            n_dev = 2 * shape[0] * shape[1]
            n_t = -(-n_dev // CELLS_PER_TILE)
            layers.append(LayerMap(name, (int(shape[0]), int(shape[1])), tile, n_t, off))
            tile += n_t
            off += shape[0] * shape[1]
        self.layers = layers
        self.n_tiles = tile
        self.n_weights = off
        #: flat device index of every used device, in weight order: pos0, neg0, pos1, neg1, ...
        self.devices = np.concatenate([lm.base_device + np.arange(2 * lm.n_weights, dtype=np.int64) for lm in layers])

    @property
    def n_devices_used(self) -> int:
        return int(self.devices.size)

    @staticmethod
    def pair_levels(k: np.ndarray) -> np.ndarray:
        """Device levels for signed weight levels ``k``, interleaved (pos, neg) per weight."""
        k = np.asarray(k, dtype=np.int8)
        out = np.empty(2 * k.size, dtype=np.int8)
        out[0::2] = np.maximum(k, 0)
        out[1::2] = np.maximum(-k, 0)
        return out

    def describe(self) -> list[dict]:
        return [
            {
                "layer": lm.name,
                "shape": list(lm.shape),
                "tiles": [lm.first_tile, lm.first_tile + lm.n_tiles],
                "weights": lm.n_weights,
                "devices": 2 * lm.n_weights,
            }
            for lm in self.layers
        ]
