"""The orchestrator: Algorithm 1 of the paper in the hardware loop, with a complete HDF5 run log.

Each training step:
  1. forward/backward with the weights *read from the chip* (``w_used``), straight-through to W_H
  2. Adam + metaplastic update of the hidden weights W_H (``MetaplasticAdam``)
  3. quantise W_H to the nearest level of Q, diff against the programmed levels, and program only the
     devices whose level changed: RESET, then SET at the level's I_CC if the target is HCS (single shot,
     no verify), then READ them back into the weight cache
  4. group-commit the run log: flush at most every ``--flush-s`` seconds (a killed run loses at most that)
At the end of each epoch every device is read, and every task seen so far is evaluated with those reads.
The snapshot of those reads and the checkpoint are compressed and serialised off the training thread from
copies taken at the epoch's end, while the next epoch trains, and written in order at a later flush.
``--chip none`` runs the same loop with ideal levels and no device.

The model and optimizer live on ``--device`` (cpu or cuda); the chip and its weight cache stay on the host.
Each step only the weights whose level changed cross from the device (their indices and new levels), and
only the weights read back for them cross to the device.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from hwloop.characterise.wear import programmer_for
from hwloop.chip.base import CELLS_PER_TILE, Chip
from hwloop.chip.cdf import CdfTable
from hwloop.chip.composite import CompositeChip
from hwloop.chip.factory import check_tile_geometry, load_table_option, open_chip
from hwloop.chip.models import load_sim_models
from hwloop.crossbar.map import CrossbarMap
from hwloop.crossbar.weights import ChipWeights
from hwloop.errors import RunLogError
from hwloop.progress import NoBar
from hwloop.resume_real import (
    apply_kept_ops,
    check_real_tiles_match,
    lcs_hcs_threshold_us,
    real_tiles,
    touched_devices,
)
from hwloop.runlock import RunLock, refuse_if_held
from hwloop.runlog import RunLog, RunLogWriter
from hwloop.signals import check_stop, cooperative, deferred, stop_point
from hwloop.training.bn_frozen import use_frozen_stats_bn
from hwloop.training.checkpoint import build_payload, load_payload, serialise
from hwloop.training.config import TrainConfig, check_same_experiment
from hwloop.training.consolidation import begin_task, build_optimizer
from hwloop.training.data import load_task, parse_tasks
from hwloop.training.device import resolve_device
from hwloop.training.evaluate import evaluate
from hwloop.training.init import hidden_levels, init_hidden
from hwloop.training.levels import LevelSet
from hwloop.training.model import QMLP
from hwloop.training.optim import MetaplasticAdam, m_star_for_epoch


@dataclass
class TrainResult:
    log: str
    tasks: list[str]
    final_acc: dict[str, float]
    acc_after_task: dict[str, dict[str, float]] = field(default_factory=dict)
    epochs: int = 0
    steps: int = 0
    programs: int = 0
    wall_s: float = 0.0
    status: str = "finished"

    def as_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------- building blocks
def build_chip_for_run(cfg: TrainConfig, n_tiles: int, table: CdfTable) -> tuple[Chip | None, list[str]]:
    """The chip for a run (``hwloop.chip.factory.open_chip``) and the backend label of every tile."""
    if cfg.chip == "none":
        return None, ["none"] * n_tiles
    models = load_sim_models(cfg.retention_model, cfg.endurance_model)  # measured models for the sim tiles
    if cfg.chip == "sim":
        return open_chip("sim", n_tiles=n_tiles, table=table, seed=cfg.seed, sim_models=models), ["sim"] * n_tiles
    chip = open_chip(
        "real",
        n_tiles=n_tiles,
        table=table,
        seed=cfg.seed,
        bench=cfg.bench,
        real_tiles=cfg.real_tiles or "",
        sim_models=models,
    )
    assert isinstance(chip, CompositeChip)
    return chip, chip.tile_labels()


def _default_out(cfg: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{cfg.chip}-m{cfg.m_star:g}-h{cfg.hidden}-s{cfg.seed}.h5"


# ---------------------------------------------------------------------------- the run
class Trainer:
    #: on CPU, the forward pass reads the host weight cache directly; False keeps a separate copy as on a
    #: GPU (tests use it to run the device path, index copies of changed weights included, without a GPU)
    share_host_weights = True

    def __init__(self, cfg: TrainConfig, *, on_epoch: Callable[[dict], None] | None = None) -> None:
        self._set_up(cfg, on_epoch)
        q, self.scale_us = self.table.weight_levels(1.5)
        self.levels = LevelSet(q.tolist())
        self.model = QMLP(
            cfg.hidden,
            n_in=self.n_in,
            n_out=self.n_out,
            n_tasks=len(self.tasks),
            bn_mode=cfg.bn_mode,
            bn_eval=cfg.bn_eval,
        )
        if cfg.bn_consolidate == "meta-frozen":
            use_frozen_stats_bn(self.model)
        self.cmap = CrossbarMap(
            [(f"fc{i + 1}", tuple(layer.weight.shape)) for i, layer in enumerate(self.model.layers)]
        )
        self.hw: ChipWeights | None = None  # built once the chip is open (start / _resume)
        self.w_dev: torch.Tensor | None = None  # the weights the forward pass uses (_bind_weights)
        self.k_prog: torch.Tensor | None = None  # level index each weight was last programmed to

    def _set_up(self, cfg: TrainConfig, on_epoch: Callable[[dict], None] | None) -> None:
        """What every trainer sets up before its model: the checked configuration, the tasks' data, the
        level table, the torch device, and the run's state (no chip, no log, nothing trained yet)."""
        cfg.validate()
        self.cfg = cfg
        self.on_epoch = on_epoch
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.task_names = parse_tasks(cfg.tasks)
        cache: dict = {}
        self.tasks = [
            load_task(
                n,
                cfg.data_dir,
                train_samples=cfg.train_samples,
                download=cfg.download,
                cache=cache,
                verify=cfg.verify_data,
            )
            for n in self.task_names
        ]
        with stop_point():  # may read an HDF5 table: a SIGTERM stops after it (h5py: see run)
            self.table = self._load_table()
        self.n_in = self.tasks[0].x_train.shape[1]
        self.n_out = max(10, int(max(t.y_train.max() for t in self.tasks)) + 1)
        self.device = resolve_device(cfg.device)
        self.chip: Chip | None = None
        self.writer: RunLogWriter | None = None
        self.step = 0
        self.epoch = 0  # global epochs finished
        self.opt: MetaplasticAdam | None = None
        self.acc_after_task: dict[str, dict[str, float]] = {}
        self.form_yield = 1.0
        self._task_cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # one task's tensors on the device

    def _load_table(self) -> CdfTable:
        return check_tile_geometry(load_table_option(self.cfg.calibration))

    def _bind_weights(self) -> None:
        """Make every layer's ``w_used`` a view of one flat weight vector: on CPU the very vector the chip
        fills, on another device a copy that ``_push_weights`` keeps up to date. Also the device-side record
        of the level index each weight was last programmed to (``_changed_levels`` diffs against it)."""
        self.model.to(self.device)
        on_host = self.device.type == "cpu" and self.share_host_weights
        self.w_dev = self.hw.w_torch if on_host else self.hw.w_torch.to(self.device, copy=True)
        self._attach_w_used()
        self.k_prog = torch.zeros(self.cmap.n_weights, dtype=torch.int32, device=self.device)

    def _attach_w_used(self) -> None:
        """Every layer's ``w_used`` as a view of ``w_dev`` (again after ``model.to``, which would otherwise
        leave a moved copy that the chip's reads never reach)."""
        for lm, layer in zip(self.cmap.layers, self.model.layers, strict=True):
            layer.w_used = self.w_dev[lm.weight_offset : lm.weight_offset + lm.n_weights].view(lm.shape)

    def _push_weights(self, wi: np.ndarray | None = None) -> None:
        """Copy the weights ``wi`` (all if None) of the host cache to the device (nothing to do on CPU)."""
        if self.w_dev is self.hw.w_torch:
            return
        if wi is None:
            self.w_dev.copy_(self.hw.w_torch)
        elif wi.size:
            i = torch.from_numpy(wi).to(self.device)
            self.w_dev.index_copy_(0, i, torch.from_numpy(self.hw.w_flat[wi]).to(self.device))

    def _record_programmed(self) -> None:
        """Set the programmed-level record to the current level index of every hidden weight."""
        for lm, p in zip(self.cmap.layers, self.model.hidden_weights(), strict=True):
            idx = self.opt.level_index(p) if self.opt is not None else self.levels.index(p.detach())
            self.k_prog[lm.weight_offset : lm.weight_offset + lm.n_weights].copy_(idx.reshape(-1))

    def _changed_levels(self) -> tuple[np.ndarray, np.ndarray]:
        """Weights whose level index differs from the one last programmed: (flat indices, signed levels), on
        the host. The optimizer diffs against the record during its step (``track_levels``) and leaves the
        new levels in it."""
        assert self.opt is not None
        wis, ks = [], []
        for lm, p in zip(self.cmap.layers, self.model.hidden_weights(), strict=True):
            nz = self.opt.changed_levels(p)
            if nz.numel():
                sl = self.k_prog[lm.weight_offset : lm.weight_offset + lm.n_weights]
                ks.append(sl.index_select(0, nz).cpu().numpy())
                wis.append(nz.cpu().numpy() + lm.weight_offset)
        if not wis:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int8)
        k = np.concatenate(ks).astype(np.int8)
        k -= np.int8(self.levels.n_half)
        return np.concatenate(wis).astype(np.int64), k

    def _new_optimizer(self) -> MetaplasticAdam:
        # MetaplasticAdam, or ConsolidatingAdam with --consolidation / --bn-consolidate (docs/training.md)
        opt = build_optimizer(self.cfg, self.model, self.levels, previous=self.opt)
        if self.cfg.ws_source == "read":  # W_S = what each layer's forward pass used: live views of the reads
            opt.set_read_weights((layer.weight, layer.w_used) for layer in self.model.layers)
        for lm, p in zip(self.cmap.layers, self.model.hidden_weights(), strict=True):
            opt.track_levels(p, self.k_prog[lm.weight_offset : lm.weight_offset + lm.n_weights])
        return opt

    # ------------------------------------------------------------------ set-up
    def start(self, resume: str | None = None) -> None:
        """Resume the run log ``resume``, or begin a new run in ``--out`` (default: a name under runs/)."""
        if resume:
            self._resume(resume)
            return
        out = Path(self.cfg.out) if self.cfg.out else _default_out(self.cfg)
        self.cfg.out = str(out)
        self._begin(out)

    def _begin(self, out: Path) -> None:
        """A new run: open the chip, create the run log, form, draw and program the initial weights."""
        cfg = self.cfg
        self.chip, backends = build_chip_for_run(cfg, self.cmap.n_tiles, self.table)
        self.hw = ChipWeights(self.chip, self.cmap, self.levels, self.scale_us, programmer_for(self.cfg, self.chip))
        self._bind_weights()
        try:
            self.writer = RunLogWriter.create(
                out,
                config=asdict(cfg),
                table=self.table,
                tasks=self.task_names,
                n_tiles=self.cmap.n_tiles,
                tile_backends=backends,
                chip=cfg.chip,
                seed=cfg.seed,
                layer_tiles=self.cmap.describe(),
            )
        except BaseException:
            if self.chip is not None:
                self.chip.close()
            raise
        self.writer.flush_s = cfg.flush_s
        if self.chip is not None:
            self.chip.add_listener(self.writer.listener)
        gen = torch.Generator().manual_seed(cfg.seed)
        self.model.to("cpu")  # the initial draw is made on the host, the same on every device
        init_hidden(self.model, self.levels, cfg.init, gen)
        self.model.to(self.device)
        self._attach_w_used()  # model.to moved the buffers off w_dev on a GPU
        check_stop()
        self.form_yield = self.hw.form()
        check_stop()
        self.hw.program(hidden_levels(self.model, self.levels))
        self._push_weights()
        self._record_programmed()
        self._snapshot_and_flush(epoch=0)

    def _resume(self, path: str) -> None:
        lock = RunLock.acquire(path)  # held from here on: a second resume of the same log is refused at once
        try:
            with RunLog(path) as log:
                stored = log.config
                backends = log.tile_backends
            check_same_experiment(path, stored, self.cfg)
            self.cfg.out = path
            self.chip, _ = build_chip_for_run(self.cfg, self.cmap.n_tiles, self.table)
        except BaseException:
            lock.release()
            raise
        self.hw = ChipWeights(self.chip, self.cmap, self.levels, self.scale_us, programmer_for(self.cfg, self.chip))
        self._bind_weights()
        on_real = real_tiles(backends) if self.chip is not None else []
        try:
            self.writer, info, blob = RunLogWriter.reopen(path, lock=lock, keep_tiles=on_real)
        except BaseException:
            lock.release()
            if self.chip is not None:
                self.chip.close()
            raise
        self.writer.flush_s = self.cfg.flush_s
        ck = load_payload(blob)
        missing, unexpected = self.model.load_state_dict(ck["model"], strict=False)
        if unexpected or any(not k.endswith("w_used") for k in missing):
            raise RunLogError(
                f"{path}: checkpoint does not fit this model (missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}); resume with the hwloop version that wrote it"
            )
        self.hw.load_state(ck["hw"])
        self._push_weights()
        if self.chip is not None:
            self.chip.restore(ck["chip"])
            self.chip.add_listener(self.writer.listener)
            if on_real:
                self.writer.step = int(ck["step"])
                self._resync_real_tiles(path, on_real, info.ops_rows)
        self.step, self.epoch = int(ck["step"]), int(ck["epoch"])
        self.acc_after_task = ck.get("acc_after_task", {})
        self.form_yield = float(ck.get("form_yield", 1.0))
        self.opt = self._new_optimizer()
        if ck.get("opt") is not None:
            self.opt.load_state_dict(ck["opt"])
        self._record_programmed()
        self.writer.step = self.step
        if info.epoch != self.epoch:
            raise RunLogError(f"{path}: checkpoint index says epoch {info.epoch} but its content says {self.epoch}")

    def _resync_real_tiles(self, path: str, tiles: list[int], ops_start: int) -> None:
        """Real tiles after a resume: replay the kept post-checkpoint rows on the host, read every used
        device of the real tiles again, refuse a chip that does not match (``hwloop.resume_real``)."""
        assert self.writer is not None and self.chip is not None
        kept = self.writer.f["ops"][ops_start : ops_start + self.writer.kept_rows]
        devices = self.cmap.devices
        apply_kept_ops(self.chip, devices, self.hw.dev_level, kept)
        on_real = np.isin(devices // CELLS_PER_TILE, np.asarray(tiles)) & self.hw.usable
        g_old = self.hw.g_us[on_real].copy()
        g_new = self.chip.read_idx(devices[on_real])
        self.writer.flush()
        untouched = ~np.isin(devices[on_real], touched_devices(kept))
        check_real_tiles_match(
            path, g_old[untouched], g_new[untouched], lcs_hcs_threshold_us(self.table.medians_us), len(tiles)
        )
        self.hw.g_us[on_real] = g_new
        self.hw._refresh_weights()

    # ------------------------------------------------------------------ loop
    def run(self, resume: str | None = None) -> TrainResult:
        t_wall = time.monotonic()
        status = "failed"
        try:
            # start-up: a SIGTERM only flags (h5py turns an exception raised inside its calls into a
            # SystemError); the stop is taken at the checks between its steps, or when it ends
            with stop_point():
                self.start(resume)
            self._loop()
            status = "finished"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            with deferred():  # a (second) SIGTERM now only flags: the log is closed whole, its status written
                if self.writer is not None:
                    self.writer.close(status)
                if self.chip is not None:
                    self.chip.close()
        with deferred():  # the run is over: a stop now has nothing left to stop
            final = self._final_acc()
        return TrainResult(
            log=str(self.cfg.out),
            tasks=self.task_names,
            final_acc=final,
            acc_after_task=self.acc_after_task,
            epochs=self.epoch,
            steps=self.step,
            programs=self.hw.programs,
            wall_s=time.monotonic() - t_wall,
            status=status,
        )

    def _final_acc(self) -> dict[str, float]:
        with RunLog(self.cfg.out) as log:
            return log.results()["final_acc"]

    def _loop(self) -> None:
        cfg = self.cfg
        total_epochs = cfg.epochs_per_task * len(self.tasks)
        bar = _progress(total_epochs, self.epoch, cfg.progress)
        cooperative.set()  # a SIGTERM now only flags; check_stop() stops at the next step
        try:
            while self.epoch < total_epochs:
                t_idx = self.epoch // cfg.epochs_per_task
                first_of_task = self.epoch % cfg.epochs_per_task == 0
                if self.opt is None or (first_of_task and cfg.adam_reset and self.epoch > 0):
                    self.opt = self._new_optimizer()
                if first_of_task and self.epoch > 0:
                    begin_task(cfg, self.model, self.opt, lambda t=t_idx: self._task_tensors(t - 1), t_idx - 1)
                self._train_epoch(t_idx, bar)
                bar.update(1)
        finally:
            cooperative.clear()
            bar.close()

    def _train_epoch(self, t_idx: int, bar) -> None:
        cfg, task = self.cfg, self.tasks[t_idx]
        assert self.opt is not None and self.writer is not None
        epoch = self.epoch + 1
        self.opt.m_star = m_star_for_epoch(epoch, cfg.warmup, cfg.m_star)
        lr = lr_for_epoch(epoch, cfg.epochs_per_task, cfg.lr, cfg.lr_decay)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.model.set_task(t_idx)
        self.model.train()
        t0 = time.monotonic()
        c0 = dict(self.writer.counts)
        p0 = self.hw.programs
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(task.y_train))
        n_batches = len(order) // cfg.batch_size
        x_all, y_all = self._task_tensors(t_idx)
        order_t = torch.from_numpy(order).to(self.device)
        dev = self.device
        loss_sum = torch.zeros((), dtype=torch.float64, device=dev)  # summed on the device: no sync per step
        correct = torch.zeros((), dtype=torch.int64, device=dev)
        seen = 0
        for b in range(n_batches):
            sel = order_t[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            x = x_all.index_select(0, sel)
            y = y_all.index_select(0, sel)
            check_stop()
            self.step += 1
            self.writer.step = self.step
            out = self.model(x)
            loss = F.cross_entropy(out, y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self._program_step()
            self.writer.maybe_flush()
            loss_sum += loss.detach().double() * len(y)
            correct += (out.argmax(1) == y).sum()
            seen += len(y)
            if b % 20 == 0 and cfg.progress:
                dt = max(time.monotonic() - t0, 1e-9)
                bar.set_postfix_str(
                    f"{task.name} ep {epoch} step {b + 1}/{n_batches} loss {float(loss_sum) / seen:.3f} "
                    f"train {100 * int(correct) / seen:.1f}% prog/s {(self.hw.programs - p0) / dt:,.0f}",
                    refresh=False,
                )
        loss_sum, correct = float(loss_sum), int(correct)
        # end of epoch: read every device, evaluate every task seen so far with those reads
        self._snapshot_and_flush(epoch=epoch)
        acc = np.full(len(self.tasks), np.nan, dtype=np.float32)
        self.model.eval()
        for j in range(t_idx + 1):
            acc[j] = evaluate(self.model, j, self.tasks[j], cfg.eval_batch)
        self.model.set_task(t_idx)
        self.epoch = epoch
        c1 = self.writer.counts
        rec = {
            "epoch": epoch,
            "task": t_idx,
            "m_star": self.opt.m_star,
            "lr": lr,
            "acc": acc,
            "train_loss": loss_sum / max(seen, 1),
            "train_acc": correct / max(seen, 1),
            "programs": self.hw.programs - p0,
            "sets": c1["sets"] - c0["sets"],
            "resets": c1["resets"] - c0["resets"],
            "reads": c1["reads"] - c0["reads"],
            "wall_s": time.monotonic() - t0,
            "step": self.step,
        }
        self.writer.append_epoch(rec)
        if epoch % cfg.epochs_per_task == 0:
            self.acc_after_task[self.task_names[t_idx]] = {self.task_names[j]: float(acc[j]) for j in range(t_idx + 1)}
        self._checkpoint()
        done = {**rec, "acc": {self.task_names[j]: float(acc[j]) for j in range(t_idx + 1)}}
        bar.write(epoch_line(done), file=sys.stderr)  # with the bar: stdout stays the caller's (--json)
        if self.on_epoch is not None:
            self.on_epoch(done)

    def _program_step(self) -> None:
        """After the optimizer step: program the devices whose level changed (only those weights cross to
        the host and back)."""
        wi, k = self._changed_levels()
        if wi.size:
            self.hw.program_weights(wi, k)
            self._push_weights(self.hw.last_changed)

    def _task_tensors(self, t_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A task's training set as tensors on the device (moved once; on CPU they share the arrays)."""
        cache = self._task_cache
        if t_idx not in cache:
            cache.clear()  # one task on the device at a time
            task = self.tasks[t_idx]
            cache[t_idx] = (
                torch.from_numpy(task.x_train).to(self.device),
                torch.from_numpy(task.y_train).to(self.device),
            )
        return cache[t_idx]

    def _snapshot_and_flush(self, epoch: int) -> np.ndarray | None:
        """Read every device (refreshing the weights used), and submit the snapshot for off-thread compression."""
        assert self.writer is not None
        with self.writer.full_read():
            g = self.hw.read_all()
        self._push_weights()
        if g is None:
            g = np.zeros((self.cmap.n_tiles * CELLS_PER_TILE,), dtype=np.float32)
            g[self.cmap.devices[0::2]] = np.maximum(self.hw.w_flat, 0) * self.scale_us
            g[self.cmap.devices[1::2]] = np.maximum(-self.hw.w_flat, 0) * self.scale_us
        self.writer.submit_snapshot(epoch, g, self.hw.level_map())
        self.writer.flush()
        return g

    def _checkpoint(self) -> None:
        """Copy the state now (host copies: the next epoch may change the originals), serialise it off thread."""
        assert self.writer is not None and self.opt is not None
        payload = build_payload(
            model=self.model,
            opt=self.opt,
            hw_state=self.hw.state(weights=False),
            chip_state=self.chip.snapshot() if self.chip is not None else None,
            step=self.step,
            epoch=self.epoch,
            acc_after_task=self.acc_after_task,
            form_yield=self.form_yield,
        )
        self.writer.submit_checkpoint(lambda: serialise(payload), self.epoch)


def epoch_line(rec: dict) -> str:
    """The line that reports a finished epoch (the record ``on_epoch`` receives): epoch, task, m*, the test
    accuracy of every task so far, programs and wall time."""
    accs = " ".join(f"{name} {100 * a:.2f}%" for name, a in rec["acc"].items())
    task = list(rec["acc"])[rec["task"]]
    return (
        f"epoch {rec['epoch']:3d} [{task}, m*={rec['m_star']:g}] test: {accs}  "
        f"programs {rec['programs']:,}  {rec['wall_s']:.1f} s"
    )


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="epoch", dynamic_ncols=True, leave=True)


def config_from_log(path: str) -> dict:
    refuse_if_held(path)  # a live run: say so, rather than what a half-written file looks like
    try:
        with stop_point(), RunLog(path) as log:  # a SIGTERM stops after the read (h5py: see Trainer.run)
            return log.config
    except RunLogError:
        refuse_if_held(path)  # another resume may have taken the log meanwhile
        raise


def train(cfg: TrainConfig, resume: str | None = None, on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """Run (or resume) a training run of the hardware-loop QNN; returns its summary.

    ``hwloop.experiments.train`` is the entry that also dispatches ``--model bnn``."""
    return Trainer(cfg, on_epoch=on_epoch).run(resume)


def lr_for_epoch(epoch_in_run: int, epochs_per_task: int, lr: float, decay: float) -> float:
    """Learning rate of a 1-based global epoch: ``lr * decay**k``, k the epoch's index within its task."""
    return lr * decay ** ((epoch_in_run - 1) % epochs_per_task)


__all__ = ["TrainResult", "Trainer", "build_chip_for_run", "config_from_log", "epoch_line", "lr_for_epoch", "train"]
