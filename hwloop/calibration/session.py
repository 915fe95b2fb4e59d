"""One calibration session, as ``hwloop calibrate`` runs it: open the chip, check the gate range against the
bench's limits, run the procedure with an op log on the chip's listeners, write the calibration file.

The CLI only parses the options into a :class:`CalibrationConfig` and prints the :class:`SessionResult`.
Nothing reaches the chip before the checks that can refuse (an existing output file, a gate voltage past a
limit), and the op log is closed on any exit.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hwloop.calibration.fileio import load_calibration, write_calibration
from hwloop.calibration.oplog import PHASES, OpLog
from hwloop.calibration.procedure import CalibrationConfig, CalibrationResult, calibrate
from hwloop.chip.factory import load_table_option, open_chip
from hwloop.errors import CalibrationError, ConfigError
from hwloop.progress import progress_bar
from hwloop.signals import check_stop


@dataclass
class SessionResult:
    out_path: Path
    summary: dict[str, Any]  # ``CalibrationFile.describe()`` of the written file, with wall times and op counts
    result: CalibrationResult
    oplog_path: Path | None
    oplog_rows: int
    wall_cmd_s: float


def safe_name(s: str) -> str:
    """A chip id as a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_") or "chip"


def default_chip_id(desc: dict[str, Any], kind: str, seed: int) -> str:
    """The chip's own id (``Chip.describe``) if it has one; else sim-seed<N>, or ``real``."""
    if desc["chip_id"]:
        return str(desc["chip_id"])
    return f"sim-seed{seed}" if kind == "sim" else "real"


def run_session(
    config: CalibrationConfig,
    *,
    kind: str,
    bench: str | None = None,
    out: str | None = None,
    force: bool = False,
    chip_id: str | None = None,
    cdf: str | None = None,
    log_path: str | None = None,
    no_log: bool = False,
    progress: bool = True,
) -> SessionResult:
    """Calibrate the chip ``kind`` (``sim`` or ``real`` over ``bench``) with ``config``; write the file."""
    config.validate()
    if kind == "real" and cdf is not None:
        raise ConfigError("--cdf is the source table of the simulated chip; it cannot be used with --chip real")
    if out and Path(out).exists() and not force:  # refuse before touching the bench
        raise CalibrationError(f"{out} exists; give another --out or --force to overwrite it")
    table = load_table_option(cdf)
    n_tiles = max(config.tiles) + 1
    t_start = time.perf_counter()
    with open_chip(kind, n_tiles=n_tiles, table=table, seed=config.seed, bench=bench) as chip:
        chip.check_v_gate(config.v_gate)  # SafetyLimitError before any file or operation
        desc = chip.describe()
        cid = chip_id or default_chip_id(desc, kind, config.seed)
        out_path = Path(out) if out else Path("calibration") / f"{safe_name(cid)}.h5"
        if out_path.exists() and not force:
            raise CalibrationError(f"{out_path} exists; give another --out or --force to overwrite it")
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        oplog = None
        if not no_log:
            lp = Path(log_path) if log_path else Path("runs") / f"calibrate-{safe_name(cid)}-{stamp}.h5"
            oplog = OpLog(lp, chip_id=cid, backend=desc["backend"], calibration_file=str(out_path))
            chip.add_listener(oplog.listener)
            oplog.start_clock(time.perf_counter())

        def on_phase(phase: str, cond: int, v: float) -> None:
            if oplog is None:
                return
            oplog.flush()
            check_stop()  # between blocks of operations: a SIGTERM flagged while the log was written stops here
            oplog.phase = PHASES[phase]
            oplog.condition = cond if phase == "sweep" else -1
            oplog.attempt = cond if phase == "forming" else 0
            oplog.v_gate = v

        bar = progress_bar(
            progress, total=config.n_conditions + 1, desc="calibrate", unit="step", file=sys.stderr, leave=False
        )
        try:
            res = calibrate(chip, config, progress=bar.update, on_phase=on_phase)
        finally:
            bar.close()
            if oplog is not None:
                chip.remove_listener(oplog.listener)
                oplog.close()
        write_calibration(
            res,
            out_path,
            chip_id=cid,
            bench=str(bench or ""),
            synthetic=kind == "sim" or bool(desc["synthetic"]),
            source_table=table.source_path if kind == "sim" else "",
            oplog_path=str(oplog.path) if oplog else "",
            read_voltage_v=float(table.read_voltage_v),
            v_gate_reset=float(chip.table.levels[0].v_gate) if chip.table.n_levels else 4.8,
        )
    wall_cmd_s = time.perf_counter() - t_start
    summary = load_calibration(out_path).describe()
    summary["wall_s"] = {**res.wall_s, "command": wall_cmd_s}
    summary["op_counts"] = res.op_counts
    summary["op_calls"] = res.op_calls
    summary["oplog"] = str(oplog.path) if oplog else None
    return SessionResult(
        out_path=out_path,
        summary=summary,
        result=res,
        oplog_path=oplog.path if oplog else None,
        oplog_rows=oplog.rows if oplog else 0,
        wall_cmd_s=wall_cmd_s,
    )


__all__ = ["SessionResult", "default_chip_id", "run_session", "safe_name"]
