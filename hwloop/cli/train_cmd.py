"""``hwloop train``: the metaplastic QNN in the hardware loop (Algorithm 1), logged to HDF5."""

from __future__ import annotations

from dataclasses import asdict

import click
from click.core import ParameterSource

from hwloop.cli import cli
from hwloop.cli.common import echo_json
from hwloop.clicktypes import FiniteFloat
from hwloop.training.config import (
    BN_CONSOLIDATE_MODES,
    BN_EVAL_MODES,
    BN_MODES,
    CHIPS,
    CLAMP_MODES,
    CONSOLIDATION_MODES,
    DEVICES,
    INIT_MODES,
    MODELS,
    PROGRAM_MODES,
    WS_SOURCES,
    TrainConfig,
)

# every option's parameter name is its TrainConfig field
_D = TrainConfig()


@cli.command("train")
@click.option(
    "--chip",
    type=click.Choice(list(CHIPS)),
    default=_D.chip,
    show_default=True,
    help="Where the weights live: simulated chip, real bench (+ simulated tiles), or ideal levels.",
)
@click.option(
    "--tasks",
    default=_D.tasks,
    show_default=True,
    help="Comma-separated task sequence: mnist, fashion-mnist, permuted-mnist:<k>.",
)
@click.option("--epochs-per-task", type=click.IntRange(min=1), default=_D.epochs_per_task, show_default=True)
@click.option(
    "--warmup",
    type=click.IntRange(min=0),
    default=_D.warmup,
    show_default=True,
    help="First epochs of the run trained with m* = 0.",
)
@click.option(
    "--m-star",
    type=FiniteFloat(min=0),
    default=_D.m_star,
    show_default=True,
    help="Metaplasticity strength m* (Eq. 2); 0 disables metaplasticity.",
)
@click.option(
    "--hidden",
    type=click.IntRange(min=1),
    default=_D.hidden,
    show_default=True,
    help="Neurons per hidden layer (784-H-H-10).",
)
@click.option(
    "--lr",
    type=FiniteFloat(min=0, min_open=True),
    default=_D.lr,
    show_default=True,
    help="Adam learning rate (sets the time scale of m*, see docs/training.md).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=_D.batch_size,
    show_default=True,
    help="Images per training step. The paper gives none: 700 meets both of its accuracies (docs/training.md); "
    "100 is the earlier default and Laborieux's BNN batch.",
)
@click.option("--seed", type=int, default=_D.seed, show_default=True)
@click.option(
    "--train-samples",
    type=click.IntRange(min=1),
    default=None,
    help="Use only the first N training images of each task (quick runs).",
)
@click.option(
    "--calibration",
    "--cdf",
    "calibration",
    type=click.Path(dir_okay=False),
    default=None,
    help="Calibration file (or CDF table) giving the levels Q and the simulated devices. "
    "Default: the built-in synthetic table.",
)
@click.option("--bench", type=click.Path(dir_okay=False), default=None, help="Bench file for --chip real.")
@click.option(
    "--real-tiles",
    default=None,
    help="With --chip real: the model's tiles placed on the real chip: an index (5), a list (0,5) or "
    "an inclusive range (0-3), as every integer list in hwloop ('2' is tile 2 alone). "
    "Default: as many as the bench holds. The rest are simulated from the same calibration.",
)
@click.option(
    "--bn-mode",
    type=click.Choice(list(BN_MODES)),
    default=_D.bn_mode,
    show_default=True,
    help="Batch-norm per task (the paper's task-incremental setting) or shared across tasks.",
)
@click.option(
    "--adam-reset/--no-adam-reset",
    default=_D.adam_reset,
    show_default=True,
    help="Re-create Adam's state at each task switch.",
)
@click.option(
    "--init",
    type=click.Choice(list(INIT_MODES)),
    default=_D.init,
    show_default=True,
    help="Hidden-weight initialisation: Gaussians centred between adjacent levels (midpoints: any "
    "interval; center: the two next to zero), or uniform.",
)
@click.option(
    "--model",
    type=click.Choice(list(MODELS)),
    default=_D.model,
    show_default=True,
    help="qnn: the paper's metaplastic QNN; bnn: Laborieux et al.'s metaplastic BNN baseline (--chip "
    "none; --m-star is its meta, e.g. --hidden 4096 --lr 5e-3 --m-star 1.5 --warmup 0).",
)
@click.option(
    "--bn-eval",
    type=click.Choice(list(BN_EVAL_MODES)),
    default=_D.bn_eval,
    show_default=True,
    help="BN statistics at test time: of the test batch, or running averages of training.",
)
@click.option(
    "--lr-decay",
    type=FiniteFloat(min=0, max=1, min_open=True),
    default=_D.lr_decay,
    show_default=True,
    help="Learning rate times this factor after each epoch of a task (reset per task).",
)
@click.option(
    "--ws-source",
    type=click.Choice(list(WS_SOURCES)),
    default=_D.ws_source,
    show_default=True,
    help="W_S of Algorithm 1: the nominal level, or the weight read from the chip (read; not with --chip none).",
)
@click.option(
    "--clamp",
    type=click.Choice(list(CLAMP_MODES)),
    default=_D.clamp,
    show_default=True,
    help="Hidden weights W_H: hard-clamped to [Q_0, Q_n], not clamped (none), or soft: outward steps past "
    "an outer level scaled by 1 - tanh^2(m* * overshoot / outer interval) (docs/training.md).",
)
@click.option(
    "--consolidation",
    type=click.Choice(list(CONSOLIDATION_MODES)),
    default=_D.consolidation,
    show_default=True,
    help="Hidden weights: paper (Algorithm 1, one m* for all), importance (a hidden variable per "
    "weight accumulates consistent updates and scales its m*) or fisher (each finished task's Fisher "
    "information sets each weight's m*; docs/training.md).",
)
@click.option(
    "--importance-scale",
    type=FiniteFloat(min=0, min_open=True),
    default=_D.importance_scale,
    show_default=True,
    help="With --consolidation importance: |h| (weight units) at which a weight gets the full m*.",
)
@click.option(
    "--fisher-hold",
    type=FiniteFloat(min=0, min_open=True, max=1),
    default=_D.fisher_hold,
    show_default=True,
    help="With --consolidation fisher: the fraction of each layer's weights (the most important to the "
    "finished tasks) held with the full m*; the others with m* scaled by their Fisher information.",
)
@click.option(
    "--projection-energy",
    type=FiniteFloat(min=0, max=1, max_open=True),
    default=_D.projection_energy,
    show_default=True,
    help="Gradient projection: at each task switch, protect this fraction of the energy of the finished "
    "tasks' inputs to each layer (the gradients lose their component along them; 0 = off; docs/training.md).",
)
@click.option(
    "--bn-consolidate",
    type=click.Choice(list(BN_CONSOLIDATE_MODES)),
    default=_D.bn_consolidate,
    show_default=True,
    help="With --bn-mode shared: off (plain Adam, the paper), meta-batch (metaplastic affine parameters, "
    "batch statistics) or meta-frozen (metaplastic affine parameters, statistics frozen after task 1).",
)
@click.option(
    "--bn-meta-scale",
    type=FiniteFloat(min=0, min_open=True),
    default=_D.bn_meta_scale,
    show_default=True,
    help="With --bn-consolidate: drift of a BN parameter from its task-start value where its steps "
    "away are damped by 1 - tanh^2(m*).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder with the IDX files (searched first; then $HWLOOP_DATA, /usr/share/datasets, the cache).",
)
@click.option("--download", is_flag=True, help="Fetch missing data sets from the official mirrors.")
@click.option(
    "--verify-data/--no-verify-data",
    default=_D.verify_data,
    show_default=True,
    help="Check data files against the published checksums (turn off for your own IDX subsets).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Run log path. Default: runs/<date>-<chip>-m<m*>-h<H>-s<seed>.h5",
)
@click.option(
    "--resume",
    type=click.Path(dir_okay=False),
    default=None,
    help="Continue a crashed or interrupted run from its last checkpoint.",
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Torch CPU threads.")
@click.option(
    "--program",
    type=click.Choice(list(PROGRAM_MODES)),
    default=_D.program,
    show_default=True,
    help="Device programming: one RESET+SET (the paper's), or program-and-verify (retry until the read "
    "is within the level's window).",
)
@click.option(
    "--verify-tolerance",
    type=FiniteFloat(min=0, min_open=True, max=1e6),
    default=_D.verify_tolerance,
    show_default=True,
    help="Verify window: median +- this many sigma of the level (calibration).",
)
@click.option(
    "--verify-max-pulses",
    type=click.IntRange(1, 255),
    default=_D.verify_max_pulses,
    show_default=True,
    help="Verify budget: SET attempts (each after a RESET) per program.",
)
@click.option(
    "--retention",
    "retention_model",
    type=click.Path(dir_okay=False),
    default=None,
    help="Simulated tiles replay this retention model (a file from `hwloop retention`).",
)
@click.option(
    "--endurance-model",
    type=click.Path(dir_okay=False),
    default=None,
    help="Simulated tiles draw device budgets from this endurance model (a file from `hwloop cycle`).",
)
@click.option(
    "--wear-strikes",
    type=click.IntRange(min=0),
    default=_D.wear_strikes,
    show_default=True,
    help="Mark a device worn after this many programs in a row whose read-back is in the wrong state "
    "class (real chips and --program verify; 0: never).",
)
@click.option(
    "--device",
    type=click.Choice(list(DEVICES)),
    default=_D.device,
    show_default=True,
    help="Torch device of the model and optimizer (auto: cuda when a GPU is visible). The chip stays on "
    "the host; only changed weights cross.",
)
@click.option(
    "--flush-s",
    type=FiniteFloat(min=0, max=3600),
    default=_D.flush_s,
    show_default=True,
    help="Group commit: flush the run log at most every this many seconds (and at every epoch end, "
    "checkpoint and stop). A killed run loses at most this much of its operation log.",
)
@click.option(
    "--progress/--no-progress",
    default=_D.progress,
    show_default=True,
    help="Progress bars, and an epoch line above them, on stderr; without them, one plain line per epoch "
    "on stdout (not with --json).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary (final_acc per task, log, ...).")
@click.pass_context
def train_cmd(ctx: click.Context, resume: str | None, progress: bool, as_json: bool, **opts: object) -> None:
    """Train the metaplastic QNN sequentially on the tasks, with its weights on the chip.

    Defaults follow the paper: 784-512-512-10, MNIST then Fashion-MNIST, 50 epochs each, 10 warm-up
    epochs, m* = 3; the batch the paper leaves open is 700 (docs/training.md; the BNN baseline of
    --model bnn is Laborieux's at --batch-size 100). Every chip operation goes to the HDF5 run log.
    """
    from hwloop.experiments import train
    from hwloop.orchestrator import config_from_log, epoch_line

    if resume:
        base = config_from_log(resume)
        explicit = {k: v for k, v in opts.items() if ctx.get_parameter_source(k) not in (ParameterSource.DEFAULT, None)}
        cfg = TrainConfig(**{k: v for k, v in base.items() if k in asdict(TrainConfig())})
        for k, v in explicit.items():
            setattr(cfg, k, v)
    else:
        cfg = TrainConfig(**opts)  # type: ignore[arg-type]
    cfg.progress = progress
    # without the bar (nohup, a scheduler's log file): one plain line per epoch on stdout, the line the bar
    # writes above itself on stderr; --json keeps stdout for its summary
    on_epoch = None if progress or as_json else (lambda rec: click.echo(epoch_line(rec)))
    try:
        result = train(cfg, resume=resume, on_epoch=on_epoch)
    except KeyboardInterrupt:
        log = resume or cfg.out
        if log:
            click.echo(
                f"hwloop: interrupted; the run log {log} keeps every flushed step. "
                f"Continue from its last checkpoint with: hwloop train --resume {log}",
                err=True,
            )
        else:
            click.echo("hwloop: interrupted before the run log was created", err=True)
        raise SystemExit(130) from None
    if as_json:
        echo_json(result.as_dict())
        return
    click.echo("")
    click.echo(f"run log   {result.log}")
    click.echo(
        f"status    {result.status}: {result.epochs} epochs, {result.steps:,} steps, "
        f"{result.programs:,} device programs, {result.wall_s:.0f} s"
    )
    if result.acc_after_task:
        names = result.tasks
        click.echo("")
        click.echo("test accuracy (%) after each task:")
        click.echo(f"{'after':<18}" + "".join(f"{n:>18}" for n in names))
        for after, accs in result.acc_after_task.items():
            cells = (f"{100 * accs[n]:>18.2f}" if n in accs else f"{'-':>18}" for n in names)
            click.echo(f"{after:<18}" + "".join(cells))
    click.echo("")
    click.echo("final: " + ", ".join(f"{n} {100 * a:.2f}%" for n, a in result.final_acc.items()))
