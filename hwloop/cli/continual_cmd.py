"""``hwloop continual``: the continual-learning figures of a run log (accuracy matrix, average final
accuracy, average forgetting, programs per device); reads the log, never writes it."""

from __future__ import annotations

import json
from pathlib import Path

import click

from hwloop.cli import cli
from hwloop.cli.common import echo_json, json_option
from hwloop.errors import ConfigError


@cli.command("continual")
@click.argument("run", type=click.Path(dir_okay=False))
@json_option
@click.option(
    "--against",
    "baseline",
    type=click.Path(dir_okay=False),
    default=None,
    help="A second run log (e.g. the same tasks at m* = 0): compare the last task's final accuracy with it.",
)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the JSON summary (with the accuracy of every task per epoch) to this file.",
)
@click.option(
    "--plot",
    "plot",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also draw the accuracy of every task per epoch (with --against: the baseline's, dashed) and the "
    "accuracy matrix to this PNG.",
)
def continual_cmd(run: str, as_json: bool, baseline: str | None, out: str | None, plot: str | None) -> None:
    """Accuracy matrix (task i after training task j), average final accuracy, average forgetting and
    programs per device of RUN (a run log of `hwloop train`, finished or not). See docs/analysis.md."""
    from hwloop.analysis.continual import compare_last_task, format_continual, read_continual

    for opt, path in (("--out", out), ("--plot", plot)):
        if path is not None and (Path(path).is_dir() or not Path(path).parent.is_dir()):
            raise ConfigError(f"{opt} {path}: give a file in an existing folder")
    s = read_continual(run)
    base = None if baseline is None else read_continual(baseline)
    if base is not None:
        s["last_task_vs"] = compare_last_task(s, base)
    if out is not None:
        Path(out).write_text(json.dumps(s, indent=1) + "\n")
    if plot is not None:
        from hwloop.analysis.plots import plot_continual

        plot_continual(s, Path(plot), base)
    if as_json:
        echo_json(s)
        return
    for line in format_continual(s):
        click.echo(line)
