"""``hwloop retention``, ``cycle``, ``verify``, ``estimate`` on the sim chip: the fits recover the models the
simulated chip was given, the files replay, every pulse is logged, and bad input is one line with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from hwloop.calibration.oplog import read_oplog
from hwloop.chip.base import Op
from hwloop.chip.models import (
    FIT_DTYPE,
    RETENTION_FORMAT,
    EnduranceModel,
    load_endurance_model,
    load_retention_model,
    save_endurance_model,
)
from hwloop.chip.sim import SimChip
from hwloop.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as ei:
        main(list(args))
    out, err = capsys.readouterr()
    code = ei.value.code
    return (0 if code is None else int(code)), out, err


def _h(g: np.ndarray) -> np.ndarray:
    """The built-in relaxation amplitude per unit relax_rel (hwloop.chip.sim)."""
    g = np.maximum(g, 1.0)
    return g * np.sqrt(50.0 / np.maximum(g, 10.0))


def test_retention_recovers_the_builtin_relaxation(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, default_cdf
) -> None:
    out, log = tmp_path / "ret.h5", tmp_path / "ops.h5"
    code, so, err = run_cli(
        capsys,
        "retention",
        "--chip",
        "sim",
        "--relax-rel",
        "0.05",
        "--relax-tau-s",
        "10",
        "--levels",
        "all",
        "--devices",
        "400",
        "--duration",
        "1000",
        "--schedule",
        "log:16",
        "--out",
        str(out),
        "--log",
        str(log),
        "--no-progress",
        "--json",
    )
    assert code == 0, err
    s = json.loads(so)
    assert Path(s["plot"]).stat().st_size > 1000
    fit = {r["level"]: r for r in s["fit"]}
    for k in range(1, 9):  # HCS levels; the expected spread from the level's programmed conductances
        want = 0.05 * float(np.sqrt(np.mean(_h(default_cdf.sample(k, np.random.default_rng(k), 4000)) ** 2)))
        assert fit[k]["tau_s"] == pytest.approx(10.0, rel=0.25), k
        assert fit[k]["sigma_us"] == pytest.approx(want, rel=0.15), k
        assert abs(fit[k]["drift_us"]) < 4 * (want + 0.5) / np.sqrt(400), k
    # the file: documented datasets, and the op log holds every pulse (one RESET per device, SETs for HCS)
    with h5py.File(out) as f:
        assert f.attrs["format"] == RETENTION_FORMAT
        assert f["g_us"].shape == (17, 9, 400) and f["times_s"].shape == (17,)
    ops = read_oplog(log)
    assert int((ops["op"] == Op.RESET).sum()) == 9 * 400 and int((ops["op"] == Op.SET).sum()) == 8 * 400
    assert int((ops["op"] == Op.READ).sum()) >= 17 * 9 * 400
    assert load_retention_model(out).n_levels == 9


def test_retention_file_replays_on_the_sim_chip(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    src = tmp_path / "given.h5"
    fit = np.zeros(9, FIT_DTYPE)
    fit["level"] = np.arange(9)
    fit["median0_us"] = SimChip().table.medians_us
    fit["drift_us"] = np.linspace(0.0, -6.0, 9)  # low levels drift less, high ones fall
    fit["sigma_us"] = np.linspace(0.5, 4.0, 9)
    fit["tau_s"] = np.geomspace(2.0, 60.0, 9)
    with h5py.File(src, "w") as f:
        f.attrs["format"] = RETENTION_FORMAT
        f.create_dataset("fit", data=fit)
    out = tmp_path / "measured.h5"
    code, so, err = run_cli(
        capsys,
        "retention",
        "--chip",
        "sim",
        "--retention",
        str(src),
        "--devices",
        "600",
        "--duration",
        "3000",
        "--t-first",
        "0.05",
        "--schedule",
        "log:20",
        "--out",
        str(out),
        "--no-log",
        "--no-progress",
        "--json",
    )
    assert code == 0, err
    got = {r["level"]: r for r in json.loads(so)["fit"]}
    for k in range(1, 9):
        assert got[k]["tau_s"] == pytest.approx(fit["tau_s"][k], rel=0.25), k
        assert got[k]["sigma_us"] == pytest.approx(fit["sigma_us"][k], rel=0.15), k
        assert got[k]["drift_us"] == pytest.approx(fit["drift_us"][k], abs=4 * (fit["sigma_us"][k] + 0.5) / 24 + 0.05)


def test_cycle_recovers_the_budget_distribution(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    given = EnduranceModel(median_cycles=150.0, log_sigma=0.4, stuck_hcs_fraction=0.3)
    src, out, log = tmp_path / "given.h5", tmp_path / "end.h5", tmp_path / "ops.h5"
    save_endurance_model(given, src)
    code, so, err = run_cli(
        capsys,
        "cycle",
        "--chip",
        "sim",
        "--endurance-model",
        str(src),
        "--devices",
        "1500",
        "--cycles",
        "600",
        "--read-every",
        "3",
        "--out",
        str(out),
        "--log",
        str(log),
        "--no-progress",
        "--json",
    )
    assert code == 0, err
    s = json.loads(so)
    ln = s["lognormal"]
    n = s["failed"]
    assert n > 1400
    # within sampling error (4 standard errors; reads every 3 cycles add < 1 % to the median)
    assert abs(np.log(ln["median_cycles"] / 150.0)) < 4 * ln["se_log_median"] + 0.01
    assert abs(ln["log_sigma"] - 0.4) < 4 * ln["se_log_sigma"] + 0.01
    assert abs(s["stuck_hcs_fraction"] - 0.3) < 4 * np.sqrt(0.3 * 0.7 / n)
    assert s["best"] == "lognormal"
    # every pulse in the op log
    ops = read_oplog(log)
    assert int(np.isin(ops["op"], (Op.SET, Op.RESET)).sum()) == s["pulses"]
    # the file replays: a new sim chip draws its budgets from the fitted model
    m = load_endurance_model(out)
    chip = SimChip(endurance=m, seed=9)
    assert np.median(chip.budget) == pytest.approx(150.0, rel=0.05)
    assert np.log(chip.budget).std() == pytest.approx(0.4, rel=0.1)


def test_verify_command_and_estimate(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    log = tmp_path / "ops.h5"
    code, so, err = run_cli(
        capsys,
        "verify",
        "--chip",
        "sim",
        "--devices",
        "200",
        "--tolerance",
        "0.7",
        "--log",
        str(log),
        "--no-progress",
        "--json",
    )
    assert code == 0, err
    s = json.loads(so)
    assert s["success_rate"] > 0.95 and s["mean_attempts"] > 1.2
    ops = read_oplog(log)
    assert int((ops["op"] == Op.RESET).sum()) == s["reset_pulses"]
    assert ops["attempt"].max() >= 1  # retries are tagged with their attempt number
    code, so, err = run_cli(capsys, "estimate", str(log), "--bench", "instruments/virtual.toml", "--json")
    assert code == 0, err
    e = json.loads(so)
    assert e["ops"]["RESET"] == s["reset_pulses"] and e["time_s"] > 0 and e["energy_j"] > 0
    code, so, err = run_cli(capsys, "estimate", "--calibration-sweep", "--bench", "instruments/virtual.toml")
    assert code == 0 and "time" in so


@pytest.mark.parametrize(
    "args, needle",
    [
        (["retention", "--schedule", "lin:5"], "log:K"),
        (["retention", "--duration", "nan"], "finite"),
        (["retention", "--levels", "0,12"], "levels"),
        (["retention", "--chip", "real", "--bench", "instruments/virtual.toml", "--relax-rel", "0.1"], "simulated"),
        (["verify", "--tolerance", "nan"], "finite"),
        (["cycle", "--devices", "0"], "--devices"),
        (["estimate", "--bench", "instruments/virtual.toml"], "exactly one plan"),
        (["estimate", "nope.h5", "--bench", "instruments/virtual.toml"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], needle: str
) -> None:
    code, _, err = (
        run_cli(capsys, *args, "--no-log", "--no-progress") if args[0] != "estimate" else run_cli(capsys, *args)
    )
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and needle in err and "Traceback" not in err


def test_hostile_model_files_are_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    for opt in ("--retention", "--endurance-model"):
        code, _, err = run_cli(capsys, "verify", "--chip", "sim", opt, str(junk), "--no-log", "--no-progress")
        assert code == 2 and len(err.strip().splitlines()) == 1 and "readable" in err
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f.attrs.update(
            {
                "format": "hwloop-endurance-model",
                "distribution": "lognormal",
                "median_cycles": np.nan,
                "log_sigma": 0.5,
                "stuck_hcs_fraction": 0.5,
            }
        )
    code, _, err = run_cli(capsys, "cycle", "--chip", "sim", "--endurance-model", str(bad), "--no-log", "--no-progress")
    assert code == 2 and "finite" in err
    code, _, err = run_cli(capsys, "estimate", str(junk), "--bench", "instruments/virtual.toml")
    assert code == 2 and len(err.strip().splitlines()) == 1
