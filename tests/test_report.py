"""hwloop report: figures + report.md from run logs; forgetting vs retention; repetitions; crashed runs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from _synthlogs import script_env, write_sim_log
from click.testing import CliRunner

from hwloop.analysis import plots
from hwloop.analysis.footprint import architecture, paper_qnn_accuracy
from hwloop.analysis.report import build_report
from hwloop.cli import cli, main
from hwloop.errors import RunLogError
from hwloop.formatting import format_pm


def _acc_fn(forget: bool):
    def acc(epoch: int, task: int, n: int, rng: np.random.Generator) -> np.ndarray:
        a = np.full(n, np.nan, np.float32)
        a[0] = 0.96 if task == 0 else (0.96 - (0.3 if forget else 0.004) * (epoch - 2))
        if task >= 1:
            a[1] = 0.80 + 0.02 * (epoch - 2)
        return a + np.float32(0.004) * rng.standard_normal(n).astype(np.float32)

    return acc


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("sweep")
    for m, forget in ((0.0, True), (3.0, False)):
        for seed in (0, 1):
            write_sim_log(
                d / f"m{m:g}_s{seed}.h5",
                n_devices=128,
                tasks=("mnist", "fashion-mnist"),
                epochs_per_task=2,
                steps_per_epoch=2,
                m_star=m,
                seed=seed,
                acc_fn=_acc_fn(forget),
                hidden=512,
            )
    points = [{"name": f"m{m}_s{s}", "status": "finished"} for m in (0, 3) for s in (0, 1)]
    points.append({"name": "m3_s2", "status": "pending"})
    manifest = {"format": "hwloop-sweep", "grid": {"m_star": [0.0, 3.0], "seed": [0, 1, 2]}, "points": points}
    (d / "sweep.json").write_text(json.dumps(manifest))
    with h5py.File(d / "calibration.h5", "w") as f:  # a foreign HDF5 file in the folder is skipped
        f.attrs["format"] = "hwloop-calibration"
    return d


def _epochs(path: Path) -> np.ndarray:
    with h5py.File(path, "r", swmr=True) as f:
        return f["epochs"][()]


@pytest.fixture(scope="module")
def report(sweep: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list]:
    out = tmp_path_factory.mktemp("rep")
    labels: list = []
    orig = plots._save

    def spy(fig, path):
        for ax in fig.axes:
            if ax.get_label() == "<colorbar>":
                labels.append((path.name, ax.get_ylabel() or ax.get_xlabel(), "colorbar"))
            else:
                labels.append((path.name, ax.get_xlabel(), ax.get_ylabel()))
        return orig(fig, path)

    mp = pytest.MonkeyPatch()
    mp.setattr(plots, "_save", spy)
    try:
        summary = build_report([str(sweep)], out)
    finally:
        mp.undo()
    return out, summary, labels


def test_report_files_and_labelled_axes(report: tuple[Path, dict, list]) -> None:
    out, summary, labels = report
    md = (out / "report.md").read_text()
    for fig in summary["figures"]:
        assert (out / fig).stat().st_size > 5_000
        assert f"]({fig})" in md  # every figure is shown in the report
    assert {"mstar_sweep.png", "endurance.png", "calibration_1.png", "accuracy_1.png"} <= set(summary["figures"])
    assert labels
    for name, x, y in labels:
        assert x and y, f"{name} has an unlabelled axis"
        if y != "colorbar":
            assert ("(" in x and "(" in y) or x == "epoch", f"{name}: axis without unit: {x!r} / {y!r}"
    assert "calibration.h5" in md and "not an hwloop run log" in md
    assert "sweep.json" in md
    assert "5 points: 4 finished, 1 pending." in md and "Not finished" in md and "m3_s2" in md


def test_forgetting_and_retention_stated(report: tuple[Path, dict, list], sweep: Path) -> None:
    out, summary, _ = report
    md = (out / "report.md").read_text()
    assert summary["forgot"] == ["m0_s0", "m0_s1"]
    assert summary["retained"] == ["m3_s0", "m3_s1"]
    for name, verdict in (("m0_s0", "**forgot**"), ("m3_s0", "**retained**")):
        ep = _epochs(sweep / f"{name}.h5")
        end1 = 100 * ep["acc"][ep["task"] == 0][-1][0]
        fin = 100 * ep["acc"][-1][0]
        line = next(ln for ln in md.splitlines() if ln.startswith(f"- `{name}`"))
        assert verdict in line
        assert f"{end1:.2f} %" in line and f"{fin:.2f} %" in line
    drop0 = next(r for r in summary["runs"] if r["path"].endswith("m0_s0.h5"))["forgetting"][0]["drop_pp"]
    drop3 = next(r for r in summary["runs"] if r["path"].endswith("m3_s0.h5"))["forgetting"][0]["drop_pp"]
    assert drop0 > 10 > drop3


def test_repetitions_mean_std_as_the_paper_writes(report: tuple[Path, dict, list], sweep: Path) -> None:
    out, summary, _ = report
    md = (out / "report.md").read_text()
    fin = np.array([100 * _epochs(sweep / f"m3_s{s}.h5")["acc"][-1][0] for s in (0, 1)])
    expect = f"{fin.mean():.2f} % ± {fin.std(ddof=1):.2f} %"
    assert expect in md
    assert len(summary["groups"]) == 2 and summary["groups"][1]["runs"] == ["m3_s0", "m3_s1"]


def test_mstar_sweep_points(report: tuple[Path, dict, list], sweep: Path) -> None:
    _, summary, _ = report
    pts = summary["mstar_sweep"]
    assert pts["m_star"] == [0.0, 3.0] and pts["n"] == [2, 2]
    fin0 = np.mean([100 * _epochs(sweep / f"m0_s{s}.h5")["acc"][-1][0] for s in (0, 1)])
    assert pts["final_mean"][0][0] == pytest.approx(fin0, abs=1e-3)


def test_table_one_matches_the_paper_for_2x512(report: tuple[Path, dict, list]) -> None:
    out, summary, _ = report
    md = (out / "report.md").read_text()
    row = summary["table_one"][0]
    # the paper: 1.3 M devices for 784-512-512-10; 15x (1T1R) and 30x (2T2R) fewer than the 2x4096 BNN
    assert row["architecture"] == "784-512-512-10"
    assert round(row["devices"] / 1e6, 1) == 1.3
    assert round(row["reduction_vs_1t1r"]) == 15 and round(row["reduction_vs_2t2r"]) == 30
    assert row["weight_levels"] == "17"
    assert "1.3 M" in md and "20 M (1T1R) / 40 M (2T2R)" in md
    # beside it, the paper's hardware QNN of the same size (quoted, labelled as the paper's)
    assert row["paper_acc_pct"] == {"MNIST": [97.47, 0.33], "F-MNIST": [86.09, 0.33]}
    assert "paper, same size" in md and "MNIST 97.47 ± 0.33 %; F-MNIST 86.09 ± 0.33 %" in md


def test_paper_qnn_accuracy_by_size() -> None:
    """The paper's Table I columns: 537 k, 1.3 M and 3.7 M devices are 784-H-H-10 with H = 256, 512, 1024."""
    for h, dev_paper in ((256, 537e3), (512, 1.3e6), (1024, 3.7e6)):
        arch = architecture({"hidden": h}, ["mnist", "fashion-mnist"])
        assert arch.devices == pytest.approx(dev_paper, rel=0.03)
        assert paper_qnn_accuracy(arch) is not None
    assert paper_qnn_accuracy(architecture({"hidden": 128}, ["mnist"])) is None
    assert paper_qnn_accuracy(architecture({"hidden": [512, 256]}, ["mnist"])) is None


