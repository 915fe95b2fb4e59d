"""Quantisation onto an unequally spaced level set Q (Eq. 1 of the paper).

The nearest-level index is the number of midpoints below a weight: with 16 midpoints, 16 vectorized
comparisons summed in int8 beat a binary search (``torch.bucketize``) by an order of magnitude on CPU.
"""

from __future__ import annotations

import numpy as np
import torch


class LevelSet:
    """Sorted weight levels Q with nearest-level lookup and the interval width around any value."""

    def __init__(self, q: torch.Tensor | np.ndarray | list[float]) -> None:
        qn = np.asarray(q, dtype=np.float32)
        if qn.ndim != 1 or qn.size < 2 or not np.all(qn[1:] > qn[:-1]):
            raise ValueError("weight levels must be a strictly increasing 1-D sequence of at least 2 values")
        if qn.size > 127:
            raise ValueError("at most 127 weight levels are supported")
        self.q_np = qn
        self.q = torch.from_numpy(qn.copy())
        self.mid_np = (qn[1:] + qn[:-1]) / 2
        self.width_np = qn[1:] - qn[:-1]
        self.width = torch.from_numpy(self.width_np.copy())
        # width of the interval above / below each level (outer levels use their only interval)
        self.width_up = np.append(self.width_np, self.width_np[-1]).astype(np.float32)
        self.width_down = np.insert(self.width_np, 0, self.width_np[0]).astype(np.float32)
        self.n_half = (qn.size - 1) // 2

    @property
    def lo(self) -> float:
        return float(self.q_np[0])

    @property
    def hi(self) -> float:
        return float(self.q_np[-1])

    def index_np(self, w: np.ndarray) -> np.ndarray:
        """Index (0..len(Q)-1, int8) of the nearest level; ties at a midpoint go to the lower level."""
        s = np.zeros(w.shape, dtype=np.int8)
        for m in self.mid_np:
            s += w > m
        return s

    def interval_width_np(self, w: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Width I of the interval between adjacent levels that holds ``w`` (``idx``: its nearest level)."""
        return np.where(w >= self.q_np[idx], self.width_up[idx], self.width_down[idx])
