"""``hwloop sweep``: train every point of a grid (m*, H, seeds[, lr]) into one sweep folder; resumable."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from hwloop.cli import cli
from hwloop.cli import train_cmd as _train_cmd
from hwloop.cli.common import echo_json
from hwloop.intlist import INT_LIST_HELP
from hwloop.sweep import AXES, RAY_LOG_MODES
from hwloop.training.config import TrainConfig

#: options of ``hwloop train`` that are per point (grid axes) or per executor in a sweep: redefined here
_NOT_SHARED = {"seed", "m_star", "hidden", "lr", "out", "resume", "threads", "progress", "as_json"}
_D = TrainConfig()


def _shared_train_options() -> list[click.Parameter]:
    """The options of ``hwloop train`` that a sweep passes to every run, copied (same names, types, help)."""
    return [copy.copy(p) for p in _train_cmd.train_cmd.params if p.name not in _NOT_SHARED]


_SHARED = _shared_train_options()
_SHARED_NAMES = [p.name for p in _SHARED]


def _source(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)


@cli.command("sweep")
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False),
    required=True,
    help="Sweep folder (e.g. runs/mstar/): sweep.json, one run log per point, summary.csv/.md. "
    "Running again with the same folder continues the sweep.",
)
@click.option(
    "--m",
    "--m-star",
    "m_star",
    default=None,
    metavar="LIST",
    help=f"m* values, comma-separated (e.g. 0,1,2,3,4,5). Default: {_D.m_star:g}.",
)
@click.option(
    "--hidden",
    default=None,
    metavar="LIST",
    help=f"Hidden-layer sizes H, comma-separated (e.g. 256,512,1024). Default: {_D.hidden}.",
)
@click.option(
    "--seeds",
    default=None,
    metavar="LIST",
    help=f"Seeds, as every integer list in hwloop: {INT_LIST_HELP}. '5' is seed 5 alone; five seeds "
    "are 0-4. Default: seed 0.",
)
@click.option(
    "--lr",
    default=None,
    metavar="LIST",
    help=f"Learning rate; several values (comma-separated) make lr a grid axis. Default: {_D.lr:g}.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Local worker processes (runs at the same time).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Torch threads per run. Default: max(1, cores // workers); with --ray: --cpus-per-run.",
)
@click.option(
    "--ray",
    "ray_address",
    default=None,
    metavar="local|auto|ADDRESS",
    help="Run each point as a Ray task: 'local' starts Ray on this machine, 'auto' joins the running "
    "cluster (ray start / RAY_ADDRESS), or a cluster address (ray://head:10001).",
)
@click.option(
    "--cpus-per-run",
    type=click.IntRange(min=1),
    default=None,
    help="With --ray: CPUs Ray reserves for each run (and its torch threads). Default: 1.",
)
@click.option(
    "--ray-logs",
    type=click.Choice(RAY_LOG_MODES),
    default=RAY_LOG_MODES[0],
    show_default=True,
    help="With --ray: workers write the run logs into the sweep folder (shared file system), or "
    "return each log's bytes to this driver at the end of the run.",
)
@click.option(
    "--retry-failed/--skip-failed",
    default=True,
    show_default=True,
    help="Run points marked failed again (resumed from their checkpoints) or leave them.",
)
@click.option("--dry-run", is_flag=True, help="Print the points and what would happen to each, run nothing.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar over points (stderr).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary instead of the table.")
@click.pass_context
def sweep_cmd(
    ctx: click.Context,
    out: str,
    m_star: str | None,
    hidden: str | None,
    seeds: str | None,
    lr: str | None,
    workers: int,
    threads: int | None,
    ray_address: str | None,
    cpus_per_run: int | None,
    ray_logs: str,
    retry_failed: bool,
    dry_run: bool,
    progress: bool,
    as_json: bool,
    **train_opts: Any,
) -> None:
    """Train every point of the grid m* × H × seeds (× lr): one run log per point, in one folder.

    Every other option is an option of `hwloop train`, shared by all points. The folder gets sweep.json
    (grid, configuration, status, error and results of every point), <point>.h5 run logs (e.g.
    m3-h512-s0.h5) and summary.csv/summary.md (final accuracy, mean ± std over seeds per configuration).

    Running the command again with the same --out skips finished points and resumes the others from their
    checkpoints; options left out are taken from sweep.json, so `hwloop sweep --out DIR` continues DIR.
    The grid may grow (new values), never shrink; other options must stay the same. A failed point does not
    stop the sweep: it is marked failed in sweep.json, and the command exits 1 at the end, naming it.
    See docs/sweep.md.
    """
    from hwloop.sweep import MANIFEST_NAME, load_manifest, parse_list, parse_seeds, run_sweep, summarize

    d = Path(out)
    old = load_manifest(d) if (d / MANIFEST_NAME).is_file() else None
    parsed: dict[str, list] = {}
    if m_star is not None:
        parsed["m_star"] = parse_list(m_star, float, "--m")
    if hidden is not None:
        parsed["hidden"] = parse_list(hidden, int, "--hidden")
    if seeds is not None:
        parsed["seed"] = parse_seeds(seeds)
    if lr is not None:
        parsed["lr"] = parse_list(lr, float, "--lr")
    explicit = {k for k in _SHARED_NAMES if _source(ctx, k)}
    base = {k: train_opts[k] for k in _SHARED_NAMES}
    lr_axis = (old is not None and "lr" in old.grid) or len(parsed.get("lr", [])) > 1
    if not lr_axis and "lr" in parsed:
        base["lr"] = parsed.pop("lr")[0]
        explicit.add("lr")
    grid: dict[str, list] | None
    if old is not None and not parsed:
        grid = None  # continue the folder's grid
    else:
        defaults = {"m_star": [_D.m_star], "hidden": [_D.hidden], "seed": [0], "lr": [_D.lr]}
        grid = {}
        for a in AXES:
            if a == "lr" and not lr_axis:
                continue
            if a in parsed:
                grid[a] = parsed[a]
            elif old is not None and a in old.grid:
                grid[a] = old.grid[a]
            else:
                grid[a] = defaults[a]

    if dry_run:
        _dry_run(d, grid, base, explicit)
        return
    res = run_sweep(
        d,
        grid,
        base,
        explicit=explicit,
        workers=workers,
        threads=threads,
        ray_address=ray_address,
        ray_logs=ray_logs,
        cpus_per_run=cpus_per_run,
        progress=progress,
        retry_failed=retry_failed,
    )
    man = res.manifest
    if as_json:
        rows = summarize(man)
        for r in rows:
            r["acc"] = {t: {"mean_pct": _num(m), "std_pct": _num(s)} for t, (m, s) in r["acc"].items()}
            r["wall_s_mean"] = _num(r["wall_s_mean"])
        echo_json(
            {
                "dir": str(d),
                "counts": man.counts(),
                "ran": res.ran,
                "skipped": res.skipped,
                "failed": {n: man.point(n).error for n in res.failed},
                "wall_s": res.wall_s,
                "summary": rows,
                "summary_csv": str(res.summary_csv),
                "summary_md": str(res.summary_md),
            }
        )
    else:
        click.echo(res.summary_md.read_text() if res.summary_md else "")
        click.echo(
            f"sweep {d}: {len(man.points)} points ({', '.join(f'{k} {v}' for k, v in man.counts().items())}); "
            f"ran {len(res.ran)}, skipped {len(res.skipped)} finished, {res.wall_s:.0f} s"
        )
    unfinished = [p.name for p in man.points if p.status not in ("finished", "failed")]
    if res.failed or unfinished:
        msg = []
        if res.failed:
            lines = [f"  {n}: {man.point(n).error}" for n in res.failed[:10]]
            more = [f"  ... and {len(res.failed) - 10} more"] if len(res.failed) > 10 else []
            msg += [
                f"{len(res.failed)} of {len(man.points)} points failed (details in {d / MANIFEST_NAME}):",
                *lines,
                *more,
            ]
        if unfinished:
            msg.append(
                f"{len(unfinished)} points did not finish ({', '.join(unfinished[:10])}"
                f"{' ...' if len(unfinished) > 10 else ''}); run the command again to continue them"
            )
        raise click.ClickException("\n".join(msg))


def _num(x: float) -> float | None:
    return None if math.isnan(x) else x


def _dry_run(d: Path, grid: dict | None, base: dict, explicit: set[str]) -> None:
    from hwloop.sweep import log_state, plan

    man = plan(d, grid, base, explicit)
    click.echo(f"sweep {d}: {len(man.points)} points over {', '.join(f'{a} {len(v)}' for a, v in man.grid.items())}")
    for p in man.points:
        log = man.log_path(p)
        state = log_state(log)[0] if log.exists() else "no log"
        what = {"finished": "skip (finished)", "no log": "start"}.get(state, f"resume or restart ({state})")
        click.echo(f"  {p.name:<24} {what}")


sweep_cmd.params.extend(_SHARED)
