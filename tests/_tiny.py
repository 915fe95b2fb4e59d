"""The tiny training run the tests share: 2 + 2 epochs of a 784-16-16-10 network on 300 synthetic images
per task (the ``tiny_data`` fixture's sets), on the simulated chip. Tests override what they need."""

from __future__ import annotations

from pathlib import Path

from hwloop.training.config import TrainConfig


def tiny_config(data: Path, out: Path, **kw: object) -> TrainConfig:
    """A ``TrainConfig`` for a run of a few seconds; ``kw`` overrides any field."""
    base: dict[str, object] = dict(
        tasks="mnist,fashion-mnist",
        epochs_per_task=2,
        warmup=1,
        m_star=3.0,
        hidden=16,
        lr=5e-3,
        batch_size=50,
        train_samples=300,
        chip="sim",
        data_dir=str(data),
        verify_data=False,
        out=str(out),
        progress=False,
        eval_batch=200,
    )
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]
