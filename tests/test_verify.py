"""Program-and-verify (hwloop.chip.verify) and worn-device inference from reads (hwloop.characterise.wear)."""

from __future__ import annotations

import numpy as np
import pytest

from hwloop.characterise.wear import LEVEL_WORN, LevelProgrammer, ProgramOptions, class_split_us, programmer_for
from hwloop.chip.base import Op
from hwloop.chip.sim import SimChip, SimConfig
from hwloop.chip.verify import level_windows, program_verify
from hwloop.errors import ChipError, ConfigError


def _formed_chip(seed: int = 0, n: int = 4000, **cfg: float) -> tuple[SimChip, np.ndarray]:
    chip = SimChip(config=SimConfig.ideal().with_(read_noise_rel=0.01, read_noise_abs_us=0.2, **cfg), seed=seed)
    idx = np.arange(n)
    chip.form_idx(idx)
    return chip, idx


def test_windows_sigma_and_midpoint(default_cdf) -> None:
    med, sig = default_cdf.medians_us, default_cdf.sigmas_us
    lo, hi = level_windows(default_cdf, "sigma", 2.0)
    assert lo[0] == 0.0 and np.allclose(hi, med + 2 * sig) and np.allclose(lo[1:], med[1:] - 2 * sig[1:])
    lo, hi = level_windows(default_cdf, "midpoint", 1.0)
    assert np.isinf(hi[-1]) and lo[0] == 0.0
    assert np.allclose(hi[:-1], lo[1:])  # full midpoint windows tile the conductance axis
    with pytest.raises(ChipError):
        level_windows(default_cdf, "sigma", float("nan"))


def test_verify_lands_reads_in_window_and_retries_only_misses() -> None:
    chip, idx = _formed_chip()
    level = np.arange(idx.size) % 9
    lo, hi = level_windows(chip.table, "sigma", 0.5)
    rows: list[tuple[int, int]] = []
    chip.add_listener(lambda op, i, lv, g: rows.append((int(op), i.size)))
    r = program_verify(chip, idx, level, lo, hi, max_pulses=30)
    # ±0.5 sigma holds ~38 % of single shots; verify brings nearly all in, and every success is inside
    assert r.success.mean() > 0.99
    inside = (r.g_us >= lo[level]) & (r.g_us <= hi[level])
    assert np.array_equal(inside, r.success)
    assert 1.5 < r.attempts.mean() < 6
    # every attempt is one RESET and one READ per device still trying, plus one SET for HCS targets
    n_reset = sum(n for op, n in rows if op == Op.RESET)
    n_set = sum(n for op, n in rows if op == Op.SET)
    assert n_reset == r.reset_pulses == int(r.attempts.sum())
    assert n_set == r.set_pulses == int(r.attempts[level > 0].sum())
    assert int(chip.reset_count[idx].sum()) == n_reset
    # the second attempt touched only devices whose first read missed
    reset_calls = [n for op, n in rows if op == Op.RESET]
    assert reset_calls[0] == idx.size and reset_calls[1] < 0.8 * idx.size


def test_single_shot_misses_more_than_verify() -> None:
    chip, idx = _formed_chip(seed=3)
    level = np.full(idx.size, 4)
    lo, hi = level_windows(chip.table, "sigma", 1.0)
    one = program_verify(chip, idx, level, lo, hi, max_pulses=1)
    ten = program_verify(chip, idx, level, lo, hi, max_pulses=10)
    assert one.success.mean() < 0.8 < 0.99 < ten.success.mean()
    assert np.all(one.attempts == 1)


def test_verify_bad_input() -> None:
    chip, idx = _formed_chip(n=10)
    lo, hi = level_windows(chip.table)
    with pytest.raises(ChipError, match="budget"):
        program_verify(chip, idx, 1, lo, hi, max_pulses=0)
    with pytest.raises(ChipError, match="levels"):
        program_verify(chip, idx, 9, lo, hi)
    with pytest.raises(ChipError, match="once"):
        program_verify(chip, np.array([1, 1]), 1, lo, hi)
    with pytest.raises(ChipError, match="ISPP"):
        program_verify(chip, idx, 1, lo, hi, ispp_step_v=float("nan"))


def test_ispp_raises_the_gate_voltage_per_attempt() -> None:
    chip, idx = _formed_chip(n=2000)
    lo, hi = level_windows(chip.table, "sigma", 0.3)
    r = program_verify(chip, idx, 1, lo, hi, max_pulses=4, ispp_step_v=0.2)
    # with a large step the later SETs land above level 1: the retried devices end higher
    retried = r.attempts > 1
    assert retried.any() and np.median(r.g_us[retried & ~r.success]) > hi[1]


