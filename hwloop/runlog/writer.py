"""``RunLogWriter``: the buffered SWMR writer: create, reopen for --resume, the op buffer and its group
commit, epochs, close. The file's layout is ``layout``; snapshots and checkpoints off the training thread
are ``background``; what a resume checks and keeps is ``resume``; the compaction at close is ``rebuild``."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from hwloop.chip.base import CELLS_PER_TILE, COLS, ROWS, Op
from hwloop.chip.cdf import CdfTable
from hwloop.errors import RunLogError
from hwloop.h5check import H5_ERRORS, check_metadata, check_not_truncated, first_line
from hwloop.runlock import RunLock
from hwloop.runlog.background import BackgroundWrites
from hwloop.runlog.layout import write_layout
from hwloop.runlog.rebuild import _drop_stale_checkpoint, _open_for_append, _rebuild
from hwloop.runlog.resume import RESUME_SPACE_BYTES, _refuse_live_writer, keep_post_checkpoint_ops
from hwloop.runlog.schema import (
    FORMAT_VERSION,
    OP_READ_ALL,
    OPS_DTYPE,
    OPS_G_STEPS_PER_US,
    STATUS_CODES,
    CheckpointInfo,
    _check_format,
    _read_checkpoint,
)
from hwloop.runlog.snapcode import _snapshot_keys
from hwloop.runlog.space import DiskSpaceError, _disk_guard, check_space, disk_error, is_disk_full


class RunLogWriter(BackgroundWrites):
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
            write_layout(
                f,
                config=config,
                table=table,
                tasks=tasks,
                n_tiles=n_tiles,
                tile_backends=tile_backends,
                chip=chip,
                seed=seed,
                layer_tiles=layer_tiles,
            )
            return cls(f, p, len(tasks), n_tiles, lock=lock)
        except BaseException as exc:
            f.close()
            lock.release()
            if isinstance(exc, OSError):
                raise disk_error(p, exc, "cannot create") from exc
            raise

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
            # as bytes: numpy concatenates a packed structured dtype field by field, 20 times slower
            rows = np.concatenate([r.view(np.uint8) for r in self._buf]).view(OPS_DTYPE)
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
