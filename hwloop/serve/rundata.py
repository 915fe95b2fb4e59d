"""The JSON the dashboard serves, built from run logs through ``RunLog`` (read-only, SWMR).

Every function here opens the log, reads what it needs and closes it again: a log the writer replaces
(``close`` rebuilds it and renames it into place) or deletes is simply re-opened or reported on the next
poll. Nothing here writes a file. Payload formats are documented in ``docs/serve.md``.
"""

from __future__ import annotations

import math
import os
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hwloop.analysis.endurance import layer_tiles
from hwloop.analysis.logfile import H5_ERRORS, open_runlog
from hwloop.chip.base import COLS, ROWS
from hwloop.chip.cdf import CdfTable
from hwloop.errors import HwloopError, RunLogError
from hwloop.runlog import RunLog

#: a running run whose heartbeat (time of its last flush) is older than this is flagged as stalled
DEFAULT_STALL_S = 120.0
#: points of each calibration CDF sent to the page
CDF_POINTS = 101
#: conductance histogram bins (shared by all levels)
HIST_BINS = 80


def _f(x: Any) -> float | None:
    """JSON-safe float: NaN and inf become null."""
    v = float(x)
    return v if math.isfinite(v) else None


def _fl(a: np.ndarray, digits: int = 4) -> list:
    """JSON-safe list of floats (NaN -> null), rounded to keep the payload small."""
    a = np.round(np.asarray(a, dtype=np.float64), digits)
    return [None if not math.isfinite(v) else v for v in a.tolist()]


def heartbeat_s(log: RunLog) -> float | None:
    """Unix time of the writer's last flush (``/heartbeat``), or None if the log has none."""
    hb = getattr(log, "heartbeat", None)  # a RunLog property, if the run-log layer grows one
    if isinstance(hb, (int, float)):
        return float(hb)
    try:
        ds = log.f["heartbeat"]
        ds.refresh()
        return float(ds[0])
    except (*H5_ERRORS, KeyError):
        return None


def _total_epochs(config: dict, n_tasks: int) -> int | None:
    ept = config.get("epochs_per_task")
    return int(ept) * n_tasks if isinstance(ept, int) and ept > 0 else None


def summary(path: Path, rel: str, root: int, stall_s: float = DEFAULT_STALL_S) -> dict:
    """One row of the run list. Never raises for a bad log: the row then carries ``error``."""
    row: dict[str, Any] = {"id": f"{root}:{rel}", "root": root, "rel": rel, "name": path.stem}
    try:
        st = path.stat()
        row["size_bytes"] = int(st.st_size)
        row["mtime_s"] = float(st.st_mtime)
        with open_runlog(path) as log:
            log.refresh()
            row.update(_progress(log, stall_s))
    except HwloopError as exc:
        row["status"] = "error"
        row["error"] = str(exc)
    except FileNotFoundError:
        row["status"] = "error"
        row["error"] = f"{path} vanished while it was being read"
    except (OSError, *H5_ERRORS, KeyError, ValueError, TypeError, IndexError) as exc:
        row["status"] = "error"
        row["error"] = f"{path}: damaged or unexpected run log content ({type(exc).__name__}: {exc})"
    return row


