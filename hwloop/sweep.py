"""Parameter sweeps: the Cartesian product of a grid of training options, one run log per point.

A sweep folder holds (format documented in ``docs/sweep.md``):

- ``sweep.json``: the manifest (grid, base configuration, every point's configuration, status, error,
  log path, results and wall time). Written atomically by the sweep driver after every change.
- ``<point>.h5``: one run log per point, named from the point, e.g. ``m3-h512-s0.h5``.
- ``summary.csv`` / ``summary.md``: mean ± std of the final accuracies per configuration (grouped over seeds).
- ``sweep.lock``: held (``flock``) while a driver runs on the folder, so two drivers never share it.

Points run on an executor: local worker processes (``workers``), or Ray tasks (``ray_address``), one task
per point. Every point is resumable: a finished run log is skipped; a crashed, interrupted or failed one
is continued from its last checkpoint (``train(cfg, resume=log)``); one without a checkpoint is deleted
and started again.

For other tools (``hwloop report``): :func:`load_manifest` reads a sweep folder into a :class:`Manifest`;
:func:`summarize` groups its finished points over seeds.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hwloop import __version__
from hwloop.errors import ConfigError, HwloopError

FORMAT_NAME = "hwloop-sweep"
FORMAT_VERSION = 1
MANIFEST_NAME = "sweep.json"
LOCK_NAME = "sweep.lock"
SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"

#: grid axes (TrainConfig fields), in the order they vary (the last varies fastest), and their name prefix
AXES: tuple[str, ...] = ("m_star", "hidden", "lr", "seed")
AXIS_PREFIX = {"m_star": "m", "hidden": "h", "lr": "lr", "seed": "s"}
#: axes every sweep has (``lr`` is an axis only when the sweep was created with several values)
REQUIRED_AXES: tuple[str, ...] = ("m_star", "hidden", "seed")
#: TrainConfig fields that never belong to the base configuration of a sweep (set per point or per executor)
NOT_BASE = {"out", "progress", "threads"}
#: base fields that may change between invocations on the same folder (they don't change the experiment)
FREE_BASE = {"data_dir", "download", "bench", "verify_data"}

STATUSES = ("pending", "queued", "running", "finished", "failed", "interrupted")


# ---------------------------------------------------------------------------- parsing grid values
def parse_seeds(spec: str | int | Sequence[int]) -> list[int]:
    """``"5"`` → seeds 0..4; ``"0,3,7"`` → those seeds; ``"7,"`` → seed 7 only; ``"10-14"`` → 10..14 inclusive."""
    if isinstance(spec, int):
        spec = str(spec)
    if not isinstance(spec, str):
        return _unique([int(s) for s in spec], "--seeds")
    s = spec.strip()
    try:
        if "," in s:
            seeds = [int(p) for p in s.split(",") if p.strip()]
        elif "-" in s[1:]:
            lo, hi = (int(p) for p in s.split("-", 1))
            if hi < lo:
                raise ValueError
            seeds = list(range(lo, hi + 1))
        else:
            n = int(s)
            if n < 1:
                raise ConfigError("--seeds N needs N >= 1 (it means seeds 0..N-1)")
            seeds = list(range(n))
    except ValueError as exc:
        raise ConfigError(
            f"--seeds {spec!r}: give a count N (seeds 0..N-1), a list (0,3,7; one seed: 7,) or a range (10-14)"
        ) from exc
    if not seeds:
        raise ConfigError(f"--seeds {spec!r} gives no seed")
    return _unique(seeds, "--seeds")


def parse_list(spec: str | float | Sequence[float], kind: type, option: str) -> list:
    """A comma-separated list of numbers (``"0,1,2.5"``) into a list of ``kind``."""
    if isinstance(spec, (int, float)):
        vals = [kind(spec)]
    elif isinstance(spec, str):
        try:
            vals = [kind(p) if kind is float else int(p) for p in spec.split(",") if p.strip()]
        except ValueError as exc:
            raise ConfigError(f"{option} {spec!r}: give a comma-separated list of numbers, e.g. 0,1,2") from exc
    else:
        vals = [kind(v) for v in spec]
    if not vals:
        raise ConfigError(f"{option} {spec!r} gives no value")
    if not all(math.isfinite(v) for v in vals):
        raise ConfigError(f"{option} {spec!r}: every value must be a finite number (no nan or inf)")
    return _unique(vals, option)


def _unique(vals: list, option: str) -> list:
    dup = sorted({v for v in vals if vals.count(v) > 1})
    if dup:
        raise ConfigError(f"{option}: value(s) {', '.join(map(str, dup))} given twice")
    return vals


def _fmt_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def point_name(params: dict[str, Any]) -> str:
    """Deterministic name of a point from its axis values, e.g. ``m3-h512-s0`` (``m3-h512-lr0.0005-s0``)."""
    return "-".join(f"{AXIS_PREFIX[a]}{_fmt_value(params[a])}" for a in AXES if a in params)


# ---------------------------------------------------------------------------- the manifest
@dataclass
class PointRecord:
    """One point of a sweep, as stored in ``sweep.json``."""

    name: str
    log: str  # run log path relative to the sweep folder
    params: dict[str, Any]  # axis values of this point
    config: dict[str, Any]  # the full TrainConfig of the run (``out`` as given to the worker)
    status: str = "pending"
    error: str | None = None
    final_acc: dict[str, float] = field(default_factory=dict)  # test accuracy per task (fraction)
    acc_after_task: dict[str, dict[str, float]] = field(default_factory=dict)
    epochs: int = 0
    steps: int = 0
    programs: int = 0
    wall_s: float = 0.0  # training time of the run's epochs (from its log; over every attempt)
    run_wall_s: float = 0.0  # wall time of the last execution in its worker (set-up, data, training)
    attempts: int = 0  # executions started by a sweep driver (a skipped finished point adds none)
    action: str | None = None  # last execution: started, resumed, restarted, found (finished log found)
    host: str | None = None
    started_utc: str | None = None
    ended_utc: str | None = None

    @classmethod
    def from_dict(cls, d: dict) -> PointRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class Manifest:
    """A sweep folder's ``sweep.json``. ``dir`` is the folder (not stored)."""

    dir: Path
    grid: dict[str, list]  # axis -> values, axes in AXES order
    base: dict[str, Any]  # TrainConfig fields shared by all points (all but the axes, out, progress, threads)
    points: list[PointRecord]
    created_utc: str = ""
    updated_utc: str = ""
    hwloop_version: str = __version__
    executor: dict[str, Any] = field(default_factory=dict)  # the last driver's executor settings
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION

    @property
    def axes(self) -> list[str]:
        return list(self.grid)

    @property
    def group_axes(self) -> list[str]:
        """Axes that define a configuration (every axis but the seed)."""
        return [a for a in self.grid if a != "seed"]

    def log_path(self, p: PointRecord | str) -> Path:
        """Absolute path of a point's run log."""
        rec = self.point(p) if isinstance(p, str) else p
        return (self.dir / rec.log).resolve()

    def point(self, name: str) -> PointRecord:
        for p in self.points:
            if p.name == name:
                return p
        raise KeyError(name)

    def failed(self) -> list[PointRecord]:
        return [p for p in self.points if p.status == "failed"]

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for p in self.points:
            out[p.status] = out.get(p.status, 0) + 1
        return {k: v for k, v in out.items() if v}

    def as_dict(self) -> dict:
        return {
            "format": self.format, "format_version": self.format_version, "hwloop_version": self.hwloop_version,
            "created_utc": self.created_utc, "updated_utc": self.updated_utc, "axes": self.axes,
            "grid": self.grid, "base": self.base, "executor": self.executor,
            "points": [asdict(p) for p in self.points],
        }

    def save(self) -> None:
        """Write ``sweep.json`` atomically (temporary file, then rename)."""
        self.updated_utc = _utc_now()
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".sweep-", suffix=".json.tmp", dir=self.dir)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.as_dict(), f, indent=1, default=_json_default)
                f.write("\n")
            os.replace(tmp, self.dir / MANIFEST_NAME)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def load_manifest(sweep_dir: str | Path) -> Manifest:
    """Read a sweep folder's ``sweep.json``.

    Returns a :class:`Manifest`: ``grid`` (axis → values), ``base`` (shared configuration), ``points`` (one
    :class:`PointRecord` each: ``name``, ``params``, ``config``, ``status``, ``error``, ``final_acc``,
    ``acc_after_task``, ``wall_s`` ...), ``log_path(point)`` (absolute path of its run log) and
    ``group_axes`` (the axes that define a configuration: all but ``seed``). A point's status is the
    driver's view when it last wrote the manifest; the run log's own status (``RunLog(path).status``) is
    the truth for a point a killed driver left as ``running``/``queued``.
    Raises ``ConfigError`` if the folder has no readable sweep manifest.
    """
    d = Path(sweep_dir)
    path = d / MANIFEST_NAME
    if not path.is_file():
        raise ConfigError(f"{d} is not a sweep folder: it has no {MANIFEST_NAME}")
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is unreadable ({exc})") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
        raise ConfigError(f"{path} is not an hwloop sweep manifest (format {raw.get('format')!r})")
    if int(raw.get("format_version", -1)) != FORMAT_VERSION:
        raise ConfigError(f"{path}: sweep format version {raw.get('format_version')} is not supported "
                          f"(this hwloop reads {FORMAT_VERSION})")
    return Manifest(
        dir=d, grid={a: list(v) for a, v in raw["grid"].items()}, base=dict(raw["base"]),
        points=[PointRecord.from_dict(p) for p in raw["points"]], created_utc=raw.get("created_utc", ""),
        updated_utc=raw.get("updated_utc", ""), hwloop_version=raw.get("hwloop_version", ""),
        executor=dict(raw.get("executor", {})),
    )


