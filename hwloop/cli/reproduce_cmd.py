"""``hwloop reproduce``: the paper's figures and tables, regenerated beside the paper's numbers."""

from __future__ import annotations

import shlex
import sys

import click

from hwloop.cli import cli
from hwloop.reproduce.presets import FIGURES, PRESETS


def _sizes(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError as exc:
        raise click.BadParameter("give three widths, e.g. 256,512,1024") from exc


@cli.command("reproduce")
@click.option(
    "--preset",
    type=click.Choice(list(PRESETS)),
    default="quick",
    show_default=True,
    help="paper: the paper's exact protocol; quick: fewer epochs and seeds (about an hour here).",
)
@click.option("--only", default=None, help=f"Comma-separated subset of {', '.join(FIGURES)} (default: all).")
@click.option(
    "--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Local worker processes (one run each)."
)
@click.option(
    "--ray",
    "ray_address",
    default=None,
    help="Run on Ray instead: local, auto, or a cluster address (see `hwloop sweep --help`).",
)
@click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="Torch threads per run (default: cores / workers)."
)
@click.option(
    "--calibration",
    type=click.Path(dir_okay=False),
    default=None,
    help="Calibration file of your chip: every experiment runs on its levels (default: built-in table).",
)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Folder with the IDX files.")
@click.option(
    "--verify-data/--no-verify-data",
    default=True,
    show_default=True,
    help="Check data files against the published checksums.",
)
@click.option("--epochs-per-task", type=click.IntRange(min=1), default=None, help="Override the preset's epochs.")
@click.option("--warmup", type=click.IntRange(min=0), default=None, help="Override the preset's warm-up.")
@click.option(
    "--train-samples", type=click.IntRange(min=1), default=None, help="Override: first N training images per task."
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=2),
    default=None,
    help="Override the QNN runs' batch size (default: hwloop train's; the BNN keeps Laborieux's 100).",
)
@click.option("--seeds", type=click.IntRange(min=1), default=None, help="Override: repetitions of every figure.")
@click.option(
    "--hidden-sizes",
    callback=_sizes,
    default=None,
    help="Override Table I's three widths (the middle one is H of the other figures), e.g. 8,16,32.",
)
@click.option("--bnn-hidden", type=click.IntRange(min=1), default=None, help="Override the BNN's hidden width.")
@click.option("--report-only", is_flag=True, help="Write the report from the runs already there; run nothing.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bars on stderr.")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Reproduce folder (created; run again with the same options to continue it).",
)
def reproduce_cmd(
    preset: str,
    only: str | None,
    workers: int,
    ray_address: str | None,
    threads: int | None,
    calibration: str | None,
    data_dir: str | None,
    verify_data: bool,
    epochs_per_task: int | None,
    warmup: int | None,
    train_samples: int | None,
    batch_size: int | None,
    seeds: int | None,
    hidden_sizes: tuple[int, ...] | None,
    bnn_hidden: int | None,
    report_only: bool,
    progress: bool,
    out: str,
) -> None:
    """Regenerate Figs. 2a, 2b/c, 4b, 5a, 5b and Table I, each number beside the paper's.

    The runs are planned on the sweep engine in OUT/sweeps/ (resumable: run the same command again after
    a crash or Ctrl-C; a run finished for one figure is reused by the others). The report is OUT/report.md
    with PNGs. A folder holds one preset only.
    """
    from hwloop.reproduce.session import reproduce

    overrides = {
        "epochs_per_task": epochs_per_task,
        "warmup": warmup,
        "train_samples": train_samples,
        "batch_size": batch_size,
        "seeds": seeds,
        "hidden_sizes": hidden_sizes,
        "bnn_hidden": bnn_hidden,
    }
    command = "hwloop " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "hwloop reproduce"
    res = reproduce(
        out,
        preset=preset,
        only=only,
        overrides=overrides,
        workers=workers,
        threads=threads,
        ray_address=ray_address,
        calibration=calibration,
        data_dir=data_dir,
        verify_data=verify_data,
        progress=progress,
        command=command,
        report_only=report_only,
    )
    for name, r in res.blocks.items():
        click.echo(
            f"{name}: {len(r['ran'])} run, {len(r['found'])} found finished ({len(r['linked'])} shared "
            f"with other figures), {len(r['failed'])} failed"
        )
    click.echo(f"report    {res.report}")
    if res.failed:
        raise click.ClickException(
            f"{len(res.failed)} run(s) failed: {', '.join(res.failed[:5])}; see the "
            f"sweep.json of each block under {out}/sweeps/ and run the command again"
        )