def _progress(log: RunLog, stall_s: float) -> dict:
    """Status, configuration and progress figures of an open log."""
    cfg = log.config
    tasks = log.tasks
    ep = log.epochs()
    status = log.status
    now = time.time()
    hb = heartbeat_s(log)
    acc = log.accuracy(ep, percent=True)
    final = acc[-1] if acc.shape[0] else np.full(len(tasks), np.nan)
    total = _total_epochs(cfg, len(tasks))
    done = int(ep.shape[0])
    wall = ep["wall_s"].astype(np.float64) if done else np.zeros(0)
    progs = ep["programs"].astype(np.float64) if done else np.zeros(0)
    eta_s = None
    if status == "running" and total is not None and done:
        eta_s = _f(max(total - done, 0) * float(np.mean(wall[-5:])))
    since = None if hb is None else max(0.0, now - hb)
    m_star = cfg.get("m_star")
    return {
        "status": status,
        "stalled": bool(status == "running" and since is not None and since > stall_s),
        "tasks": tasks,
        "m_star": m_star if isinstance(m_star, (int, float)) else None,
        "hidden": cfg.get("hidden"),
        "seed": cfg.get("seed"),
        "lr": cfg.get("lr"),
        "bn_mode": cfg.get("bn_mode"),
        "chip": str(log.attrs.get("chip", "")),
        "created_utc": str(log.attrs.get("created_utc", "")),
        "n_tiles": log.n_tiles,
        "epochs_done": done,
        "epochs_total": total,
        "final_acc_pct": _fl(final, 2),
        "eta_s": eta_s,
        "programs_per_s": _f(progs[-1] / wall[-1]) if done and wall[-1] > 0 else None,
        "programs_per_s_mean": _f(progs.sum() / wall.sum()) if done and wall.sum() > 0 else None,
        "heartbeat_s": hb,
        "since_flush_s": since,
        "stall_s": stall_s,
    }


def detail(path: Path, rel: str, root: int, stall_s: float = DEFAULT_STALL_S) -> dict:
    """Everything the run view plots except maps and histograms: curves per epoch, markers, progress."""
    with open_runlog(path) as log:
        try:
            log.refresh()
            out = _progress(log, stall_s)
            ep = log.epochs()
            acc = log.accuracy(ep, percent=True)
            snaps = log.snapshot_epochs()
            layers = layer_tiles(log)
        except H5_ERRORS as exc:
            raise RunLogError(f"{path}: the run log is truncated or corrupt ({exc})") from exc
    tasks = out["tasks"]
    epoch = ep["epoch"].astype(np.int64) if ep.size else np.zeros(0, dtype=np.int64)
    task = ep["task"].astype(np.int64) if ep.size else np.zeros(0, dtype=np.int64)
    ms = ep["m_star"].astype(np.float64) if ep.size else np.zeros(0)
    switches = [float(epoch[i]) + 0.5 for i in np.flatnonzero(np.diff(task) != 0)]
    on = np.flatnonzero(ms > 0)
    warmup_end = float(epoch[on[0] - 1]) + 0.5 if on.size and on[0] > 0 else None
    out.update(
        {
            "id": f"{root}:{rel}",
            "name": path.stem,
            "rel": rel,
            "epoch": epoch.tolist(),
            "task": task.tolist(),
            "acc_pct": {t: _fl(acc[:, i], 3) for i, t in enumerate(tasks)},
            "train_loss": _fl(ep["train_loss"], 5) if ep.size else [],
            "programs": ep["programs"].astype(np.int64).tolist() if ep.size else [],
            "wall_s": _fl(ep["wall_s"], 3) if ep.size else [],
            "m_star_epoch": _fl(ms, 4),
            "task_switches": switches,
            "warmup_end": warmup_end,
            "snapshot_epochs": snaps.astype(np.int64).tolist(),
            "layer_tiles": layers,
        }
    )
    return out