# ---------------------------------------------------------------------------- planning
def default_base(axes: Sequence[str] = REQUIRED_AXES) -> dict[str, Any]:
    """The base configuration of a sweep over ``axes`` with every TrainConfig default."""
    from hwloop.orchestrator import TrainConfig

    return {k: v for k, v in asdict(TrainConfig()).items() if k not in NOT_BASE and k not in axes}


def _normalise_base(base: dict[str, Any], axes: Sequence[str]) -> dict[str, Any]:
    from hwloop.orchestrator import TrainConfig

    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(base) - known)
    if unknown:
        raise ConfigError(f"unknown training option(s) in the sweep base: {', '.join(unknown)}")
    out = default_base(axes)
    out.update({k: v for k, v in base.items() if k not in NOT_BASE and k not in axes})
    for k in ("calibration", "bench", "data_dir"):  # workers (Ray) may run in another folder
        if out.get(k):
            out[k] = str(Path(out[k]).expanduser().resolve())
    return out


def _normalise_grid(grid: dict[str, Sequence]) -> dict[str, list]:
    unknown = sorted(set(grid) - set(AXES))
    if unknown:
        raise ConfigError(f"unknown sweep axis {', '.join(unknown)}; axes are {', '.join(AXES)}")
    missing = [a for a in REQUIRED_AXES if a not in grid]
    if missing:
        raise ConfigError(f"the sweep grid lacks the axis {', '.join(missing)}")
    kinds = {"m_star": float, "hidden": int, "lr": float, "seed": int}
    out = {}
    for a in AXES:
        if a in grid:
            vals = [kinds[a](v) for v in grid[a]]
            if not vals:
                raise ConfigError(f"the sweep axis {a} has no value")
            out[a] = _unique(vals, a)
    return out


