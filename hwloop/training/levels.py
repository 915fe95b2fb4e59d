"""Quantisation onto an unequally spaced level set Q (Eq. 1 of the paper).

The nearest-level index is the number of midpoints below a weight. ``index_np`` counts them with one
comparison per midpoint (the plain definition). The training hot path uses ``index`` (torch, any device):
a uniform bin grid over [Q_0, Q_n], fine enough that the window a weight's bin can stand for holds at
most one midpoint, gives through a small lookup table the midpoints certainly below the weight, and one
comparison with the next midpoint finishes the count. That is exact (same ties: a weight on a midpoint
goes to the lower level) in four passes over the weights instead of one per midpoint.
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
        #: both, interleaved: the interval holding w near level i is ``width_side_np[2 * i + (w >= Q_i)]``
        self.width_side_np = np.stack([self.width_down, self.width_up], axis=1).reshape(-1).astype(np.float32)
        self.n_half = (qn.size - 1) // 2
        self._build_lut()
        self._dev_tables: dict[torch.device, dict[str, torch.Tensor]] = {}

    def _build_lut(self) -> None:
        """Bin grid of width h <= (smallest midpoint spacing) / 4 over [Q_0, Q_n]. ``lut[b]`` counts the
        midpoints below the left edge of bin b - 1, so for a w whose computed bin is off by at most one,
        the midpoints not yet counted and below w lie within 3 h < one spacing: at most one, ``thr[b]``."""
        mid = self.mid_np.astype(np.float64)
        spacing = float(np.min(np.diff(mid))) if mid.size > 1 else float(self.width_np[0])
        span = float(self.q_np[-1] - self.q_np[0])
        n_bins = int(min(4 * span / spacing, 1 << 20)) + 1
        h = span / n_bins
        edges = float(self.q_np[0]) + (np.arange(n_bins) - 1.0) * h
        self.lut_np = np.searchsorted(mid, edges, side="left").astype(np.int32)  # midpoints < edge
        mid_pad = np.append(self.mid_np, np.float32(np.inf)).astype(np.float32)
        self.thr_np = mid_pad[self.lut_np]  # the one midpoint left to compare with in each bin
        self.lut_inv_h = 1.0 / h
        self.lut_fine = 3 * h < spacing  # False only if capped (absurdly close levels): bucketize then

    def tables(self, device: torch.device | str) -> dict[str, torch.Tensor]:
        """The small lookup tables on ``device`` (cached): levels Q, midpoints, the bin tables, and the
        interval width on each side of every level, interleaved as ``width_side[2 * i + (w >= Q_i)]``."""
        dev = torch.device(device)
        t = self._dev_tables.get(dev)
        if t is None:
            t = {
                k: torch.from_numpy(np.ascontiguousarray(v)).to(dev)
                for k, v in {
                    "q": self.q_np,
                    "mid": self.mid_np,
                    "lut": self.lut_np,
                    "thr": self.thr_np,
                    "width_side": self.width_side_np,
                }.items()
            }
            self._dev_tables[dev] = t
        return t

    def index(
        self,
        w: torch.Tensor,
        out: torch.Tensor | None = None,
        work_f: torch.Tensor | None = None,
        work_i: torch.Tensor | None = None,
        work_b: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Nearest-level index (int32, same device and shape as ``w``); equals ``index_np``. The optional
        ``out`` (int32), ``work_f`` (float32), ``work_i`` (int32) and ``work_b`` (bool) of ``w``'s shape make it
        allocation-free (fresh multi-megabyte buffers cost more than the arithmetic on CPU)."""
        t = self.tables(w.device)
        flat = w.reshape(-1)
        if not self.lut_fine:
            return torch.bucketize(flat, t["mid"], right=False).to(torch.int32).view(w.shape)
        n = flat.numel()
        f = torch.empty(n, dtype=torch.float32, device=w.device) if work_f is None else work_f.view(-1)
        b = torch.empty(n, dtype=torch.int32, device=w.device) if work_i is None else work_i.view(-1)
        o = torch.empty(n, dtype=torch.int32, device=w.device) if out is None else out.view(-1)
        gt = torch.empty(n, dtype=torch.bool, device=w.device) if work_b is None else work_b.view(-1)
        top = self.lut_np.size - 1
        torch.sub(flat, self.lo, out=f).mul_(self.lut_inv_h).clamp_(0, top)
        b.copy_(f).clamp_(0, top)  # NaN converts to INT_MIN on some devices: bin 0, index 0 (as index_np)
        torch.index_select(t["thr"], 0, b, out=f)
        torch.gt(flat, f, out=gt)
        torch.index_select(t["lut"], 0, b, out=o)
        o.add_(gt)
        return o.view(w.shape)

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
