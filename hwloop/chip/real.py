"""RealChip: the chip interface over a real bench (FPGA addressing board + SMU), or the virtual bench.

Every operation over an array of addresses becomes as few BATCH frames as the board allows (the serial
link, not Python, is the limit). Conditions come from the bench file's voltage tables:

- FORM ramps V_BL over the bench's forming ramp; after each step the not-yet-formed cells are read and
  the ones above ``form.verify_g_us`` are marked formed (the host keeps the formed mask).
- SET at a level index uses the bench's SET gate-voltage table; SET at ``v_gate`` is refused past the
  bench's ``max_v_gate_set`` before anything is sent (``check_v_gate``).
- RESET and READ use the bench's RESET and READ conditions; READ returns G = I / V_read (µS) from the
  board's ADCs. ``read_smu`` measures slowly through the SMU instead (one cell at a time).

Any exception or Ctrl-C during an operation puts both instruments in their safe state (0 V, off).

The host keeps the formed mask (from the FORM verify reads; it is part of ``snapshot`` so a resumed run
keeps it). The board does not report worn-out devices: the failed mask holds what the host inferred from
reads (``mark_failed``, see ``hwloop.characterise.wear``) and is part of ``snapshot`` too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np

from hwloop.chip.base import Chip
from hwloop.chip.cdf import CdfTable
from hwloop.errors import ConfigError, SafetyLimitError
from hwloop.instruments.bench import BenchConfig, BoardOp, Condition, load_bench
from hwloop.instruments.fpga import FpgaBoard
from hwloop.instruments.smu import Smu, open_smu


class RealChip(Chip):
    """A 1T1R chip on a bench described by a bench file."""

    def __init__(self, bench: BenchConfig, table: CdfTable | None = None, *, board: FpgaBoard | None = None,
                 smu: Smu | None = None, use_smu: bool = True) -> None:
        if table is None:
            from hwloop.chip.default_table import default_table

            table = default_table()
        super().__init__(bench.tiles, table)
        if len(bench.set.v_wl) != table.n_hcs:
            raise ConfigError(f"bench {bench.name!r} has {len(bench.set.v_wl)} SET gate voltages but the "
                              f"level table has {table.n_hcs} HCS levels: give one [set] v_wl per level")
        self.bench = bench
        self.board: FpgaBoard | None = None
        self.smu: Smu | None = None
        try:
            self.board = board or FpgaBoard.from_bench(bench)
            self.board_info = self.board.identify()
            if self.board_info.tiles < bench.tiles:
                raise ConfigError(f"bench {bench.name!r} declares {bench.tiles} tile(s) but the board "
                                  f"addresses {self.board_info.tiles}")
            self.board.safe()
            self.smu = smu if smu is not None else (open_smu(bench) if use_smu else None)
            self.smu_idn = self.smu.identify() if self.smu is not None else ""
            if self.smu is not None:
                self.smu.reset()
        except BaseException:
            self.close()
            raise
        self._formed = np.zeros(self.n_devices, dtype=bool)
        self._failed = np.zeros(self.n_devices, dtype=bool)
        self._set_conds = bench.set_level_conditions()

    @classmethod
    def from_bench_file(cls, path: str | Path, table: CdfTable | None = None, **kw: Any) -> RealChip:
        return cls(load_bench(path), table, **kw)

    # ------------------------------------------------------------------ safety
    def check_v_gate(self, v_gate: object) -> None:
        v = np.asarray(v_gate, dtype=np.float64)
        lim = self.bench.limits.max_v_gate_set
        if v.size and not (np.all(np.isfinite(v)) and v.max() <= lim and v.min() >= 0):  # NaN fails
            lo, hi = float(np.nanmin(v)), float(np.nanmax(v))
            raise SafetyLimitError(f"SET gate voltages {lo:.3f}..{hi:.3f} V "
                                   f"are not all within [0, {lim}] V (max_v_gate_set); nothing was sent")

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            self.safe_state()
            raise

    def safe_state(self) -> None:
        """Best effort: board DACs to 0 V and deselected, SMU output 0 V and off."""
        if self.board is not None and self.board.ser is not None:
            try:
                time.sleep(0.06)  # let the board drop a frame cut short (inter-frame gap)
                self.board.safe()
            except Exception:
                pass
        if self.smu is not None:
            with suppress(Exception):
                self.smu.safe_state()

    # ------------------------------------------------------------------ masks
    def formed_mask(self) -> np.ndarray:
        return self._formed

    def failed_mask(self) -> np.ndarray:
        return self._failed

    # ------------------------------------------------------------------ operations
    def _batch(self, idx: np.ndarray, op: BoardOp, cond: np.ndarray | int,
               conds: list[Condition]) -> np.ndarray:
        assert self.board is not None
        t, r, c = self.unflat(idx)
        with self._guard():
            return self.board.batch(t, r, c, int(op), cond, conds)

    def _form(self, idx: np.ndarray) -> np.ndarray:
        todo = np.unique(idx[~self._formed[idx]])
        verify = self.bench.form.verify_g_us
        for cond in self.bench.form_conditions():
            if todo.size == 0:
                break
            self._batch(todo, BoardOp.FORM, 0, [cond])
            g = self._read(todo)
            ok = g >= verify
            self._formed[todo[ok]] = True
            todo = todo[~ok]
        return self._formed[idx].copy()

    def _set_level(self, idx: np.ndarray, level: np.ndarray) -> None:
        self._batch(idx, BoardOp.SET, np.asarray(level) - 1, self._set_conds)

    def _set_vgate(self, idx: np.ndarray, v_gate: np.ndarray) -> None:
        self.check_v_gate(v_gate)
        mv = np.round(np.asarray(v_gate, dtype=np.float64) * 1000.0).astype(np.int64)
        uniq, inv = np.unique(mv, return_inverse=True)
        conds = [self.bench.set_condition(u / 1000.0) for u in uniq]
        self._batch(idx, BoardOp.SET, inv.reshape(-1), conds)

    def _reset(self, idx: np.ndarray) -> None:
        self._batch(idx, BoardOp.RESET, 0, [self.bench.reset_condition()])

    def _read(self, idx: np.ndarray) -> np.ndarray:
        cond = self.bench.read_condition()
        i_a = self._batch(idx, BoardOp.READ, 0, [cond])
        return (i_a / (cond.v_bl - cond.v_sl) * 1e6).astype(np.float32)

    def read_smu(self, idx: object) -> np.ndarray:
        """Read conductances (µS) one cell at a time through the SMU (slow, precise; not counted as ops)."""
        if self.smu is None or self.board is None:
            raise ConfigError("this RealChip was opened without an SMU")
        i = self.check_idx(idx)
        t, r, c = self.unflat(i)
        rd = self.bench.read
        out = np.empty(i.size, dtype=np.float32)
        with self._guard():
            self.board.set_dac(rd.v_wl, 0.0, 0.0)
            for k in range(i.size):
                self.board.select(int(t[k]), int(r[k]), int(c[k]))
                i_a = self.smu.source_voltage_measure_current(rd.v_bl, self.bench.smu.current_limit_a)
                out[k] = i_a / rd.v_bl * 1e6
            self.board.safe()
        return out

    # ------------------------------------------------------------------ state
    def snapshot(self) -> dict[str, np.ndarray]:
        snap = super().snapshot()
        snap["formed"] = self._formed.copy()
        snap["failed"] = self._failed.copy()
        return snap

    def restore(self, state: dict[str, np.ndarray]) -> None:
        super().restore(state)
        if "formed" in state:
            self._formed[:] = np.asarray(state["formed"], dtype=bool)
        if "failed" in state:
            self._failed[:] = np.asarray(state["failed"], dtype=bool)

    # ------------------------------------------------------------------ lifetime and info
    def close(self) -> None:
        if self.board is not None:
            self.board.close()
            self.board = None
        if self.smu is not None:
            self.smu.close()
            self.smu = None

    def info(self) -> dict:
        d = super().info()
        d["bench"] = {"name": self.bench.name, "file": self.bench.source_path,
                      "board": getattr(self, "board_info", None).ident if hasattr(self, "board_info") else "",
                      "smu": getattr(self, "smu_idn", ""), "limits": self.bench.limits.__dict__.copy()}
        return d
