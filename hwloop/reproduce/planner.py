"""Planning the paper's runs on the sweep engine, and running them (resumable, runs shared across figures).

A reproduce folder (format in docs/reproduce.md)::

    DIR/reproduce.json      preset, protocol, calibration (a folder never mixes two)
    DIR/sweeps/<block>/     one sweep folder per block of runs (sweep.json, <point>.h5, summary.*)
    DIR/report.md, *.png    written by hwloop.reproduce.report

Each block is a Cartesian grid (``hwloop.sweep``). Blocks overlap (m* = 3, H = 512, seed 0 is in Fig. 2a,
Table I and Fig. 5a): before a block runs, every point of it whose log is missing gets a hard link to a
finished log of the same configuration in another block, which the sweep engine then finds finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hwloop.errors import ConfigError, HwloopError
from hwloop.jsonutil import read_json_record
from hwloop.reproduce.presets import LEGACY_FIELDS, Protocol
from hwloop.sweep import load_manifest, plan, run_sweep
from hwloop.training.config import EXPERIMENT_FREE, TrainConfig

FORMAT_NAME = "hwloop-reproduce"
FORMAT_VERSION = 1
RECORD_NAME = "reproduce.json"
LOCK_NAME = "reproduce.lock"
SWEEPS = "sweeps"
#: point configuration keys that do not change the experiment (ignored when matching runs across blocks)
_FREE = {"data_dir", "download", "bench", "verify_data", "out", "progress", "threads"}

#: which figures need which block of runs
BLOCK_FIGURES: dict[str, tuple[str, ...]] = {
    "qnn-mstar": ("fig2a",),
    "qnn-size": ("table1",),
    "qnn-reps": ("fig5a", "fig5b"),
    "qnn-curves": ("fig2bc",),
    "bnn": ("fig2bc", "fig5a", "table1"),
}


@dataclass(frozen=True)
class Block:
    name: str
    grid: dict[str, list]
    base: dict[str, Any]


def blocks(
    proto: Protocol, figures: list[str], calibration: str | None, data_dir: str | None, verify_data: bool
) -> list[Block]:
    """The blocks of runs the figures need, in the order they run (the widest first, to be reused)."""
    common = {
        "epochs_per_task": proto.epochs_per_task,
        "train_samples": proto.train_samples,
        "data_dir": data_dir,
        "verify_data": verify_data,
    }
    qnn = {
        **common,
        "warmup": proto.warmup,
        "chip": proto.chip,
        "calibration": calibration,
        "batch_size": proto.batch_size,
    }
    bnn = {
        **common,
        "model": "bnn",
        "chip": "none",
        "lr": proto.bnn_lr,
        "warmup": 0,
        "batch_size": proto.bnn_batch_size,
    }
    h, m = proto.hidden, proto.m_star
    all_blocks = [
        Block("qnn-mstar", {"m_star": list(proto.m_stars), "hidden": [h], "seed": list(range(proto.seeds_mstar))}, qnn),
        Block(
            "qnn-size", {"m_star": [m], "hidden": list(proto.hidden_sizes), "seed": list(range(proto.seeds_size))}, qnn
        ),
        Block("qnn-reps", {"m_star": [m], "hidden": [h], "seed": list(range(proto.reps))}, qnn),
        Block("qnn-curves", {"m_star": list(proto.curve_m_stars), "hidden": [h], "seed": [0]}, qnn),
        Block(
            "bnn", {"m_star": [proto.bnn_meta], "hidden": [proto.bnn_hidden], "seed": list(range(proto.bnn_seeds))}, bnn
        ),
    ]
    return [b for b in all_blocks if set(BLOCK_FIGURES[b.name]) & set(figures)]


def block_dir(out: Path, name: str) -> Path:
    return out / SWEEPS / name


# ---------------------------------------------------------------------------- the folder record
def train_defaults() -> dict[str, Any]:
    """The ``hwloop train`` defaults a reproduce run inherits where its protocol says nothing (lr, init, BN
    ...): every field of ``TrainConfig`` that changes the experiment, as JSON."""
    d = asdict(TrainConfig())
    return json.loads(json.dumps({k: d[k] for k in sorted(d) if k not in EXPERIMENT_FREE}))


def _differences(old: dict, new: dict, keys: set[str], limit: int | None = None) -> str:
    """``k <old> there, <new> now, ...`` for the keys (sorted, the first ``limit``) whose values differ or
    that one side lacks; "" if none does."""
    diff = sorted(k for k in keys if k not in old or k not in new or old[k] != new[k])[:limit]
    return ", ".join(f"{k} {old.get(k)} there, {new.get(k)} now" for k in diff)


def check_record(out: Path, proto: Protocol, calibration: str | None) -> None:
    """Refuse a folder made with another preset, other settings, other ``hwloop train`` defaults or another
    calibration; else record ours."""
    path = out / RECORD_NAME
    mine = {
        "preset": proto.preset,
        "protocol": proto.as_dict(),
        "calibration": calibration,
        "train_defaults": train_defaults(),
    }
    if path.is_file():
        old = read_json_record(path, FORMAT_NAME, "an hwloop reproduce record", "use another --out")
        if old.get("preset") != proto.preset:
            raise ConfigError(
                f"{out} holds results of the {old.get('preset')!r} preset: a folder never mixes presets; "
                f"use another --out for --preset {proto.preset}"
            )
        if not isinstance(old.get("protocol"), dict) or not isinstance(old.get("train_defaults", {}), dict):
            raise ConfigError(f"{path} is damaged (protocol or train_defaults is not an object); use another --out")
        # a folder made before a field existed ran at that field's value then
        oldp = {**LEGACY_FIELDS, **json.loads(json.dumps(old.get("protocol")))}
        newp = json.loads(json.dumps(mine["protocol"]))
        detail = _differences(oldp, newp, set(oldp) | set(newp))
        if detail:
            raise ConfigError(
                f"{out} was made with other settings of the {proto.preset} preset ({detail}); "
                "repeat them or use another --out"
            )
        # absent in folders made before it was recorded; a field added since (not in the old record) is an
        # option whose default keeps the earlier behaviour, so only the fields both know are compared
        old_defaults, new_defaults = old.get("train_defaults") or {}, mine["train_defaults"]
        detail = _differences(old_defaults, new_defaults, set(old_defaults) & set(new_defaults), limit=4)
        if detail:
            raise ConfigError(
                f"{out} was made by an hwloop with other train defaults ({detail}); continue it with that "
                "version, or use another --out"
            )
        if old.get("calibration") != calibration:
            raise ConfigError(
                f"{out} was made with calibration {old.get('calibration')!r}, not {calibration!r}; "
                "use another --out for another chip"
            )
        return
    if (out / SWEEPS).exists():
        raise ConfigError(f"{out} holds runs but no {RECORD_NAME}; use another --out")
    out.mkdir(parents=True, exist_ok=True)
    rec = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        **mine,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rec, indent=1) + "\n")
    os.replace(tmp, path)


def read_record(out: Path) -> dict:
    path = out / RECORD_NAME
    if not path.is_file():
        raise ConfigError(f"{out} is not a reproduce folder (no {RECORD_NAME})")
    return json.loads(path.read_text())


@contextlib.contextmanager
def folder_lock(out: Path) -> Iterator[None]:
    out.mkdir(parents=True, exist_ok=True)
    f = open(out / LOCK_NAME, "a+")  # noqa: SIM115 - held while reproduce runs
    try:
        try:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:
            pass
        except OSError as exc:
            raise ConfigError(f"another hwloop reproduce is running on {out}; wait for it or stop it") from exc
        yield
    finally:
        f.close()


# ---------------------------------------------------------------------------- sharing runs across blocks
def _experiment(cfg: dict) -> str:
    return json.dumps({k: v for k, v in cfg.items() if k not in _FREE}, sort_keys=True, default=str)


def _finished(path: Path) -> bool:
    from hwloop.runlog import RunLog

    try:
        with RunLog(path) as log:
            return log.status == "finished"
    except (HwloopError, OSError):
        return False


def finished_pool(out: Path) -> dict[str, Path]:
    """Experiment key → a finished run log, over every block folder of ``out``."""
    pool: dict[str, Path] = {}
    root = out / SWEEPS
    if not root.is_dir():
        return pool
    for d in sorted(root.iterdir()):
        if not (d / "sweep.json").is_file():
            continue
        man = load_manifest(d)
        for p in man.points:
            log = man.log_path(p)
            key = _experiment(p.config)
            if key not in pool and log.is_file() and _finished(log):
                pool[key] = log
    return pool


def link_shared(out: Path, block: Block) -> list[str]:
    """Create the block's manifest if needed, and link finished runs of other blocks into it; returns names."""
    d = block_dir(out, block.name)
    man = plan(d, block.grid, block.base)
    if not (d / "sweep.json").is_file():
        man.save()
    pool = finished_pool(out)
    linked = []
    for p in man.points:
        log = man.log_path(p)
        src = pool.get(_experiment(p.config))
        if log.exists() or src is None or src == log:
            continue
        try:
            os.link(src, log)
        except OSError:
            shutil.copy2(src, log)
        linked.append(p.name)
    return linked


def run_blocks(
    out: Path, blks: list[Block], *, workers: int, threads: int | None, ray_address: str | None, progress: bool
) -> dict[str, Any]:
    """Run (or continue) every block; returns per block the points run, found, linked and failed."""
    result: dict[str, Any] = {}
    for b in blks:
        linked = link_shared(out, b)
        res = run_sweep(
            block_dir(out, b.name),
            b.grid,
            b.base,
            workers=workers,
            threads=threads,
            ray_address=ray_address,
            progress=progress,
        )
        result[b.name] = {"ran": res.ran, "found": res.skipped, "linked": linked, "failed": res.failed}
    return result