def _point_config(base: dict, params: dict) -> dict:
    return {**base, **params}


def build_points(sweep_dir: Path, grid: dict[str, list], base: dict) -> list[PointRecord]:
    from hwloop.orchestrator import TrainConfig

    pts = []
    names: dict[str, dict] = {}
    for combo in itertools.product(*grid.values()):
        params = dict(zip(grid, combo, strict=True))
        name = point_name(params)
        if name in names:
            raise ConfigError(f"grid values {names[name]} and {params} give the same point name {name!r}")
        names[name] = params
        cfg = _point_config(base, params)
        TrainConfig(**cfg).validate()
        pts.append(PointRecord(name=name, log=f"{name}.h5", params=params, config=cfg))
    return pts


def plan(sweep_dir: str | Path, grid: dict[str, Sequence] | None = None, base: dict[str, Any] | None = None,
         explicit: set[str] | None = None) -> Manifest:
    """The manifest for a sweep: a new one, or the folder's existing one merged with the request.

    ``grid``/``base`` may be None for an existing folder (continue it as it is). For an existing folder the
    rules are: the axes must be the same; each axis may gain values (the grid grows; points already there
    keep their names, logs and results), but may not lose any; the base configuration must be the same,
    except the fields in ``FREE_BASE`` (data location, download, bench file). ``explicit`` names the base
    fields the user set; the others are taken from the existing manifest (so a bare re-run continues).
    """
    d = Path(sweep_dir)
    exists = (d / MANIFEST_NAME).is_file()
    if not exists:
        if grid is None:
            raise ConfigError(f"{d} has no {MANIFEST_NAME}: give the grid (--m, --hidden, --seeds) to start a sweep")
        g = _normalise_grid(grid)
        b = _normalise_base(base or {}, list(g))
        if d.exists() and any(d.glob("*.h5")):
            raise ConfigError(f"{d} already holds run logs but no {MANIFEST_NAME}: choose an empty or new --out")
        now = _utc_now()
        return Manifest(dir=d, grid=g, base=b, points=build_points(d, g, b), created_utc=now, updated_utc=now)
    old = load_manifest(d)
    if grid is None:
        g = old.grid
    else:
        g = _normalise_grid(grid)
        if list(g) != list(old.grid):
            raise ConfigError(
                f"{d} is a sweep over {', '.join(old.grid)}, not over {', '.join(g)}: "
                "use the same axes (a new --out for another grid)"
            )
        lost = {a: [v for v in old.grid[a] if v not in g[a]] for a in g}
        lost = {a: v for a, v in lost.items() if v}
        if lost:
            detail = "; ".join(f"{a} {', '.join(map(_fmt_value, v))}" for a, v in lost.items())
            raise ConfigError(
                f"{d}: the grid lacks values of the existing sweep ({detail}); a sweep folder can only grow. "
                "Repeat its values (or omit the grid options to continue it as it is), or use a new --out"
            )
        # keep the old order, new values at the end of each axis
        g = {a: list(old.grid[a]) + [v for v in g[a] if v not in old.grid[a]] for a in g}
    b = dict(old.base)
    if base is not None:
        req = _normalise_base(base, list(g))
        keys = (set(base) if explicit is None else set(explicit)) & set(req)
        for k in keys & FREE_BASE:
            b[k] = req[k]
        diff = sorted(k for k in keys - FREE_BASE if req[k] != old.base.get(k))
        if diff:
            detail = ", ".join(f"{k}: sweep {old.base.get(k)!r} vs now {req[k]!r}" for k in diff[:4])
            raise ConfigError(
                f"{d} is a sweep with another configuration ({detail}); drop those options to continue it, "
                "or use a new --out"
            )
    pts = build_points(d, g, b)
    by_name = {p.name: p for p in old.points}
    merged = []
    for p in pts:
        if p.name in by_name:
            rec = by_name[p.name]
            rec.config = p.config  # free fields (data location) may have changed
            merged.append(rec)
        else:
            merged.append(p)
    return Manifest(dir=d, grid=g, base=b, points=merged, created_utc=old.created_utc,
                    updated_utc=old.updated_utc, hwloop_version=__version__, executor=old.executor)


