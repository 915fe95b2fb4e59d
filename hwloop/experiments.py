"""One training run of any model: the entry point of ``hwloop train``, sweeps and ``reproduce``.

``--model qnn`` (the paper's network in the hardware loop) runs ``orchestrator.Trainer``; ``--model bnn``
(Laborieux et al.'s binarized baseline, software only) runs ``bnn_trainer.BnnTrainer``. It sits above both
so that neither trainer imports the other's layer.
"""

from __future__ import annotations

from collections.abc import Callable

from hwloop.orchestrator import Trainer, TrainResult
from hwloop.training.config import TrainConfig


def train(cfg: TrainConfig, resume: str | None = None, on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """Run (or resume) a training run; returns its summary (``cfg.model`` "bnn": the BNN baseline)."""
    if cfg.model == "bnn":
        from hwloop.bnn_trainer import BnnTrainer

        return BnnTrainer(cfg, on_epoch=on_epoch).run(resume)
    return Trainer(cfg, on_epoch=on_epoch).run(resume)
