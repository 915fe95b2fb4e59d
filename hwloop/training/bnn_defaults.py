"""The BNN baseline's hyper-parameters (Laborieux et al.'s MNIST -> FMNIST command), free of torch: the BNN
itself (``hwloop.training.bnn``) and the ``hwloop reproduce`` presets (read by the CLI at start-up) share them."""

from __future__ import annotations

#: their MNIST -> FMNIST command: --lr 0.005 --decay 1e-7 --meta 1.5 --epochs-per-task 50, 4096-4096 hidden
BNN_LR = 5e-3
BNN_META = 1.5
BNN_WEIGHT_DECAY = 1e-7
BNN_INIT_HALF_WIDTH = 0.05
#: their continual-learning main.py loads MNIST and Fashion-MNIST in batches of 100 (hard-coded)
BNN_BATCH_SIZE = 100

__all__ = ["BNN_BATCH_SIZE", "BNN_INIT_HALF_WIDTH", "BNN_LR", "BNN_META", "BNN_WEIGHT_DECAY"]
