"""Loading run logs for reports and listings: configuration, status, accuracy per task and epoch."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hwloop.analysis.logfile import H5_ERRORS, open_runlog
from hwloop.chip.cdf import CdfTable
from hwloop.errors import HwloopError, RunLogError
from hwloop.h5check import open_reader
from hwloop.runlog import FORMAT_NAME
from hwloop.training.config import EXPERIMENT_FREE

#: configuration keys in which repetitions of one experiment may differ: the seed, the keys that do not change
#: the experiment (``hwloop.training.config.EXPERIMENT_FREE``), the evaluation batch, and names that logs of
#: other tools or older versions carry
RUN_ONLY_KEYS = tuple(
    sorted(EXPERIMENT_FREE | {"seed", "eval_batch"} | {"output", "name", "run_name", "resume", "data", "log"})
)


@dataclass
class RunInfo:
    """What a report needs from one run log (read once, file closed afterwards)."""

    path: Path
    status: str
    created_utc: str
    config: dict
    tasks: list[str]
    chip: str
    n_tiles: int
    epochs: np.ndarray
    acc_pct: np.ndarray  # (n_epochs, n_tasks), percent; NaN where a task was not evaluated
    layer_tiles: list[dict] = field(default_factory=list)
    table: CdfTable | None = None
    table_error: str = ""
    snapshots: int = 0

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def epoch_numbers(self) -> np.ndarray:
        return self.epochs["epoch"].astype(np.int64)

    @property
    def task_of_epoch(self) -> np.ndarray:
        return self.epochs["task"].astype(np.int64)

    @property
    def m_star(self) -> float:
        v = self.config.get("m_star")
        if isinstance(v, (int, float)):
            return float(v)
        return float(np.nanmax(self.epochs["m_star"])) if self.epochs.size else math.nan

    @property
    def hidden(self) -> object:
        return self.config.get("hidden")

    @property
    def seed(self) -> object:
        return self.config.get("seed")

    def task_boundaries(self) -> list[float]:
        """Epoch positions (x) between two tasks: halfway between the last epoch of one and the next."""
        t = self.task_of_epoch
        ch = np.flatnonzero(np.diff(t) != 0)
        e = self.epoch_numbers
        return [float(e[i]) + 0.5 for i in ch]

    def warmup_end(self) -> float | None:
        """x position ending the warm-up epochs (m* = 0 before metaplasticity is switched on), if any."""
        ms = self.epochs["m_star"] if self.epochs.size else np.zeros(0)
        on = np.flatnonzero(ms > 0)
        if not on.size or on[0] == 0:
            return None
        return float(self.epoch_numbers[on[0] - 1]) + 0.5

    def end_of_task_acc(self) -> np.ndarray:
        """Accuracy (%) of task i at the end of the last epoch trained on task i (NaN if never trained)."""
        out = np.full(len(self.tasks), np.nan)
        t = self.task_of_epoch
        for i in range(len(self.tasks)):  # one iteration per task
            rows = np.flatnonzero(t == i)
            if rows.size:
                out[i] = self.acc_pct[rows[-1], i]
        return out

    def final_acc(self) -> np.ndarray:
        return self.acc_pct[-1].astype(float) if self.acc_pct.shape[0] else np.full(len(self.tasks), np.nan)

    def best_acc(self) -> np.ndarray:
        if not self.acc_pct.shape[0]:
            return np.full(len(self.tasks), np.nan)
        a = self.acc_pct.astype(float)
        ok = np.isfinite(a).any(axis=0)
        out = np.full(a.shape[1], np.nan)
        out[ok] = np.nanmax(a[:, ok], axis=0)
        return out

    def forgetting(self) -> list[dict]:
        """Per task trained before the last trained task: accuracy at the end of its training, at the end
        of the log, and the drop in percentage points."""
        t = self.task_of_epoch
        if not t.size:
            return []
        last_task = int(t[-1])
        end = self.end_of_task_acc()
        fin = self.final_acc()
        out = []
        for i in range(len(self.tasks)):
            rows = np.flatnonzero(t == i)
            if not rows.size or i == last_task or rows[-1] == t.size - 1:
                continue
            out.append(
                {
                    "task": self.tasks[i],
                    "index": i,
                    "end_of_task_pct": float(end[i]),
                    "final_pct": float(fin[i]),
                    "drop_pp": float(end[i] - fin[i]),
                    "final_epoch": int(self.epoch_numbers[-1]),
                }
            )
        return out

    def config_key(self, ignore: tuple[str, ...] = RUN_ONLY_KEYS) -> str:
        kept = {k: v for k, v in self.config.items() if k not in ignore}
        return json.dumps(kept, sort_keys=True, default=str)

    def describe_config(self) -> str:
        c = self.config
        parts = [f"tasks={','.join(self.tasks)}", f"m*={_fmt_num(self.m_star)}"]
        for k in ("hidden", "epochs_per_task", "warmup", "lr", "bn_mode"):
            if k in c:
                parts.append(f"{k}={c[k]}")
        parts.append(f"chip={self.chip}")
        return " ".join(parts)


def _fmt_num(v: float) -> str:
    return "?" if not math.isfinite(v) else f"{v:g}"


def load_run(path: str | Path, with_table: bool = True) -> RunInfo:
    """Read one run log's metadata, epoch table and calibration; raises ``RunLogError`` if unreadable."""
    p = Path(path)
    with open_runlog(p) as log:
        try:
            log.refresh()
            ep = log.epochs()
            tasks = log.tasks
            attrs = log.attrs
            info = RunInfo(
                path=p,
                status=log.status,
                created_utc=str(attrs.get("created_utc", "")),
                config=log.config,
                tasks=tasks,
                chip=str(attrs.get("chip", "")),
                n_tiles=log.n_tiles,
                epochs=ep,
                acc_pct=log.accuracy(ep, percent=True),
                snapshots=int(log.snapshot_epochs().size),
            )
            from hwloop.analysis.endurance import layer_tiles

            info.layer_tiles = layer_tiles(log)
            if with_table:
                try:
                    info.table = log.table()
                except HwloopError as exc:
                    info.table_error = str(exc)
        except H5_ERRORS as exc:
            raise RunLogError(f"{p}: the run log is truncated or corrupt ({exc})") from exc
    return info


