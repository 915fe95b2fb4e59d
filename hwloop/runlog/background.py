"""The end-of-epoch work of ``RunLogWriter`` done off the training thread: snapshots are compressed and
checkpoints serialised on one background thread, then written in submission order at a later flush
(``maybe_flush``, ``drain``, ``close``). A mixin of the writer: it uses the writer's file, flush and disk
guard."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from hwloop.runlog.schema import OPS_DTYPE, SNAPSHOT_KEY_EVERY, SNAPSHOT_KEY_LEVEL_CHANGE, frame_checkpoint
from hwloop.runlog.snapcode import _compress_residual, _compress_snapshot, _snapshot_keys
from hwloop.runlog.space import _disk_guard, check_space


class BackgroundWrites:
    """Snapshots and checkpoints submitted now, compressed on a thread, written in order later."""

    f: h5py.File
    path: Path
    n_tiles: int
    _buf_rows: int
    _pool: concurrent.futures.ThreadPoolExecutor | None
    _pending: list[tuple[str, concurrent.futures.Future, tuple]]
    _snap_rows: int
    _ref_us: np.ndarray | None
    _key_row: int
    _key: dict
    _key_level: np.ndarray

    if TYPE_CHECKING:

        def flush(self) -> None: ...  # the writer's group commit

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
        """Serialise and frame (``frame_checkpoint``) a checkpoint off this thread (``make_blob`` must only
        touch data the training thread no longer changes); it is written after everything submitted before it. The row
        counts it records are taken now, after a flush, so the checkpoint marks this point of the run."""
        self.flush()
        counts = (self.f["ops"].shape[0], self.f["epochs"].shape[0], self._snap_rows)
        self._submit("checkpoint", (epoch, *counts), lambda: frame_checkpoint(make_blob()))

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

    def _write_checkpoint(self, slot_bytes: bytes, epoch: int, ops_rows: int, epochs_rows: int, snap_rows: int) -> None:
        check_space(self.path, len(slot_bytes))
        cg = self.f["checkpoint"]
        idx = cg["index"][()]
        slot = 1 if int(idx[0]) == 0 else 0
        ds = cg["blob_b" if slot else "blob_a"]
        data = np.frombuffer(slot_bytes, dtype=np.uint8)
        if ds.shape[0] < data.size:  # grow only: a slot keeps its chunks, later checkpoints overwrite them
            ds.resize((data.size,))
        ds[: data.size] = data
        self.f.flush()
        cg["index"][:] = np.array([slot, data.size, epoch, ops_rows, epochs_rows, snap_rows], dtype="<i8")
        self.f.flush()
