"""``hwloop train --no-progress``: one plain line per epoch on stdout (nohup, a scheduler's log file), the
same line the progress bar writes above itself on stderr; ``--json`` keeps stdout for its summary."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import RunCli

_ARGS = [
    "train",
    "--chip",
    "sim",
    "--tasks",
    "mnist,fashion-mnist",
    "--epochs-per-task",
    "2",
    "--warmup",
    "1",
    "--hidden",
    "16",
    "--batch-size",
    "50",
    "--train-samples",
    "300",
    "--no-verify-data",
    "--threads",
    "1",
    "--no-progress",
]

_LINE = re.compile(
    r"^epoch +(\d+) \[([a-z-]+), m\*=([\d.]+)\] test: ((?:[a-z-]+ [\d.]+% ?)+)  programs [\d,]+  [\d.]+ s$"
)


def test_no_progress_prints_one_line_per_epoch(run_cli: RunCli, tiny_data: Path, tmp_path: Path) -> None:
    r = run_cli(*_ARGS, "--data-dir", tiny_data, "--out", tmp_path / "a.h5")
    assert r.code == 0, r.err
    lines = [m for m in map(_LINE.match, r.out.splitlines()) if m]
    assert [int(m[1]) for m in lines] == [1, 2, 3, 4], r.out
    assert [m[2] for m in lines] == ["mnist", "mnist", "fashion-mnist", "fashion-mnist"]
    assert [float(m[3]) for m in lines] == [0, 3, 3, 3]  # warm-up 1: m* = 0 in the first epoch
    assert lines[0][4].split()[0] == "mnist" and "fashion-mnist" in lines[2][4]  # every task seen so far
    assert r.err.strip() == ""


def test_json_keeps_stdout_for_the_summary(run_cli: RunCli, tiny_data: Path, tmp_path: Path) -> None:
    r = run_cli(
        *_ARGS, "--epochs-per-task", "1", "--warmup", "0", "--data-dir", tiny_data, "--out", tmp_path / "b.h5", "--json"
    )
    assert r.code == 0, r.err
    assert set(json.loads(r.out)["final_acc"]) == {"mnist", "fashion-mnist"}  # nothing but the JSON


def test_json_with_the_progress_bar_keeps_stdout_for_the_summary(
    run_cli: RunCli, tiny_data: Path, tmp_path: Path
) -> None:
    """With the bar on, its epoch lines go with it to stderr: stdout is still only the JSON."""
    args = [a if a != "--no-progress" else "--progress" for a in _ARGS]
    r = run_cli(
        *args, "--epochs-per-task", "1", "--warmup", "0", "--data-dir", tiny_data, "--out", tmp_path / "c.h5", "--json"
    )
    assert r.code == 0, r.err
    assert set(json.loads(r.out)["final_acc"]) == {"mnist", "fashion-mnist"}
    assert len([m for m in map(_LINE.match, r.err.splitlines()) if m]) == 2, r.err  # the lines, on stderr
