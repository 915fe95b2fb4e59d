"""Snapshot conductance coding (formats 2 and 3): uint16 codes, level residuals, keyframe deltas, and the
chunk compression done off the training thread (docs/runlog-schema.md)."""

from __future__ import annotations

import zlib

import h5py
import numpy as np

from hwloop.chip.base import COLS, ROWS
from hwloop.runlog.schema import (
    G_CODE_MAX,
    G_CODE_NAN,
    G_LSB_US,
    G_OFFSET_US,
    G_RES_LSB_US,
    G_RES_NAN,
    G_RES_Q_MAX,
    SNAPSHOT_GZIP_LEVEL,
)


def encode_g_us(g_us: np.ndarray) -> np.ndarray:
    """Conductances (µS) to the snapshot code (uint16, 0.01 µS steps; out-of-range values saturate)."""
    g = np.asarray(g_us, dtype=np.float32)
    code = np.rint((g - np.float32(G_OFFSET_US)) * np.float32(1 / G_LSB_US))
    np.clip(code, 0, G_CODE_MAX, out=code)
    np.nan_to_num(code, copy=False, nan=G_CODE_NAN)
    return code.astype(np.uint16)


def decode_g_us(code: np.ndarray) -> np.ndarray:
    """The snapshot code back to conductances (µS, float32)."""
    c = np.asarray(code)
    g = np.float32(G_OFFSET_US) + np.float32(G_LSB_US) * c.astype(np.float32)
    g[c == G_CODE_NAN] = np.nan
    return g


def _level_ref(level: np.ndarray, ref_us: np.ndarray) -> np.ndarray:
    """Reference conductance of every device: ``ref_us[level]`` (0 for unused or worn devices, level < 0)."""
    lv = np.asarray(level)
    r = np.zeros(lv.shape, dtype=np.float32)
    used = lv >= 0
    r[used] = np.asarray(ref_us, dtype=np.float32)[np.minimum(lv[used], len(ref_us) - 1)]
    return r


def residual_q(g_us: np.ndarray, level: np.ndarray, ref_us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(q int32, nan mask): the residual from the level's reference in G_RES_LSB_US steps (NaN -> q = 0)."""
    g = np.asarray(g_us, dtype=np.float32)
    nan = np.isnan(g)
    q = np.rint((g - _level_ref(level, ref_us)) * np.float32(1 / G_RES_LSB_US))
    q[nan] = 0
    np.clip(q, -G_RES_Q_MAX, G_RES_Q_MAX, out=q)
    return q.astype(np.int32), nan


def _zigzag(d: np.ndarray) -> np.ndarray:
    return ((d << 1) ^ (d >> 31)).astype(np.uint16)


def _unzigzag(code: np.ndarray) -> np.ndarray:
    c = code.astype(np.int32)
    return (c >> 1) ^ -(c & 1)


def encode_residual(q: np.ndarray, nan: np.ndarray, q_key: np.ndarray | None) -> np.ndarray:
    """The ``g_res`` code of residuals ``q`` (NaN where ``nan``): alone, or as a difference from ``q_key``."""
    code = _zigzag(q if q_key is None else q - q_key)
    code[nan] = G_RES_NAN
    return code


def decode_residual(
    code: np.ndarray, level: np.ndarray, ref_us: np.ndarray, key_code: np.ndarray | None, lsb_us: float = G_RES_LSB_US
) -> np.ndarray:
    """``g_res`` code (with its keyframe's code, for a delta row) back to conductances (µS, float32)."""
    c = np.asarray(code)
    q = _unzigzag(c)
    if key_code is not None:
        kc = np.asarray(key_code)
        q += np.where(kc == G_RES_NAN, 0, _unzigzag(kc))
    g = _level_ref(level, ref_us) + np.float32(lsb_us) * q.astype(np.float32)
    g[c == G_RES_NAN] = np.nan
    return g


def _compress_residual(
    g_us: np.ndarray, level: np.ndarray, n_tiles: int, ref_us: np.ndarray, key: dict, is_key: bool
) -> tuple[list[bytes], list[bytes]]:
    """Format-3 snapshot chunks (shuffle + deflate), one per tile. Runs on the writer's single background
    thread, in submission order: a keyframe leaves its residuals in ``key["q"]`` for the rows after it."""
    q, nan = residual_q(np.asarray(g_us).reshape(-1), np.asarray(level).reshape(-1), ref_us)
    code = encode_residual(q, nan, None if is_key else key["q"])
    if is_key:
        key["q"] = q
    code = code.reshape(n_tiles, ROWS * COLS)
    lv = np.ascontiguousarray(np.asarray(level, dtype=np.int8).reshape(n_tiles, ROWS * COLS))
    planes = code.view(np.uint8).reshape(n_tiles, ROWS * COLS, 2).transpose(0, 2, 1).copy()  # HDF5 shuffle
    g_chunks = [zlib.compress(planes[t].tobytes(), SNAPSHOT_GZIP_LEVEL) for t in range(n_tiles)]
    l_chunks = [zlib.compress(lv[t].tobytes(), SNAPSHOT_GZIP_LEVEL) for t in range(n_tiles)]
    return g_chunks, l_chunks


def _compress_snapshot(g_us: np.ndarray, level: np.ndarray, n_tiles: int) -> tuple[list[bytes], list[bytes]]:
    """HDF5 chunks (shuffle + deflate for the code, deflate for levels), one per tile, ready to write raw."""
    code = encode_g_us(np.asarray(g_us).reshape(n_tiles, ROWS * COLS))
    lv = np.ascontiguousarray(np.asarray(level, dtype=np.int8).reshape(n_tiles, ROWS * COLS))
    planes = code.view(np.uint8).reshape(n_tiles, ROWS * COLS, 2).transpose(0, 2, 1).copy()  # HDF5 shuffle
    g_chunks = [zlib.compress(planes[t].tobytes(), SNAPSHOT_GZIP_LEVEL) for t in range(n_tiles)]
    l_chunks = [zlib.compress(lv[t].tobytes(), SNAPSHOT_GZIP_LEVEL) for t in range(n_tiles)]
    return g_chunks, l_chunks


def _snapshot_keys(sg: h5py.Group) -> tuple[str, ...]:
    if "g_res" in sg:
        return ("epoch", "g_res", "level", "key")
    return ("epoch", "g_code" if "g_code" in sg else "g_us", "level")
