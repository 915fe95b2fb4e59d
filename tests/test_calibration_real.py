"""Calibration through the real driver path (RealChip -> FPGA protocol + SMU) on the virtual bench.

Skips cleanly when the virtual bench (``hwloop.emulator``) or ``RealChip`` is not importable.

Statistics: with N devices per condition the standard error of a median is about 1.2533 sigma / sqrt(N)
(sigma 3-4 uS here, so 0.2-0.3 uS at N = 256). The real-path and sim-path medians of a condition are
independent, so their difference has standard error sqrt(2) times that; the tests allow 4 of those,
plus the board ADC's quantisation (0.5 nA at 0.1 V = 0.005 uS). Over emulator seeds 0-7 (sim seeds
100-107) the largest median difference was 2.5 standard errors and the chosen gate voltages never
differed by more than one sweep step (the max-min criterion has near-ties, so one step does occur).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

emulator = pytest.importorskip("hwloop.emulator", reason="virtual bench (hwloop.emulator) not available yet")
real = pytest.importorskip("hwloop.chip.real", reason="RealChip not available yet")

from hwloop.calibration import CalibrationConfig, calibrate, load_calibration  # noqa: E402
from hwloop.chip.sim import SimChip  # noqa: E402
from hwloop.cli import main  # noqa: E402

BENCH = Path(__file__).resolve().parent.parent / "instruments" / "virtual.toml"
CFG = CalibrationConfig.default().with_(rows=(0, 16), n_devices=256)  # 2,048-device region, reused


@pytest.fixture(scope="module")
def vbench():
    if not BENCH.exists():
        pytest.skip(f"{BENCH} not found")
    with emulator.VirtualBench(str(BENCH), seed=0, pace=False) as vb:
        yield vb


def test_real_path_gives_the_sim_levels_within_statistical_error(vbench) -> None:
    chip = real.RealChip.from_bench_file(vbench.bench_path)
    with chip:
        ops: list[str] = []
        chip.add_listener(lambda op, *_: ops.append(op.name))
        res_real = calibrate(chip, CFG)
    assert {"FORM", "SET", "RESET", "READ"} <= set(ops)
    assert vbench.board is not None  # the operations went over the emulated FPGA link
    res_sim = calibrate(SimChip(1, seed=1), CFG)
    assert res_real.forming_yield > 0.95

    se = 1.2533 * np.maximum(res_real.stats["sigma_us"], res_sim.stats["sigma_us"]) / np.sqrt(CFG.n_devices)
    diff = np.abs(res_real.stats["median_us"] - res_sim.stats["median_us"])
    assert np.all(diff <= 4 * np.sqrt(2) * se + 0.01), np.max(diff / se)
    lcs_se = 1.2533 * res_sim.lcs_stats["sigma_us"][0] / np.sqrt(res_sim.lcs_samples_us.size)
    assert abs(res_real.lcs_stats["median_us"][0] - res_sim.lcs_stats["median_us"][0]) <= 4 * np.sqrt(2) * lcs_se + 0.01

    # the chosen levels: same gate voltages within one sweep step, medians within statistical error
    v_real = res_real.v_gate[res_real.selection.index]
    v_sim = res_sim.v_gate[res_sim.selection.index]
    assert np.all(np.abs(v_real - v_sim) <= CFG.v_step + 1e-9), (v_real, v_sim)
    m_real = res_real.stats["median_us"][res_real.selection.index]
    m_sim = res_sim.stats["median_us"][res_sim.selection.index]
    np.testing.assert_allclose(m_real, m_sim, rtol=0.05)


def test_cli_on_virtual_bench(vbench, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "real.h5"
    args = [
        "calibrate",
        "--chip",
        "real",
        "--bench",
        vbench.bench_path,
        "--rows",
        "0:16",
        "--devices",
        "128",
        "--points",
        "17",
        "--out",
        str(out),
        "--log",
        str(tmp_path / "ops.h5"),
        "--no-progress",
    ]
    with pytest.raises(SystemExit) as ei:
        main(args)
    _, err = capsys.readouterr()
    assert ei.value.code in (0, None), err
    cal = load_calibration(out)
    assert cal.attrs["backend"] == "RealChip" and cal.attrs["bench"] == vbench.bench_path
    assert cal.attrs["synthetic"]  # the emulated board says so
    assert cal.q.size == 17


def test_cli_refuses_gate_range_past_bench_limit(vbench, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, log = tmp_path / "x.h5", tmp_path / "ops.h5"
    args = [
        "calibrate",
        "--chip",
        "real",
        "--bench",
        vbench.bench_path,
        "--v-stop",
        "3.0",
        "--out",
        str(out),
        "--log",
        str(log),
        "--no-progress",
    ]
    with pytest.raises(SystemExit) as ei:
        main(args)
    _, err = capsys.readouterr()
    assert ei.value.code == 2
    assert err.startswith("hwloop: error:") and "max_v_gate_set" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not log.exists()
