"""A sweep folder's ``sweep.json`` (format in ``docs/sweep.md``): the :class:`Manifest` and its points."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hwloop import __version__
from hwloop.errors import ConfigError
from hwloop.jsonutil import json_default, read_json_record
from hwloop.training.config import EXPERIMENT_FREE

FORMAT_NAME = "hwloop-sweep"
FORMAT_VERSION = 1
MANIFEST_NAME = "sweep.json"
LOCK_NAME = "sweep.lock"
SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"

#: TrainConfig fields that never belong to the base configuration of a sweep (set per point or per executor)
NOT_BASE = {"out", "progress", "threads"}
#: base fields that may change between invocations on the same folder: those that don't change the
#: experiment (``hwloop.training.config.EXPERIMENT_FREE``, the same rule as ``--resume``)
FREE_BASE = EXPERIMENT_FREE - NOT_BASE

STATUSES = ("pending", "queued", "running", "finished", "failed", "interrupted")


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
            "format": self.format,
            "format_version": self.format_version,
            "hwloop_version": self.hwloop_version,
            "created_utc": self.created_utc,
            "updated_utc": self.updated_utc,
            "axes": self.axes,
            "grid": self.grid,
            "base": self.base,
            "executor": self.executor,
            "points": [asdict(p) for p in self.points],
        }

    def save(self) -> None:
        """Write ``sweep.json`` atomically (temporary file, then rename)."""
        self.updated_utc = utc_now()
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".sweep-", suffix=".json.tmp", dir=self.dir)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.as_dict(), f, indent=1, default=json_default)
                f.write("\n")
            os.replace(tmp, self.dir / MANIFEST_NAME)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def utc_now() -> str:
    """Now, UTC, ISO 8601 to the second (the time stamps of the manifest)."""
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
    raw = read_json_record(path, FORMAT_NAME, "an hwloop sweep manifest")
    if int(raw.get("format_version", -1)) != FORMAT_VERSION:
        raise ConfigError(
            f"{path}: sweep format version {raw.get('format_version')} is not supported "
            f"(this hwloop reads {FORMAT_VERSION})"
        )
    return Manifest(
        dir=d,
        grid={a: list(v) for a, v in raw["grid"].items()},
        base=dict(raw["base"]),
        points=[PointRecord.from_dict(p) for p in raw["points"]],
        created_utc=raw.get("created_utc", ""),
        updated_utc=raw.get("updated_utc", ""),
        hwloop_version=raw.get("hwloop_version", ""),
        executor=dict(raw.get("executor", {})),
    )
