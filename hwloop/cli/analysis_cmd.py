"""``hwloop endurance``, ``hwloop report`` and ``hwloop runs ls``: read run logs, never write them."""

from __future__ import annotations

import math
from pathlib import Path

import click

from hwloop.cli import cli
from hwloop.cli.common import echo_json, json_option
from hwloop.clicktypes import FiniteFloat
from hwloop.errors import HwloopError, RunLogError

#: shared by `endurance` and `report`
endurance_option = click.option(
    "--endurance",
    "endurance_cycles",
    type=FiniteFloat(min=1.0),
    default=1e5,
    show_default=True,
    help="Endurance budget per device (SET/RESET cycles) for the projection.",
)


@cli.command("endurance")
@click.argument("run", type=click.Path(dir_okay=False))
@json_option
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write a PNG: histogram of operations per device (Fig. 5b), operations per epoch, and a "
    "heat map of one tile (--tile, else the busiest tile).",
)
@endurance_option
@click.option(
    "--fraction",
    "budget_fraction",
    type=FiniteFloat(min=0.0, max=1.0, min_open=True),
    default=0.01,
    show_default=True,
    help="Projection: runs until this fraction of devices exceeds --endurance.",
)
@click.option(
    "--tile",
    type=click.IntRange(min=0),
    default=None,
    help="Also report this tile device by device (JSON 'tile_detail') and draw its heat map.",
)
@click.option(
    "--chunk-rows",
    type=click.IntRange(min=1024),
    default=1 << 22,
    show_default=True,
    help="Rows of the op table read per chunk.",
)
def endurance_cmd(
    run: str,
    as_json: bool,
    plot_path: str | None,
    endurance_cycles: float,
    budget_fraction: float,
    tile: int | None,
    chunk_rows: int,
) -> None:
    """Programming operations per device of RUN (an HDF5 run log; it may still be running).

    A programming operation is one device level change: one RESET row in /ops (every reprogramming
    starts with exactly one RESET, followed by a SET if the target is an HCS level). Raw pulses
    (SET + RESET) are reported too; FORM is excluded. Reports the distribution (% of devices under 25
    and over 50 operations, max, percentiles) overall, per layer (if the log maps layers to tiles) and
    per tile, operations per epoch, worn-out devices, and how many such runs fit in the endurance budget.
    """
    from hwloop.analysis.endurance import (
        EnduranceOptions,
        busiest_tile,
        count_ops,
        endurance_summary,
        failure_window,
        tile_map,
    )
    from hwloop.analysis.logfile import H5_ERRORS, open_runlog

    opts = EnduranceOptions(
        endurance_cycles=endurance_cycles, budget_fraction=budget_fraction, tile=tile, chunk_rows=chunk_rows
    )
    with open_runlog(run) as log:
        if tile is not None and tile >= log.n_tiles:
            raise RunLogError(f"--tile {tile} is outside the run's tiles 0..{log.n_tiles - 1}")
        try:
            window = failure_window(log)
        except H5_ERRORS as exc:
            raise RunLogError(f"{run}: the run log is truncated or corrupt ({exc})") from exc
        counts = count_ops(log, chunk_rows=chunk_rows, window_steps=window)
        s = endurance_summary(log, opts, counts=counts)
        if plot_path:
            from hwloop.analysis.plots import plot_endurance

            t = tile if tile is not None else busiest_tile(counts)
            plot_endurance(s, Path(plot_path), tile_map(counts, t), t)
            s["plot"] = plot_path
    if as_json:
        echo_json(s)
        return
    _print_endurance(s)