# ---------------------------------------------------------------------------- one point (runs in a worker)
#: a log that says "running" but whose writer (on another host) has not flushed for this long is crashed
STALE_HEARTBEAT_S = 300.0
#: how long a point waits for the live writer of its log to go away (a killed sweep's worker) before failing
WAIT_LIVE_WRITER_S = 30.0


def _log_state(path: Path) -> tuple[str, bool]:
    """(status, has_checkpoint) of a run log; ("unreadable", False) if it cannot be opened.

    A log written on another host that says "running" with a heartbeat older than ``STALE_HEARTBEAT_S`` is
    taken as crashed (the run log itself waits an hour before saying so).
    """
    from hwloop.runlog import RunLog

    try:
        with RunLog(path) as log:
            status = log.status
            slot = int(log.f["checkpoint"]["index"][0])
            if status == "running" and time.time() - float(log.f["heartbeat"][0]) > STALE_HEARTBEAT_S:
                status = "crashed"
    except (HwloopError, OSError, KeyError, ValueError):
        return "unreadable", False
    return status, slot >= 0


def results_from_log(path: str | Path) -> dict[str, Any]:
    """The results of a run from its log: final_acc, acc_after_task, epochs, steps, programs, wall_s."""
    from hwloop.runlog import RunLog

    with RunLog(path) as log:
        ep = log.epochs()
        tasks = log.tasks
        cfg = log.config
    if ep.size == 0:
        return {"final_acc": {}, "acc_after_task": {}, "epochs": 0, "steps": 0, "programs": 0, "wall_s": 0.0}
    last = ep["acc"][-1]
    final = {n: float(last[i]) for i, n in enumerate(tasks) if not math.isnan(last[i])}
    ept = int(cfg.get("epochs_per_task", 0)) or 1
    after: dict[str, dict[str, float]] = {}
    for row in ep:
        e = int(row["epoch"])
        if e % ept == 0 and 0 < e // ept <= len(tasks):
            t = e // ept - 1
            after[tasks[t]] = {tasks[j]: float(row["acc"][j]) for j in range(t + 1)}
    return {
        "final_acc": final, "acc_after_task": after, "epochs": int(ep["epoch"][-1]), "steps": int(ep["step"][-1]),
        "programs": int(ep["programs"].sum()), "wall_s": float(ep["wall_s"].sum()),
    }


