"""Small synthetic IDX data sets that look like MNIST to the loader (for tests that need no real data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hwloop.training.data import write_idx


def make_idx_dataset(root: Path, name: str, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    """Write ``root/name/`` with the four IDX files: 10 classes, each a random 28x28 prototype plus noise."""
    rng = np.random.default_rng(seed)
    protos = (rng.random((10, 28, 28)) > 0.7).astype(np.float32)
    d = Path(root) / name
    d.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = protos[y] * 180 + rng.normal(0, 40, (n, 28, 28))
        x = np.clip(x, 0, 255).astype(np.uint8)
        write_idx(d / f"{split}-images-idx3-ubyte.gz", x)
        write_idx(d / f"{split}-labels-idx1-ubyte.gz", y)
    return d
