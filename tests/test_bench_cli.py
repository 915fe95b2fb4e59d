"""`hwloop emulate` (a real subprocess) and `hwloop chip check` against it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hwloop.cli import main

BENCH = Path(__file__).resolve().parents[1] / "instruments" / "virtual.toml"


def test_emulate_prints_one_json_line_and_chip_check_runs_against_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from hwloop.cli import main; main()",
            "emulate",
            "--bench",
            str(BENCH),
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
        line = proc.stdout.readline()
        info = json.loads(line)
        assert info["event"] == "listening" and info["pid"] == proc.pid
        assert info["smu_resource"].startswith("TCPIP::127.0.0.1::") and info["smu_resource"].endswith("::SOCKET")
        assert os.path.exists(info["fpga_port"]) and os.path.exists(info["bench"])
        with pytest.raises(SystemExit) as exc:
            main(["chip", "check", "--chip", "real", "--bench", info["bench"], "--cells", "3", "--json"])
        assert exc.value.code == 0
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert "Model 2636B" in out["smu"] and len(out["cells"]) == 3
        for cell in out["cells"]:
            assert cell["formed"]
            assert cell["g_set_us"] > cell["g_reset_us"]
            assert abs(cell["g_set_smu_us"] - cell["g_set_us"]) < 0.05 * cell["g_set_us"] + 1.0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == 0
    assert not any(tmp_path.iterdir())  # the generated bench file is gone


def test_chip_check_error_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = tmp_path / "b.toml"
    bench.write_text(BENCH.read_text().replace('port = "/dev/null"', f'port = "{tmp_path}/no-such-tty"'))
    with pytest.raises(SystemExit) as exc:
        main(["chip", "check", "--chip", "real", "--bench", str(bench)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hwloop: error: FPGA board: cannot open serial port")


@pytest.mark.parametrize(
    ("faults", "message"),
    [
        ({"smu_error_rate": 1.0}, "hwloop: error: Keithley SMU smua reported: -286 TSP Runtime error"),
        ({"disconnect_after": 3}, "hwloop: error: FPGA board on"),
    ],
)
def test_chip_check_against_a_faulty_bench_fails_cleanly(
    faults: dict, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from hwloop.emulator import Faults, VirtualBench

    with VirtualBench(BENCH, pace=False, faults=Faults(**faults)) as vb:
        with pytest.raises(SystemExit) as exc:
            main(["chip", "check", "--chip", "real", "--bench", vb.bench_path])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(message)
        assert vb.chip is not None and vb.chip.dac == (0.0, 0.0, 0.0)