def run_point(config: dict[str, Any], log_path: str, *, return_bytes: bool = False,
              log_bytes: bytes | None = None) -> dict[str, Any]:
    """Run one sweep point to the end and return its result (a dict; never raises for a failed run).

    The log at ``log_path`` decides what happens: finished → nothing is run (``action`` "found"); a
    checkpoint → resumed; no log → started; a log without checkpoint (or unreadable) → deleted and
    started again ("restarted"). With ``return_bytes`` the log is written to a local temporary folder
    (seeded with ``log_bytes`` if given) and its bytes come back in the result as ``log_bytes``, for
    Ray workers that don't share the sweep folder's file system.
    """
    from hwloop.orchestrator import TrainConfig, train

    t0 = time.monotonic()
    tmpdir = None
    res: dict[str, Any] = {"status": "failed", "error": None, "action": None, "host": socket.gethostname(),
                           "pid": os.getpid(), "started_utc": _utc_now()}
    try:
        if return_bytes:
            tmpdir = tempfile.mkdtemp(prefix="hwloop-point-")
            path = Path(tmpdir) / Path(log_path).name
            if log_bytes is not None:
                path.write_bytes(log_bytes)
        else:
            path = Path(log_path)
        cfg = TrainConfig(**{**config, "out": str(path)})
        resume = None
        if path.exists():
            status, has_ck = _log_state(path)
            deadline = time.monotonic() + WAIT_LIVE_WRITER_S
            while status == "running" and time.monotonic() < deadline:  # e.g. a killed sweep's worker, exiting
                time.sleep(0.5)
                status, has_ck = _log_state(path)
            if status == "finished":
                res.update(results_from_log(path), status="finished", action="found")
                return res
            if status == "running":
                raise HwloopError(
                    f"{path} is being written by another live process (writer_pid/writer_host in the log; its "
                    f"heartbeat is recent). Stop it, or wait {STALE_HEARTBEAT_S:.0f} s after it is gone"
                )
            if has_ck:
                resume, res["action"] = str(path), "resumed"
            else:
                path.unlink()
                res["action"] = "restarted"
        else:
            res["action"] = "started"
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            result = train(cfg, resume=resume)
        finally:
            if path.exists():
                with contextlib.suppress(HwloopError, OSError):
                    res.update(results_from_log(path))
        res["status"] = result.status
    except KeyboardInterrupt:
        res.update(status="interrupted", error="interrupted")
    except Exception as exc:
        res.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                   traceback="".join(traceback.format_exception(exc))[-4000:])
    finally:
        res["ended_utc"] = _utc_now()
        res["run_wall_s"] = time.monotonic() - t0
        if tmpdir is not None:
            p = Path(tmpdir) / Path(log_path).name
            if p.exists():
                res["log_bytes"] = p.read_bytes()
            shutil.rmtree(tmpdir, ignore_errors=True)
    return res


# ---------------------------------------------------------------------------- executors
Job = tuple[str, dict, str, bytes | None]  # (point name, config, log path, log bytes to seed or None)
Outcome = tuple[str, dict]  # (point name, result of run_point)


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _worker_main(conn: Any, parent_pid: int) -> None:
    """Loop of a local worker process: receive (name, config, log) jobs, send back results."""

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)

    def watch_parent() -> None:  # the driver was killed (SIGKILL): stop too, leaving a resumable log
        while True:
            time.sleep(0.5)
            if os.getppid() != parent_pid:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(20)
                os._exit(3)

    threading.Thread(target=watch_parent, daemon=True).start()
    try:
        while True:
            job = conn.recv()
            if job is None:  # done: skip the interpreter's slow tear-down of torch (every log is closed)
                conn.close()
                os._exit(0)
            name, config, log, _ = job
            conn.send((name, run_point(config, log)))
    except (KeyboardInterrupt, EOFError, OSError):
        return


