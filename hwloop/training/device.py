"""``--device``: the torch device of the model and optimizer (the chip and its weight cache stay on the host)."""

from __future__ import annotations

import torch

from hwloop.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``--device``: auto picks cuda when torch sees a GPU; cuda without one is a configuration error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda: torch sees no CUDA GPU here (torch.cuda.is_available() is False); "
            "use --device cpu or --device auto"
        )
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"unknown --device {name!r}; choose auto, cpu or cuda")
    return torch.device(name)
