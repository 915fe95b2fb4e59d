"""Characterisation through the real driver path, against the virtual bench: worn devices inferred from
reads with the emulator's wear-out on (and kept in the run log, the checkpoint and `hwloop endurance`),
the ISPP ladder refused at the driver limit, and `hwloop estimate` against measured bench runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from hwloop.characterise.wear import LEVEL_WORN, LevelProgrammer, ProgramOptions
from hwloop.chip.default_table import default_table
from hwloop.chip.real import RealChip
from hwloop.chip.sim import SimConfig
from hwloop.chip.verify import level_windows, program_verify
from hwloop.errors import SafetyLimitError
from hwloop.runlog import RunLog, _read_checkpoint
from hwloop.training.checkpoint import load_payload

emulator = pytest.importorskip("hwloop.emulator")
BENCH = Path(__file__).resolve().parents[1] / "instruments" / "virtual.toml"
TABLE = default_table()
WEAR = SimConfig.ideal().with_(
    read_noise_rel=0.01, read_noise_abs_us=0.2, endurance_median_cycles=6.0, endurance_log_sigma=0.4
)


def test_worn_devices_are_inferred_from_reads_on_the_virtual_bench() -> None:
    with (
        emulator.VirtualBench(BENCH, seed=3, sim_config=WEAR, pace=False) as vb,
        RealChip.from_bench_file(vb.bench_path, table=TABLE) as chip,
    ):
        idx = np.arange(600)
        chip.form_idx(idx)
        idx = idx[chip.formed_mask()[idx]]
        prog = LevelProgrammer(chip, ProgramOptions(mode="single-shot", wear_strikes=2))
        rng = np.random.default_rng(1)
        for _ in range(16):
            live = idx[~chip.failed_mask()[idx]]  # worn devices are no longer programmed
            prog(live, np.where(rng.random(live.size) < 0.5, 0, rng.integers(1, 9, live.size)))
        truth = vb.sim.failed[idx]
        inferred = chip.failed_mask()[idx]
        assert 0.3 * idx.size < truth.sum() < idx.size
        assert np.all(truth[inferred])  # never a healthy device
        assert inferred.sum() > 0.8 * truth.sum()
        snap = chip.snapshot()
        assert np.array_equal(snap["failed"], chip.failed_mask())


def test_ispp_ladder_past_the_gate_limit_is_refused_before_any_pulse() -> None:
    with (
        emulator.VirtualBench(BENCH, seed=0, sim_config=SimConfig.ideal(), pace=False) as vb,
        RealChip.from_bench_file(vb.bench_path, table=TABLE) as chip,
    ):
        idx = np.arange(16)
        chip.form_idx(idx)
        n0 = len(vb.board.log.ops)
        lo, hi = level_windows(TABLE)
        with pytest.raises(SafetyLimitError, match="max_v_gate_set"):
            program_verify(chip, idx, 8, lo, hi, max_pulses=10, ispp_step_v=0.05)  # 2.2 + 9*0.05 > 2.4 V
        assert len(vb.board.log.ops) == n0


def test_training_marks_worn_devices_in_log_checkpoint_and_endurance(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hwloop.cli import main
    from hwloop.orchestrator import TrainConfig, train

    with emulator.VirtualBench(BENCH, seed=0, sim_config=WEAR, pace=False) as vb:
        cfg = TrainConfig(
            tasks="mnist",
            epochs_per_task=2,
            warmup=2,
            hidden=16,
            lr=5e-2,
            batch_size=50,
            train_samples=200,
            chip="real",
            bench=vb.bench_path,
            data_dir=str(tiny_data),
            verify_data=False,
            out=str(tmp_path / "worn.h5"),
            progress=False,
            eval_batch=200,
            wear_strikes=2,
            init="uniform",
        )
        res = train(cfg)
        truth = vb.sim.failed.copy()
    assert res.status == "finished"
    with RunLog(res.log) as log:
        _, lv = log.snapshot(len(log.snapshot_epochs()) - 1)
        lv = lv.reshape(-1)
    worn = np.flatnonzero(lv == LEVEL_WORN)
    assert worn.size > 0 and np.all(worn < truth.size) and np.all(truth[worn])  # on the bench tile, truly worn
    with h5py.File(res.log) as f:
        _, blob = _read_checkpoint(f, Path(res.log))
    ck = load_payload(blob)
    assert int(ck["hw"]["worn"].sum()) == worn.size
    assert ck["hw"]["usable"][ck["hw"]["worn"]].sum() == 0  # excluded from programming
    assert int(ck["chip"]["part0/failed"].sum()) == worn.size
    with pytest.raises(SystemExit):
        main(["endurance", res.log, "--json"])
    s = json.loads(capsys.readouterr().out)
    assert s["worn_inferred"] == worn.size


def _run(*args: str) -> dict:
    r = subprocess.run([sys.executable, "-m", "hwloop", *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_estimate_of_a_paced_virtual_bench_run_is_a_lower_bound_there_and_counts_its_ops(tmp_path: Path) -> None:
    """A paced bench sends every byte at the baud rate and holds every pulse for its width, so the estimate's
    link and pulse times cannot exceed the measured wall time, whatever the machine's load (a load only
    slows the run). How close the whole estimate comes (within 20 %) is a speed figure: it lives in
    ``benchmarks/estimate_error.py``, not in a timed test."""
    with emulator.VirtualBench(BENCH, seed=0, pace=True, mode="process") as vb:
        log = tmp_path / "verify-ops.h5"
        meas = _run(
            "verify",
            "--chip",
            "real",
            "--bench",
            vb.bench_path,
            "--devices",
            "128",
            "--log",
            str(log),
            "--no-progress",
            "--json",
        )
        est = _run("estimate", str(log), "--bench", vb.bench_path, "--json")
    parts = est["time_parts_s"]
    floor_s = parts["link"] + parts["pulses_and_reads"]
    assert 0 < floor_s <= meas["ops_wall_s"], (parts, meas["ops_wall_s"])
    assert est["time_s"] == pytest.approx(sum(parts.values()))
    assert est["ops"]["READ"] > 0 and est["ops"]["SET"] + est["ops"]["RESET"] > 0


def test_retention_and_cycle_run_through_the_driver_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hwloop.cli import main

    def cli(*args: str) -> dict:
        with pytest.raises(SystemExit) as ei:
            main(list(args))
        out, err = capsys.readouterr()
        assert ei.value.code in (0, None), err
        return json.loads(out)

    with emulator.VirtualBench(BENCH, seed=2, sim_config=WEAR, pace=False) as vb:
        r = cli(
            "retention",
            "--chip",
            "real",
            "--bench",
            vb.bench_path,
            "--devices",
            "40",
            "--duration",
            "0.4",
            "--t-first",
            "0.1",
            "--schedule",
            "log:3",
            "--out",
            str(tmp_path / "r.h5"),
            "--no-progress",
            "--json",
            "--log",
            str(tmp_path / "r-ops.h5"),
        )
        assert r["wait_s"] > 0.2  # a bench waits on the wall clock
        assert len(r["fit"]) == 9 and r["times_s"][-1] >= 0.4
    # a fresh bench: a new host session does not know the cycles a device had before it (docs/characterise.md)
    with emulator.VirtualBench(BENCH, seed=2, sim_config=WEAR, pace=False) as vb:
        c = cli(
            "cycle",
            "--chip",
            "real",
            "--bench",
            vb.bench_path,
            "--devices",
            "300",
            "--cycles",
            "40",
            "--read-every",
            "1",
            "--out",
            str(tmp_path / "e.h5"),
            "--no-progress",
            "--json",
            "--log",
            str(tmp_path / "c-ops.h5"),
        )
        assert c["failed"] > 250
        # the budgets the emulated chip drew, for the devices cycled
        dev = np.asarray(h5py.File(tmp_path / "e.h5")["devices"][()])
        truth = np.median(vb.sim.budget[dev])
    assert c["lognormal"]["median_cycles"] == pytest.approx(truth, rel=0.2)
