"""Program counts per device (the wear map), counted incrementally while a run is written.

The definition is endurance's (``hwloop.analysis.endurance``): a device's programming operations are the
RESET rows with its address in ``/ops``. The full ``hwloop endurance`` pass re-reads the whole table; a
dashboard polling a live run would redo that every few seconds, so this keeps the counts and the number
of rows already counted per log and reads only the rows appended since. A table that got shorter (a
``--resume`` rolled the log back to its checkpoint) or a different file under the same name is counted
again from the start.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwloop.analysis.endurance import RESET
from hwloop.analysis.logfile import H5_ERRORS, open_runlog
from hwloop.chip.base import CELLS_PER_TILE, COLS, ROWS
from hwloop.errors import RunLogError

#: rows read per slice of /ops
CHUNK_ROWS = 1 << 21
_FIELDS = ["op", "tile", "row", "col"]


@dataclass
class _State:
    inode: int
    rows: int
    counts: np.ndarray  # (n_devices,) int64


class WearCache:
    """Per-log RESET counts per device; thread-safe (one lock per cache, counts are short updates)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict[Path, _State] = {}

    def programs(self, path: Path, tile: int | None = None) -> np.ndarray:
        """Programming operations per device so far: shape (n_tiles * 16384,), or (16384,) of ``tile``
        (empty if the run has no such tile)."""
        inode = path.stat().st_ino
        with self._lock:
            st = self._state.get(path)
            with open_runlog(path) as log:
                try:
                    n_dev = log.n_tiles * CELLS_PER_TILE
                    ds = log.ops
                    ds.refresh()
                    n = int(ds.shape[0])
                    if st is None or st.inode != inode or n < st.rows or st.counts.size != n_dev:
                        st = _State(inode=inode, rows=0, counts=np.zeros(n_dev, dtype=np.int64))
                    view = ds.fields(_FIELDS)
                    for a in range(st.rows, n, CHUNK_ROWS):  # one iteration per slice of 2 M rows
                        blk = view[a : min(n, a + CHUNK_ROWS)]
                        blk = blk[blk["op"].view(np.uint8) == RESET]
                        dev = (blk["tile"].astype(np.int64) * ROWS + blk["row"]) * COLS + blk["col"]
                        if dev.size and int(dev.max()) >= n_dev:
                            raise RunLogError(
                                f"{path}: /ops holds an address outside the run's tiles; the log is corrupt"
                            )
                        st.counts += np.bincount(dev, minlength=n_dev)
                    st.rows = n
                except H5_ERRORS as exc:
                    raise RunLogError(f"{path}: the run log's op table is unreadable ({exc})") from exc
            self._state[path] = st
            if tile is None:
                return st.counts.copy()
            return st.counts[tile * CELLS_PER_TILE : (tile + 1) * CELLS_PER_TILE].copy()

    def forget(self, path: Path) -> None:
        with self._lock:
            self._state.pop(path, None)
