"""hwloop runs ls: one line per run log with date, configuration, status and final accuracies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np
import pytest
from _synthlogs import write_sim_log

if TYPE_CHECKING:
    from conftest import RunCli


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("runs")
    write_sim_log(
        d / "a.h5",
        n_devices=64,
        tasks=("mnist", "fashion-mnist"),
        epochs_per_task=1,
        steps_per_epoch=1,
        m_star=3.0,
        hidden=64,
    )
    write_sim_log(
        d / "b.h5",
        n_devices=64,
        tasks=("mnist",),
        epochs_per_task=1,
        steps_per_epoch=1,
        m_star=0.0,
        hidden=32,
        close_status="interrupted",
    )
    (d / "c.h5").write_bytes(b"garbage")
    (d / "notes.txt").write_text("not a log")
    return d


def test_runs_ls_lines(run_cli: RunCli, runs_dir: Path) -> None:
    code, out, err = run_cli("runs", "ls", runs_dir)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 3
    a, b, c = lines
    with h5py.File(runs_dir / "a.h5", "r", swmr=True) as f:
        acc = f["epochs"]["acc"][-1]
        created = f.attrs["created_utc"]
    assert a.startswith("a.h5") and "finished" in a and "m*=3" in a and "hidden=64" in a and "chip=sim" in a
    assert created in a
    assert f"mnist={100 * acc[0]:.2f}%" in a and f"fashion-mnist={100 * acc[1]:.2f}%" in a
    assert "interrupted" in b and "m*=0" in b
    assert c.startswith("c.h5") and "UNREADABLE" in c


def test_runs_ls_json(run_cli: RunCli, runs_dir: Path) -> None:
    code, out, err = run_cli("runs", "ls", runs_dir, "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [Path(r["path"]).name for r in rows] == ["a.h5", "b.h5", "c.h5"]
    assert rows[0]["status"] == "finished" and rows[0]["tasks"] == ["mnist", "fashion-mnist"]
    with h5py.File(runs_dir / "b.h5", "r", swmr=True) as f:
        acc = f["epochs"]["acc"][-1]
    assert rows[1]["final_acc_pct"] == [round(float(100 * np.float64(acc[0])), 2)]
    assert "error" in rows[2]


def test_runs_ls_names_calibration_files(run_cli: RunCli, tmp_path: Path) -> None:
    """`hwloop calibrate` writes its op log to runs/ by default: `runs ls` names it (and a calibration
    file) for what it is instead of calling it unreadable; a run log beside them is listed as before."""
    d = tmp_path / "runs"
    d.mkdir()
    write_sim_log(
        d / "a.h5", n_devices=64, tasks=("mnist",), epochs_per_task=1, steps_per_epoch=1, m_star=3.0, hidden=16
    )
    code, _, err = run_cli(
        "calibrate",
        "--chip",
        "sim",
        "--points",
        "16",
        "--devices",
        "64",
        "--out",
        d / "cal.h5",
        "--log",
        d / "calop.h5",
        "--no-progress",
    )
    assert code == 0, err
    code, out, err = run_cli("runs", "ls", d)
    assert code == 0, err
    lines = dict(line.split(maxsplit=1) for line in out.strip().splitlines())
    assert set(lines) == {"a.h5", "cal.h5", "calop.h5"}
    assert "finished" in lines["a.h5"]
    assert "calibration file: chip=sim-seed0" in lines["cal.h5"] and "UNREADABLE" not in lines["cal.h5"]
    with h5py.File(d / "calop.h5", "r") as f:
        n_ops = int(f.attrs["rows"])
    assert f"calibration op log: chip=sim-seed0 ops={n_ops:,}" in lines["calop.h5"]
    rows = json.loads(run_cli("runs", "ls", d, "--json").out)
    assert [r["kind"] for r in rows] == ["run log", "calibration file", "calibration op log"]
    # a truncated copy of the calibration file is unreadable, not a calibration file
    data = (d / "cal.h5").read_bytes()
    (d / "cut.h5").write_bytes(data[: len(data) // 2])
    cut = next(line for line in run_cli("runs", "ls", d).out.splitlines() if line.startswith("cut.h5"))
    assert "UNREADABLE" in cut and "truncated" in cut


def test_runs_ls_default_folder(
    run_cli: RunCli, runs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("runs", "ls")
    assert code == 2 and "not a folder" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "runs").mkdir()
    code, out, _ = run_cli("runs", "ls")
    assert code == 0 and "no run logs" in out
