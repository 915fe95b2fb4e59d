"""Quantisation onto an unequally spaced level set Q (Eq. 1 of the paper)."""

from __future__ import annotations

import torch


class LevelSet:
    """Sorted weight levels Q with nearest-level lookup and the interval width around any value."""

    def __init__(self, q: torch.Tensor | list[float]) -> None:
        q = torch.as_tensor(q, dtype=torch.float32)
        if q.ndim != 1 or q.numel() < 2 or not bool(torch.all(q[1:] > q[:-1])):
            raise ValueError("weight levels must be a strictly increasing 1-D sequence of at least 2 values")
        self.q = q
        self.mid = (q[1:] + q[:-1]) / 2
        self.width = q[1:] - q[:-1]
        self.n_half = (q.numel() - 1) // 2

    @property
    def lo(self) -> float:
        return float(self.q[0])

    @property
    def hi(self) -> float:
        return float(self.q[-1])

    def index(self, w: torch.Tensor) -> torch.Tensor:
        """Index (0..len(Q)-1) of the nearest level."""
        return torch.bucketize(w, self.mid)

    def signed_level(self, w: torch.Tensor) -> torch.Tensor:
        """Nearest level as a signed index k in -n..n (0 is the middle level)."""
        return self.index(w) - self.n_half

    def nearest(self, w: torch.Tensor) -> torch.Tensor:
        """W_S: the nearest level of Q (Eq. 1)."""
        return self.q[self.index(w)]

    def interval_width(self, w: torch.Tensor) -> torch.Tensor:
        """Width I of the interval [Q_i, Q_i+1) holding w (clamped to the outer intervals)."""
        i = torch.bucketize(w, self.q[1:-1])
        return self.width[i]