def test_wear_inference_marks_stuck_devices_only() -> None:
    cfg = SimConfig.ideal().with_(endurance_median_cycles=12.0, endurance_log_sigma=0.5)
    chip = SimChip(config=cfg, seed=5)
    idx = np.arange(3000)
    chip.form_idx(idx)
    prog = LevelProgrammer(chip, ProgramOptions(mode="single-shot", wear_strikes=2))
    rng = np.random.default_rng(0)
    sim_failed = chip.failed.copy()
    for _ in range(30):
        live = idx[~prog.worn[idx]]
        prog(live, np.where(rng.random(live.size) < 0.5, 0, rng.integers(1, 9, live.size)))
    truth = chip.failed[idx].copy()
    # every inferred worn device is really worn (no healthy device marked) and most worn ones were found
    assert not sim_failed.any()
    inferred = prog.worn[idx]
    assert 1000 < truth.sum() < idx.size
    assert np.all(truth[inferred])
    assert inferred.sum() > 0.9 * truth.sum()


def test_programmer_for_picks_the_path() -> None:
    class Cfg:
        chip, program, verify_tolerance, verify_max_pulses, wear_strikes = "sim", "single-shot", 1.0, 10, 3

    chip = SimChip(seed=0)
    assert programmer_for(Cfg(), chip) is None  # the sim chip's plain single-shot path stays untouched
    Cfg.program = "verify"
    assert isinstance(programmer_for(Cfg(), chip), LevelProgrammer)
    Cfg.program, Cfg.chip = "single-shot", "real"
    assert programmer_for(Cfg(), chip).opts.mode == "single-shot"
    with pytest.raises(ConfigError):
        ProgramOptions(mode="twice").validate()
    assert LEVEL_WORN < 0 and 3.0 < class_split_us(chip.table) < 20.0


def test_training_with_verify_logs_every_retry(tiny_data, tmp_path) -> None:
    from hwloop.analysis.endurance import endurance_summary
    from hwloop.orchestrator import TrainConfig, train
    from hwloop.runlog import OP_CODES, RunLog

    totals = {}
    for mode in ("single-shot", "verify"):
        cfg = TrainConfig(
            tasks="mnist",
            epochs_per_task=1,
            warmup=1,
            hidden=16,
            lr=5e-3,
            batch_size=50,
            train_samples=200,
            chip="sim",
            data_dir=str(tiny_data),
            verify_data=False,
            out=str(tmp_path / f"{mode}.h5"),
            progress=False,
            eval_batch=200,
            program=mode,
            verify_tolerance=0.5,
            verify_max_pulses=8,
        )
        res = train(cfg)
        with RunLog(res.log) as log:
            ops = log.ops[()]
            s = endurance_summary(log)
        n_reset = int((ops["op"] == OP_CODES["RESET"]).sum())
        n_set = int((ops["op"] == OP_CODES["SET"]).sum())
        assert s["totals"]["reset"] == n_reset and s["totals"]["set"] == n_set
        assert s["pulses"]["total_ops"] == n_reset + n_set  # endurance counts every pulse, retries included
        totals[mode] = (res.programs, n_reset, n_set)
    prog, reset, _ = totals["single-shot"]
    assert reset == prog  # one RESET per level change
    prog, reset, _ = totals["verify"]
    assert reset > 1.5 * prog  # ±0.5 sigma windows need retries, and each one is in the log


def test_training_sim_tiles_take_the_measured_models(tiny_data, tmp_path, capsys) -> None:
    from hwloop.chip.default_table import default_table
    from hwloop.chip.models import EnduranceModel, save_endurance_model
    from hwloop.cli import main
    from hwloop.orchestrator import TrainConfig, build_chip_for_run

    p = tmp_path / "end.h5"
    save_endurance_model(EnduranceModel(median_cycles=40.0, log_sigma=0.2, stuck_hcs_fraction=0.9), p)
    chip, _ = build_chip_for_run(TrainConfig(endurance_model=str(p)), 2, default_table())
    assert chip.endurance is not None and np.median(chip.budget) == pytest.approx(40.0, rel=0.05)
    assert chip.config.stuck_hcs_fraction == 0.9
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(SystemExit) as ei:
        main(
            [
                "train",
                "--chip",
                "sim",
                "--retention",
                str(junk),
                "--out",
                str(tmp_path / "r.h5"),
                "--data-dir",
                str(tiny_data),
                "--no-verify-data",
                "--hidden",
                "8",
                "--no-progress",
            ]
        )
    err = capsys.readouterr().err
    assert ei.value.code == 2 and len(err.strip().splitlines()) == 1 and "retention" in err
