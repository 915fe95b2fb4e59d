"""One ``hwloop reproduce`` session: check the request (preset, figures, calibration), run or continue the
blocks of runs (``planner``), then write ``DIR/report.md`` (``report``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwloop.chip.cdf import CdfTable
from hwloop.chip.factory import check_tile_geometry, load_table_option
from hwloop.errors import ConfigError
from hwloop.reproduce.planner import blocks, check_record, folder_lock, run_blocks
from hwloop.reproduce.presets import Protocol, parse_only, protocol
from hwloop.reproduce.report import write_report


@dataclass
class ReproduceResult:
    report: Path
    protocol: Protocol
    figures: list[str]
    blocks: dict[str, Any]

    @property
    def failed(self) -> list[str]:
        return [f"{b}/{p}" for b, r in self.blocks.items() for p in r["failed"]]


def load_calibration(path: str | None) -> tuple[CdfTable, str]:
    """The calibration (or CDF table) the experiments run on, checked for the crossbar's geometry
    (``hwloop.chip.factory``), and how the report names it."""
    if path is None:
        return load_table_option(None), "built-in synthetic table"
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--calibration {path}: no such file")
    return check_tile_geometry(load_table_option(str(p))), str(p.resolve())


def reproduce(
    out: str | Path,
    *,
    preset: str = "quick",
    only: str | None = None,
    overrides: dict | None = None,
    workers: int = 1,
    threads: int | None = None,
    ray_address: str | None = None,
    calibration: str | None = None,
    data_dir: str | None = None,
    verify_data: bool = True,
    progress: bool = True,
    command: str = "hwloop reproduce",
    report_only: bool = False,
) -> ReproduceResult:
    """Run (or continue) the runs of the requested figures in ``out``, then write the report."""
    d = Path(out)
    proto = protocol(preset, overrides)
    figures = parse_only(only)
    if ray_address and workers > 1:
        raise ConfigError("give --workers N or --ray ADDRESS, not both")
    table, table_src = load_calibration(calibration)
    cal = None if calibration is None else table_src
    ddir = None if data_dir is None else str(Path(data_dir).expanduser().resolve())
    blks = blocks(proto, figures, cal, ddir, verify_data)
    with folder_lock(d):
        check_record(d, proto, cal)
        res = (
            {}
            if report_only
            else run_blocks(d, blks, workers=workers, threads=threads, ray_address=ray_address, progress=progress)
        )
        report = write_report(
            d, proto, figures, blks, table=table, table_src=table_src, command=command, overrides=overrides or {}
        )
    return ReproduceResult(report=report, protocol=proto, figures=figures, blocks=res)


__all__ = ["ReproduceResult", "load_calibration", "reproduce"]
