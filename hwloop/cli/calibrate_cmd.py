"""``hwloop calibrate``: form, sweep the SET gate voltage, pick 8 HCS levels + LCS, write a calibration file.

``hwloop calibrate --chip sim`` (or ``hwloop calibrate run ...``) runs a calibration;
``hwloop calibrate show FILE`` prints its levels and ``hwloop calibrate plot FILE -o cdf.png`` draws the CDFs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import click

from hwloop.calibration.procedure import CalibrationConfig
from hwloop.cli import cli
from hwloop.cli.common import bench_option, chip_kind_option, echo_json
from hwloop.clicktypes import FINITE_FLOAT
from hwloop.errors import CalibrationError, ConfigError
from hwloop.intlist import INT_LIST_HELP, parse_int_list

_CFG = CalibrationConfig.default()


def _parse_tiles(spec: str) -> tuple[int, ...]:
    """``0`` / ``0,2`` / ``0-3`` / ``0-1,4`` (:mod:`hwloop.intlist`) to a sorted tuple of tile indices."""
    return tuple(sorted(parse_int_list(spec, "--tiles")))


def _parse_span(spec: str, name: str, size: int) -> tuple[int, int]:
    """``START:STOP`` (stop exclusive) to a pair."""
    m = re.fullmatch(r"\s*(\d*)\s*:\s*(\d*)\s*", spec)
    if not m:
        raise ConfigError(f"--{name} {spec!r}: give START:STOP, e.g. 0:{size}")
    a = int(m.group(1)) if m.group(1) else 0
    b = int(m.group(2)) if m.group(2) else size
    return a, b


def run_options(f: Callable) -> Callable:
    opts = [
        chip_kind_option,
        bench_option,
        click.option(
            "--tiles",
            default="0",
            show_default=True,
            help=f"Tiles of the region to calibrate, as every integer list in hwloop: {INT_LIST_HELP}.",
        ),
        click.option("--rows", default="0:128", show_default=True, help="Rows of the region, START:STOP."),
        click.option("--cols", default="0:128", show_default=True, help="Columns of the region, START:STOP."),
        click.option(
            "--out",
            "out",
            type=click.Path(dir_okay=False),
            default=None,
            help="Calibration file to write. Default: calibration/<chip-id>.h5",
        ),
        click.option("--force", is_flag=True, help="Overwrite an existing calibration file."),
        click.option(
            "--chip-id",
            default=None,
            help="Chip identifier stored in the file (default: from the chip, else sim-seed<N> / real).",
        ),
        click.option(
            "--cdf",
            "cdf",
            type=click.Path(dir_okay=False),
            default=None,
            help="Source CDF table of the simulated chip (a table or calibration file). "
            "Default: the built-in synthetic HfOx table.",
        ),
        click.option(
            "--seed",
            type=int,
            default=0,
            show_default=True,
            help="Seed of the simulated chip and of the device assignment.",
        ),
        click.option(
            "--v-start",
            type=FINITE_FLOAT,
            default=_CFG.v_gate_start,
            show_default=True,
            help="First SET gate voltage V_WL (V).",
        ),
        click.option(
            "--v-stop",
            type=FINITE_FLOAT,
            default=_CFG.v_gate_stop,
            show_default=True,
            help="Last SET gate voltage V_WL (V).",
        ),
        click.option(
            "--points",
            type=int,
            default=_CFG.n_conditions,
            show_default=True,
            help="Number of gate voltages in the sweep (16 or more recommended).",
        ),
        click.option(
            "--devices",
            "n_devices",
            type=int,
            default=_CFG.n_devices,
            show_default=True,
            help="Devices programmed (single shot) and read per sweep condition.",
        ),
        click.option(
            "--form-retries",
            type=int,
            default=_CFG.form_retries,
            show_default=True,
            help="Extra FORM attempts for devices that did not form.",
        ),
        click.option(
            "--reads-per-device",
            type=click.IntRange(1, 2),
            default=_CFG.reads_per_device,
            show_default=True,
            help="READs after each RESET and SET. 2 measures the read noise and takes it out of the stored "
            "levels (the simulator adds its own when it replays them).",
        ),
        click.option(
            "--log",
            "log_path",
            type=click.Path(dir_okay=False),
            default=None,
            help="HDF5 operation log. Default: runs/calibrate-<chip-id>-<UTC time>.h5",
        ),
        click.option("--no-log", is_flag=True, help="Do not write the operation log."),
        click.option("--no-progress", is_flag=True, help="Hide the progress bar (stderr)."),
        click.option("--json", "as_json", is_flag=True, help="Print a machine-readable JSON summary."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


@cli.group("calibrate", invoke_without_command=True)
@run_options
@click.pass_context
def calibrate_group(ctx: click.Context, **kw: object) -> None:
    """Calibrate a chip: form the devices, sweep the SET gate voltage, measure the conductance CDFs and
    choose 8 well-separated HCS levels plus LCS (maximising the worst-case separation of adjacent levels).

    \b
    hwloop calibrate --chip sim --out calibration/sim.h5
    hwloop calibrate --chip real --bench BENCH.toml   (virtual bench: the file `hwloop emulate` prints)
    hwloop calibrate show calibration/sim.h5 [--json]
    hwloop calibrate plot calibration/sim.h5 -o cdf.png

    The file feeds the trainer (17 weight levels Q) and the simulator (--cdf FILE). Its format is in
    docs/calibration-format.md.
    """
    if ctx.invoked_subcommand is None:
        _run(**kw)  # type: ignore[arg-type]


@calibrate_group.command("run")
@run_options
def calibrate_run(**kw: object) -> None:
    """Run a calibration (the same as `hwloop calibrate` with options)."""
    _run(**kw)  # type: ignore[arg-type]


def _run(
    *,
    kind: str,
    bench: str | None,
    tiles: str,
    rows: str,
    cols: str,
    out: str | None,
    force: bool,
    chip_id: str | None,
    cdf: str | None,
    seed: int,
    v_start: float,
    v_stop: float,
    points: int,
    n_devices: int,
    form_retries: int,
    reads_per_device: int,
    log_path: str | None,
    no_log: bool,
    no_progress: bool,
    as_json: bool,
) -> None:
    from hwloop.calibration.session import run_session
    from hwloop.chip.base import COLS, ROWS

    config = CalibrationConfig(
        v_gate_start=v_start,
        v_gate_stop=v_stop,
        n_conditions=points,
        n_devices=n_devices,
        form_retries=form_retries,
        reads_per_device=reads_per_device,
        tiles=_parse_tiles(tiles),
        rows=_parse_span(rows, "rows", ROWS),
        cols=_parse_span(cols, "cols", COLS),
        seed=seed,
    )
    ses = run_session(
        config,
        kind=kind,
        bench=bench,
        out=out,
        force=force,
        chip_id=chip_id,
        cdf=cdf,
        log_path=log_path,
        no_log=no_log,
        progress=not no_progress,
    )
    summary, res, wall_cmd_s = ses.summary, ses.result, ses.wall_cmd_s
    if as_json:
        echo_json(summary)
        return
    _print_levels(summary)
    click.echo("")
    click.echo(
        f"wrote {ses.out_path}" + (f"  (op log {ses.oplog_path}, {ses.oplog_rows:,} rows)" if ses.oplog_path else "")
    )
    ops = res.op_counts
    click.echo(
        f"wall time {res.wall_s['total']:.2f} s (forming {res.wall_s['forming']:.2f} s, sweep "
        f"{res.wall_s['sweep']:.2f} s; whole command {wall_cmd_s:.2f} s) on {summary['backend']}"
    )
    click.echo(
        f"operations: FORM {ops['FORM']:,}  SET {ops['SET']:,}  RESET {ops['RESET']:,}  "
        f"READ {ops['READ']:,}  "
        f"total {sum(ops.values()):,} device ops in {sum(res.op_calls.values()):,} array calls"
    )


def _print_levels(d: dict) -> None:
    click.echo(f"calibration {d['path']}")
    click.echo(f"chip id     {d['chip_id']}  ({d['backend']}{', SIMULATED' if d['synthetic'] else ''})")
    click.echo(f"created     {d['created_utc']}" + (f"  bench {d['bench']}" if d["bench"] else ""))
    fo, sw = d["forming"], d["sweep"]
    click.echo(
        f"forming     yield {fo['yield']:.2%} ({fo['n_formed']:,}/{fo['n_region']:,} devices, {fo['retries']} retries)"
    )
    click.echo(
        f"sweep       {sw['n_conditions']} gate voltages {sw['v_gate_start']:g}-{sw['v_gate_stop']:g} V "
        f"(step {sw['v_step'] * 1e3:.1f} mV), {sw['n_devices']} devices each"
    )
    click.echo(
        f"criterion   {d['selection']['criterion']}: worst pair {d['selection']['worst_pair']} "
        f"d = {d['selection']['min_separation']:.2f}, overlap {d['selection']['max_overlap']:.2%}"
    )
    click.echo("")
    click.echo(
        f"{'level':<6} {'V_gate (V)':>10} {'I_CC (uA)':>10} {'median (uS)':>12} {'sigma (uS)':>11} "
        f"{'d to next':>10} {'overlap':>8}"
    )
    for lv in d["levels"]:
        icc = f"{lv['icc_ua']:.1f}" if lv["kind"] == "HCS" else "-"
        sep = f"{lv['separation_to_next']:.2f}" if lv["separation_to_next"] is not None else ""
        ov = f"{lv['overlap_to_next']:.2%}" if lv["overlap_to_next"] is not None else ""
        click.echo(
            f"{lv['name']:<6} {lv['v_gate']:>10.3f} {icc:>10} {lv['median_us']:>12.2f} "
            f"{lv['sigma_us']:>11.2f} {sep:>10} {ov:>8}"
        )
    click.echo("")
    click.echo(f"weight levels Q ({len(d['q'])}, scale {d['scale_us_per_weight']:.3f} uS per unit):")
    click.echo("  " + " ".join(f"{q:+.3f}" for q in d["q"]))


@calibrate_group.command("show")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the levels and Q as JSON.")
def calibrate_show(file: str, as_json: bool) -> None:
    """Print the levels of a calibration file (V_gate, I_CC, median, sigma, separation) and the weights Q."""
    from hwloop.calibration import load_calibration

    d = load_calibration(file).describe()
    if as_json:
        echo_json(d)
    else:
        _print_levels(d)
        ops, wall = d["run"].get("op_counts") or {}, d["run"].get("wall_s") or {}
        if ops:
            click.echo("")
            click.echo(
                "recorded    "
                + "  ".join(f"{k} {v:,}" for k, v in ops.items())
                + (f"  in {wall['total']:.2f} s" if "total" in wall else "")
            )


@calibrate_group.command("plot")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False), required=True, help="Image file (png, pdf, svg).")
@click.option("--sweep", "show_sweep", is_flag=True, help="Draw every sweep condition in grey behind the levels.")
def calibrate_plot(file: str, out: str, show_sweep: bool) -> None:
    """Draw the CDFs of the levels (conductance in uS vs cumulative probability), like the paper's Fig. 4b."""
    from hwloop.calibration import load_calibration
    from hwloop.calibration.plot import plot_cdf

    cal = load_calibration(file, with_samples=show_sweep)
    click.echo(f"wrote {plot_cdf(cal, out, show_sweep=show_sweep)}")


@calibrate_group.command("select")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False), required=True, help="New calibration file.")
@click.option("--v-min", type=FINITE_FLOAT, default=None, help="Choose only among sweep gate voltages >= this (V).")
@click.option("--v-max", type=FINITE_FLOAT, default=None, help="Choose only among sweep gate voltages <= this (V).")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--json", "as_json", is_flag=True, help="Print the new levels and Q as JSON.")
def calibrate_select(file: str, out: str, v_min: float | None, v_max: float | None, force: bool, as_json: bool) -> None:
    """Choose the levels again from the full sweep stored in FILE (no chip needed), e.g. within a narrower
    gate-voltage window, and write a new calibration file."""
    from hwloop.calibration import load_calibration
    from hwloop.calibration.fileio import reselect

    if Path(out).exists() and not force:
        raise CalibrationError(f"{out} exists; give another --out or --force to overwrite it")
    if Path(out).resolve() == Path(file).resolve():
        raise CalibrationError("write the re-selection to a new file (-o), not over its source")
    reselect(file, out, v_min=v_min, v_max=v_max)
    d = load_calibration(out).describe()
    if as_json:
        echo_json(d)
    else:
        _print_levels(d)
        click.echo("")
        click.echo(f"wrote {out} (levels re-selected from {file})")
