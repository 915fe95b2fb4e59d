"""``hwloop calibrate`` / ``calibrate run|show|plot``: the command line, the file it writes, and one-line
errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np
import pytest

from hwloop.chip.default_table import default_table_path
from hwloop.cli import main

FAST = ["--no-progress", "--points", "17", "--devices", "128"]

if TYPE_CHECKING:
    from conftest import RunCli


@pytest.fixture(scope="module")
def cal_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    p = d / "chip.h5"
    with pytest.raises(SystemExit) as ei:
        main(["calibrate", "--chip", "sim", "--out", str(p), "--log", str(d / "ops.h5"), *FAST])
    assert ei.value.code in (0, None)
    return p


def test_calibrate_summary_counts_and_files(run_cli: RunCli, tmp_path: Path) -> None:
    out_file, log = tmp_path / "c.h5", tmp_path / "ops.h5"
    code, out, err = run_cli("calibrate", "--chip", "sim", "--out", str(out_file), "--log", str(log), *FAST)
    assert code == 0, err
    assert out_file.exists() and log.exists()
    for name in ["LCS", *[f"HCS{k}" for k in range(1, 9)]]:
        assert any(ln.split() and ln.split()[0] == name for ln in out.splitlines())
    line = next(ln for ln in out.splitlines() if ln.startswith("operations:"))
    n = 17 * 128
    assert f"SET {n:,}" in line and f"RESET {n:,}" in line and f"READ {4 * n:,}" in line
    assert "wall time" in out and "forming" in out and "yield" in out


def test_calibrate_json_default_paths_and_run_alias(
    run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("calibrate", "run", "--chip", "sim", "--seed", "4", "--json", *FAST)
    assert code == 0, err
    d = json.loads(out)
    assert Path(d["path"]) == Path("calibration/sim-seed4.h5") and (tmp_path / d["path"]).exists()
    assert d["oplog"].startswith("runs/calibrate-sim-seed4-") and (tmp_path / d["oplog"]).exists()
    assert d["op_counts"]["SET"] == 17 * 128 and d["wall_s"]["total"] > 0
    with h5py.File(tmp_path / d["oplog"], "r") as f:
        assert f["ops"].shape[0] == sum(d["op_counts"].values())
    # a second run refuses to overwrite, in one line, exit 2
    code, out, err = run_cli("calibrate", "--chip", "sim", "--seed", "4", *FAST)
    assert code == 2 and err.startswith("hwloop: error:") and "--force" in err and len(err.splitlines()) == 1
    code, _, err = run_cli("calibrate", "--chip", "sim", "--seed", "4", "--force", *FAST)
    assert code == 0, err


def test_progress_bar_on_stderr(run_cli: RunCli, tmp_path: Path) -> None:
    args = [
        "calibrate",
        "--chip",
        "sim",
        "--out",
        str(tmp_path / "p.h5"),
        "--no-log",
        "--points",
        "17",
        "--devices",
        "64",
        "--json",
    ]
    code, out, err = run_cli(*args)
    assert code == 0
    json.loads(out)  # stdout stays clean JSON
    assert "calibrate" in err and "/18" in err  # forming + 17 conditions


def test_show_json(run_cli: RunCli, cal_path: Path) -> None:
    code, out, err = run_cli("calibrate", "show", str(cal_path), "--json")
    assert code == 0, err
    d = json.loads(out)
    assert len(d["levels"]) == 9 and len(d["q"]) == 17
    with h5py.File(cal_path, "r") as f:
        for lv in d["levels"]:
            g = f["levels"][lv["name"]]
            assert lv["v_gate"] == pytest.approx(float(g.attrs["v_gate"]))
            assert lv["icc_ua"] == pytest.approx(float(g.attrs["icc_ua"]))
            assert lv["median_us"] == pytest.approx(float(np.median(g["reads_us"][()])))
            assert lv["sigma_us"] == pytest.approx(float(np.std(g["reads_us"][()])))
    med = np.array([lv["median_us"] for lv in d["levels"]])
    q = np.array(d["q"])
    np.testing.assert_allclose(q[9:], 1.5 * (med[1:] - med[0]) / (med[-1] - med[0]), rtol=1e-9)
    np.testing.assert_allclose(q[:8], -q[9:][::-1])
    assert q[8] == 0.0


def test_show_text_and_plot(run_cli: RunCli, cal_path: Path, tmp_path: Path) -> None:
    code, out, _ = run_cli("calibrate", "show", str(cal_path))
    assert code == 0
    assert "weight levels Q (17" in out and "HCS8" in out and "criterion" in out
    png = tmp_path / "cdf.png"
    code, out, err = run_cli("calibrate", "plot", str(cal_path), "-o", str(png), "--sweep")
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_calibration_file_feeds_the_simulator(run_cli: RunCli, cal_path: Path, tmp_path: Path) -> None:
    code, out, err = run_cli("chip", "info", "--chip", "sim", "--cdf", str(cal_path), "--json")
    assert code == 0, err
    info = json.loads(out)
    assert [lv["name"] for lv in info["levels"]] == ["LCS", *[f"HCS{k}" for k in range(1, 9)]]
    # calibrating the simulator that replays a calibration works too (chip id stays the caller's)
    code, out, err = run_cli(
        "calibrate",
        "--chip",
        "sim",
        "--cdf",
        str(cal_path),
        "--out",
        str(tmp_path / "again.h5"),
        "--no-log",
        *FAST,
    )
    assert code == 0, err


# ---------------------------------------------------------------- bad input: one line, exit code 2
def _corrupt(tmp_path: Path) -> Path:
    p = tmp_path / "corrupt.h5"
    p.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 8)
    return p


def _foreign(tmp_path: Path) -> Path:
    p = tmp_path / "foreign.h5"
    with h5py.File(p, "w") as f:
        f.attrs["format"] = "someone-elses"
        f.create_dataset("x", data=np.arange(3))
    return p


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["calibrate", "show", "{corrupt}"], "not a readable HDF5"),
        (["calibrate", "show", "{foreign}"], "not an hwloop calibration file"),
        (["calibrate", "show", "{cdf_table}"], "not an hwloop calibration file"),
        (["calibrate", "plot", "{foreign}", "-o", "{tmp}/x.png"], "not an hwloop calibration file"),
        (["calibrate", "show", "{tmp}/missing.h5"], "does not exist"),
        (["calibrate", "--chip", "sim", "--cdf", "{corrupt}", "--out", "{tmp}/o.h5"], "not a readable HDF5"),
        (
            ["calibrate", "--chip", "sim", "--cdf", "{foreign}", "--out", "{tmp}/o.h5"],
            "not an hwloop CDF table",
        ),
        (
            ["calibrate", "--chip", "sim", "--rows", "0:2", "--devices", "512", "--out", "{tmp}/o.h5"],
            "only .* usable",
        ),
        (
            ["calibrate", "--chip", "sim", "--v-start", "2.2", "--v-stop", "1.4", "--out", "{tmp}/o.h5"],
            "must be above",
        ),
        (["calibrate", "--chip", "sim", "--tiles", "x", "--out", "{tmp}/o.h5"], "--tiles"),
        (["calibrate", "--chip", "real", "--out", "{tmp}/o.h5"], "--bench"),
    ],
)
def test_bad_input_one_line_exit_2(
    run_cli: RunCli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    match: str,
) -> None:
    monkeypatch.chdir(tmp_path)  # default op-log paths (runs/...) land here, not in the repository
    subs = {
        "corrupt": str(_corrupt(tmp_path)),
        "foreign": str(_foreign(tmp_path)),
        "tmp": str(tmp_path),
        "cdf_table": str(default_table_path()),
    }
    argv = [a.format(**subs) for a in args] + ["--no-progress"] * (args[1] not in ("show", "plot"))
    code, out, err = run_cli(*argv)
    assert code == 2, (out, err)
    assert err.startswith("hwloop: error:") and len(err.strip().splitlines()) == 1, err
    import re

    assert re.search(match, err), err
    assert not (tmp_path / "o.h5").exists()


def test_gate_range_past_safety_limit_exit_2(run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bench whose check_v_gate refuses V_WL > 2.0 V: one line, exit 2, and no operation reaches the chip."""
    from hwloop.calibration import session
    from hwloop.chip.sim import SimChip
    from hwloop.errors import SafetyLimitError

    ops: list[object] = []

    class LimitedChip(SimChip):
        def check_v_gate(self, v_gate: object) -> None:
            if np.any(np.asarray(v_gate) > 2.0):
                raise SafetyLimitError("SET V_WL 2.2 V exceeds the bench limit wl_max_v = 2.0 V")

    def fake_open_chip(kind: str, **kw: object) -> SimChip:
        chip = LimitedChip(int(kw["n_tiles"]), table=kw["table"], seed=0)  # type: ignore[arg-type]
        chip.add_listener(lambda op, *_: ops.append(op))
        return chip

    monkeypatch.setattr(session, "open_chip", fake_open_chip)
    code, _, err = run_cli("calibrate", "--chip", "sim", "--out", str(tmp_path / "o.h5"), "--no-log", *FAST)
    assert code == 2 and "exceeds the bench limit" in err and len(err.strip().splitlines()) == 1
    assert ops == [] and not (tmp_path / "o.h5").exists()


