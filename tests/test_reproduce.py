"""``hwloop reproduce`` end to end on tiny settings, its reuse of runs, and its refusals of bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from hwloop.chip.default_table import default_table
from hwloop.reproduce import protocol
from hwloop.reproduce.planner import blocks
from hwloop.reproduce.presets import PRESETS
from hwloop.reproduce.report import sigma_diff
from hwloop.reproduce.results import load_paper

TINY = [
    "--epochs-per-task",
    "1",
    "--warmup",
    "0",
    "--train-samples",
    "200",
    "--batch-size",
    "100",
    "--seeds",
    "2",
    "--hidden-sizes",
    "8,16,32",
    "--bnn-hidden",
    "16",
    "--threads",
    "1",
    "--no-verify-data",
    "--no-progress",
]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hwloop.cli", *args], capture_output=True, text=True, env=dict(os.environ), timeout=300
    )


def _one_line_exit_2(r: subprocess.CompletedProcess, pattern: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert re.search(pattern, lines[0]), lines[0]


def test_reproduce_end_to_end_every_figure_read_from_the_runs(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    args = ["reproduce", "--out", str(out), "--data-dir", str(tiny_data), *TINY]
    r = _cli(*args)
    assert r.returncode == 0, r.stderr
    # Fig. 2a's 7 m* x 2 seeds run first; Table I, Fig. 5a and Figs. 2b/c reuse its m* = 3 / 2.2 runs
    assert re.search(r"qnn-reps: 0 run, 2 found finished \(2 shared", r.stdout), r.stdout
    assert re.search(r"qnn-curves: 0 run, 2 found finished \(2 shared", r.stdout), r.stdout
    report = (out / "report.md").read_text()
    for head in ("Fig. 2a", "Figs. 2b, 2c", "Fig. 4b", "Fig. 5a", "Fig. 5b", "Table I"):
        assert f"## {head}" in report
    for png in ("fig2a", "fig2bc", "fig4b", "fig5a", "fig5b"):
        assert (out / f"{png}.png").stat().st_size > 5000
    assert "97.47 % ± 0.33 %" in report and "76.12 %" in report and "15×" in report
    assert "not finished" not in report.lower()
    summary = json.loads((out / "summary.json").read_text())
    assert [row["n"] for row in summary["fig2a"]] == [2] * 7

    # change one run (the last MNIST accuracy of a Fig. 5a repetition): the report follows
    rep_log = out / "sweeps" / "qnn-reps" / "m3-h16-s1.h5"
    with h5py.File(rep_log, "r+") as f:
        ep = f["epochs"][...]
        ep["acc"][-1, 0] = 0.123
        f["epochs"][...] = ep
    r2 = _cli(*args)
    assert r2.returncode == 0, r2.stderr
    assert "qnn-reps: 0 run" in r2.stdout  # nothing re-run: a second call continues, finished runs stay
    summary2 = json.loads((out / "summary.json").read_text())
    f1, f2 = summary["fig5a"]["final_mean_pct"][0], summary2["fig5a"]["final_mean_pct"][0]
    assert f1 != f2
    # the mean moved by exactly half the change of that run (2 repetitions)
    with h5py.File(out / "sweeps" / "qnn-reps" / "m3-h16-s0.h5", "r") as f:
        other = float(f["epochs"]["acc"][-1, 0]) * 100
    assert f2 == pytest.approx((other + 12.3) / 2, abs=1e-3)
    assert (out / "report.md").read_text() != report
    # the run was shared by hard link: Fig. 2a reads the same changed file
    row3 = next(row for row in summary2["fig2a"] if row["m_star"] == 3.0)
    assert row3["final_mean_pct"][0] == pytest.approx(f2, abs=1e-6)


def test_unknown_figure_is_one_line_exit_2(tmp_path: Path) -> None:
    _one_line_exit_2(_cli("reproduce", "--only", "fig2a,fig9", "--out", str(tmp_path / "x")), "unknown figure fig9")


def test_preset_mixed_into_the_other_presets_folder(tmp_path: Path) -> None:
    out = tmp_path / "q"
    r = _cli("reproduce", "--only", "fig4b", "--out", str(out))  # no runs: just the record and the CDFs
    assert r.returncode == 0, r.stderr
    assert (out / "fig4b.png").is_file()
    _one_line_exit_2(
        _cli("reproduce", "--preset", "paper", "--only", "fig4b", "--out", str(out)), "'quick' preset.*another --out"
    )
    _one_line_exit_2(
        _cli("reproduce", "--only", "fig4b", "--epochs-per-task", "3", "--out", str(out)),
        "other settings.*epochs_per_task",
    )


def test_batch_size_is_part_of_the_folder_record(tmp_path: Path) -> None:
    """A folder run at one batch size is never continued at another (the QNN default changed from 100 to 700)."""
    out = tmp_path / "b"
    assert _cli("reproduce", "--only", "fig4b", "--batch-size", "100", "--out", str(out)).returncode == 0
    rec = json.loads((out / "reproduce.json").read_text())
    assert rec["protocol"]["batch_size"] == 100 and rec["protocol"]["bnn_batch_size"] == 100
    _one_line_exit_2(_cli("reproduce", "--only", "fig4b", "--out", str(out)), "other settings.*batch_size")
    assert _cli("reproduce", "--only", "fig4b", "--batch-size", "100", "--out", str(out)).returncode == 0
    # a record written before the batch size was recorded ran at batch 100, the default then
    for key in ("batch_size", "bnn_batch_size"):
        del rec["protocol"][key]
    (out / "reproduce.json").write_text(json.dumps(rec))
    _one_line_exit_2(_cli("reproduce", "--only", "fig4b", "--out", str(out)), "other settings.*batch_size")
    assert _cli("reproduce", "--only", "fig4b", "--batch-size", "100", "--out", str(out)).returncode == 0


def test_a_folder_made_with_other_train_defaults_is_refused(tmp_path: Path) -> None:
    """The runs inherit hwloop train's defaults where the protocol is silent: the record keeps them."""
    out = tmp_path / "d"
    assert _cli("reproduce", "--only", "fig4b", "--out", str(out)).returncode == 0
    rec = json.loads((out / "reproduce.json").read_text())
    assert rec["train_defaults"]["lr"] == 2e-3 and rec["train_defaults"]["init"] == "center"
    assert "data_dir" not in rec["train_defaults"]  # where the data live does not change the experiment
    rec["train_defaults"]["lr"] = 1e-3  # as if an older hwloop had another default lr
    (out / "reproduce.json").write_text(json.dumps(rec))
    _one_line_exit_2(_cli("reproduce", "--only", "fig4b", "--out", str(out)), "other train defaults.*lr 0.001 there")
    for bad in ([1, 2], "x"):
        (out / "reproduce.json").write_text(json.dumps({**rec, "train_defaults": bad}))
        _one_line_exit_2(_cli("reproduce", "--only", "fig4b", "--out", str(out)), "is damaged")
    del rec["train_defaults"]  # a folder made before the defaults were recorded: nothing to compare
    (out / "reproduce.json").write_text(json.dumps(rec))
    assert _cli("reproduce", "--only", "fig4b", "--out", str(out)).returncode == 0