class LocalExecutor:
    """A fixed set of worker processes (spawned, so torch starts clean); each runs one point at a time.

    A worker that dies (segfault, OOM kill) fails only the point it was running and is replaced.
    """

    kind = "local"

    def __init__(self, workers: int) -> None:
        import multiprocessing as mp

        self.ctx = mp.get_context("spawn")
        self.n = max(1, workers)
        self.procs: list[Any] = []

    def settings(self) -> dict:
        return {"kind": self.kind, "workers": self.n}

    def _spawn(self) -> tuple[Any, Any]:
        parent, child = self.ctx.Pipe()
        p = self.ctx.Process(target=_worker_main, args=(child, os.getpid()), daemon=True, name="hwloop-sweep-worker")
        p.start()
        child.close()
        self.procs.append(p)
        return p, parent

    def run(self, jobs: list[Job], on_start: Callable[[str], None]) -> Iterator[Outcome]:
        from multiprocessing.connection import wait

        pending = list(jobs)
        idle: list[tuple[Any, Any]] = [self._spawn() for _ in range(min(self.n, len(jobs)))]
        busy: dict[Any, tuple[Any, str]] = {}  # conn -> (process, point name)
        try:
            while pending or busy:
                while pending and idle:
                    proc, conn = idle.pop()
                    name, cfg, log, _ = pending.pop(0)
                    conn.send((name, cfg, log, None))
                    busy[conn] = (proc, name)
                    on_start(name)
                ready = wait(list(busy) + [p.sentinel for p, _ in busy.values()], timeout=1.0)
                for conn in list(busy):
                    proc, name = busy[conn]
                    if conn in ready:
                        try:
                            got_name, res = conn.recv()
                        except (EOFError, OSError):
                            proc.join(timeout=5)  # the worker is gone
                        else:
                            del busy[conn]
                            if pending:
                                idle.append((proc, conn))
                            else:  # nothing left for it: let it exit while the others finish
                                with contextlib.suppress(OSError):
                                    conn.send(None)
                                conn.close()
                            yield got_name, res
                            continue
                    if conn in ready or not proc.is_alive():
                        proc.join(timeout=5)
                        del busy[conn]
                        conn.close()
                        yield name, {"status": "failed", "error": f"worker process died (exit code {proc.exitcode})"}
                        if pending:
                            idle.append(self._spawn())
        finally:
            self.close(idle, busy)

    def close(self, idle: list, busy: dict) -> None:
        for _, conn in idle:
            with contextlib.suppress(OSError):
                conn.send(None)
        running = [b[0] for b in busy.values()]
        for p in running:
            if p.is_alive():
                p.terminate()  # SIGTERM: the run closes its log as interrupted
        for conn in [c for _, c in idle] + list(busy):
            conn.close()
        deadline = time.monotonic() + 30
        for p in self.procs:
            p.join(timeout=max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        self.procs.clear()


class RayExecutor:
    """One Ray task per point (``num_cpus=cpus_per_run``).

    ``address``: ``"local"`` starts a Ray instance on this machine (``num_cpus`` = ``local_cpus`` or all);
    ``"auto"`` joins the running cluster (``ray start``; or RAY_ADDRESS); anything else is a cluster address
    (``ray://host:10001`` or ``host:6379``). If Ray is already initialised in this process it is used as it is.
    ``logs``: ``"shared"`` (workers write the run logs in the sweep folder, which must be on a file system
    they share) or ``"return"`` (workers write to a local temporary folder and return the log's bytes).
    """

    kind = "ray"

    def __init__(self, address: str, cpus_per_run: int = 1, logs: str = "shared", local_cpus: int | None = None,
                 max_retries: int = 1) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ConfigError("--ray needs Ray: pip install 'hwloop[ray]' (or pip install ray)") from exc
        if logs not in ("shared", "return"):
            raise ConfigError(f"--ray-logs {logs!r}: choose shared or return")
        self.ray = ray
        self.address = address
        self.cpus_per_run = cpus_per_run
        self.logs = logs
        self.max_retries = max_retries
        self.started = False
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address == "local":
                ray.init(num_cpus=local_cpus, **kw)
            else:
                ray.init(address=address, **kw)
            self.started = True

    def settings(self) -> dict:
        return {"kind": self.kind, "address": self.address, "cpus_per_run": self.cpus_per_run, "logs": self.logs}

    def run(self, jobs: list[Job], on_start: Callable[[str], None]) -> Iterator[Outcome]:
        ray = self.ray
        task = ray.remote(run_point).options(num_cpus=self.cpus_per_run, max_retries=self.max_retries)
        refs: dict[Any, str] = {}
        try:
            for name, cfg, log, seed_bytes in jobs:
                ref = task.remote(cfg, log, return_bytes=self.logs == "return", log_bytes=seed_bytes)
                refs[ref] = name
                on_start(name)
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
                for ref in done:
                    name = refs.pop(ref)
                    try:
                        res = ray.get(ref)
                    except Exception as exc:  # the task's worker died, or Ray failed it
                        res = {"status": "failed", "error": f"ray task failed: {type(exc).__name__}: {exc}"[:2000]}
                    yield name, res
        finally:
            for ref in refs:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)

    def shutdown(self) -> None:
        if self.started:
            self.ray.shutdown()
            self.started = False


# ---------------------------------------------------------------------------- the driver
@dataclass
class SweepResult:
    manifest: Manifest
    ran: list[str]  # points executed by this invocation
    skipped: list[str]  # points found finished
    failed: list[str]
    wall_s: float
    summary_csv: Path | None = None
    summary_md: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.failed


@contextlib.contextmanager
def _folder_lock(d: Path) -> Iterator[None]:
    d.mkdir(parents=True, exist_ok=True)
    path = d / LOCK_NAME
    f = open(path, "a+")  # noqa: SIM115 - held for the whole sweep
    try:
        try:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # not POSIX: no lock
            pass
        except OSError as exc:
            f.seek(0)
            who = f.read().strip() or "another process"
            raise ConfigError(f"another hwloop sweep is running on {d} ({who}); wait for it or stop it") from exc
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        yield
    finally:
        f.close()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _apply(rec: PointRecord, res: dict) -> None:
    # wall_s comes from the log: the training time of its epochs, whichever attempt ran them
    for k in ("final_acc", "acc_after_task", "epochs", "steps", "programs", "wall_s", "run_wall_s", "host",
              "started_utc", "ended_utc", "action"):
        if res.get(k) is not None:
            setattr(rec, k, res[k])
    rec.status = res.get("status", "failed")
    rec.error = res.get("error") if rec.status != "finished" else None