def _print_endurance(s: dict) -> None:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f} %"

    click.echo(f"run        {s['run']} ({s['status']}, {s['ops_rows']:,} op rows)")
    click.echo(f"devices    {s['devices']:,} used of {s['devices_on_chip']:,} on the chip")
    if "note" in s:
        click.echo(f"note       {s['note']}: nothing to count")
        return
    click.echo("counting   programming operation = level change = one RESET row; pulses = SET + RESET")
    p = s["percentiles"]
    click.echo(
        f"operations under 25: {pct(s['pct_under_25'])}   over 50: {pct(s['pct_over_50'])}   "
        f"max {s['max_ops']}   mean {s['mean_ops'] or 0:.2f}   " + "  ".join(f"{k} {v}" for k, v in p.items())
    )
    q = s["pulses"]
    click.echo(
        f"pulses     max {q['max_ops']}   mean {q['mean_ops'] or 0:.2f}   "
        + "  ".join(f"{k} {v}" for k, v in q["percentiles"].items())
    )
    t = s["totals"]
    click.echo(
        f"totals     FORM {t['form']:,}  SET {t['set']:,}  RESET {t['reset']:,}  READ {t['read']:,}  "
        f"READ_ALL {t['read_all']:,}"
    )
    if s.get("worn_inferred"):
        click.echo(
            f"worn       {s['worn_inferred']} device(s) marked worn from their reads and excluded from "
            f"programming (snapshot of epoch {s['worn_inferred_epoch']})"
        )
    if s["failed_known"]:
        click.echo(
            f"failed     {s['failed']} worn out, {s['failed_suspect']} suspect "
            f"(snapshots of epochs {s['failed_snapshot_epochs']}, LCS/HCS split at "
            f"{s['failed_threshold_us']:.2f} uS)"
        )
    else:
        click.echo(f"failed     unknown: {s['failed_reason']}")
    pr = s["projection"]
    runs = "no limit from this run" if pr["runs"] is None else f"{pr['runs']:,} runs"
    click.echo(
        f"projection {runs} before {100 * pr['fraction']:g} % of devices exceed "
        f"{pr['endurance_cycles']:.0e} cycles (that quantile device: {pr['ops_at_quantile']} ops/run)"
    )
    pe = s["per_epoch"]
    click.echo(
        "per epoch  "
        + "  ".join(f"{e}:{n}" for e, n in zip(pe["epoch"], pe["programs"], strict=False))
        + ("  (in progress: " + str(pe["in_progress"].get("programs", 0)) + ")" if "in_progress" in pe else "")
    )
    if s["per_layer"]:
        click.echo("per layer")
        for r in s["per_layer"]:
            click.echo(
                f"  {r['layer']:<12} tiles {r['tiles'][0]}-{r['tiles'][1] - 1}  {r['devices']:>9,} dev  "
                f"<25 {pct(r['pct_under_25'])}  >50 {pct(r['pct_over_50'])}  max {r['max_ops']}"
            )
    click.echo("per tile")
    for r in s["per_tile"]:
        click.echo(
            f"  tile {r['tile']:<4} {r['devices']:>7,} dev  mean {r['mean_ops']:.2f}  max {r['max_ops']}  "
            f"<25 {pct(r['pct_under_25'])}  >50 {pct(r['pct_over_50'])}"
        )
    if "plot" in s:
        click.echo(f"plot       {s['plot']}")


@cli.command("report")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=False))
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="report",
    show_default=True,
    help="Output folder for report.md and the PNG figures.",
)
@click.option("--no-endurance", is_flag=True, help="Skip the endurance pass over each op table.")
@endurance_option
@json_option
def report_cmd(runs: tuple[str, ...], out_dir: str, no_endurance: bool, endurance_cycles: float, as_json: bool) -> None:
    """Write a report folder (report.md + PNG figures) for one or more RUNS.

    RUNS are run logs (.h5) or folders of run logs such as a sweep folder. Runs with the same configuration
    except the seed are repetitions (mean ± std); runs that differ in m* give an accuracy-vs-m* figure.
    """
    from hwloop.analysis.report import build_report

    summary = build_report(list(runs), out_dir, with_endurance=not no_endurance, endurance_cycles=endurance_cycles)
    if as_json:
        echo_json(summary)
        return
    click.echo(f"wrote {summary['report']} and {len(summary['figures'])} figure(s)")
    for p, why in summary["skipped"]:
        click.echo(f"skipped {p}: {why}")


@cli.group("runs")
def runs_group() -> None:
    """List and inspect run logs."""


@runs_group.command("ls")
@click.argument("folder", type=click.Path(file_okay=False), default="runs")
@json_option
def runs_ls(folder: str, as_json: bool) -> None:
    """One line per run log in FOLDER (default runs/): date, configuration, status, final accuracies.
    Calibration files and calibration op logs in the folder are named as such."""
    from hwloop.analysis.runs import load_run, other_hwloop_file

    d = Path(folder)
    if not d.is_dir():
        raise RunLogError(f"{d} is not a folder (give the folder holding run logs, e.g. runs/)")
    rows = []
    for p in sorted(d.glob("*.h5")):
        try:
            r = load_run(p, with_table=False)
        except HwloopError as exc:
            rows.append(other_hwloop_file(p) or {"path": str(p), "kind": "unreadable", "error": str(exc)})
            continue
        fin = r.final_acc()
        rows.append(
            {
                "path": str(p),
                "kind": "run log",
                "created_utc": r.created_utc,
                "status": r.status,
                "tasks": r.tasks,
                "m_star": None if not math.isfinite(r.m_star) else r.m_star,
                "hidden": r.hidden,
                "chip": r.chip,
                "epochs": int(r.epoch_numbers[-1]) if r.epochs.size else 0,
                "final_acc_pct": [None if not math.isfinite(a) else round(float(a), 2) for a in fin],
            }
        )
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo(f"no run logs (*.h5) in {d}")
        return
    for r in rows:
        name = Path(r["path"]).name
        if "error" in r:
            click.echo(f"{name:<28} UNREADABLE  {r['error']}")
            continue
        if r["kind"] != "run log":
            rows_txt = "" if r["rows"] is None else f" ops={r['rows']:,}"
            click.echo(f"{name:<28} {r['created_utc'] or '?':<25} {r['kind']}: chip={r['chip_id']}{rows_txt}")
            continue
        acc = " ".join(
            f"{t}={'-' if a is None else f'{a:.2f}%'}" for t, a in zip(r["tasks"], r["final_acc_pct"], strict=False)
        )
        m = "?" if r["m_star"] is None else f"{r['m_star']:g}"
        click.echo(
            f"{name:<28} {r['created_utc']:<25} {r['status']:<11} tasks={','.join(r['tasks'])} m*={m} "
            f"hidden={r['hidden']} chip={r['chip']} epochs={r['epochs']}  {acc}"
        )
