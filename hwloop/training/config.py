"""The training configuration (every option of ``hwloop train``), kept free of torch so the CLI starts fast."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from hwloop.errors import ConfigError, RunLogError

BN_MODES = ("per-task", "shared")
CHIPS = ("sim", "real", "none")
INIT_MODES = ("midpoints", "center", "uniform")
MODELS = ("qnn", "bnn")
BN_EVAL_MODES = ("batch", "running")
WS_SOURCES = ("nominal", "read")
CLAMP_MODES = ("hard", "none", "soft")
DEVICES = ("auto", "cpu", "cuda")
PROGRAM_MODES = ("single-shot", "verify")
#: consolidation of the hidden weights: Algorithm 1 (paper), importance-aware (optim_importance.py) or
#: Fisher-weighted (optim_fisher.py)
CONSOLIDATION_MODES = ("paper", "importance", "fisher")
#: consolidation of a shared BN (optim_bn.py, bn_frozen.py): none, metaplastic affine parameters with
#: batch statistics, or metaplastic affine parameters with statistics frozen after the first task
BN_CONSOLIDATE_MODES = ("off", "meta-batch", "meta-frozen")
#: configuration keys that do not change the experiment: where files are, whether the data are checked, how
#: the run is shown and how fast it runs. Two runs whose other keys agree are the same experiment: a run log
#: resumes only with the same experiment (``--resume``), and a sweep folder continues only with it.
EXPERIMENT_FREE = frozenset(
    {"out", "progress", "data_dir", "download", "verify_data", "threads", "bench", "device", "flush_s"}
)


@dataclass
class TrainConfig:
    """Every option of ``hwloop train``; defaults follow the paper (see docs/training.md)."""

    tasks: str = "mnist,fashion-mnist"
    epochs_per_task: int = 50
    warmup: int = 10
    m_star: float = 3.0
    hidden: int = 512
    lr: float = 2e-3
    #: 700, not the unstated batch of the paper: docs/training.md, docs/results/2026-12-01-fmnist-gap-screening-r2.md
    batch_size: int = 700
    seed: int = 0
    train_samples: int | None = None
    chip: str = "sim"
    calibration: str | None = None
    bench: str | None = None
    real_tiles: str | None = None
    bn_mode: str = "per-task"
    adam_reset: bool = True
    init: str = "center"
    eval_batch: int = 1000
    data_dir: str | None = None
    download: bool = False
    verify_data: bool = True
    out: str | None = None
    threads: int | None = None
    device: str = "auto"  # torch device of the model and optimizer (the chip stays on the host)
    flush_s: float = 1.0  # group commit: the run log is flushed at most this often (and at every epoch end)
    progress: bool = True
    #: qnn: the paper's metaplastic QNN; bnn: Laborieux et al.'s metaplastic BNN (``--chip none`` only)
    model: str = "qnn"
    #: BN statistics at test time: batch (as Laborieux's code) or running averages of training
    bn_eval: str = "batch"
    #: learning rate multiplied by this factor after every epoch of a task (reset at each task); 1 = none
    lr_decay: float = 1.0
    #: W_S of Algorithm 1: nominal level, or the weight read from the chip (not with --chip none)
    ws_source: str = "nominal"
    #: hidden weights clamped to [Q_0, Q_n] (hard), not clamped, or soft-clamped (docs/training.md)
    clamp: str = "hard"
    program: str = "single-shot"  # or "verify" (hwloop.chip.verify); see docs/characterise.md
    verify_tolerance: float = 1.0
    verify_max_pulses: int = 10
    wear_strikes: int = 3
    retention_model: str | None = None  # simulated tiles replay this retention file (hwloop retention)
    endurance_model: str | None = None  # simulated tiles draw budgets from this file (hwloop cycle)
    #: weights: paper (Algorithm 1) or importance (a hidden variable per weight sets its m*; docs/training.md)
    consolidation: str = "paper"
    importance_scale: float = 0.1  # |h| (weight units) at which a weight gets the full m*
    fisher_hold: float = 0.2  # fisher: the fraction of each layer's weights (most important first) held in full
    #: gradient projection (optim_projection.py): energy of the finished tasks' layer inputs protected; 0 = off
    projection_energy: float = 0.0
    #: shared BN: off (plain Adam, the paper), meta-batch or meta-frozen (docs/training.md)
    bn_consolidate: str = "off"
    bn_meta_scale: float = 0.1  # drift of a BN affine parameter from its reference where M = 1 - tanh^2(m*)

    def validate(self) -> None:
        if self.chip not in CHIPS:
            raise ConfigError(f"unknown --chip {self.chip!r}; choose sim, real or none")
        if self.bn_mode not in BN_MODES:
            raise ConfigError(f"unknown --bn-mode {self.bn_mode!r}; choose {' or '.join(BN_MODES)}")
        if self.init not in INIT_MODES:
            raise ConfigError(f"unknown --init {self.init!r}; choose one of {', '.join(INIT_MODES)}")
        for name, allowed in (
            ("model", MODELS),
            ("bn_eval", BN_EVAL_MODES),
            ("ws_source", WS_SOURCES),
            ("clamp", CLAMP_MODES),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"unknown --{name.replace('_', '-')} {getattr(self, name)!r}; choose one of {', '.join(allowed)}"
                )
        if self.model == "bnn" and self.chip != "none":
            raise ConfigError("--model bnn is the software baseline: run it with --chip none")
        if self.ws_source == "read" and self.chip == "none":
            raise ConfigError(
                "--ws-source read takes W_S from the chip's reads, and --chip none has none: "
                "use --chip sim (or real), or --ws-source nominal"
            )
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(f"--lr-decay {self.lr_decay}: give a factor in (0, 1] (1 = no decay)")
        for name in ("epochs_per_task", "hidden", "batch_size", "eval_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.batch_size < 2:  # batch-norm in training mode needs two samples per channel
            raise ConfigError("--batch-size must be at least 2 (batch-norm normalises over the batch)")
        for name in ("m_star", "lr"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ConfigError(f"--{name.replace('_', '-')} {v!r} is not a finite number")
        if not (self.warmup >= 0 and self.m_star >= 0 and self.lr > 0):
            raise ConfigError("--warmup and --m-star must be >= 0 and --lr > 0")
        if self.out:
            _check_out_path(self.out)
        if self.train_samples is not None and self.train_samples < self.batch_size:
            raise ConfigError(f"--train-samples {self.train_samples} is smaller than one batch ({self.batch_size})")
        if self.program not in PROGRAM_MODES:
            raise ConfigError(f"unknown --program {self.program!r}; choose {' or '.join(PROGRAM_MODES)}")
        if not (self.verify_tolerance > 0 and self.verify_tolerance < float("inf")):
            raise ConfigError(f"--verify-tolerance must be a finite number > 0, got {self.verify_tolerance}")
        if not 1 <= self.verify_max_pulses <= 255 or self.wear_strikes < 0:
            raise ConfigError("--verify-max-pulses must be 1..255 and --wear-strikes >= 0")
        if self.device not in DEVICES:
            raise ConfigError(f"unknown --device {self.device!r}; choose auto, cpu or cuda")
        if not (0 <= self.flush_s <= 3600):  # also refuses NaN
            raise ConfigError(f"--flush-s {self.flush_s} must be a number of seconds between 0 and 3600")
        if self.chip == "real" and not self.bench:
            raise ConfigError("--chip real needs --bench FILE (e.g. the bench printed by `hwloop emulate`)")
        _check_consolidation(self)

    def experiment(self) -> dict:
        """The configuration keys that define the experiment (compared on --resume)."""
        return experiment_of(asdict(self))


def experiment_of(config: dict) -> dict:
    """The experiment of a stored configuration: a key missing from an older log or manifest has its
    default (that was its behaviour then); keys in ``EXPERIMENT_FREE`` are left out."""
    return {k: v for k, v in {**asdict(TrainConfig()), **config}.items() if k not in EXPERIMENT_FREE}


def experiment_diff(old: dict, new: dict) -> list[str]:
    """The experiment keys on which two configurations differ (sorted)."""
    a, b = experiment_of(old), experiment_of(new)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def check_same_experiment(path: str, stored: dict, cfg: TrainConfig) -> None:
    """``--resume``: refuse a run log whose stored configuration is another experiment than ``cfg``."""
    diff = experiment_diff(stored, asdict(cfg))
    if diff:
        detail = describe_difference(diff, experiment_of(stored), cfg.experiment(), "log")
        raise RunLogError(f"cannot resume {path} with a changed configuration ({detail}); drop those options")


def describe_difference(keys: list[str], old: dict, new: dict, old_label: str, limit: int = 4) -> str:
    """``k: <old_label> 'x' vs now 'y', ...`` for the first ``limit`` of ``keys`` (the one message of a
    refused resume or sweep continuation)."""
    return ", ".join(f"{k}: {old_label} {old.get(k)!r} vs now {new.get(k)!r}" for k in keys[:limit])


def _check_consolidation(cfg: TrainConfig) -> None:
    """The options of issue 16 (``--consolidation``, ``--bn-consolidate`` and their scales)."""
    for name, allowed in (("consolidation", CONSOLIDATION_MODES), ("bn_consolidate", BN_CONSOLIDATE_MODES)):
        if getattr(cfg, name) not in allowed:
            raise ConfigError(
                f"unknown --{name.replace('_', '-')} {getattr(cfg, name)!r}; choose one of {', '.join(allowed)}"
            )
    for name in ("importance_scale", "bn_meta_scale"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < math.inf:  # also refuses NaN
            raise ConfigError(f"--{name.replace('_', '-')} {v!r}: give a finite number > 0")
    if cfg.model == "bnn" and (cfg.consolidation != "paper" or cfg.bn_consolidate != "off"):
        raise ConfigError("--consolidation and --bn-consolidate are options of the QNN: drop them with --model bnn")
    if cfg.model == "bnn" and cfg.clamp != "hard":
        # hard is the default; the BNN's rule never clamps W_h (Laborieux et al.), so other modes would be ignored
        raise ConfigError(
            f"--clamp {cfg.clamp} is an option of the QNN (the BNN never clamps W_h): drop it with --model bnn"
        )
    e = cfg.projection_energy
    if isinstance(e, bool) or not isinstance(e, int | float) or not 0 <= e < 1:  # also refuses NaN
        raise ConfigError(f"--projection-energy {e!r}: give a fraction in [0, 1) (0 turns the projection off)")
    if e > 0 and cfg.model == "bnn":
        raise ConfigError("--projection-energy is an option of the QNN: drop it with --model bnn")
    h = cfg.fisher_hold
    if isinstance(h, bool) or not isinstance(h, int | float) or not 0 < h <= 1:  # also refuses NaN
        raise ConfigError(f"--fisher-hold {h!r}: give the fraction of weights held in full, in (0, 1]")
    if cfg.consolidation in ("importance", "fisher") and (cfg.ws_source != "nominal" or cfg.clamp == "soft"):
        raise ConfigError(
            f"--consolidation {cfg.consolidation} has its own rule: it takes W_S from the nominal level and "
            "clamps hard or not at all; drop --ws-source read / --clamp soft"
        )
    if cfg.bn_consolidate != "off":
        if cfg.bn_mode != "shared":
            raise ConfigError(
                f"--bn-consolidate {cfg.bn_consolidate} consolidates a shared BN: add --bn-mode shared "
                "(a per-task BN is never trained again)"
            )
        if cfg.bn_eval != "batch":
            raise ConfigError(
                f"--bn-consolidate {cfg.bn_consolidate} sets the BN statistics itself: drop --bn-eval running"
            )


def _check_out_path(out: str) -> None:
    """Refuse an output path that cannot be created: one of its parents is a regular file, or it is a folder."""
    p = Path(out)
    if p.is_dir():
        raise ConfigError(f"--out {out}: is a folder; give a file name (e.g. {p / 'run.h5'})")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"--out {out}: {parent} is a file, not a folder; choose another path")
            return
