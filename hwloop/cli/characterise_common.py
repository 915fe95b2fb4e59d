"""What the characterisation commands share (``hwloop verify``, ``retention``, ``cycle``; each in its own
``*_cmd`` module, with ``hwloop estimate``): the chip options, the chip, the op log, progress and checks.

Each runs over the ``Chip`` interface (``--chip sim`` or ``--chip real --bench FILE``, the virtual bench
included), writes an HDF5 op log of every pulse (the calibration op-log format), shows a progress bar on
stderr and refuses bad input with one line and exit code 2. File formats: docs/characterise.md.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
import numpy as np

from hwloop.calibration.session import safe_name
from hwloop.chip.base import CELLS_PER_TILE, Chip
from hwloop.chip.factory import load_table_option, open_chip
from hwloop.cli.common import bench_option, chip_kind_option
from hwloop.errors import CalibrationError, ConfigError
from hwloop.signals import check_stop


def stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def chip_options(f: Callable) -> Callable:
    opts = [
        chip_kind_option,
        bench_option,
        click.option(
            "--cdf",
            "--calibration",
            "cdf",
            type=click.Path(dir_okay=False),
            default=None,
            help="Calibration file or CDF table: the levels (gate voltages, windows) and, for --chip sim, "
            "the simulated devices. Default: the built-in synthetic table.",
        ),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the simulated chip."),
        click.option(
            "--retention",
            "retention_model",
            type=click.Path(dir_okay=False),
            default=None,
            help="--chip sim: replay this retention model (a file from `hwloop retention`).",
        ),
        click.option(
            "--endurance-model",
            type=click.Path(dir_okay=False),
            default=None,
            help="--chip sim: draw device budgets from this endurance model (a file from `hwloop cycle`).",
        ),
        click.option(
            "--relax-rel",
            type=click.FloatRange(0, 1),
            default=0.0,
            show_default=True,
            help="--chip sim: built-in relaxation strength (relative; 0 = none).",
        ),
        click.option(
            "--relax-tau-s",
            type=click.FloatRange(0, None, min_open=True),
            default=10.0,
            show_default=True,
            help="--chip sim: built-in relaxation time constant (s of chip time).",
        ),
        click.option(
            "--chip-id",
            default=None,
            help="Chip identifier stored in the files (default: sim-seed<N> or the bench name).",
        ),
        click.option(
            "--log",
            "log_path",
            type=click.Path(dir_okay=False),
            default=None,
            help="HDF5 op log of every pulse. Default: runs/<command>-<chip-id>-<UTC time>-ops.h5",
        ),
        click.option("--no-log", is_flag=True, help="Do not write the op log."),
        click.option("--no-progress", is_flag=True, help="Hide the progress bar (stderr)."),
        click.option("--json", "as_json", is_flag=True, help="Print a machine-readable JSON summary."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def check_finite(name: str, v: float) -> None:
    if not math.isfinite(v):
        raise ConfigError(f"--{name} must be a finite number, got {v}")


def open_shared_chip(kw: dict[str, Any], n_devices: int) -> tuple[Chip, str]:
    """The chip named by the shared options (``hwloop.chip.factory.open_chip``), and its id."""
    from hwloop.chip.models import load_sim_models
    from hwloop.chip.sim import SimConfig

    kind, seed = kw["kind"], kw["seed"]
    table = load_table_option(kw["cdf"])
    sim_only = {
        "--retention": kw["retention_model"],
        "--endurance-model": kw["endurance_model"],
        "--relax-rel": kw["relax_rel"] or None,
    }
    given = [k for k, v in sim_only.items() if v]
    if kind == "real" and given:
        raise ConfigError(f"{', '.join(given)} set the simulated chip's models; they cannot be used with --chip real")
    n_tiles = max(1, -(-n_devices // CELLS_PER_TILE))
    if kind == "sim" and n_tiles > 64:
        raise ConfigError(f"{n_devices} devices need {n_tiles} tiles; give at most {64 * CELLS_PER_TILE:,} devices")
    chip = open_chip(
        kind,
        n_tiles=n_tiles,
        table=table,
        seed=seed,
        bench=kw["bench"],
        sim_models=load_sim_models(kw["retention_model"], kw["endurance_model"]),
        sim_config=SimConfig.default().with_(relax_rel=kw["relax_rel"], relax_tau_s=kw["relax_tau_s"]),
    )
    if n_devices > chip.n_devices:
        chip.close()
        raise ConfigError(
            f"{n_devices} devices do not fit on the bench's {chip.n_devices} devices: give fewer --devices"
        )
    default_id = f"sim-seed{seed}" if kind == "sim" else (chip.describe()["chip_id"] or "real")
    return chip, kw["chip_id"] or default_id


@contextmanager
def op_logging(chip: Chip, kw: dict[str, Any], command: str, cid: str, phases: dict[str, int]) -> Iterator[Any]:
    """An op log on the chip's listeners for the duration (None with --no-log); closed on any exit."""
    from hwloop.calibration import OpLog

    if kw["no_log"]:
        yield None
        return
    lp = Path(kw["log_path"]) if kw["log_path"] else Path("runs") / f"{command}-{safe_name(cid)}-{stamp()}-ops.h5"
    log = OpLog(
        lp,
        chip_id=cid,
        backend=type(chip).__name__,
        calibration_file=str(kw["cdf"] or ""),
        phases=phases,
        command=command,
    )
    log.level_v_gate = chip.table.v_gate.astype(np.float64)
    chip.add_listener(log.listener)
    log.start_clock(time.perf_counter())
    try:
        yield log
    finally:
        chip.remove_listener(log.listener)
        log.close()


def step_bar(total: int, desc: str, disable: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, disable=disable, leave=False)


def check_out(out: str | None, force: bool) -> None:
    if out and Path(out).exists() and not force:
        raise CalibrationError(f"{out} exists; give another --out or --force to overwrite it")


def set_phase(log: Any, phase: int, condition: int = -1, attempt: int = 0) -> None:
    if log is None:
        return
    log.flush()
    check_stop()  # between blocks of operations: a SIGTERM flagged while the log was written stops here
    log.phase, log.condition, log.attempt = phase, int(min(condition, 32767)), int(min(attempt, 255))
