"""The chip interface: vectorized FORM / SET / RESET / READ over arrays of cell addresses.

Addresses are ``(tile, row, col)`` arrays; internally every backend works on flat indices
``(tile * ROWS + row) * COLS + col``. Callers that already hold flat indices (the orchestrator) use the
``*_idx`` methods and skip the conversion. Device level indices follow the CDF table: 0 is LCS,
1..n_hcs the HCS levels in increasing conductance.

Every operation is reported to the listeners (``add_listener``) as one array call, which is how run logs
record every device operation without a Python loop per cell.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np

from hwloop.chip.cdf import CdfTable
from hwloop.errors import ChipError

ROWS = 128
COLS = 128
CELLS_PER_TILE = ROWS * COLS


class Op(enum.IntEnum):
    """Device operation codes, as stored in run logs (``/ops`` field ``op``)."""

    FORM = 0
    SET = 1
    RESET = 2
    READ = 3


#: listener(op, flat_idx, level, g_us): level is -1 where not applicable, g_us NaN where not measured
Listener = Callable[[Op, np.ndarray, np.ndarray, np.ndarray], None]


def as_index_array(a: object) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind not in "iu":
        if arr.size and not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ChipError("cell addresses must be integers")
        arr = arr.astype(np.int64)
    return np.atleast_1d(arr).astype(np.int64, copy=False)


class Chip(ABC):
    """Common part of every backend: geometry, address checks, operation counters and listeners."""

    rows = ROWS
    cols = COLS

    def __init__(self, n_tiles: int, table: CdfTable) -> None:
        if n_tiles < 1:
            raise ChipError(f"a chip needs at least one tile, got {n_tiles}")
        self.n_tiles = int(n_tiles)
        self.table = table
        n = self.n_devices
        self.set_count = np.zeros(n, dtype=np.uint32)
        self.reset_count = np.zeros(n, dtype=np.uint32)
        self.form_count = np.zeros(n, dtype=np.uint16)
        self._listeners: list[Listener] = []

    # ------------------------------------------------------------------ geometry
    @property
    def n_devices(self) -> int:
        return self.n_tiles * CELLS_PER_TILE

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.n_tiles, ROWS, COLS)

    def flat(self, tile: object, row: object, col: object) -> np.ndarray:
        """Flat indices of ``(tile, row, col)`` arrays; raises ``ChipError`` for an address off the array."""
        t, r, c = (as_index_array(x) for x in (tile, row, col))
        t, r, c = np.broadcast_arrays(t, r, c)
        bad = (t < 0) | (t >= self.n_tiles) | (r < 0) | (r >= ROWS) | (c < 0) | (c >= COLS)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ChipError(
                f"address (tile={t[i]}, row={r[i]}, col={c[i]}) is outside the array "
                f"({self.n_tiles} tiles of {ROWS}x{COLS}); {int(bad.sum())} bad address(es)"
            )
        return (t * ROWS + r) * COLS + c

    def unflat(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = np.asarray(idx, dtype=np.int64)
        return idx // CELLS_PER_TILE, (idx // COLS) % ROWS, idx % COLS

    def check_idx(self, idx: object) -> np.ndarray:
        arr = as_index_array(idx)
        if arr.size and (arr.min() < 0 or arr.max() >= self.n_devices):
            bad = arr[(arr < 0) | (arr >= self.n_devices)][0]
            raise ChipError(f"flat cell index {bad} is outside the array of {self.n_devices} devices")
        return arr

    # ------------------------------------------------------------------ counters
    @property
    def cycles(self) -> np.ndarray:
        """Cumulative SET/RESET cycles per device (one cycle = one SET plus one RESET pulse)."""
        return (self.set_count.astype(np.float64) + self.reset_count) / 2.0

    def program_count(self) -> np.ndarray:
        return self.set_count.astype(np.int64) + self.reset_count

    # ------------------------------------------------------------------ listeners
    def add_listener(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        self._listeners.remove(fn)

    def _emit(self, op: Op, idx: np.ndarray, level: np.ndarray | int, g_us: np.ndarray | float) -> None:
        if not self._listeners:
            return
        lv = np.broadcast_to(np.asarray(level, dtype=np.int8), idx.shape)
        g = np.broadcast_to(np.asarray(g_us, dtype=np.float32), idx.shape)
        for fn in self._listeners:
            fn(op, idx, lv, g)

    def _emit_done(self, op: Op, idx: np.ndarray, level: np.ndarray | int, g_us: np.ndarray | float) -> None:
        """Report a finished array operation to the listeners. A backend that reports its operations itself,
        as the hardware acknowledges them (``RealChip``: per board frame), overrides this."""
        self._emit(op, idx, level, g_us)

    # ------------------------------------------------------------------ public API (addresses)
    def form(self, tile: object, row: object, col: object) -> np.ndarray:
        """Form the devices; returns a bool array, True where the device is now formed."""
        return self.form_idx(self.flat(tile, row, col))

    def set(self, tile: object, row: object, col: object, *, level: object = None, v_gate: object = None) -> None:
        """Single-shot SET at a tabled level index (1..n_hcs) or at a gate voltage (V)."""
        self.set_idx(self.flat(tile, row, col), level=level, v_gate=v_gate)

    def reset(self, tile: object, row: object, col: object) -> None:
        """Single-shot RESET to LCS."""
        self.reset_idx(self.flat(tile, row, col))

    def read(self, tile: object, row: object, col: object) -> np.ndarray:
        """Read conductances in µS."""
        return self.read_idx(self.flat(tile, row, col))

    # ------------------------------------------------------------------ public API (flat indices)
    # Addresses of any shape are flattened for the backend (hooks and listeners see 1-D arrays);
    # form and read return arrays of the addresses' shape.
    def form_idx(self, idx: object) -> np.ndarray:
        i = self.check_idx(idx)
        shape = i.shape
        i = i.ravel()
        ok = self._form(i)
        self.form_count[i] += 1
        self._emit_done(Op.FORM, i, -1, np.nan)
        return ok.reshape(shape)

    def set_idx(self, idx: object, *, level: object = None, v_gate: object = None) -> None:
        i = self.check_idx(idx)
        shape = i.shape
        i = i.ravel()
        if (level is None) == (v_gate is None):
            raise ChipError("SET needs exactly one of level= (tabled level index) or v_gate= (volts)")
        self._require_formed(i)
        if level is not None:
            lv = np.broadcast_to(np.asarray(level), shape).ravel()
            if lv.dtype.kind not in "iu" and lv.size and not np.all(np.equal(np.mod(lv, 1), 0)):
                raise ChipError("SET level must be an integer level index (use v_gate= for a gate voltage)")
            if lv.size and (lv.min() < 1 or lv.max() > self.table.n_hcs):
                raise ChipError(
                    f"SET level must be 1..{self.table.n_hcs} (HCS levels of the table); "
                    f"got {int(lv.min())}..{int(lv.max())}. Use reset for LCS."
                )
            lv = lv.astype(np.intp, copy=False)
            self._set_level(i, lv)
            self.set_count[i] += 1
            self._emit_done(Op.SET, i, lv, np.nan)
        else:
            vg = np.broadcast_to(np.asarray(v_gate, dtype=np.float64), shape).ravel()
            if vg.size and not np.all(np.isfinite(vg)):
                raise ChipError("SET gate voltage must be a finite number of volts")
            self._set_vgate(i, vg)
            self.set_count[i] += 1
            self._emit_done(Op.SET, i, -1, np.nan)

    def reset_idx(self, idx: object) -> None:
        i = self.check_idx(idx).ravel()
        self._require_formed(i)
        self._reset(i)
        self.reset_count[i] += 1
        self._emit_done(Op.RESET, i, 0, np.nan)

    def read_idx(self, idx: object) -> np.ndarray:
        i = self.check_idx(idx)
        shape = i.shape
        i = i.ravel()
        g = self._read(i)
        self._emit_done(Op.READ, i, -1, g)
        return g.reshape(shape)

    def read_all(self) -> np.ndarray:
        """Read every device; returns (n_tiles, ROWS, COLS) in µS."""
        return self.read_idx(np.arange(self.n_devices)).reshape(self.shape)

    def _require_formed(self, i: np.ndarray) -> None:
        formed = self.formed_mask()[i]
        if not formed.all():
            bad = i[~formed]
            t, r, c = self.unflat(bad[:1])
            raise ChipError(
                f"{bad.size} device(s) not formed, first at (tile={t[0]}, row={r[0]}, col={c[0]}): "
                "form them before programming"
            )

    def mark_failed(self, idx: object) -> None:
        """Mark devices failed (worn out, as inferred from their reads); they stay failed."""
        self._mark_failed(self.check_idx(idx).ravel())

    def _mark_failed(self, idx: np.ndarray) -> None:
        self.failed_mask()[idx] = True

    def check_v_gate(self, v_gate: object) -> None:  # noqa: B027 - no limits unless a backend has them
        """Raise ``SafetyLimitError`` if any SET gate voltage is past this chip's limits (sim: none)."""

    # ------------------------------------------------------------------ backend hooks
    @abstractmethod
    def formed_mask(self) -> np.ndarray:
        """Bool per device: formed (programmable)."""

    @abstractmethod
    def failed_mask(self) -> np.ndarray:
        """Bool per device: worn out (stuck) or otherwise unusable after forming."""

    @abstractmethod
    def _form(self, idx: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _set_level(self, idx: np.ndarray, level: np.ndarray) -> None: ...

    @abstractmethod
    def _set_vgate(self, idx: np.ndarray, v_gate: np.ndarray) -> None: ...

    @abstractmethod
    def _reset(self, idx: np.ndarray) -> None: ...

    @abstractmethod
    def _read(self, idx: np.ndarray) -> np.ndarray: ...

    # ------------------------------------------------------------------ state
    def snapshot(self) -> dict[str, np.ndarray]:
        """Full state as a dict of arrays (for checkpoints)."""
        return {
            "set_count": self.set_count.copy(),
            "reset_count": self.reset_count.copy(),
            "form_count": self.form_count.copy(),
        }

    def restore(self, state: dict[str, np.ndarray]) -> None:
        for key in ("set_count", "reset_count", "form_count"):
            arr = np.asarray(state[key])
            if arr.shape != (self.n_devices,):
                raise ChipError(
                    f"snapshot holds {arr.shape[0]} devices but this chip has {self.n_devices}: "
                    "restore it on a chip of the same geometry"
                )
            getattr(self, key)[:] = arr

    def close(self) -> None:  # noqa: B027 - nothing to release unless a backend holds resources
        """Release resources (instruments go to their safe state). Safe to call twice."""

    def __enter__(self) -> Chip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict:
        """Who this chip is: ``chip_id`` (its own name, "" when it has none), ``synthetic`` (True when the data
        it gives are simulated, not measured) and ``backend`` (the class name)."""
        return {"chip_id": "", "synthetic": False, "backend": type(self).__name__}

    def info(self) -> dict:
        return {
            "backend": type(self).__name__,
            "tiles": self.n_tiles,
            "rows": ROWS,
            "cols": COLS,
            "devices": self.n_devices,
            "levels": self.table.describe(),
            "table": self.table.metadata(),
        }
