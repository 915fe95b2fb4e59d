"""The runs behind ``hwloop reproduce``'s report: each block's finished runs, read from their logs when the
report is written (never from a cache), selected by configuration, and their accuracies per paper task
(MNIST, Fashion-MNIST); and the paper's own numbers. ``report`` formats them."""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from hwloop.analysis.runs import RunInfo, load_run
from hwloop.errors import HwloopError
from hwloop.formatting import mean_std
from hwloop.reproduce.planner import block_dir
from hwloop.sweep import load_manifest

PAPER_FILE = "paper_dagostino2023.json"
TASKS = ("mnist", "fashion-mnist")


def load_paper() -> dict:
    """The paper's numbers (package data)."""
    return json.loads(resources.files("hwloop").joinpath("data", PAPER_FILE).read_text())


def block_runs(out: Path, name: str) -> tuple[list[RunInfo], list[str]]:
    """Finished runs of a block (read from their logs now), and the names of the points not finished."""
    d = block_dir(out, name)
    if not (d / "sweep.json").is_file():
        return [], []
    man = load_manifest(d)
    done, missing = [], []
    for p in man.points:
        log = man.log_path(p)
        info = None
        if log.is_file():
            try:
                info = load_run(log, with_table=False)
            except HwloopError:
                info = None
        if info is not None and info.status == "finished":
            done.append(info)
        else:
            missing.append(p.name)
    return done, missing


def config_of(info: RunInfo, key: str) -> Any:
    return info.config.get(key)


def select_runs(runs: list[RunInfo], **want: Any) -> list[RunInfo]:
    return [r for r in runs if all(same_value(config_of(r, k), v) for k, v in want.items())]


def same_value(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def task_columns(info: RunInfo) -> list[int | None]:
    return [info.tasks.index(t) if t in info.tasks else None for t in TASKS]


def acc_table(runs: list[RunInfo], which: str) -> np.ndarray:
    """(n_runs, 2) accuracy % on MNIST, F-MNIST: ``final`` (last epoch) or ``max`` (over all epochs)."""
    out = np.full((len(runs), len(TASKS)), np.nan)
    for i, r in enumerate(runs):
        vals = r.final_acc() if which == "final" else r.best_acc()
        for j, c in enumerate(task_columns(r)):
            if c is not None:
                out[i, j] = vals[c]
    return out


def curves(runs: list[RunInfo]) -> list[np.ndarray]:
    out = []
    for r in runs:
        a = np.full((r.acc_pct.shape[0], len(TASKS)), np.nan)
        for j, c in enumerate(task_columns(r)):
            if c is not None:
                a[:, j] = r.acc_pct[:, c]
        out.append(a)
    return out


def acc_stats(runs: list[RunInfo], which: str) -> tuple[np.ndarray, np.ndarray]:
    if not runs:
        return np.full(len(TASKS), np.nan), np.full(len(TASKS), np.nan)
    return mean_std(acc_table(runs, which))


def epoch_numbers(runs: list[RunInfo]) -> np.ndarray:
    return runs[0].epoch_numbers if runs else np.zeros(0, dtype=np.int64)


def bnn_runs(out: Path) -> tuple[list[RunInfo], list[str]]:
    return block_runs(out, "bnn")
