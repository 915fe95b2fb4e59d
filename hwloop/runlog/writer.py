"""``RunLogWriter``: the buffered SWMR writer (create, reopen for --resume, group commit, snapshots and
checkpoints off the training thread, close and compaction)."""

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
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

from hwloop import __version__
from hwloop.chip.base import CELLS_PER_TILE, COLS, ROWS, Op
from hwloop.chip.cdf import CdfTable
from hwloop.errors import RunLogError
from hwloop.h5check import (
    H5_ERRORS,
    check_metadata,
    check_not_truncated,
    first_line,
    open_swmr_bounded,
)
from hwloop.runlock import RunLock, writer_seems_live
from hwloop.runlog.schema import (
    FORMAT_NAME,
    FORMAT_VERSION,
    G_RES_LSB_US,
    G_RES_NAN,
    G_RES_Q_MAX,
    OP_CODES,
    OP_READ_ALL,
    OPS_CHUNK,
    OPS_DTYPE,
    OPS_G_STEPS_PER_US,
    RESUMES_DTYPE,
    SNAPSHOT_GZIP_LEVEL,
    SNAPSHOT_KEY_EVERY,
    SNAPSHOT_KEY_LEVEL_CHANGE,
    STATUS_CODES,
    CheckpointInfo,
    _check_format,
    _h5_open_error,
    _read_checkpoint,
    epoch_dtype,
)
from hwloop.runlog.snapcode import _compress_residual, _compress_snapshot, _snapshot_keys
from hwloop.runlog.space import DiskSpaceError, _disk_guard, check_space, disk_error, is_disk_full


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


#: free space (beyond the reserve) a resume needs before it touches the log: a few epochs of rows
RESUME_SPACE_BYTES = 4 << 20


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
            # refused before anything is cut back: a resume that cannot write must leave the log as it is
            check_space(p, RESUME_SPACE_BYTES, "cannot resume")
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

    @_disk_guard
    def flush(self) -> None:
        """Write buffered rows and make them visible to SWMR readers. A failed write (disk full) raises one
        ``RunLogError``; the rows stay buffered, and the file keeps what earlier flushes wrote."""
        self._flush()

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

    @_disk_guard
    def _guarded_write_done(self) -> None:
        """``_write_done``; a failed write (disk full) becomes one ``RunLogError`` and marks the writer broken."""
        self._write_done()

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
