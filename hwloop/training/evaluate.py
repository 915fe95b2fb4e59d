"""Test accuracy of one task (its own BN with ``--bn-mode per-task``), in batches on the model's device."""

from __future__ import annotations

import torch

from hwloop.training.data import Task
from hwloop.training.model import QMLP


@torch.no_grad()
def evaluate(model: QMLP, task_index: int, task: Task, batch: int) -> float:
    model.set_task(task_index)
    dev = next(model.parameters()).device
    x = torch.from_numpy(task.x_test).to(dev)
    y = torch.from_numpy(task.y_test).to(dev)
    correct = torch.zeros((), dtype=torch.int64, device=dev)
    for s in range(0, len(y), batch):
        correct += (model(x[s : s + batch]).argmax(1) == y[s : s + batch]).sum()
    return int(correct) / len(y)
