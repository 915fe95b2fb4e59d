"""The calibration's own operation log: one HDF5 file, every device operation as one row.

Schema (``docs/calibration-format.md``, section "Operation log"):

- root attributes: ``format`` = "hwloop-calibration-oplog", ``format_version``, ``created_utc``,
  ``calibration_file``, ``chip_id``, ``backend``, ``op_enum_json``, ``phase_enum_json``, ``rows``,
  ``command`` (the characterisation commands write the same format with their own phases,
  ``docs/characterise.md``).
- ``/ops``: compound table, one row per device operation, fields ``t_s`` (seconds since the start),
  ``phase`` (0 forming, 1 sweep), ``condition`` (sweep condition index, -1 while forming), ``attempt``
  (forming attempt, 0 in the sweep), ``op`` (FORM 0, SET 1, RESET 2, READ 3, as ``hwloop.chip.base.Op``),
  ``tile``, ``row``, ``col``, ``v_gate`` (SET gate voltage, NaN otherwise), ``g_us`` (read conductance,
  NaN for other ops). Chunked, gzip-compressed, appended in blocks (never a Python loop per cell).

The file is written in SWMR mode (``libver="latest"``), as the run log is, so a killed calibration
leaves a file that opens: it is switched to SWMR right after its header is written, and is flushed after
every sweep condition, at least every ``FLUSH_EVERY_S`` while
operations arrive, and closed at the end (also on Ctrl-C / SIGTERM). A real bench reports its operations
per acknowledged board frame, so an interrupted forming or sweep keeps the rows of every acknowledged
frame; a kill -9 loses at most the last ``FLUSH_EVERY_S`` of them.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

from hwloop.chip.base import CELLS_PER_TILE, COLS, ROWS, Op
from hwloop.errors import CalibrationError, RunLogError
from hwloop.h5check import open_reader
from hwloop.signals import deferred

FORMAT_NAME = "hwloop-calibration-oplog"
FORMAT_VERSION = 1
PHASES = {"forming": 0, "sweep": 1}
OP_ENUM = h5py.enum_dtype({op.name: int(op) for op in Op}, basetype="u1")
OPLOG_DTYPE = np.dtype(
    [
        ("t_s", "<f8"),
        ("phase", "u1"),
        ("condition", "<i2"),
        ("attempt", "u1"),
        ("op", OP_ENUM),
        ("tile", "<u2"),
        ("row", "u1"),
        ("col", "u1"),
        ("v_gate", "<f4"),
        ("g_us", "<f4"),
    ]
)
CHUNK_ROWS = 1 << 16
#: longest time (s) rows stay buffered while operations keep arriving
FLUSH_EVERY_S = 0.5


class OpLog:
    """Buffered writer of the calibration op log. Use as a chip listener (``listener``)."""

    def __init__(
        self,
        path: str | Path,
        *,
        chip_id: str = "",
        backend: str = "",
        calibration_file: str = "",
        phases: dict[str, int] | None = None,
        command: str = "calibrate",
    ) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = h5py.File(self.path, "w", libver="latest")
        except OSError as exc:
            raise CalibrationError(
                f"cannot write the operation log {self.path} ({exc}); give another --log path"
            ) from exc
        a = self._f.attrs
        a["format"] = FORMAT_NAME
        a["format_version"] = FORMAT_VERSION
        a["created_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        a["calibration_file"] = calibration_file
        a["chip_id"] = chip_id
        a["backend"] = backend
        a["op_enum_json"] = json.dumps({op.name: int(op) for op in Op})
        a["phase_enum_json"] = json.dumps(phases or PHASES)
        a["command"] = command  # the hwloop command that wrote it (calibrate, retention, cycle, verify)
        self._ds = self._f.create_dataset(
            "ops",
            shape=(0,),
            maxshape=(None,),
            dtype=OPLOG_DTYPE,
            chunks=(CHUNK_ROWS,),
            compression="gzip",
            compression_opts=4,
        )
        a["rows"] = 0
        self._f.flush()
        self._f.swmr_mode = True  # from here on the file on disk is always readable, even after a kill
        self._buf: list[np.ndarray] = []
        self._t0: float | None = None
        self.phase = PHASES["forming"]
        self.condition = -1
        self.attempt = 0
        self.v_gate = float("nan")
        self.level_v_gate: np.ndarray | None = None  # gate voltage per level index, for SETs by level
        self.rows = 0
        self._last_flush = time.monotonic()

    def start_clock(self, t0_s: float) -> None:
        self._t0 = t0_s

    def listener(self, op: Op, idx: np.ndarray, level: np.ndarray, g_us: np.ndarray) -> None:

        t = time.perf_counter() - (self._t0 or 0.0)
        rec = np.zeros(idx.size, dtype=OPLOG_DTYPE)
        rec["t_s"] = t
        rec["phase"] = self.phase
        rec["condition"] = self.condition
        rec["attempt"] = self.attempt
        rec["op"] = int(op)
        rec["tile"] = idx // CELLS_PER_TILE
        rec["row"] = (idx // COLS) % ROWS
        rec["col"] = idx % COLS
        rec["v_gate"] = self.v_gate if op == Op.SET else np.nan
        if op == Op.SET and self.level_v_gate is not None and np.isnan(self.v_gate):  # SET at tabled levels
            lv = np.asarray(level, dtype=np.int64)
            rec["v_gate"] = np.where(lv >= 1, self.level_v_gate[np.clip(lv, 0, self.level_v_gate.size - 1)], np.nan)
        rec["g_us"] = g_us
        self._buf.append(rec)
        if time.monotonic() - self._last_flush >= FLUSH_EVERY_S:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows. A SIGTERM only flags while it writes (``hwloop.signals.deferred``), and the
        buffer is dropped only once its rows are in the file: a stop cannot lose them, and after a failed
        write they stay buffered and the next flush writes them where they belong (after ``rows``)."""
        self._last_flush = time.monotonic()
        if not self._buf:
            return
        with deferred():
            block = np.concatenate(self._buf)
            n0 = self.rows  # not the dataset's length: a failed write may have grown it
            self._ds.resize((n0 + block.size,))
            self._ds[n0:] = block
            self._f.flush()
            self._buf.clear()
            self.rows = n0 + block.size

    def close(self) -> None:
        if self._f.id.valid:
            with deferred():  # a second SIGTERM cannot cut the last flush or the close
                self.flush()
                self._f.close()
            try:  # the row count as an attribute (an SWMR writer cannot add or grow attributes)
                with h5py.File(self.path, "r+", libver="latest") as f:
                    f.attrs["rows"] = self.rows
            except OSError:
                pass


def read_oplog(path: str | Path) -> np.ndarray:
    """All rows of an op log (for tests and analysis)."""
    p = Path(path)
    try:
        with open_reader(p) as f:  # SWMR: also the log of a calibration still running, or killed
            if f.attrs.get("format") != FORMAT_NAME:
                raise CalibrationError(f"{p} is not a calibration operation log (format {f.attrs.get('format')!r})")
            return f["ops"][()]
    except (OSError, RunLogError) as exc:
        raise CalibrationError(f"{p} is not a readable HDF5 operation log ({exc})") from exc
