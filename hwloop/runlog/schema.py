"""Run-log format constants: format name and versions, the /ops, /epochs and /resumes row types, op and
status codes, snapshot coding constants, and the format and checkpoint-index checks shared by writer and
reader (docs/runlog-schema.md)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from hwloop.chip.base import Op
from hwloop.errors import RunLogError
from hwloop.h5check import (
    H5_ERRORS,
)

FORMAT_NAME = "hwloop-runlog"
FORMAT_VERSION = 3
#: versions this code reads (it writes and resumes only FORMAT_VERSION)
READ_VERSIONS = (1, 2, 3)
#: snapshot conductance code (format 2): g_us = G_OFFSET_US + G_LSB_US * code; G_CODE_NAN stands for NaN
G_LSB_US = 0.01
G_OFFSET_US = -20.0
G_CODE_NAN = 65535
G_CODE_MAX = 65534
SNAPSHOT_GZIP_LEVEL = 4
#: snapshot residual code (format 3): g_us = ref_us[level] + G_RES_LSB_US * q, q = unzigzag(code)
#: (+ the keyframe's q for a delta row); |q| saturates at G_RES_Q_MAX; G_RES_NAN stands for NaN
G_RES_LSB_US = 0.1
G_RES_Q_MAX = 16_000
G_RES_NAN = 65535
#: a snapshot row is a keyframe (coded alone) when no keyframe was written in the last this-many rows, or
#: when more than this fraction of the devices have another nominal level than in the keyframe
SNAPSHOT_KEY_EVERY = 10
SNAPSHOT_KEY_LEVEL_CHANGE = 0.05
#: READ conductances in /ops are rounded to 1/OPS_G_STEPS_PER_US µS (an exact binary fraction in float32)
OPS_G_STEPS_PER_US = 64

#: op codes in /ops; READ_ALL is one row standing for a full-array read stored in /snapshots
OP_READ_ALL = 4
OP_CODES = {
    "FORM": int(Op.FORM),
    "SET": int(Op.SET),
    "RESET": int(Op.RESET),
    "READ": int(Op.READ),
    "READ_ALL": OP_READ_ALL,
}

OP_ENUM = h5py.enum_dtype(OP_CODES, basetype="u1")
OPS_DTYPE = np.dtype(
    [
        ("t_s", "<f8"),  # seconds since the run started (wall clock)
        ("step", "<u4"),  # global training step (0 = set-up before training)
        ("op", OP_ENUM),
        ("tile", "<u2"),
        ("row", "u1"),
        ("col", "u1"),
        ("level", "i1"),  # device level: 0 LCS, 1..8 HCS; -1 where not applicable
        ("g_us", "<f4"),  # read conductance (µS); NaN for FORM/SET/RESET
    ]
)

STATUS_CODES = {"running": 0, "finished": 1, "interrupted": 2, "failed": 3}
STATUS_NAMES = {v: k for k, v in STATUS_CODES.items()}
OPS_CHUNK = 1 << 12


def epoch_dtype(n_tasks: int) -> np.dtype:
    return np.dtype(
        [
            ("epoch", "<u4"),  # 1-based global epoch
            ("task", "<u2"),  # index into tasks_json of the task trained in this epoch
            ("m_star", "<f4"),  # m* in force (0 during warm-up)
            ("lr", "<f4"),
            ("acc", "<f4", (n_tasks,)),  # test accuracy per task (NaN: task not seen yet)
            ("train_loss", "<f4"),
            ("train_acc", "<f4"),
            ("programs", "<u8"),  # device level changes programmed (each is RESET, then SET if HCS)
            ("sets", "<u8"),
            ("resets", "<u8"),
            ("reads", "<u8"),
            ("wall_s", "<f8"),
            ("step", "<u4"),  # global step at the end of the epoch
            ("ops_rows", "<u8"),  # /ops rows at the end of the epoch
        ]
    )


@dataclass
class CheckpointInfo:
    epoch: int
    ops_rows: int
    epochs_rows: int
    snapshots_rows: int


#: ``/resumes`` rows: one per ``--resume`` that kept operations after the checkpoint (real tiles)
RESUMES_DTYPE = np.dtype(
    [
        ("ops_start", "<u8"),  # first kept /ops row
        ("ops_stop", "<u8"),  # one past the last kept row; rows [ops_start, ops_stop) were not followed by training
        ("epoch", "<u4"),  # the checkpoint's epoch the run went back to
        ("step", "<u4"),  # the checkpoint's global step
        ("t_utc", "<f8"),  # Unix time of the resume
    ]
)


def _h5_open_error(path: Path, exc: Exception) -> RunLogError:
    return RunLogError(
        f"{path} is not a readable HDF5 run log ({exc}). It may be truncated or not an HDF5 file; "
        "check the path, or re-run the training"
    )


def _check_format(f: h5py.File, p: Path) -> None:
    try:
        _check_format_inner(f, p)
    except H5_ERRORS as exc:
        raise RunLogError(f"{p}: run log is corrupt ({exc}); it cannot be read") from exc


def _check_format_inner(f: h5py.File, p: Path) -> None:
    fmt = f.attrs.get("format", None)
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt != FORMAT_NAME:
        raise RunLogError(f"{p} is an HDF5 file but not an hwloop run log (format {fmt!r})")
    ver = int(f.attrs.get("format_version", -1))
    if ver not in READ_VERSIONS:
        raise RunLogError(
            f"{p}: run log format version {ver} is not supported (this hwloop reads "
            f"{', '.join(map(str, READ_VERSIONS))}); use the hwloop version that wrote it"
        )
    for name in ("ops", "epochs", "snapshots", "checkpoint", "status"):
        if name not in f:
            raise RunLogError(f"{p}: run log is missing '/{name}'; the file is incomplete or corrupt")


def _read_checkpoint(f: h5py.File, p: Path) -> tuple[CheckpointInfo, bytes]:
    idx = f["checkpoint"]["index"][()]
    slot, nbytes = int(idx[0]), int(idx[1])
    if slot < 0:
        raise RunLogError(f"{p} has no checkpoint yet (the run stopped before its first epoch ended); start it again")
    data = f["checkpoint"]["blob_b" if slot else "blob_a"][:nbytes]
    if data.size != nbytes:
        raise RunLogError(f"{p}: checkpoint is truncated ({data.size} of {nbytes} bytes)")
    info = CheckpointInfo(epoch=int(idx[2]), ops_rows=int(idx[3]), epochs_rows=int(idx[4]), snapshots_rows=int(idx[5]))
    try:
        return info, unframe_checkpoint(data.tobytes())
    except ValueError as exc:
        raise RunLogError(f"{p}: checkpoint is corrupt ({exc}); the run cannot be resumed") from exc


#: start of a framed checkpoint slot: magic, then the CRC-32 of the payload (little-endian), then the payload
CHECKPOINT_MAGIC = b"HWLOOPCK"


def frame_checkpoint(payload: bytes) -> bytes:
    """A checkpoint slot's bytes: ``CHECKPOINT_MAGIC``, the payload's CRC-32, the payload (not compressed
    here: the payload compresses what compresses, docs/runlog-schema.md)."""
    return CHECKPOINT_MAGIC + (zlib.crc32(payload) & 0xFFFFFFFF).to_bytes(4, "little") + payload


def unframe_checkpoint(slot: bytes) -> bytes:
    """The payload of a slot: framed (checked against its CRC-32), or, as logs written before this
    framing store it, one zlib stream. Raises ValueError when it is damaged."""
    n = len(CHECKPOINT_MAGIC)
    if slot[:n] == CHECKPOINT_MAGIC:
        payload = slot[n + 4 :]
        if len(slot) < n + 4 or zlib.crc32(payload) & 0xFFFFFFFF != int.from_bytes(slot[n : n + 4], "little"):
            raise ValueError("CRC-32 mismatch")
        return payload
    try:
        return zlib.decompress(slot)
    except zlib.error as exc:
        raise ValueError(str(exc)) from exc
