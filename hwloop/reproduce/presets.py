"""The two protocols of ``hwloop reproduce``: ``paper`` (the paper's protocol) and ``quick`` (about an hour here).

A :class:`Protocol` says how many epochs, seeds and which sizes each figure and table uses. Options of
``hwloop reproduce`` may override fields (tests use tiny settings); the overrides are recorded in the folder
and in the report header, and a folder never mixes two protocols.

Free of torch (the import-linter contract ``torch-free``): the CLI takes its ``--preset`` choices and
``--only`` figure names from here when it starts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from hwloop.errors import ConfigError
from hwloop.training.bnn_defaults import BNN_BATCH_SIZE, BNN_LR, BNN_META
from hwloop.training.config import TrainConfig

FIGURES = ("fig2a", "fig2bc", "fig4b", "fig5a", "fig5b", "table1")
#: minutes a full-size run (50 + 50 epochs, H 512, sim chip, batch 700) takes on a 2-core PC: 3 min 17 s
#: measured at 2 threads (README, sixth landing; batch 100 took 4 min 51 s)
FULL_RUN_MIN = 3.5


@dataclass(frozen=True)
class Protocol:
    preset: str
    epochs_per_task: int
    warmup: int
    m_stars: tuple[float, ...]  # Fig. 2a
    curve_m_stars: tuple[float, ...]  # Figs. 2b, 2c
    seeds_mstar: int  # Fig. 2a repetitions per m*
    seeds_size: int  # Table I repetitions per H
    reps: int  # Fig. 5a / 5b repetitions (m* = 3, H = hidden)
    hidden: int  # H of Figs. 2, 5
    hidden_sizes: tuple[int, ...]  # Table I
    bnn_hidden: int
    bnn_seeds: int
    m_star: float = 3.0  # the paper's working point (Figs. 5, Table I)
    bnn_lr: float = BNN_LR
    bnn_meta: float = BNN_META
    train_samples: int | None = None
    chip: str = "sim"
    batch_size: int = TrainConfig.batch_size  # the QNN's (hwloop train's default)
    bnn_batch_size: int = BNN_BATCH_SIZE

    def as_dict(self) -> dict:
        return asdict(self)

    def estimate_min(self) -> float:
        """Rough single-worker minutes: each run costs FULL_RUN_MIN × (epochs / 100) × (weights / H-512 weights)."""

        def w(h: int) -> float:
            return 784 * h + h * h + 10 * h

        frac = 2 * self.epochs_per_task / 100 * (1.0 if self.train_samples is None else self.train_samples / 60000)
        runs = {(m, self.hidden, s) for m in self.m_stars for s in range(self.seeds_mstar)}
        runs |= {(m, self.hidden, 0) for m in self.curve_m_stars}
        runs |= {(self.m_star, h, s) for h in self.hidden_sizes for s in range(self.seeds_size)}
        runs |= {(self.m_star, self.hidden, s) for s in range(self.reps)}
        qnn = sum(w(h) / w(512) for _, h, _ in runs)
        bnn = self.bnn_seeds * w(self.bnn_hidden) / w(512)
        return FULL_RUN_MIN * frac * (qnn + bnn)


PRESETS = {
    "paper": Protocol(
        preset="paper",
        epochs_per_task=50,
        warmup=10,
        m_stars=(0, 1, 2, 2.2, 3, 4, 5),
        curve_m_stars=(2.2, 3),
        seeds_mstar=3,
        seeds_size=3,
        reps=15,
        hidden=512,
        hidden_sizes=(256, 512, 1024),
        bnn_hidden=4096,
        bnn_seeds=1,
    ),
    # 20 + 20 epochs (warm-up 4: the paper's 1/5), one seed per m*, 2 per size, 3 repetitions, a 1024-wide BNN
    "quick": Protocol(
        preset="quick",
        epochs_per_task=20,
        warmup=4,
        m_stars=(0, 1, 2, 2.2, 3, 4, 5),
        curve_m_stars=(2.2, 3),
        seeds_mstar=1,
        seeds_size=2,
        reps=3,
        hidden=512,
        hidden_sizes=(256, 512, 1024),
        bnn_hidden=1024,
        bnn_seeds=1,
    ),
}

#: Protocol fields a user may override from the command line
OVERRIDABLE = (
    "epochs_per_task",
    "warmup",
    "train_samples",
    "hidden_sizes",
    "hidden",
    "bnn_hidden",
    "seeds",
    "chip",
    "batch_size",
)
#: protocol fields added after format 1 folders were made, with the value those folders ran at
LEGACY_FIELDS = {"batch_size": 100, "bnn_batch_size": 100}


def protocol(preset: str, overrides: dict | None = None) -> Protocol:
    """The preset's protocol with ``overrides`` (``seeds`` sets every repetition count)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown --preset {preset!r}; choose {' or '.join(PRESETS)}")
    p = PRESETS[preset]
    ov = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(ov) - set(OVERRIDABLE))
    if unknown:
        raise ConfigError(f"cannot override {', '.join(unknown)}")
    seeds = ov.pop("seeds", None)
    if seeds is not None:
        if seeds < 1:
            raise ConfigError("--seeds must be at least 1")
        ov.update(seeds_mstar=seeds, seeds_size=seeds, reps=seeds, bnn_seeds=1)
    if "hidden_sizes" in ov:
        ov["hidden_sizes"] = tuple(int(h) for h in ov["hidden_sizes"])
        if len(ov["hidden_sizes"]) != 3 or any(h < 1 for h in ov["hidden_sizes"]):
            raise ConfigError("--hidden-sizes needs three widths (Table I's 256, 512, 1024), e.g. 8,16,32")
        ov.setdefault("hidden", ov["hidden_sizes"][1])
    known = {f.name for f in fields(Protocol)}
    return replace(p, **{k: v for k, v in ov.items() if k in known})


def parse_only(spec: str | None) -> list[str]:
    """``fig2a,table1`` → those figures (in FIGURES order); None → all."""
    if spec is None or not spec.strip():
        return list(FIGURES)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in FIGURES]
    if bad:
        raise ConfigError(f"--only: unknown figure {', '.join(bad)}; choose from {', '.join(FIGURES)}")
    return [f for f in FIGURES if f in names]