def downsample(a: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor`` x ``factor`` blocks of a 2-D array (NaN cells ignored); one reshape, no loop."""
    if factor <= 1:
        return a.astype(np.float64)
    r, c = a.shape
    b = a[: r - r % factor, : c - c % factor].astype(np.float64)
    b = b.reshape(r // factor, factor, c // factor, factor)
    with np.errstate(invalid="ignore"):
        n = np.isfinite(b).sum(axis=(1, 3))
        s = np.nansum(b, axis=(1, 3))
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def _snapshot_index(log: RunLog, snap: int) -> tuple[int, int]:
    """(row in /snapshots, epoch) for snapshot row ``snap`` (negative counts from the end)."""
    ep = log.snapshot_epochs()
    if not ep.size:
        raise RunLogError(f"{log.path}: the run log has no snapshot yet; wait for the first epoch")
    k = snap if snap >= 0 else ep.size + snap
    if not 0 <= k < ep.size:
        raise RunLogError(f"{log.path}: no snapshot {snap} (the log holds {ep.size}: 0..{ep.size - 1})")
    return k, int(ep[k])


@dataclass
class Snapshot:
    """One snapshot of a log as read through ``RunLog.snapshot(k)``, with the run's calibration table."""

    key: tuple
    k: int
    epoch: int
    n_tiles: int
    g_us: np.ndarray  # (n_tiles, ROWS, COLS) float32
    level: np.ndarray  # (n_tiles, ROWS, COLS) int8, -1 unused
    table: CdfTable
    derived: dict = field(default_factory=dict)  # results computed from it (the histogram)


class SnapshotCache:
    """The last few snapshots read, keyed by (path, inode, snapshots in the log, row): a snapshot row never
    changes once written, so maps and histograms of it are computed once, however often the page polls.
    (A ``--resume`` rolls the log back and writes new rows; the key changes with the row count, except in
    the moment the count is back to the same value.)"""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._d: OrderedDict[tuple, Snapshot] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path, snap: int) -> Snapshot:
        inode = os.stat(path).st_ino
        with open_runlog(path) as log:
            try:
                log.refresh()
                k, epoch = _snapshot_index(log, snap)
                key = (path, inode, int(log.snapshot_epochs().size), k)
                with self._lock:
                    hit = self._d.get(key)
                    if hit is not None:
                        self._d.move_to_end(key)
                        return hit
                g_us, level = log.snapshot(k)
                table = log.table()
                n_tiles = log.n_tiles
            except H5_ERRORS as exc:
                raise RunLogError(f"{path}: the run log is truncated or corrupt ({exc})") from exc
        s = Snapshot(
            key=key,
            k=k,
            epoch=epoch,
            n_tiles=n_tiles,
            g_us=np.asarray(g_us, dtype=np.float32).reshape(-1, ROWS, COLS),
            level=np.asarray(level).reshape(-1, ROWS, COLS),
            table=table,
        )
        with self._lock:
            self._d[key] = s
            while len(self._d) > self.size:
                self._d.popitem(last=False)
        return s


def tile_map(
    path: Path, snap: int, tile: int, factor: int, wear: np.ndarray | None, cache: SnapshotCache | None = None
) -> dict:
    """Conductance map of one tile from one snapshot and its program-count map (``wear``: the tile's
    programs per device, ROWS * COLS), both downsampled."""
    s = (cache or SnapshotCache()).get(path, snap)
    if not 0 <= tile < s.n_tiles:
        raise RunLogError(f"{path}: no tile {tile} (the run has tiles 0..{s.n_tiles - 1})")
    lv = s.level[tile]
    g = np.where(lv >= 0, s.g_us[tile], np.nan)  # unused devices are left blank
    out: dict[str, Any] = {
        "snapshot": s.k,
        "epoch": s.epoch,
        "tile": tile,
        "factor": factor,
        "g_us": [_fl(r, 2) for r in downsample(g, factor)],
    }
    if wear is not None:
        w = wear.reshape(ROWS, COLS).astype(np.float64)
        w = np.where(lv >= 0, w, np.nan)
        out["programs"] = [_fl(r, 2) for r in downsample(w, factor)]
        out["programs_max"] = int(np.nanmax(w)) if np.isfinite(w).any() else 0
    return out


def level_histogram(path: Path, snap: int, cache: SnapshotCache | None = None) -> dict:
    """Histogram of the read conductance per nominal level (all tiles) against the calibration's CDFs."""
    s = (cache or SnapshotCache()).get(path, snap)
    hit = s.derived.get("hist")
    if hit is None:
        hit = s.derived["hist"] = _histogram(s)
    return hit


