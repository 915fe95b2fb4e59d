"""``hwloop chip info``: geometry, level table and provenance; errors as one line and exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hwloop.chip.base import CELLS_PER_TILE
from hwloop.chip.cdf import CdfTable

MakeTable = Callable[..., CdfTable]

if TYPE_CHECKING:
    from conftest import RunCli


def test_chip_info_default_table(run_cli: RunCli, default_cdf: CdfTable) -> None:
    code, out, err = run_cli("chip", "info", "--chip", "sim")
    assert code == 0 and err == ""
    assert "SimChip" in out
    assert f"{CELLS_PER_TILE:,} devices" in out and "128x128" in out
    for lv in default_cdf.describe():
        line = next(ln for ln in out.splitlines() if ln.split() and ln.split()[0] == lv["name"])
        assert f"{lv['median_us']:.2f}" in line and f"{lv['v_gate']:.3f}" in line
        if lv["kind"] == "HCS":
            assert f"{lv['icc_ua']:.1f}" in line
    assert "synthetic" in out.lower()
    assert f"provenance: {default_cdf.provenance}" in out


def test_chip_info_json_and_tiles(run_cli: RunCli, default_cdf: CdfTable) -> None:
    code, out, _ = run_cli("chip", "info", "--chip", "sim", "--tiles", "2", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["tiles"] == 2 and info["devices"] == 2 * CELLS_PER_TILE
    assert info["levels"] == json.loads(json.dumps(default_cdf.describe()))
    assert info["table"]["synthetic"] is True


def test_chip_info_with_csv_table(run_cli: RunCli, make_table: MakeTable, tmp_path: Path) -> None:
    t = make_table(seed=5)
    t.provenance = "bench B, die 12, 2026-11-01"
    p = tmp_path / "mine.csv"
    t.save_csv(p)
    code, out, err = run_cli("chip", "info", "--chip", "sim", "--cdf", str(p))
    assert code == 0, err
    assert str(p) in out
    assert "provenance: bench B, die 12, 2026-11-01" in out
    assert "synthetic" not in out.lower()
    first_words = [ln.split()[0] for ln in out.splitlines() if ln.split()]
    names = [w for w in first_words if w.startswith(("LCS", "HCS"))]
    assert names == [lv.name for lv in t.levels]


def test_chip_info_with_h5_table(run_cli: RunCli, make_table: MakeTable, tmp_path: Path) -> None:
    t = make_table(seed=6, n_hcs=2)
    p = tmp_path / "mine.h5"
    t.save_h5(p)
    code, out, _ = run_cli("chip", "info", "--cdf", str(p), "--json")
    assert code == 0
    assert len(json.loads(out)["levels"]) == 3


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("bad.csv", "# hwloop-cdf 1\nLCS,HCS1\n3.0,abc\n"),
        ("siemens.csv", "# level: name=HCS1 kind=HCS v_gate=1.5 icc_ua=20\nlevel,g_s\nLCS,3e-6\nHCS1,4e-5\n"),
        ("bad.h5", "not an hdf5 file"),
        ("missing.csv", None),
    ],
)
def test_chip_info_bad_table_is_one_line_exit_2(
    run_cli: RunCli, tmp_path: Path, name: str, content: str | None
) -> None:
    p = tmp_path / name
    if content is not None:
        p.write_text(content)
    code, out, err = run_cli("chip", "info", "--chip", "sim", "--cdf", str(p))
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hwloop: error: ")
    assert name in lines[0]
    assert "Traceback" not in err


def test_chip_info_usage_error(run_cli: RunCli) -> None:
    code, _, err = run_cli("chip", "info", "--chip", "quantum")
    assert code == 2 and "Traceback" not in err


def test_console_script_bad_table_no_traceback(tmp_path: Path) -> None:
    """The installed entry point, in a real process: exit 2, one line on stderr, no traceback."""
    p = tmp_path / "bad.csv"
    p.write_text("LCS,HCS1\n3.0,50\n")  # HCS level without a gate voltage
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    script = Path(sys.executable).parent / "hwloop"
    if script.exists():
        cmd = [str(script)]
    else:  # not installed as a console script: same entry function
        cmd = [sys.executable, "-c", "import sys; from hwloop.cli import main; main(sys.argv[1:])"]
    r = subprocess.run(
        [*cmd, "chip", "info", "--chip", "sim", "--cdf", str(p)], capture_output=True, text=True, timeout=120, env=env
    )
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("hwloop: error: ")
    assert "gate voltage" in r.stderr and "Traceback" not in r.stderr
