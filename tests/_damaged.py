"""A corpus of damaged run logs, made from two good ones (a closed log and a crashed one, still marked open
by its dead writer). Used by tests/test_integrity_corpus.py and benchmarks/kill_writers.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np


def _xor(path: Path, offset: int, n: int) -> None:
    with path.open("r+b") as fh:
        fh.seek(offset)
        b = fh.read(n)
        fh.seek(offset)
        fh.write(bytes(x ^ 0x5A for x in b))


def _chunk_extent(path: Path, name: str) -> tuple[int, int]:
    """(byte offset, size) of the first stored chunk of dataset ``name``."""

    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        info = f[name].id.get_chunk_info(0)
    return int(info.byte_offset), int(info.size)


def _snapshot_g(path: Path) -> str:
    """The snapshot conductance dataset of whichever run-log format ``path`` is (3: g_res, 2: g_code, 1: g_us)."""

    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        return next(f"snapshots/{k}" for k in ("g_res", "g_code", "g_us") if k in f["snapshots"])


def _checkpoint_slot(path: Path) -> str:
    """The checkpoint slot holding the current checkpoint (a closed log keeps only that one)."""

    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        return "checkpoint/blob_b" if int(f["checkpoint"]["index"][0]) == 1 else "checkpoint/blob_a"


def make_corpus(clean: Path, crashed: Path, out: Path, seed: int = 0) -> dict[str, Path]:
    """Damaged copies: truncated, metadata overwritten (checksummed object headers near the start, where an
    SWMR reader retried for minutes), a data chunk overwritten, headers swapped between the two logs, a
    zeroed superblock. Returns name -> path."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    corpus: dict[str, Path] = {}
    for base_name, base, other in (("closed", clean, crashed), ("crashed", crashed, clean)):
        size = base.stat().st_size

        def copy(kind: str, base: Path = base, base_name: str = base_name) -> Path:
            p = out / f"{base_name}-{kind}.h5"
            shutil.copyfile(base, p)
            corpus[p.stem] = p
            return p

        p = copy("truncated")
        with p.open("r+b") as fh:
            fh.truncate(size // 2)
        p = copy("truncated-tail")
        with p.open("r+b") as fh:
            fh.truncate(size - 1000)
        for off in (60, 100, 400):
            _xor(copy(f"metadata-{off}"), off, 8)
        for ds_name in ("ops", _snapshot_g(base), _checkpoint_slot(base)):
            off, n = _chunk_extent(base, ds_name)
            p = copy(f"chunk-{ds_name.replace('/', '-')}")
            with p.open("r+b") as fh:
                fh.seek(off + n // 4)
                fh.write(rng.integers(0, 256, max(1, n // 2), dtype=np.uint8).tobytes())
        p = copy("swapped-headers")  # the first 4 KiB (superblock, root and first object headers) of another log
        with other.open("rb") as src:
            head = src.read(4096)
        with p.open("r+b") as fh:
            fh.write(head)
        p = copy("swapped-object-headers")  # two 512-byte blocks of metadata trade places
        with p.open("r+b") as fh:
            fh.seek(48)
            a = fh.read(512)
            fh.seek(1024)
            b = fh.read(512)
            fh.seek(48)
            fh.write(b)
            fh.seek(1024)
            fh.write(a)
        p = copy("zeroed-superblock")
        with p.open("r+b") as fh:
            fh.seek(8)
            fh.write(bytes(40))
    return corpus