def _histogram(s: Snapshot) -> dict:
    g_us, level, table, k, epoch = s.g_us, s.level, s.table, s.k, s.epoch
    g = np.asarray(g_us, dtype=np.float64).ravel()
    lv = np.asarray(level).ravel().astype(np.int64)
    used = (lv >= 0) & np.isfinite(g)
    g, lv = g[used], lv[used]
    grid = table.grid
    hi = float(np.nanmax(grid[:, -2])) if grid.size else 1.0
    if g.size:
        hi = max(hi, float(np.percentile(g, 99.9)))
    edges = np.linspace(0.0, hi, HIST_BINS + 1)
    n_lv = table.n_levels
    key = np.clip(np.searchsorted(edges, g, side="right") - 1, 0, HIST_BINS - 1)
    ok = lv < n_lv
    counts = np.bincount(lv[ok] * HIST_BINS + key[ok], minlength=n_lv * HIST_BINS).reshape(n_lv, HIST_BINS)
    p = np.linspace(0.0, 1.0, grid.shape[1])
    pick = np.linspace(0, grid.shape[1] - 1, CDF_POINTS).round().astype(np.int64)
    levels = []
    for i, lev in enumerate(table.levels):  # one entry per level (9), not per device
        levels.append(
            {
                "level": i,
                "name": lev.name,
                "devices": int(counts[i].sum()),
                "counts": counts[i].tolist(),
                "cdf_g_us": _fl(grid[i, pick], 3),
                "cdf_p": _fl(p[pick], 4),
            }
        )
    return {"snapshot": k, "epoch": epoch, "bin_edges_us": _fl(edges, 3), "levels": levels}


def file_identity(path: Path) -> tuple[int, int, int]:
    """(inode, size, mtime_ns): changes whenever a writer flushes, replaces or truncates the file."""
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


def compare(runs: list[tuple[str, Path]]) -> dict:
    """Accuracy curves of several runs overlaid, and their mean ± sample std per task and epoch.

    Runs are aligned by epoch number; at each epoch the statistics use the runs that reached it (``n``).
    A run that cannot be read is listed under ``errors`` and left out.
    """
    curves = []
    errors = []
    for rid, p in runs:  # one iteration per run compared
        try:
            with open_runlog(p) as log:
                log.refresh()
                ep = log.epochs()
                tasks = log.tasks
                acc = log.accuracy(ep, percent=True)
        except (HwloopError, OSError, *H5_ERRORS) as exc:
            errors.append({"id": rid, "error": str(exc)})
            continue
        curves.append({"id": rid, "name": p.stem, "tasks": tasks, "epoch": ep["epoch"].astype(np.int64), "acc": acc})
    task_names: list[str] = []
    for c in curves:
        task_names += [t for t in c["tasks"] if t not in task_names]
    n_ep = max((int(c["epoch"].max()) for c in curves if c["epoch"].size), default=0)
    stack = np.full((len(curves), len(task_names), n_ep), np.nan)
    for r, c in enumerate(curves):
        if not c["epoch"].size:
            continue
        cols = [task_names.index(t) for t in c["tasks"]]
        stack[r, np.asarray(cols)[:, None], c["epoch"][None, :] - 1] = c["acc"].T
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        n = np.isfinite(stack).sum(axis=0)
        mean = np.nanmean(stack, axis=0) if curves else np.zeros((len(task_names), n_ep))
        std = np.nanstd(stack, axis=0, ddof=1) if curves else np.zeros((len(task_names), n_ep))
    std = np.where(n >= 2, std, np.nan)
    return {
        "tasks": task_names,
        "epoch": list(range(1, n_ep + 1)),
        "runs": [
            {"id": c["id"], "name": c["name"], "acc_pct": {t: _fl(stack[r, j], 3) for j, t in enumerate(task_names)}}
            for r, c in enumerate(curves)
        ],
        "mean_pct": {t: _fl(mean[j], 3) for j, t in enumerate(task_names)},
        "std_pct": {t: _fl(std[j], 3) for j, t in enumerate(task_names)},
        "n": {t: n[j].tolist() for j, t in enumerate(task_names)},
        "errors": errors,
    }
