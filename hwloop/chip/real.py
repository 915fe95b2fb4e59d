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

Operations are reported to the chip's listeners (the run log, the calibration op log) **per board frame,
as each frame is acknowledged**, not once per array call: a SIGTERM or an error in the middle of forming
or of a long array call leaves in the log the rows of every frame the board acknowledged. FORM rows: one
per device per ``form`` call, as the first ramp step's frame holding it is acknowledged (the verify reads
of the ramp are not logged, as before). A SIGTERM during an array call is taken when the call ends
(``hwloop.signals.stop_point``), so no frame the board executed is left out of the log.

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

from hwloop.chip.base import Chip, Op
from hwloop.chip.cdf import CdfTable
from hwloop.errors import ConfigError, SafetyLimitError
from hwloop.instruments.bench import BenchConfig, BoardOp, Condition, load_bench
from hwloop.instruments.fpga import FpgaBoard
from hwloop.instruments.smu import Smu, open_smu
from hwloop.signals import stop_point


class RealChip(Chip):
    """A 1T1R chip on a bench described by a bench file."""

    #: listeners hear of operations per acknowledged board frame (``_emit_done`` does nothing)
    reports_per_frame = True

    def __init__(
        self,
        bench: BenchConfig,
        table: CdfTable | None = None,
        *,
        board: FpgaBoard | None = None,
        smu: Smu | None = None,
        use_smu: bool = True,
    ) -> None:
        if table is None:
            from hwloop.chip.default_table import default_table

            table = default_table()
        super().__init__(bench.tiles, table)
        if len(bench.set.v_wl) != table.n_hcs:
            raise ConfigError(
                f"bench {bench.name!r} has {len(bench.set.v_wl)} SET gate voltages but the "
                f"level table has {table.n_hcs} HCS levels: give one [set] v_wl per level"
            )
        self.bench = bench
        self.board: FpgaBoard | None = None
        self.smu: Smu | None = None
        try:
            self.board = board or FpgaBoard.from_bench(bench)
            self.board_info = self.board.identify()
            if self.board_info.tiles < bench.tiles:
                raise ConfigError(
                    f"bench {bench.name!r} declares {bench.tiles} tile(s) but the board "
                    f"addresses {self.board_info.tiles}"
                )
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
            raise SafetyLimitError(
                f"SET gate voltages {lo:.3f}..{hi:.3f} V "
                f"are not all within [0, {lim}] V (max_v_gate_set); nothing was sent"
            )

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
    def _batch(
        self,
        idx: np.ndarray,
        op: BoardOp,
        cond: np.ndarray | int,
        conds: list[Condition],
        report: Op | None = None,
        level: np.ndarray | int = -1,
    ) -> np.ndarray:
        """One array operation through the board. With ``report``, each acknowledged frame is reported to
        the listeners at once (as ``report`` with ``level``; READ with its conductances)."""
        assert self.board is not None
        t, r, c = self.unflat(idx)
        on_ack = None
        if report is not None and self._listeners:
            lv = np.broadcast_to(np.asarray(level, dtype=np.int8), idx.shape)
            scale = 0.0
            if report == Op.READ:
                rc = self.bench.read_condition()
                scale = 1e6 / (rc.v_bl - rc.v_sl)

            def on_ack(a: int, b: int, i_read_a: np.ndarray) -> None:
                g = (i_read_a * scale).astype(np.float32) if report == Op.READ else np.float32(np.nan)
                self._emit(report, idx[a:b], lv[a:b], g)

        with self._guard(), stop_point():  # a SIGTERM stops after the call: no frame left unlogged
            return self.board.batch(t, r, c, int(op), cond, conds, on_ack=on_ack)

    def _emit_done(self, op: Op, idx: np.ndarray, level: np.ndarray | int, g_us: np.ndarray | float) -> None:
        """Already reported frame by frame (``_batch``)."""

    def _form(self, idx: np.ndarray) -> np.ndarray:
        todo = np.unique(idx[~self._formed[idx]])
        verify = self.bench.form.verify_g_us
        # one FORM row per device of the call (as Chip.form_idx logs it), reported with the first ramp step
        already = np.setdiff1d(idx, todo)
        if already.size:
            self._emit(Op.FORM, already, -1, np.nan)
        for k, cond in enumerate(self.bench.form_conditions()):
            if todo.size == 0:
                break
            self._batch(todo, BoardOp.FORM, 0, [cond], report=Op.FORM if k == 0 else None)
            g = self._read(todo, report=False)
            ok = g >= verify
            self._formed[todo[ok]] = True
            todo = todo[~ok]
        return self._formed[idx].copy()

    def _set_level(self, idx: np.ndarray, level: np.ndarray) -> None:
        self._batch(idx, BoardOp.SET, np.asarray(level) - 1, self._set_conds, report=Op.SET, level=level)

    def _set_vgate(self, idx: np.ndarray, v_gate: np.ndarray) -> None:
        self.check_v_gate(v_gate)
        mv = np.round(np.asarray(v_gate, dtype=np.float64) * 1000.0).astype(np.int64)
        uniq, inv = np.unique(mv, return_inverse=True)
        conds = [self.bench.set_condition(u / 1000.0) for u in uniq]
        self._batch(idx, BoardOp.SET, inv.reshape(-1), conds, report=Op.SET)

    def _reset(self, idx: np.ndarray) -> None:
        self._batch(idx, BoardOp.RESET, 0, [self.bench.reset_condition()], report=Op.RESET, level=0)

    def _read(self, idx: np.ndarray, report: bool = True) -> np.ndarray:
        cond = self.bench.read_condition()
        i_a = self._batch(idx, BoardOp.READ, 0, [cond], report=Op.READ if report else None)
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

    def describe(self) -> dict:
        """The bench's name is the chip id; a board that identifies itself as emulated gives synthetic data."""
        board = self.board_info.ident if hasattr(self, "board_info") else ""
        return {**super().describe(), "chip_id": self.bench.name or "", "synthetic": "emulated" in board.lower()}

    def info(self) -> dict:
        d = super().info()
        d["bench"] = {
            "name": self.bench.name,
            "file": self.bench.source_path,
            "board": getattr(self, "board_info", None).ident if hasattr(self, "board_info") else "",
            "smu": getattr(self, "smu_idn", ""),
            "limits": self.bench.limits.__dict__.copy(),
        }
        return d
