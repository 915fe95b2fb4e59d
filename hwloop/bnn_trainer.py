"""The trainer of the BNN baseline (``--model bnn``): the orchestrator's loop with no chip and no devices.

It reuses :class:`hwloop.orchestrator.Trainer`'s epoch loop, evaluation, epoch table and checkpoints, with
:class:`hwloop.training.bnn.BinaryMLP` and :class:`hwloop.training.bnn.AdamMeta`. The run log has the usual
layout; it holds no device operations and no conductance snapshots (a BNN weight is sign(W_H), no device).
``m_star`` is the BNN's ``meta``; ``lr_decay`` and the warm-up apply as for the QNN; ``init`` is ignored
(uniform ±0.05, as the reference code).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from hwloop import __version__
from hwloop.errors import RunLogError
from hwloop.orchestrator import Trainer
from hwloop.runlog import RunLog, RunLogWriter
from hwloop.training.bnn import AdamMeta, BinaryMLP
from hwloop.training.checkpoint import load_payload, serialise
from hwloop.training.config import TrainConfig, check_same_experiment


class _NoDevices:
    programs = 0


class BnnTrainer(Trainer):
    def __init__(self, cfg: TrainConfig, *, on_epoch: Callable[[dict], None] | None = None) -> None:
        self._set_up(cfg, on_epoch)
        self.model = BinaryMLP(cfg.hidden, n_in=self.n_in, n_out=self.n_out, n_tasks=len(self.tasks)).to(self.device)
        self.hw = _NoDevices()  # type: ignore[assignment]
        self.opt: AdamMeta | None = None  # type: ignore[assignment]

    def _new_optimizer(self) -> AdamMeta:  # type: ignore[override]
        return AdamMeta(self.model.parameters(), lr=self.cfg.lr, meta=0.0)

    def _begin(self, out: Path) -> None:
        cfg = self.cfg
        self.writer = RunLogWriter.create(
            out,
            config=asdict(cfg),
            table=self.table,
            tasks=self.task_names,
            n_tiles=1,
            tile_backends=["none"],
            chip="none",
            seed=cfg.seed,
            layer_tiles=[],
        )
        self.model.init_uniform(torch.Generator().manual_seed(cfg.seed))

    def _resume(self, path: str) -> None:
        with RunLog(path) as log:
            stored = log.config
        check_same_experiment(path, stored, self.cfg)
        self.cfg.out = path
        self.writer, info, blob = RunLogWriter.reopen(path)
        ck = load_payload(blob, map_location=self.device)
        self.model.load_state_dict(ck["model"])
        self.step, self.epoch = int(ck["step"]), int(ck["epoch"])
        self.acc_after_task = ck.get("acc_after_task", {})
        self.opt = self._new_optimizer()
        if ck.get("opt") is not None:
            self.opt.load_state_dict(ck["opt"])
        self.writer.step = self.step
        if info.epoch != self.epoch:
            raise RunLogError(f"{path}: checkpoint index says epoch {info.epoch} but its content says {self.epoch}")

    def _program_step(self) -> None:
        return None  # no device: the forward pass uses sign(W_H) directly

    def _snapshot_and_flush(self, epoch: int) -> None:  # type: ignore[override]
        return None  # no conductances to snapshot

    def _checkpoint(self) -> None:
        assert self.writer is not None and self.opt is not None
        payload = {
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "acc_after_task": self.acc_after_task,
            "hwloop_version": __version__,
            "saved_unix": time.time(),
        }
        self.writer.save_checkpoint(serialise(payload), self.epoch)
