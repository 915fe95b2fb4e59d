"""The training configuration (every option of ``hwloop train``), kept free of torch so the CLI starts fast."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from hwloop.errors import ConfigError

BN_MODES = ("per-task", "shared")
CHIPS = ("sim", "real", "none")
INIT_MODES = ("midpoints", "center", "uniform")
DEVICES = ("auto", "cpu", "cuda")
#: configuration keys that may differ when resuming (they don't change the experiment)
RESUME_FREE = {"out", "resume", "progress", "data_dir", "download", "threads", "bench", "device", "flush_s"}


@dataclass
class TrainConfig:
    """Every option of ``hwloop train``; defaults follow the paper (see docs/training.md)."""

    tasks: str = "mnist,fashion-mnist"
    epochs_per_task: int = 50
    warmup: int = 10
    m_star: float = 3.0
    hidden: int = 512
    lr: float = 2e-3
    batch_size: int = 100
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

    def validate(self) -> None:
        if self.chip not in CHIPS:
            raise ConfigError(f"unknown --chip {self.chip!r}; choose sim, real or none")
        if self.bn_mode not in BN_MODES:
            raise ConfigError(f"unknown --bn-mode {self.bn_mode!r}; choose {' or '.join(BN_MODES)}")
        if self.init not in INIT_MODES:
            raise ConfigError(f"unknown --init {self.init!r}; choose one of {', '.join(INIT_MODES)}")
        for name in ("epochs_per_task", "hidden", "batch_size", "eval_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.warmup < 0 or self.m_star < 0 or self.lr <= 0:
            raise ConfigError("--warmup and --m-star must be >= 0 and --lr > 0")
        if self.train_samples is not None and self.train_samples < self.batch_size:
            raise ConfigError(f"--train-samples {self.train_samples} is smaller than one batch ({self.batch_size})")
        if self.device not in DEVICES:
            raise ConfigError(f"unknown --device {self.device!r}; choose auto, cpu or cuda")
        if not (0 <= self.flush_s <= 3600):  # also refuses NaN
            raise ConfigError(f"--flush-s {self.flush_s} must be a number of seconds between 0 and 3600")
        if self.chip == "real" and not self.bench:
            raise ConfigError("--chip real needs --bench FILE (e.g. the bench printed by `hwloop emulate`)")

    def experiment(self) -> dict:
        """The configuration keys that define the experiment (compared on --resume)."""
        return {k: v for k, v in asdict(self).items() if k not in RESUME_FREE}