def test_single_read_per_device(run_cli: RunCli, tmp_path: Path) -> None:
    """--reads-per-device 1: no read-noise estimate (None in JSON), the levels are the raw reads."""
    out = tmp_path / "one.h5"
    code, _, err = run_cli(
        "calibrate", "--chip", "sim", "--out", str(out), "--no-log", "--reads-per-device", "1", *FAST
    )
    assert code == 0, err
    code, text, _ = run_cli("calibrate", "show", str(out), "--json")
    d = json.loads(text)
    assert all(lv["read_noise_us"] is None for lv in d["levels"])
    with h5py.File(out, "r") as f:
        assert "reread_us" not in f["sweep"]
        np.testing.assert_array_equal(f["levels/HCS3/samples_us"][()], f["levels/HCS3/reads_us"][()])


def test_reselect_from_stored_sweep(run_cli: RunCli, cal_path: Path, tmp_path: Path) -> None:
    """The stored sweep suffices to choose again: same levels with no window, a capped top level with one."""
    same, capped = tmp_path / "same.h5", tmp_path / "capped.h5"
    code, _, err = run_cli("calibrate", "select", str(cal_path), "-o", str(same))
    assert code == 0, err
    code, out, err = run_cli("calibrate", "select", str(cal_path), "-o", str(capped), "--v-max", "2.0", "--json")
    assert code == 0, err
    d_cap = json.loads(out)
    _, orig, _ = run_cli("calibrate", "show", str(cal_path), "--json")
    _, again, _ = run_cli("calibrate", "show", str(same), "--json")
    d0, d1 = json.loads(orig), json.loads(again)
    assert [lv["v_gate"] for lv in d1["levels"]] == [lv["v_gate"] for lv in d0["levels"]]
    assert d1["q"] == pytest.approx(d0["q"]) and d1["created_utc"] == d0["created_utc"]
    assert max(lv["v_gate"] for lv in d_cap["levels"] if lv["kind"] == "HCS") <= 2.0 + 1e-9
    assert d_cap["run"]["reselected_from"] == str(cal_path)
    code, _, err = run_cli("calibrate", "select", str(cal_path), "-o", str(tmp_path / "x.h5"), "--v-max", "1.5")
    assert code == 2 and "sweep conditions lie in" in err