def test_pm_format() -> None:
    assert format_pm(97.4666, 0.3301, 15) == "97.47 % ± 0.33 %"
    assert format_pm(97.4666, float("nan"), 1) == "97.47 %"


CRASHER = textwrap.dedent(
    """
    import os, sys
    from _synthlogs import write_sim_log
    write_sim_log(sys.argv[1], n_devices=128, tasks=("mnist", "fashion-mnist"), epochs_per_task=2,
                  steps_per_epoch=2, close_status=None)
    os._exit(0)  # killed: no close, status stays 'running'
    """
)


def test_crashed_run_still_reports(tmp_path: Path) -> None:
    script = tmp_path / "crash.py"
    script.write_text(CRASHER)
    log = tmp_path / "crashed.h5"
    subprocess.run([sys.executable, str(script), str(log)], check=True, timeout=60, env=script_env(MPLBACKEND="Agg"))
    summary = build_report([str(log)], tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    last = int(_epochs(log)["epoch"][-1])
    assert summary["runs"][0]["status"] == "crashed"
    assert "`crashed` is **crashed**" in md and f"last complete epoch: {last}" in md
    assert (tmp_path / "rep" / "accuracy_1.png").exists()


def test_explicit_bad_file_is_one_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(RunLogError):
        build_report([str(bad)], tmp_path / "rep")
    with pytest.raises(SystemExit) as ei:
        main(["report", str(bad), "-o", str(tmp_path / "rep")])
    assert ei.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hwloop: error:") and "bad.h5" in err[0]


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RunLogError, match="no run logs"):
        build_report([str(tmp_path)], tmp_path / "rep")


def test_cli_report_json(sweep: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(
        cli,
        [
            "report",
            str(sweep / "m0_s0.h5"),
            str(sweep / "m3_s0.h5"),
            "-o",
            str(tmp_path / "r"),
            "--no-endurance",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    s = json.loads(res.output, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    assert s["forgot"] == ["m0_s0"] and s["retained"] == ["m3_s0"]
    assert s["runs"][0]["final_acc_pct"][1] is not None
    assert "endurance.png" not in s["figures"]
    assert (tmp_path / "r" / "report.md").exists()


def test_mstar_sweep_per_network_size(tmp_path: Path) -> None:
    """A sweep over m* and hidden gives one Fig. 2a per hidden size, never a mix of the two."""
    for h in (16, 32):
        for m, forget in ((0.0, True), (3.0, False)):
            write_sim_log(
                tmp_path / f"m{m:g}-h{h}.h5",
                n_devices=64,
                tasks=("mnist", "fashion-mnist"),
                epochs_per_task=2,
                steps_per_epoch=1,
                m_star=m,
                hidden=h,
                acc_fn=_acc_fn(forget),
                seed=h,
            )
    s = build_report([str(tmp_path)], tmp_path / "rep", with_endurance=False)
    sweeps = s["mstar_sweeps"]
    assert len(sweeps) == 2 and {"mstar_sweep_1.png", "mstar_sweep_2.png"} <= set(s["figures"])
    for sw, h in zip(sweeps, (16, 32), strict=True):
        assert f"hidden={h}" in sw["config"] and sw["m_star"] == [0.0, 3.0] and sw["n"] == [1, 1]
        ep = _epochs(tmp_path / f"m0-h{h}.h5")
        assert sw["final_mean"][0][0] == pytest.approx(100 * ep["acc"][-1][0], abs=1e-4)
