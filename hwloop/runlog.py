"""The HDF5 run log: one file per run, written in SWMR mode so it can be read while the run goes on.

Schema (documented in ``docs/runlog-schema.md``):

- root attributes: ``format`` ("hwloop-runlog"), ``format_version``, ``hwloop_version``, ``created_utc``,
  ``config_json`` (the full configuration), ``seed``, ``tasks_json``, ``chip``, ``tile_backends_json``,
  ``n_tiles``, ``writer_pid``, ``writer_host``, ``op_enum_json``.
- ``/ops``: append-only compound table, one row per device operation (see ``OPS_DTYPE``). A whole-array
  read is one ``READ_ALL`` row; its conductances are the matching row of ``/snapshots``.
- ``/epochs``: one row per finished epoch (``epoch_dtype``).
- ``/snapshots/{epoch,g_res,key,level}``: dense conductances and nominal device levels of every device,
  once before training (epoch 0) and after each epoch; chunked per tile, shuffled and gzip-compressed off
  the training thread. ``g_res`` (format 3) is a uint16 zigzag code of the residual from the nominal
  level's reference conductance (``ref_us``, the calibration medians) at 0.1 µS; a row whose ``key`` is
  not -1 holds the difference from the residuals of keyframe row ``key`` (one keyframe every
  ``SNAPSHOT_KEY_EVERY`` rows). Format 2 stored ``g_code`` (uint16, 0.01 µS steps from -20 µS), format 1
  ``g_us`` as float32; ``RunLog.snapshot`` is the one decoder of all three.
- ``/checkpoint/{blob_a,blob_b,index}``: two alternating checkpoint slots for ``--resume``.
- ``/status``, ``/heartbeat``: run status code and the time of the last flush.
- ``/resumes`` (optional): ``/ops`` ranges kept by a ``--resume`` on real tiles (pulses after the
  checkpoint that really happened, not followed by training).

One writer at a time: it holds ``fcntl.flock`` on the sidecar ``<log>.lock`` (``hwloop.runlock``), so a
live run cannot be resumed or appended to. Readers open with a bounded number of SWMR metadata read
attempts (``hwloop.h5check.open_reader``); a write refused for lack of space is one ``RunLogError``.
- ``/calibration``: the CDF table (or calibration) the run used, copied in.

A killed writer loses at most the rows buffered since the last ``flush``: the orchestrator group-commits,
flushing at most every ``--flush-s`` seconds (default 1 s), at the end of every epoch, before a checkpoint
and on any stop, so a killed run loses at most the last second of operations.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

from hwloop import __version__
from hwloop.chip.base import CELLS_PER_TILE, COLS, ROWS, Op
from hwloop.chip.cdf import CdfTable, read_h5_group
from hwloop.errors import CdfTableError, RunLogError
from hwloop.h5check import (
    H5_ERRORS,
    check_metadata,
    check_not_truncated,
    first_line,
    open_reader,
    open_swmr_bounded,
)
from hwloop.runlock import RunLock, writer_seems_live

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


def _h5_open_error(path: Path, exc: Exception) -> RunLogError:
    return RunLogError(
        f"{path} is not a readable HDF5 run log ({exc}). It may be truncated or not an HDF5 file; "
        "check the path, or re-run the training"
    )


def is_disk_full(exc: BaseException) -> bool:
    """True for a write that failed for lack of space (h5py reports HDF5's errno only in the message)."""
    import errno

    text = str(exc)
    return (
        getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
        or "No space left" in text
        or ("errno = 28" in text)
        or "Disk quota exceeded" in text
    )


def disk_error(path: Path, exc: BaseException, doing: str) -> RunLogError:
    """One line for a write that failed (disk full, quota, I/O error), saying what is kept and what to do."""
    import errno

    err = getattr(exc, "errno", None)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if is_disk_full(exc):
        why = f"the disk holding {path.parent} is full"
    elif err == errno.EFBIG or "File too large" in text:
        why = "the file size limit was reached"
    else:
        why = f"a write failed ({text})"
    return RunLogError(
        f"{doing} {path}: {why}. The log keeps every step flushed before this; free some space, then "
        f"continue with: hwloop train --resume {path}"
    )


#: free space (bytes) kept in reserve on the log's file system: a write that would leave less is refused
#: before HDF5 sees a full disk (HDF5 cannot recover from a failed write: its close fails too, and the
#: process can crash at exit), and the reserve lets the writer still mark the status and close cleanly
SPACE_RESERVE_BYTES = 1 << 20


class DiskSpaceError(RunLogError):
    """Not enough free space to write safely; nothing was written, the file is intact."""


def check_space(path: Path, need_bytes: int, doing: str = "cannot write") -> None:
    """Raise ``DiskSpaceError`` unless ``need_bytes`` plus the reserve are free where ``path`` lives."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return
    if not free >= need_bytes + SPACE_RESERVE_BYTES:
        raise DiskSpaceError(
            f"{doing} {path}: the disk holding {path.parent} is full ({free / 1e6:.1f} MB free, "
            f"{(need_bytes + SPACE_RESERVE_BYTES) / 1e6:.1f} MB needed). The log keeps every step flushed "
            f"before this; free some space, then continue with: hwloop train --resume {path}"
        )


def _refuse_live_writer(p: Path) -> None:
    """The backup to the lock (another host, or a writer without the lock): a fresh heartbeat from a writer
    that is still alive refuses the resume."""
    try:
        with open_swmr_bounded(p) as f:
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
            status = int(f["status"][0]) if "status" in f else -1
            hb = float(f["heartbeat"][0]) if "heartbeat" in f else None
    except H5_ERRORS:
        return  # unreadable: the open for append that follows reports it
    if status != STATUS_CODES["running"]:
        return
    who = writer_seems_live(attrs, hb)
    if who is not None:
        raise RunLogError(
            f"{p} is being written by {who}: a live run cannot be resumed or appended to. Wait for it to "
            "end, or stop it first, then resume"
        )


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


def keep_post_checkpoint_ops(f: h5py.File, info: CheckpointInfo, keep_tiles: list[int]) -> int:
    """Move the rows after the checkpoint that belong to ``keep_tiles`` (real hardware: those pulses really
    happened) to just after the checkpoint's rows, drop the rest (simulated tiles roll back, READ_ALL rows
    belong to snapshots that are rolled back), and record the kept range in ``/resumes``. Returns the
    number of rows kept. Done in blocks: no Python loop per row."""
    ds = f["ops"]
    n = int(ds.shape[0])
    if not keep_tiles or n <= info.ops_rows:
        return 0
    keep = np.zeros(max(int(f.attrs["n_tiles"]), max(keep_tiles) + 1), dtype=bool)
    keep[np.asarray(keep_tiles, dtype=np.int64)] = True
    kept = 0
    block = 1 << 20
    write_at = info.ops_rows
    for start in range(info.ops_rows, n, block):  # the write position never overtakes the read position
        rows = ds[start : min(n, start + block)]
        m = keep[rows["tile"].astype(np.int64)] & (rows["op"] != OP_READ_ALL)
        sel = rows[m]
        if sel.size:
            ds[write_at : write_at + sel.size] = sel
            write_at += sel.size
            kept += int(sel.size)
    if kept:
        if "resumes" not in f:
            r = f.create_dataset("resumes", shape=(0,), maxshape=(None,), dtype=RESUMES_DTYPE, chunks=(64,))
            r.attrs["description"] = (
                "/ops rows [ops_start, ops_stop) happened on real tiles after the checkpoint a --resume went "
                "back to: real pulses, counted in endurance, but not followed by training"
            )
        r = f["resumes"]
        k = r.shape[0]
        if not (k and int(r[k - 1]["ops_start"]) == info.ops_rows):  # a resume of the same checkpoint again
            r.resize((k + 1,))  # (after a refused one) widens its entry instead of adding a second
        else:
            k -= 1
        step = int(ds[info.ops_rows - 1]["step"]) if info.ops_rows else 0
        r[k] = np.array((info.ops_rows, info.ops_rows + kept, info.epoch, step, time.time()), dtype=RESUMES_DTYPE)
    return kept


def _disk_guard(fn):  # type: ignore[no-untyped-def]
    """A failed write (disk full) in a writer method becomes one ``RunLogError`` and marks the writer broken."""
    import functools

    @functools.wraps(fn)
    def wrapper(self: RunLogWriter, *a: object, **kw: object) -> None:
        if self._broken is not None:
            raise self._broken
        try:
            fn(self, *a, **kw)
        except OSError as exc:
            self._broken = disk_error(self.path, exc, "cannot write")
            raise self._broken from exc

    return wrapper


class RunLogWriter:
    """Buffered SWMR writer. Attach ``listener`` to a chip with ``chip.add_listener``."""

    def __init__(
        self,
        f: h5py.File,
        path: Path,
        n_tasks: int,
        n_tiles: int,
        t0_offset_s: float = 0.0,
        lock: RunLock | None = None,
    ) -> None:
        self.f = f
        self.path = path
        self.lock = lock  # the single-writer lock (hwloop.runlock), released by close()
        self.n_tasks = n_tasks
        self.n_tiles = n_tiles
        self.step = 0
        self._t0 = time.monotonic() - t0_offset_s
        self._buf: list[np.ndarray] = []
        self._buf_rows = 0
        self._full_read = False
        self.counts = {"sets": 0, "resets": 0, "reads": 0, "forms": 0}
        self.kept_rows = 0  # rows kept after the checkpoint by the resume that opened this writer
        self._broken: RunLogError | None = None  # set by a failed write; later writes are refused
        #: group commit: ``maybe_flush`` flushes when this many seconds have passed since the last flush
        self.flush_s = 1.0
        self._last_flush = time.monotonic()
        # end-of-epoch work done off the training thread, written here in submission order
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: list[tuple[str, concurrent.futures.Future, tuple]] = []
        self._snap_rows = int(f["snapshots"]["epoch"].shape[0])  # rows written + submitted
        sg = f["snapshots"]
        self._ref_us = np.asarray(sg["g_res"].attrs["ref_us"], dtype=np.float32) if "g_res" in sg else None
        self._key_row = -1  # last keyframe row submitted by this writer (-1: none yet, so the next is one)
        self._key: dict = {}  # its residuals, filled on the background thread
        self._key_level = np.zeros(0, dtype=np.int8)  # its nominal levels

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        config: dict,
        table: CdfTable,
        tasks: list[str],
        n_tiles: int,
        tile_backends: list[str],
        chip: str,
        seed: int,
        overwrite: bool = False,
        layer_tiles: list[dict] | None = None,
    ) -> RunLogWriter:
        p = Path(path)
        if p.exists() and not overwrite:
            raise RunLogError(f"{p} already exists: choose another --out, or continue it with --resume {p}")
        p.parent.mkdir(parents=True, exist_ok=True)
        lock = RunLock.acquire(p)
        try:
            f = h5py.File(p, "w", libver="latest")
        except OSError as exc:
            lock.release()
            raise RunLogError(f"cannot create run log {p}: {exc}") from exc
        try:
            return cls._init_file(
                f,
                p,
                config=config,
                table=table,
                tasks=tasks,
                n_tiles=n_tiles,
                tile_backends=tile_backends,
                chip=chip,
                seed=seed,
                layer_tiles=layer_tiles,
                lock=lock,
            )
        except BaseException as exc:
            f.close()
            lock.release()
            if isinstance(exc, OSError):
                raise disk_error(p, exc, "cannot create") from exc
            raise

    @classmethod
    def _init_file(
        cls,
        f: h5py.File,
        p: Path,
        *,
        config: dict,
        table: CdfTable,
        tasks: list[str],
        n_tiles: int,
        tile_backends: list[str],
        chip: str,
        seed: int,
        layer_tiles: list[dict] | None,
        lock: RunLock,
    ) -> RunLogWriter:
        f.attrs["format"] = FORMAT_NAME
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["hwloop_version"] = __version__
        f.attrs["created_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        f.attrs["config_json"] = json.dumps(config, sort_keys=True)
        f.attrs["seed"] = int(seed)
        f.attrs["tasks_json"] = json.dumps(tasks)
        f.attrs["chip"] = chip
        f.attrs["n_tiles"] = int(n_tiles)
        f.attrs["tile_backends_json"] = json.dumps(tile_backends)
        f.attrs["op_enum_json"] = json.dumps(OP_CODES)
        f.attrs["layer_tiles_json"] = json.dumps(layer_tiles or [])
        f.attrs["writer_pid"] = os.getpid()
        f.attrs["writer_host"] = socket.gethostname()
        table.write_h5_group(f.create_group("calibration"))
        f["calibration"].attrs["source_path"] = table.source_path
        ops = f.create_dataset(
            "ops",
            shape=(0,),
            maxshape=(None,),
            dtype=OPS_DTYPE,
            chunks=(OPS_CHUNK,),
            compression="gzip",
            compression_opts=1,
            shuffle=True,
        )
        ops.attrs["op_enum_json"] = json.dumps(OP_CODES)
        ops.attrs["description"] = (
            "one row per device operation; READ_ALL = whole-array read whose values are the matching "
            "row (in order) of /snapshots"
        )
        f.create_dataset("epochs", shape=(0,), maxshape=(None,), dtype=epoch_dtype(len(tasks)), chunks=(256,))
        sg = f.create_group("snapshots")
        sg.create_dataset("epoch", shape=(0,), maxshape=(None,), dtype="<i4", chunks=(256,))
        gc = sg.create_dataset(
            "g_res",
            shape=(0, n_tiles, ROWS, COLS),
            maxshape=(None, n_tiles, ROWS, COLS),
            dtype="<u2",
            chunks=(1, 1, ROWS, COLS),
            compression="gzip",
            compression_opts=SNAPSHOT_GZIP_LEVEL,
            shuffle=True,
        )
        gc.attrs["g_lsb_us"] = G_RES_LSB_US
        gc.attrs["ref_us"] = np.asarray(table.medians_us, dtype=np.float32)  # by device level 0 (LCS), 1..
        gc.attrs["nan_code"] = G_RES_NAN
        gc.attrs["q_max"] = G_RES_Q_MAX
        gc.attrs["description"] = (
            "read conductance as a residual code: q = (code >> 1) ^ -(code & 1) (zigzag); if key[row] >= 0 add "
            "the q of row key[row]; g_us = ref_us[level] + g_lsb_us * q (ref 0 for level < 0); nan_code = NaN; "
            "|q| saturates at q_max"
        )
        sg.create_dataset("key", shape=(0,), maxshape=(None,), dtype="<i4", chunks=(256,))
        sg.create_dataset(
            "level",
            shape=(0, n_tiles, ROWS, COLS),
            maxshape=(None, n_tiles, ROWS, COLS),
            dtype="i1",
            chunks=(1, 1, ROWS, COLS),
            compression="gzip",
            compression_opts=SNAPSHOT_GZIP_LEVEL,
        )
        cg = f.create_group("checkpoint")
        for slot in ("blob_a", "blob_b"):
            # uncompressed on purpose: rewriting compressed chunks in a SWMR file allocates new space each
            # time and never reuses the old; fixed-size chunks are overwritten in place
            cg.create_dataset(slot, shape=(0,), maxshape=(None,), dtype="u1", chunks=(1 << 20,))
        cg.create_dataset("index", data=np.full(6, -1, dtype="<i8"))
        cg["index"].attrs["fields"] = "slot(0=a,1=b), nbytes, epoch, ops_rows, epochs_rows, snapshots_rows"
        cg.attrs["encoding"] = "zlib-compressed torch.save payload; slots grow only, the first nbytes are valid"
        f.create_dataset("status", data=np.array([STATUS_CODES["running"]], dtype="i1"))
        f.create_dataset("heartbeat", data=np.array([time.time()], dtype="<f8"))
        f.swmr_mode = True
        return cls(f, p, len(tasks), n_tiles, lock=lock)

    @classmethod
    def reopen(
        cls, path: str | Path, lock: RunLock | None = None, keep_tiles: list[int] | None = None
    ) -> tuple[RunLogWriter, CheckpointInfo, bytes]:
        """Reopen a run log for ``--resume``: roll it back to its last checkpoint and return that checkpoint.

        Takes the single-writer lock (or uses ``lock``, already taken); a log whose writer lives is refused.
        ``keep_tiles``: tiles on real hardware, whose operations after the checkpoint really happened: their
        rows are kept (and listed in ``/resumes``) instead of being rolled back (``keep_post_checkpoint_ops``)."""
        p = Path(path)
        if not p.exists():
            raise RunLogError(f"cannot resume: {p} does not exist")
        lock = lock if lock is not None else RunLock.acquire(p)
        try:
            check_not_truncated(p)
            check_metadata(p)
            _refuse_live_writer(p)
            f = _open_for_append(p)
        except BaseException as exc:
            lock.release()
            if isinstance(exc, OSError) and is_disk_full(exc):
                raise disk_error(p, exc, "cannot resume") from exc
            if isinstance(exc, H5_ERRORS):
                raise RunLogError(
                    f"{p}: the run log is damaged ({first_line(exc)}); it cannot be resumed. "
                    "Copy it again from its source, or start the run again"
                ) from exc
            raise
        try:
            _check_format(f, p)
            ver = int(f.attrs["format_version"])
            if ver != FORMAT_VERSION:
                raise RunLogError(
                    f"{p} was written by an older hwloop (run-log format {ver}); this version can "
                    f"read it but not continue it: start the run again"
                )
            info, blob = _read_checkpoint(f, p)
            kept = keep_post_checkpoint_ops(f, info, keep_tiles or [])
            f["ops"].resize((info.ops_rows + kept,))
            f["epochs"].resize((info.epochs_rows,))
            for k in _snapshot_keys(f["snapshots"]):
                f["snapshots"][k].resize((info.snapshots_rows, *f["snapshots"][k].shape[1:]))
            f["status"][0] = STATUS_CODES["running"]
            f.attrs["writer_pid"] = os.getpid()
            f.attrs["writer_host"] = socket.gethostname()
            n_ops = info.ops_rows + kept
            t_last = float(f["ops"][n_ops - 1]["t_s"]) if n_ops else 0.0
            n_tasks = len(json.loads(f.attrs["tasks_json"]))
            n_tiles = int(f.attrs["n_tiles"])
            f.swmr_mode = True
        except BaseException as exc:
            f.close()
            lock.release()
            if isinstance(exc, OSError) and is_disk_full(exc):
                raise disk_error(p, exc, "cannot resume") from exc
            if isinstance(exc, H5_ERRORS):
                raise RunLogError(f"{p}: the run log is corrupt ({exc}); it cannot be resumed") from exc
            raise
        w = cls(f, p, n_tasks, n_tiles, t0_offset_s=t_last, lock=lock)
        w.kept_rows = kept
        return w, info, blob

    # ------------------------------------------------------------------ op logging
    def listener(self, op: Op, idx: np.ndarray, level: np.ndarray, g_us: np.ndarray) -> None:
        """Chip listener: buffers one row per device operation (a full-array read as one READ_ALL row)."""
        key = {Op.SET: "sets", Op.RESET: "resets", Op.READ: "reads", Op.FORM: "forms"}[Op(op)]
        self.counts[key] += int(idx.size)
        if self._full_read and op == Op.READ:
            rows = np.zeros(1, dtype=OPS_DTYPE)
            rows["t_s"] = time.monotonic() - self._t0
            rows["step"] = self.step
            rows["op"] = OP_READ_ALL
            rows["level"] = -1
            rows["g_us"] = np.nan
        else:
            rows = np.empty(idx.size, dtype=OPS_DTYPE)
            rows["t_s"] = time.monotonic() - self._t0
            rows["step"] = self.step
            rows["op"] = int(op)
            rows["tile"] = idx // CELLS_PER_TILE
            rows["row"] = (idx // COLS) % ROWS
            rows["col"] = idx % COLS
            rows["level"] = level
            rows["g_us"] = g_us
            if op == Op.READ:  # 1/64 µS: far below the read noise, and the low mantissa bits compress away
                g = rows["g_us"]
                np.multiply(g, np.float32(OPS_G_STEPS_PER_US), out=g)
                np.rint(g, out=g)
                np.multiply(g, np.float32(1 / OPS_G_STEPS_PER_US), out=g)
        self._buf.append(rows)
        self._buf_rows += rows.size

    @contextlib.contextmanager
    def full_read(self) -> Iterator[None]:
        """Within this block a chip READ is logged as one READ_ALL row (values go to /snapshots)."""
        self._full_read = True
        try:
            yield
        finally:
            self._full_read = False

    @property
    def ops_rows(self) -> int:
        return int(self.f["ops"].shape[0]) + self._buf_rows

    def maybe_flush(self) -> bool:
        """Group commit: write finished background work, and flush if ``flush_s`` has passed since the last
        flush (or the buffer grew large). Returns whether it flushed."""
        if self._pending and self._pending[0][1].done():
            self._guarded_write_done()
        if time.monotonic() - self._last_flush >= self.flush_s or self._buf_rows > (1 << 22):
            self.flush()
            return True
        return False

    def flush(self) -> None:
        """Write buffered rows and make them visible to SWMR readers. A failed write (disk full) raises one
        ``RunLogError``; the rows stay buffered, and the file keeps what earlier flushes wrote."""
        if self._broken is not None:
            raise self._broken
        try:
            self._flush()
        except OSError as exc:
            self._broken = disk_error(self.path, exc, "cannot write")
            raise self._broken from exc

    def _flush(self) -> None:
        self._last_flush = time.monotonic()
        check_space(self.path, self._buf_rows * OPS_DTYPE.itemsize + 4096)
        if self._buf:
            rows = np.concatenate(self._buf)
            ds = self.f["ops"]
            n = ds.shape[0]
            ds.resize((n + rows.size,))
            ds[n:] = rows
            self._buf.clear()
            self._buf_rows = 0
        self.f["heartbeat"][0] = time.time()
        self.f.flush()

    # ------------------------------------------------------------------ epochs, snapshots, checkpoints
    @_disk_guard
    def append_epoch(self, record: dict) -> None:
        ds = self.f["epochs"]
        row = np.zeros(1, dtype=ds.dtype)
        for k, v in record.items():
            row[k] = v
        row["ops_rows"] = self.ops_rows
        n = ds.shape[0]
        ds.resize((n + 1,))
        ds[n] = row[0]
        self.flush()

    @_disk_guard
    def append_snapshot(self, epoch: int, g_us: np.ndarray, level: np.ndarray) -> None:
        """Write the snapshot of ``epoch`` now (after any submitted earlier) and flush."""
        self.submit_snapshot(epoch, g_us, level)
        self.drain()
        self.flush()

    def submit_snapshot(self, epoch: int, g_us: np.ndarray, level: np.ndarray) -> None:
        """Compress the snapshot of ``epoch`` off this thread; it is written in order by a later
        ``maybe_flush``, ``drain`` or ``close``. The arrays are copied: the caller may change them."""
        g = np.array(g_us, dtype=np.float32, copy=True)
        lv = np.array(level, dtype=np.int8, copy=True)
        if self._ref_us is None:  # format 2 (tests of the old writer path only: reopen refuses other formats)
            self._submit("snapshot", (epoch, -1), _compress_snapshot, g, lv, self.n_tiles)
        else:
            row = self._snap_rows
            is_key = (
                self._key_row < 0
                or row - self._key_row >= SNAPSHOT_KEY_EVERY
                or np.count_nonzero(lv != self._key_level) > SNAPSHOT_KEY_LEVEL_CHANGE * lv.size
            )
            if is_key:
                self._key_row, self._key_level = row, lv
            self._submit(
                "snapshot",
                (epoch, -1 if is_key else self._key_row),
                _compress_residual,
                g,
                lv,
                self.n_tiles,
                self._ref_us,
                self._key,
                is_key,
            )
        self._snap_rows += 1

    def save_checkpoint(self, blob: bytes, epoch: int) -> None:
        """Write a checkpoint into the slot not holding the current one, then switch the index to it."""
        self.submit_checkpoint(lambda: blob, epoch)
        self.drain()

    def submit_checkpoint(self, make_blob: Callable[[], bytes], epoch: int) -> None:
        """Serialise and compress a checkpoint off this thread (``make_blob`` must only touch data the
        training thread no longer changes); it is written after everything submitted before it. The row
        counts it records are taken now, after a flush, so the checkpoint marks this point of the run."""
        self.flush()
        counts = (self.f["ops"].shape[0], self.f["epochs"].shape[0], self._snap_rows)
        self._submit("checkpoint", (epoch, *counts), lambda: zlib.compress(make_blob(), 1))

    def _submit(self, kind: str, meta: tuple, fn: Callable, *args: object) -> None:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="runlog")
        self._pending.append((kind, self._pool.submit(fn, *args), meta))

    def drain(self) -> None:
        """Wait for all background work and write it (in submission order)."""
        while self._pending:
            self._pending[0][1].result()
            self._guarded_write_done()

    def _guarded_write_done(self) -> None:
        """``_write_done``; a failed write (disk full) becomes one ``RunLogError`` and marks the writer broken."""
        if self._broken is not None:
            raise self._broken
        try:
            self._write_done()
        except OSError as exc:
            self._broken = disk_error(self.path, exc, "cannot write")
            raise self._broken from exc

    def _write_done(self) -> None:
        wrote = False
        while self._pending and self._pending[0][1].done():
            kind, fut, meta = self._pending.pop(0)
            if kind == "snapshot":
                self._write_snapshot(meta[0], meta[1], *fut.result())
            else:
                self._write_checkpoint(fut.result(), *meta)
            wrote = True
        if wrote:
            self.flush()

    def _write_snapshot(self, epoch: int, key_row: int, g_chunks: list[bytes], l_chunks: list[bytes]) -> None:
        check_space(self.path, sum(map(len, g_chunks)) + sum(map(len, l_chunks)) + self._buf_rows * OPS_DTYPE.itemsize)
        sg = self.f["snapshots"]
        n = sg["epoch"].shape[0]
        keys = _snapshot_keys(sg)
        for k in keys:
            sg[k].resize((n + 1, *sg[k].shape[1:]))
        g_name = keys[1]
        for t in range(self.n_tiles):
            sg[g_name].id.write_direct_chunk((n, t, 0, 0), g_chunks[t])
            sg["level"].id.write_direct_chunk((n, t, 0, 0), l_chunks[t])
        if "key" in sg:
            sg["key"][n] = key_row
        sg["epoch"][n] = epoch

    def _write_checkpoint(self, zblob: bytes, epoch: int, ops_rows: int, epochs_rows: int, snap_rows: int) -> None:
        check_space(self.path, len(zblob))
        cg = self.f["checkpoint"]
        idx = cg["index"][()]
        slot = 1 if int(idx[0]) == 0 else 0
        ds = cg["blob_b" if slot else "blob_a"]
        data = np.frombuffer(zblob, dtype=np.uint8)
        if ds.shape[0] < data.size:  # grow only: a slot keeps its chunks, later checkpoints overwrite them
            ds.resize((data.size,))
        ds[: data.size] = data
        self.f.flush()
        cg["index"][:] = np.array([slot, data.size, epoch, ops_rows, epochs_rows, snap_rows], dtype="<i8")
        self.f.flush()

    def close(self, status: str = "finished", compact: bool = True) -> None:
        """Write the final status and close. With ``compact``, rewrite the file without the space that SWMR
        appends leave behind (a SWMR writer never reuses freed chunk space)."""
        if not self.f.id.valid:
            if self.lock is not None:
                self.lock.release()
            return
        err: RunLogError | None = None
        late: Exception | None = None
        try:
            try:
                if self._broken is None:  # after a failed write, only close: that error was raised already
                    try:
                        self.drain()  # snapshots and checkpoints already submitted are data already logged
                    except RunLogError as exc:
                        err = exc
                    except Exception as exc:
                        late = exc
                        self._pending.clear()
                if self._broken is None:
                    try:
                        self.flush()
                    except DiskSpaceError as exc:  # nothing written: the reserve still holds the status
                        err, status = exc, "failed"
                    if compact:
                        _drop_stale_checkpoint(self.f)
                    self.f["status"][0] = STATUS_CODES[status if late is None else "failed"]
                    self.f.flush()
            except RunLogError as exc:
                err = err or exc
            except OSError as exc:
                err = self._broken = disk_error(self.path, exc, "cannot write")
            finally:
                self._pending.clear()
                if self._pool is not None:
                    self._pool.shutdown(wait=True)
                    self._pool = None
                with contextlib.suppress(*H5_ERRORS):  # after a full disk the close itself can fail
                    self.f.close()
            if compact and self._broken is None and err is None:
                with contextlib.suppress(*H5_ERRORS, RunLogError):
                    _rebuild(self.path)
        finally:
            if self.lock is not None:
                self.lock.release()
        if err is not None:
            raise err
        if late is not None:
            raise RunLogError(
                f"{self.path}: the last snapshot or checkpoint could not be written ({late}); "
                "the operations logged before it are kept"
            ) from late


def _drop_stale_checkpoint(f: h5py.File) -> None:
    """Empty the checkpoint slot that does not hold the current checkpoint (only a half-written checkpoint
    needs it): the rebuild at close then leaves its space out."""
    cg = f["checkpoint"]
    slot = int(cg["index"][0])
    if slot >= 0:
        cg["blob_a" if slot else "blob_b"].resize((0,))


def _open_for_append(p: Path) -> h5py.File:
    """Open for writing; a file left by a crashed SWMR writer is first rebuilt from its readable content."""
    try:
        return h5py.File(p, "r+", libver="latest")
    except H5_ERRORS as first:
        try:
            src = open_swmr_bounded(p)
        except H5_ERRORS as exc:
            raise _h5_open_error(p, exc) from first
        src.close()
        _rebuild(p)
        return h5py.File(p, "r+", libver="latest")


def _rebuild(p: Path) -> None:
    """Copy every object of a run log into a fresh file and swap it in (drops unused space, clears the
    status flags a crashed SWMR writer leaves). Chunks are copied as they are, without recompression."""
    check_space(p, p.stat().st_size, "not enough space to rewrite")
    fd, tmp = tempfile.mkstemp(suffix=".h5.tmp", dir=p.parent)
    os.close(fd)
    try:
        with open_swmr_bounded(p) as src, h5py.File(tmp, "w", libver="latest") as dst:
            for k, v in src.attrs.items():
                dst.attrs[k] = v
            for name in src:
                src.copy(src[name], dst, name=name)
        shutil.copymode(p, tmp)
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
        return info, zlib.decompress(data.tobytes())
    except zlib.error as exc:
        raise RunLogError(f"{p}: checkpoint is corrupt ({exc}); the run cannot be resumed") from exc


class RunLog:
    """Read-only view of a run log; works while the run is being written (SWMR)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # checks first, then an SWMR open with bounded metadata read attempts: a damaged file fails at once
        # instead of stalling in HDF5's SWMR retry loop
        self.f = open_reader(self.path)
        try:
            _check_format(self.f, self.path)
        except BaseException:
            self.f.close()
            raise

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.f.id.valid:
            self.f.close()

    def refresh(self) -> None:
        try:
            for name in ("ops", "epochs", "status", "heartbeat"):
                self.f[name].refresh()
            for k in _snapshot_keys(self.f["snapshots"]):
                self.f["snapshots"][k].refresh()
        except H5_ERRORS as exc:
            raise self._damaged("its tables", exc) from exc

    # ------------------------------------------------------------------ metadata
    @property
    def config(self) -> dict:
        try:
            return json.loads(self.f.attrs["config_json"])
        except (*H5_ERRORS, json.JSONDecodeError) as exc:
            raise RunLogError(f"{self.path}: the run configuration stored in the log is unreadable ({exc})") from exc

    @property
    def tasks(self) -> list[str]:
        return json.loads(self.f.attrs["tasks_json"])

    @property
    def n_tiles(self) -> int:
        return int(self.f.attrs["n_tiles"])

    @property
    def tile_backends(self) -> list[str]:
        return json.loads(self.f.attrs["tile_backends_json"])

    @property
    def attrs(self) -> dict:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in self.f.attrs.items()}

    def table(self) -> CdfTable:
        try:
            return read_h5_group(self.f["calibration"], f"{self.path}:/calibration")
        except (CdfTableError, KeyError) as exc:
            raise RunLogError(f"{self.path}: the calibration copied into the run log is unreadable ({exc})") from exc

    @property
    def status(self) -> str:
        """running, finished, interrupted, failed, or crashed (says running but its writer is gone)."""
        code = int(self.f["status"][0])
        name = STATUS_NAMES.get(code, "unknown")
        if name == "running" and not self._writer_alive():
            return "crashed"
        return name

    def _writer_alive(self) -> bool:
        if self.attrs.get("writer_host") != socket.gethostname():
            return time.time() - float(self.f["heartbeat"][0]) < 3600
        pid = int(self.f.attrs.get("writer_pid", -1))
        if pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    # ------------------------------------------------------------------ tables
    @property
    def ops(self) -> h5py.Dataset:
        return self.f["ops"]

    def iter_ops(self, chunk_rows: int = 1 << 20, fields: list[str] | None = None) -> Iterator[np.ndarray]:
        ds = self.f["ops"]
        n = ds.shape[0]
        for start in range(0, n, chunk_rows):
            try:
                block = ds[start : min(n, start + chunk_rows)]
            except H5_ERRORS as exc:
                raise self._damaged(f"/ops rows {start:,}..", exc) from exc
            yield block if fields is None else block[fields]

    def _damaged(self, what: str, exc: BaseException) -> RunLogError:
        return RunLogError(
            f"{self.path}: {what} cannot be read ({first_line(exc)}); the run log is damaged: "
            "copy it again from its source"
        )

    def epochs(self) -> np.ndarray:
        try:
            return self.f["epochs"][()]
        except H5_ERRORS as exc:
            raise self._damaged("/epochs", exc) from exc

    def results(self) -> dict:
        """The results of the run, read from the epoch table: ``final_acc`` (task -> test accuracy of the
        last epoch, a fraction; tasks not evaluated yet are left out), ``acc_after_task`` (task -> the
        accuracies of the tasks so far at the end of its last epoch), ``epochs``, ``steps``, ``programs``
        and ``wall_s`` (summed over epochs). The one reader of these figures (trainer, sweep)."""
        ep, tasks = self.epochs(), self.tasks
        if ep.size == 0:
            return {"final_acc": {}, "acc_after_task": {}, "epochs": 0, "steps": 0, "programs": 0, "wall_s": 0.0}
        last = ep["acc"][-1]
        ept = int(self.config.get("epochs_per_task", 0)) or 1
        after: dict[str, dict[str, float]] = {}
        for row in ep[ep["epoch"] % ept == 0]:  # the rows of task ends only
            t = int(row["epoch"]) // ept - 1
            if 0 <= t < len(tasks):
                after[tasks[t]] = {tasks[j]: float(row["acc"][j]) for j in range(t + 1)}
        return {
            "final_acc": {n: float(last[i]) for i, n in enumerate(tasks) if not np.isnan(last[i])},
            "acc_after_task": after,
            "epochs": int(ep["epoch"][-1]),
            "steps": int(ep["step"][-1]),
            "programs": int(ep["programs"].sum()),
            "wall_s": float(ep["wall_s"].sum()),
        }

    def snapshot_epochs(self) -> np.ndarray:
        try:
            return self.f["snapshots"]["epoch"][()]
        except H5_ERRORS as exc:
            raise self._damaged("/snapshots/epoch", exc) from exc

    def snapshot(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Snapshot row ``k``: read conductances (µS, float32) and nominal levels (int8), (n_tiles, 128, 128)."""
        sg = self.f["snapshots"]
        try:
            if "g_res" in sg:  # format 3
                gr, lv = sg["g_res"], sg["level"][k]
                key = int(sg["key"][k])
                n = int(sg["epoch"].shape[0])
                k_abs = k % n if k < 0 else k
                if key >= 0 and not (key < k_abs and int(sg["key"][key]) < 0):
                    raise RunLogError(
                        f"{self.path}: snapshot {k} names row {key} as its keyframe, which is not "
                        "one; the run log is damaged: copy it again from its source"
                    )
                return decode_residual(
                    gr[k], lv, gr.attrs["ref_us"], gr[key] if key >= 0 else None, float(gr.attrs["g_lsb_us"])
                ), lv
            if "g_code" in sg:
                return decode_g_us(sg["g_code"][k]), sg["level"][k]
            return sg["g_us"][k], sg["level"][k]  # format 1
        except H5_ERRORS as exc:
            raise self._damaged(f"snapshot {k}", exc) from exc


def _snapshot_keys(sg: h5py.Group) -> tuple[str, ...]:
    if "g_res" in sg:
        return ("epoch", "g_res", "level", "key")
    return ("epoch", "g_code" if "g_code" in sg else "g_us", "level")