def test_qnn_and_bnn_runs_carry_their_batch_sizes() -> None:
    p = protocol("paper")
    by_name = {b.name: b for b in blocks(p, ["fig2a", "table1"], None, None, True)}
    assert by_name["qnn-mstar"].base["batch_size"] == 700 and by_name["bnn"].base["batch_size"] == 100
    p100 = protocol("paper", {"batch_size": 100})
    assert {b.name: b.base["batch_size"] for b in blocks(p100, ["table1"], None, None, True)} == {
        "qnn-size": 100,
        "bnn": 100,
    }


def test_calibration_from_another_geometry(tmp_path: Path) -> None:
    cal = tmp_path / "cal64.h5"
    with h5py.File(cal, "w") as f:
        default_table().write_h5_group(f)
        f.attrs["rows"] = 64
        f.attrs["cols"] = 64
    _one_line_exit_2(_cli("reproduce", "--calibration", str(cal), "--out", str(tmp_path / "c")), "64x64")
    assert not (tmp_path / "c").exists()


def test_paper_preset_is_the_papers_protocol() -> None:
    p = PRESETS["paper"]
    assert (p.epochs_per_task, p.warmup, p.hidden, p.hidden_sizes) == (50, 10, 512, (256, 512, 1024))
    assert p.m_stars == (0, 1, 2, 2.2, 3, 4, 5) and p.reps == 15 and p.bnn_hidden == 4096
    bnn = next(b for b in blocks(p, ["table1"], None, None, True) if b.name == "bnn")
    assert bnn.base["model"] == "bnn" and bnn.base["lr"] == 5e-3 and bnn.grid["m_star"] == [1.5]
    q = protocol("quick")
    assert q.estimate_min() < 90  # about an hour on 2 workers, documented in the report header


def test_paper_numbers_and_sigma_difference() -> None:
    paper = load_paper()
    assert paper["table1"]["qnn"]["512"]["acc_pct"]["fashion-mnist"] == [86.09, 0.33]
    assert paper["fig5b"] == {"pct_under_25": 76.12, "pct_over_50": 10.16}
    assert sigma_diff(86.42, [86.09, 0.33]) == "+1.0 σ"
    assert sigma_diff(float("nan"), [86.09, 0.33]) == "–"
    assert sigma_diff(80.0, 87.0) == "-7.00 pp"
    assert np.isfinite(paper["table1"]["footprint_reduction"]["1t1r"])


def test_killed_reproduce_continues_where_it_stopped(tiny_data: Path, tmp_path: Path) -> None:
    import signal
    import time

    out = tmp_path / "kill"
    args = [
        sys.executable,
        "-m",
        "hwloop.cli",
        "reproduce",
        "--only",
        "fig2a",
        "--out",
        str(out),
        "--data-dir",
        str(tiny_data),
        *TINY,
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    manifest = out / "sweeps" / "qnn-mstar" / "sweep.json"
    deadline = time.monotonic() + 120
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.is_file():
            try:
                pts = json.loads(manifest.read_text())["points"]
            except ValueError:
                pts = []
            done = sum(p["status"] == "finished" for p in pts)
            if done >= 1:
                break
        time.sleep(0.2)
    assert proc.poll() is None, "the reproduce ended before it could be killed"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    before = json.loads(manifest.read_text())["points"]
    n_done = sum(p["status"] == "finished" for p in before)
    assert 1 <= n_done < 14
    r = _cli(*args[3:])
    assert r.returncode == 0, r.stderr
    m = re.search(r"qnn-mstar: (\d+) run, (\d+) found finished", r.stdout)
    # finished runs are not run again (a run may have finished between the kill and the manifest's last save)
    assert m and int(m.group(2)) >= n_done and int(m.group(1)) + int(m.group(2)) == 14, r.stdout
    assert "not finished" not in (out / "report.md").read_text().lower()
