"""``hwloop estimate``: time and energy of a plan (an op log, a run log, a calibration sweep or a training
run) on a bench. Formats: docs/characterise.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from hwloop.chip.factory import load_table_option
from hwloop.cli import cli
from hwloop.cli.common import echo_json
from hwloop.errors import ConfigError


@cli.command("estimate")
@click.argument("plan", type=click.Path(dir_okay=False), required=False)
@click.option(
    "--bench",
    type=click.Path(dir_okay=False),
    required=True,
    help="Bench file whose pulse widths, link rate and batch size the estimate uses.",
)
@click.option(
    "--cdf",
    "--calibration",
    "cdf",
    type=click.Path(dir_okay=False),
    default=None,
    help="Calibration or CDF table for I_CC and conductances (default: the built-in table).",
)
@click.option(
    "--calibration-sweep",
    is_flag=True,
    help="Estimate a calibration sweep with the default `hwloop calibrate` options (PLAN not needed).",
)
@click.option(
    "--train-config",
    type=click.Path(dir_okay=False),
    default=None,
    help="Estimate a training run from a JSON file of `hwloop train` options (TrainConfig fields).",
)
@click.option(
    "--programs-per-step",
    type=click.FloatRange(0, None),
    default=500.0,
    show_default=True,
    help="With --train-config: device programs per training step (take it from an earlier run).",
)
@click.option(
    "--frame-overhead-ms",
    type=click.FloatRange(0, 1000),
    default=3.0,
    show_default=True,
    help="Host turnaround per link frame (ms; 3 measured on the virtual bench); not in the bench file.",
)
@click.option(
    "--form-steps",
    type=float,
    default=float("nan"),
    help="Mean forming-ramp steps a device needs (default: half the bench's ramp).",
)
@click.option(
    "--settle-ns",
    type=click.FloatRange(0, 1e6),
    default=200.0,
    show_default=True,
    help="Board settling time per batch entry (ns).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the estimate as JSON.")
def estimate_cmd(
    plan: str | None,
    bench: str,
    cdf: str | None,
    calibration_sweep: bool,
    train_config: str | None,
    programs_per_step: float,
    frame_overhead_ms: float,
    settle_ns: float,
    form_steps: float,
    as_json: bool,
) -> None:
    """Predict bench time and programming energy of a plan before running it.

    PLAN is an op log (calibrate, retention, cycle, verify) or a run log (train): the estimate replays its
    array calls on --bench. Or give --calibration-sweep or --train-config. The model is in
    docs/characterise.md.

    \b
    hwloop estimate runs/cycle-sim-seed0-...-ops.h5 --bench instruments/virtual.toml
    hwloop estimate --calibration-sweep --bench instruments/example-keithley2636b.toml
    """
    from hwloop.characterise import estimate as E
    from hwloop.instruments.bench import load_bench

    chosen = sum(bool(x) for x in (plan, calibration_sweep, train_config))
    if chosen != 1:
        raise ConfigError("give exactly one plan: an op log / run log (PLAN), --calibration-sweep or --train-config")
    b = load_bench(bench)
    table = load_table_option(cdf)
    v_set = None
    if plan:
        if not Path(plan).is_file():
            raise ConfigError(f"plan {plan} does not exist")
        p = E.plan_from_log(plan, table)
    elif calibration_sweep:
        from hwloop.calibration.procedure import CalibrationConfig

        cc = CalibrationConfig.default()
        p, v_set = E.plan_calibration(cc, len(b.form_conditions()))
    else:
        p = _train_plan(str(train_config), programs_per_step)
    est = E.estimate(p, b, table, E.Timing(frame_overhead_ms * 1e-3, settle_ns, form_steps), set_v_gates=v_set)
    if as_json:
        echo_json(est)
        return
    click.echo(f"plan    {est['source']} ({est['array_calls']:,} array calls, {est['frames']:,} frames)")
    click.echo("ops     " + "  ".join(f"{k} {v:,}" for k, v in est["ops"].items()))
    tp = est["time_parts_s"]
    click.echo(
        f"time    {est['time_s']:.3f} s on {est['bench']} (frames {tp['frame_overhead']:.3f} s, link "
        f"{tp['link']:.3f} s, pulses/reads {tp['pulses_and_reads']:.3f} s)"
    )
    click.echo(
        f"energy  {est['energy_j']:.3e} J (" + ", ".join(f"{k} {v:.2e}" for k, v in est["energy_by_op_j"].items()) + ")"
    )
    if est["assumptions"]["note"]:
        click.echo(f"note    {est['assumptions']['note']}")


def _train_plan(path: str, programs_per_step: float) -> Any:
    import json

    from hwloop.characterise import estimate as E
    from hwloop.crossbar import CrossbarMap
    from hwloop.training.config import TrainConfig

    try:
        d = json.loads(Path(path).read_text())
        cfg = TrainConfig(**{k: v for k, v in d.items() if k in TrainConfig.__dataclass_fields__})
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"--train-config {path}: not a JSON object of `hwloop train` options ({exc})") from exc
    cfg.validate()
    n_tasks = len([t for t in cfg.tasks.split(",") if t.strip()])
    h = cfg.hidden
    cmap = CrossbarMap([("fc1", (h, 784)), ("fc2", (h, h)), ("fc3", (10, h))])
    samples = cfg.train_samples or 60000
    steps = n_tasks * cfg.epochs_per_task * (samples // cfg.batch_size)
    return E.plan_training(cmap.n_devices_used, steps, n_tasks * cfg.epochs_per_task, programs_per_step)