#: Other hwloop HDF5 files that share a folder with run logs (``hwloop calibrate`` writes its op log to
#: runs/ by default): their ``format`` attribute and how ``hwloop runs ls`` names them.
OTHER_HWLOOP_FILES = {
    "hwloop-calibration-oplog": "calibration op log",
    "hwloop-calibration": "calibration file",
}


def _root_attrs(path: Path, keys: tuple[str, ...]) -> dict:
    """Root attributes ``keys`` of an HDF5 file (bytes decoded, missing ones None), after the truncation and
    metadata checks, so a damaged file fails at once instead of stalling in HDF5's SWMR retry loop.
    Raises ``RunLogError`` with the reason if the file cannot be read."""
    try:
        with open_reader(path) as f:  # truncation and metadata checks, then a bounded SWMR open
            raw = {k: f.attrs.get(k, None) for k in keys}
    except H5_ERRORS as exc:
        raise RunLogError(f"not a readable HDF5 file ({exc})") from exc
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in raw.items()}


def other_hwloop_file(path: Path) -> dict | None:
    """If ``path`` is a calibration file or a calibration op log, a short description of it (kind,
    created_utc, chip_id, rows); otherwise None. Never raises: unreadable files are the caller's."""
    try:
        text = _root_attrs(path, ("format", "created_utc", "chip_id", "rows"))
    except (RunLogError, OSError):
        return None
    kind = OTHER_HWLOOP_FILES.get(str(text["format"]))
    if kind is None:
        return None
    rows = text["rows"]
    return {
        "path": str(path),
        "kind": kind,
        "created_utc": None if text["created_utc"] is None else str(text["created_utc"]),
        "chip_id": None if text["chip_id"] is None else str(text["chip_id"]),
        "rows": None if rows is None else int(rows),
    }


def is_run_log(path: Path) -> tuple[bool, str]:
    """Cheap check used when collecting files from a folder."""
    try:
        fmt = _root_attrs(path, ("format",))["format"]
    except RunLogError as exc:
        return False, str(exc)
    if fmt != FORMAT_NAME:
        return False, f"HDF5 file but not an hwloop run log (format {fmt!r})"
    return True, ""


def collect_run_paths(args: list[str | Path]) -> tuple[list[Path], list[tuple[Path, str]], list[dict]]:
    """Expand arguments: files are taken as they are (errors are the caller's); a folder (e.g. a sweep
    folder) contributes every run log under it. Returns (paths, skipped files with reason, sweep.json
    contents found)."""
    paths: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    sweeps: list[dict] = []
    for a in args:
        p = Path(a)
        if p.is_dir():
            sj = p / "sweep.json"
            if sj.is_file():
                try:
                    sweeps.append({"path": str(sj), "content": json.loads(sj.read_text())})
                except (OSError, ValueError) as exc:
                    skipped.append((sj, f"unreadable sweep.json ({exc})"))
            found = sorted(p.rglob("*.h5"))
            for f in found:
                ok, why = is_run_log(f)
                if ok:
                    paths.append(f)
                else:
                    skipped.append((f, why))
        elif p.exists():
            paths.append(p)
        else:
            raise RunLogError(f"{p} does not exist (give run log files or folders of run logs)")
    seen: set[Path] = set()
    uniq = []
    for p in paths:
        rp = p.resolve()
        if rp not in seen:
            seen.add(rp)
            uniq.append(p)
    return uniq, skipped, sweeps