def run_sweep(sweep_dir: str | Path, grid: dict[str, Sequence] | None = None, base: dict[str, Any] | None = None,
              *, explicit: set[str] | None = None, workers: int = 1, threads: int | None = None,
              ray_address: str | None = None, ray_logs: str = "shared", cpus_per_run: int | None = None,
              progress: bool = True, retry_failed: bool = True) -> SweepResult:
    """Run (or continue) a sweep in ``sweep_dir``; see :func:`plan` for how an existing folder is merged.

    Local executor (default): ``workers`` processes, each run with ``threads`` torch threads (default
    ``max(1, cores // workers)``). Ray (``ray_address`` "local", "auto" or an address): one task per point with
    ``num_cpus = cpus_per_run`` (default 1) and as many torch threads. Finished points are skipped; the others
    run (resumed from their checkpoints). ``retry_failed=False`` leaves points marked failed alone.
    A failed point never stops the sweep; the result lists the failed points.
    """
    d = Path(sweep_dir)
    t0 = time.monotonic()
    with _folder_lock(d), _sigterm_as_interrupt():
        man = plan(d, grid, base, explicit)
        if man.base.get("chip") == "real" and (ray_address or workers > 1):
            raise ConfigError("--chip real drives one bench: run its sweep with --workers 1 and without --ray")
        if ray_address:
            cpr = cpus_per_run or threads or 1
            executor: LocalExecutor | RayExecutor = RayExecutor(ray_address, cpus_per_run=cpr, logs=ray_logs,
                                                                local_cpus=None if workers <= 1 else workers)
            n_threads = cpr
        else:
            executor = LocalExecutor(workers)
            n_threads = threads or max(1, cpu_cores() // max(1, workers))
        man.executor = {**executor.settings(), "threads": n_threads, "driver_host": socket.gethostname(),
                        "driver_pid": os.getpid()}
        skipped, jobs = [], []
        for rec in man.points:
            log = man.log_path(rec)
            state, _ = _log_state(log) if log.exists() else ("missing", False)
            if state == "finished":
                if rec.status != "finished" or not rec.final_acc:
                    _apply(rec, {**results_from_log(log), "status": "finished", "action": "found"})
                skipped.append(rec.name)
                continue
            if rec.status == "failed" and not retry_failed:
                continue
            cfg = {**rec.config, "progress": False, "threads": n_threads}
            seed_bytes = None
            if isinstance(executor, RayExecutor) and executor.logs == "return" and log.exists():
                seed_bytes = log.read_bytes()
            jobs.append((rec.name, cfg, str(log), seed_bytes))
        man.save()
        ran: list[str] = []
        bar = _bar(len(man.points), len(skipped), progress)

        def on_start(name: str) -> None:
            rec = man.point(name)
            rec.status = "running" if isinstance(executor, LocalExecutor) else "queued"
            rec.error = None
            rec.attempts += 1
            man.save()

        outcomes = executor.run(jobs, on_start)
        try:
            for name, res in outcomes:
                rec = man.point(name)
                blob = res.pop("log_bytes", None)
                if blob is not None:
                    _write_atomic(man.log_path(rec), blob)
                if res.get("status") == "finished" and not man.log_path(rec).exists():
                    res = {**res, "status": "failed",
                           "error": f"the run finished on {res.get('host')} but its log is not in {man.dir} here; "
                           "put the sweep folder on a shared file system or use --ray-logs return"}
                _apply(rec, res)
                ran.append(name)
                man.save()
                bar.update(1)
                counts = man.counts()
                bar.set_postfix_str(" ".join(f"{k} {v}" for k, v in counts.items() if k != "pending"), refresh=True)
                if rec.status == "failed":
                    bar.write(f"point {name} failed: {rec.error}")
        except KeyboardInterrupt:
            for rec in man.points:
                if rec.status in ("running", "queued"):
                    rec.status = "interrupted"
            man.save()
            raise
        finally:
            outcomes.close()
            bar.close()
            if isinstance(executor, RayExecutor):
                executor.shutdown()
        man.save()
        csv_path, md_path = write_summary(man)
    failed = [p.name for p in man.points if p.status == "failed"]
    return SweepResult(manifest=man, ran=ran, skipped=skipped, failed=failed, wall_s=time.monotonic() - t0,
                       summary_csv=csv_path, summary_md=md_path)


def _write_atomic(path: Path, blob: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(blob)
    os.replace(tmp, path)


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix_str(self, s: str, refresh: bool = True) -> None: ...
    def write(self, s: str) -> None: ...
    def close(self) -> None: ...


def _bar(total: int, initial: int, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="point", desc="sweep", file=sys.stderr, dynamic_ncols=True)


# ---------------------------------------------------------------------------- summaries
def format_pm(mean: float, std: float, digits: int = 2) -> str:
    """``97.47 % ± 0.33 %`` (percent in, as in the paper); a NaN std (one run) prints as ``± –``."""
    if math.isnan(mean):
        return "–"
    sd = "–" if math.isnan(std) else f"{std:.{digits}f} %"
    return f"{mean:.{digits}f} % ± {sd}"


def _mean_std(vals: list[float]) -> tuple[float, float]:
    n = len(vals)
    if n == 0:
        return math.nan, math.nan
    m = sum(vals) / n
    if n == 1:
        return m, math.nan
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / (n - 1))


def summarize(man: Manifest) -> list[dict[str, Any]]:
    """One row per configuration (the points that differ only by seed), in grid order.

    Row keys: the group axes (e.g. ``m_star``, ``hidden``), ``n_points``, ``n_finished``, ``seeds`` (finished),
    ``tasks``, and per task ``acc[task] = (mean %, sample std %)`` of the final test accuracy over the finished
    seeds (std with n-1; NaN for one seed), ``wall_s_mean``. Unfinished points are left out of the statistics.
    """
    gaxes = man.group_axes
    groups: dict[tuple, list[PointRecord]] = {}
    for p in man.points:
        groups.setdefault(tuple(p.params[a] for a in gaxes), []).append(p)
    rows = []
    for key, pts in groups.items():
        done = [p for p in pts if p.status == "finished" and p.final_acc]
        tasks: list[str] = []
        for p in done:
            tasks += [t for t in p.final_acc if t not in tasks]
        acc = {t: tuple(100 * x for x in _mean_std([p.final_acc[t] for p in done if t in p.final_acc]))
               for t in tasks}
        rows.append({
            **dict(zip(gaxes, key, strict=True)), "n_points": len(pts), "n_finished": len(done),
            "seeds": [p.params["seed"] for p in done], "tasks": tasks, "acc": acc,
            "wall_s_mean": _mean_std([p.wall_s for p in done])[0],
        })
    return rows


def summary_tables(man: Manifest) -> tuple[str, str]:
    """(CSV text, markdown text) of :func:`summarize`."""
    rows = summarize(man)
    gaxes = man.group_axes
    tasks: list[str] = []
    for r in rows:
        tasks += [t for t in r["tasks"] if t not in tasks]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*gaxes, "n_points", "n_finished", *[f"{t}_{s}" for t in tasks for s in ("mean_pct", "std_pct")],
                "wall_s_mean"])
    for r in rows:
        vals = []
        for t in tasks:
            m, s = r["acc"].get(t, (math.nan, math.nan))
            vals += [_csv_num(m), _csv_num(s)]
        w.writerow([*(_fmt_value(r[a]) for a in gaxes), r["n_points"], r["n_finished"], *vals,
                    _csv_num(r["wall_s_mean"])])
    head = {"m_star": "m*", "hidden": "H", "lr": "lr"}
    base = man.base
    md = [
        "# Sweep summary", "",
        f"Final test accuracy, mean ± sample std over the finished seeds of each configuration "
        f"(tasks {base.get('tasks')}, chip {base.get('chip')}, {base.get('epochs_per_task')} epochs per task, "
        f"BN {base.get('bn_mode')}). Counts: {', '.join(f'{k} {v}' for k, v in man.counts().items())}.", "",
        "| " + " | ".join([*(head.get(a, a) for a in gaxes), "seeds", *tasks]) + " |",
        "|" + "---|" * (len(gaxes) + 1 + len(tasks)),
    ]
    for r in rows:
        cells = [_fmt_value(r[a]) for a in gaxes] + [f"{r['n_finished']}/{r['n_points']}"]
        cells += [format_pm(*r["acc"][t]) if t in r["acc"] else "–" for t in tasks]
        md.append("| " + " | ".join(cells) + " |")
    return buf.getvalue(), "\n".join(md) + "\n"


def _csv_num(x: float) -> str:
    return "" if math.isnan(x) else f"{x:.4f}"


def write_summary(man: Manifest) -> tuple[Path, Path]:
    text_csv, text_md = summary_tables(man)
    p_csv, p_md = man.dir / SUMMARY_CSV, man.dir / SUMMARY_MD
    p_csv.write_text(text_csv)
    p_md.write_text(text_md)
    return p_csv, p_md


__all__ = [
    "AXES", "LocalExecutor", "Manifest", "PointRecord", "RayExecutor", "SweepResult", "format_pm",
    "load_manifest", "parse_list", "parse_seeds", "plan", "point_name", "results_from_log", "run_point",
    "run_sweep", "summarize", "summary_tables", "write_summary",
]
