"""The lab workflow on the emulated B1500A bench (`--chip real`), bad B1500 configurations, SMU faults."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hwloop.chip.default_table import default_table
from hwloop.chip.real import RealChip
from hwloop.chip.sim import SimConfig
from hwloop.cli import main
from hwloop.emulator import Faults, VirtualBench
from hwloop.emulator.b1500 import B1500Emulator
from hwloop.errors import InstrumentError
from hwloop.runlog import OP_CODES, RunLog

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "instruments" / "virtual-b1500.toml"
TABLE = default_table()


def wait_for(pred, timeout_s: float = 3.0) -> bool:
    """The emulator handles the last writes after the driver returns: poll until ``pred()`` holds."""
    t_end = time.monotonic() + timeout_s
    while not pred() and time.monotonic() < t_end:
        time.sleep(0.01)
    return bool(pred())


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


@pytest.fixture
def vb() -> Iterator[VirtualBench]:
    with VirtualBench(BENCH, seed=1, sim_config=SimConfig.ideal(), pace=False, faults=Faults()) as bench:
        yield bench


def test_chip_check_through_the_emulated_b1500(vb: VirtualBench, capsys: pytest.CaptureFixture[str]) -> None:
    assert isinstance(vb.smu, B1500Emulator)
    code, out, err = run_cli(
        ["chip", "check", "--chip", "real", "--bench", vb.bench_path, "--cells", "3", "--json"], capsys
    )
    assert code == 0, err
    info = json.loads(out.strip().splitlines()[-1])
    assert "B1500A" in info["smu"] and len(info["cells"]) == 3
    for cell in info["cells"]:
        assert cell["formed"] and cell["g_set_us"] > cell["g_reset_us"]
        # the SMU read (TI on the bit-line SMU) sees the same cell as the board's ADC
        assert abs(cell["g_set_smu_us"] - cell["g_set_us"]) < 0.02 * cell["g_set_us"] + 0.5
    cmds = vb.smu.state.commands
    assert cmds[:2] == ["*IDN?", "UNT?"] and cmds.count("TI 2,16") == 3
    assert wait_for(lambda: cmds[-2:] == ["DZ", "CL"]), cmds[-4:]  # closed in the safe state
    assert not any(ch.enabled for ch in vb.smu.state.channels.values())


def test_calibrate_through_the_emulated_b1500(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hwloop.calibration.fileio import load_calibration

    with VirtualBench(BENCH, seed=0, pace=False) as vb:
        out = tmp_path / "cal.h5"
        code, _, err = run_cli(
            [
                "calibrate",
                "--chip",
                "real",
                "--bench",
                vb.bench_path,
                "--rows",
                "0:8",
                "--devices",
                "64",
                "--points",
                "9",
                "--out",
                str(out),
                "--log",
                str(tmp_path / "ops.h5"),
                "--no-progress",
            ],
            capsys,
        )
        assert code == 0, err
        assert isinstance(vb.smu, B1500Emulator) and vb.smu.state.commands[:2] == ["*IDN?", "UNT?"]
    cal = load_calibration(out)
    assert cal.attrs["backend"] == "RealChip" and cal.q.size == 17  # 8 HCS levels: weights -8..8


def test_short_train_with_one_real_tile_on_the_b1500_bench(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with VirtualBench(BENCH, seed=0, pace=False, mode="process") as vb:
        assert vb.info["smu_driver"] == "b1500"
        log_path = tmp_path / "real.h5"
        code, _, err = run_cli(
            [
                "train",
                "--chip",
                "real",
                "--bench",
                vb.bench_path,
                "--real-tiles",
                "0",
                "--tasks",
                "mnist,fashion-mnist",
                "--epochs-per-task",
                "1",
                "--warmup",
                "1",
                "--hidden",
                "16",
                "--lr",
                "5e-3",
                "--batch-size",
                "50",
                "--train-samples",
                "200",
                "--data-dir",
                str(tiny_data),
                "--no-verify-data",
                "--threads",
                "1",
                "--out",
                str(log_path),
                "--no-progress",
            ],
            capsys,
        )
        assert code == 0, err
    with RunLog(str(log_path)) as log:
        assert log.tile_backends[0] == "real"
        ops = log.ops[()]
    on_real = ops["tile"] == 0
    for name in ("FORM", "RESET", "SET", "READ"):
        assert np.any(on_real & (ops["op"] == OP_CODES[name])), name


# ---------------------------------------------------------------------- bad B1500 configurations
def _bench_text(vb: VirtualBench, replace: tuple[str, str]) -> str:
    text = Path(vb.bench_path).read_text()
    assert replace[0] in text, replace[0]
    return text.replace(*replace)


@pytest.mark.parametrize(
    ("replace", "match"),
    [
        (("bl_slot = 2\n", ""), "bl_slot is missing"),
        (("wl_max_v = 5.0", "wl_max_v = 120.0"), "wl_max_v = 120.0 is past the B1511B MPSMU's range"),
        (("smu_max_current_a = 0.001", "smu_max_current_a = 0.5"), "smu_max_current_a = 0.5 is past the B1517A"),
        (('bl_module = "B1517A"', 'bl_module = "B1525A"'), "B1525A is a SPGU, not an SMU"),
    ],
)
def test_bad_b1500_bench_is_one_line_exit_2_and_nothing_sent(
    vb: VirtualBench, tmp_path: Path, capsys: pytest.CaptureFixture[str], replace: tuple[str, str], match: str
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(_bench_text(vb, replace))
    code, _, err = run_cli(["chip", "check", "--chip", "real", "--bench", str(bad)], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("hwloop: error:"), err
    assert re.search(match, lines[0]), lines[0]
    assert vb.smu is not None and vb.smu.state.commands == []  # nothing reached the SMU
    assert vb.board is not None and vb.board.log.ops == []


def test_unknown_module_in_unt_is_one_line_exit_2_and_no_setting_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with VirtualBench(BENCH, seed=0, pace=False, b1500_modules={1: "B1511B", 2: "B1599Z"}) as vb:
        code, _, err = run_cli(["chip", "check", "--chip", "real", "--bench", vb.bench_path], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "holds 'B1599Z', a module hwloop does not know" in lines[0], err
        assert isinstance(vb.smu, B1500Emulator) and vb.smu.state.commands == ["*IDN?", "UNT?"]
        assert vb.board is not None and vb.board.log.ops == []


# ---------------------------------------------------------------------- faults of the emulated B1500A
@pytest.mark.parametrize(
    ("fault", "match"),
    [
        ("smu_timeout", "no answer within"),
        ("smu_garble", "not a FLEX data item"),
        ("smu_error", r"B1500A reported: 900 Injected fault"),
        ("smu_compliance", "reached its compliance"),
    ],
)
def test_smu_fault_is_an_instrument_error_then_safe_state_then_recovery(fault: str, match: str) -> None:
    faults = Faults()
    with VirtualBench(BENCH, seed=1, sim_config=SimConfig.ideal(), pace=False, faults=faults) as vb:
        bench = Path(vb.bench_path)
        bench.write_text(bench.read_text().replace("timeout_ms = 2000", "timeout_ms = 300"))
        with RealChip.from_bench_file(bench, table=TABLE) as chip:
            idx = np.arange(2)
            chip.form_idx(idx)
            chip.set_idx(idx, level=8)
            g = chip.read_smu(idx)
            assert isinstance(vb.smu, B1500Emulator)
            n = len(vb.smu.state.commands)
            if fault == "smu_error":
                faults.inject("smu_error")  # on the next command: the DV of the read
            else:
                faults.inject(fault)  # on the next answer: TI
            with pytest.raises(InstrumentError, match=match):
                chip.read_smu(idx)
            cmds = vb.smu.state.commands
            assert wait_for(lambda: cmds[-2:] == ["DZ", "CL"]) and "TI 2,16" in cmds[n:]
            assert not any(ch.enabled or ch.v for ch in vb.smu.state.channels.values())
            # the link stays in step: the next read re-enables the channels and measures the same cells
            np.testing.assert_allclose(chip.read_smu(idx), g, rtol=1e-3)


def test_hwloop_emulate_smu_b1500_subprocess(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import signal
    import subprocess
    import sys

    keithley_file = ROOT / "instruments" / "virtual.toml"  # --smu b1500 turns its SMU into a B1500A
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hwloop.emulator",
            "--bench",
            str(keithley_file),
            "--smu",
            "b1500",
            "--workdir",
            str(tmp_path),
            "--no-pace",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["smu_driver"] == "b1500"
        assert 'driver = "b1500"' in Path(info["bench"]).read_text()
        code, out, err = run_cli(
            ["chip", "check", "--chip", "real", "--bench", info["bench"], "--cells", "2", "--json"], capsys
        )
        assert code == 0, err
        assert "B1500A" in json.loads(out.strip().splitlines()[-1])["smu"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        for f in (proc.stdout, proc.stderr):
            if f:
                f.close()
    assert proc.returncode == 0
