"""hwloop endurance: the figures must equal an independent count made straight from /ops with h5py."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from _synthlogs import script_env, write_sim_log
from _tiny import tiny_config
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from hwloop.analysis.endurance import distribution_stats, projected_runs
from hwloop.chip.sim import SimConfig
from hwloop.cli import cli, main
from hwloop.runlog import RunLog

CELLS = 128 * 128


def _independent(path: Path) -> dict:
    """Count straight from the op table, by a different method (np.unique) than the code under test."""
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        ops = f["ops"][()]
        n_tiles = int(f.attrs["n_tiles"])
        epochs = f["epochs"][()]
    addr = ops["tile"].astype(np.int64) * CELLS + ops["row"].astype(np.int64) * 128 + ops["col"]
    op = ops["op"].astype(int)
    devices = np.unique(addr[op <= 3])
    r_dev, r_cnt = np.unique(addr[op == 2], return_counts=True)
    s_dev, s_cnt = np.unique(addr[op == 1], return_counts=True)
    resets = dict(zip(r_dev.tolist(), r_cnt.tolist(), strict=True))
    sets = dict(zip(s_dev.tolist(), s_cnt.tolist(), strict=True))
    prog = np.array([resets.get(d, 0) for d in devices.tolist()])
    puls = np.array([resets.get(d, 0) + sets.get(d, 0) for d in devices.tolist()])
    per_epoch = [int(np.sum((op == 2) & (ops["step"] == 0)))]
    lo = 0
    for s in epochs["step"]:
        per_epoch.append(int(np.sum((op == 2) & (ops["step"] > lo) & (ops["step"] <= s))))
        lo = s
    return {
        "devices": devices,
        "prog": prog,
        "pulses": puls,
        "n_tiles": n_tiles,
        "per_epoch": per_epoch,
        "rows": ops.size,
        "resets": resets,
    }


@pytest.fixture(scope="module")
def busy_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    path = tmp_path_factory.mktemp("end") / "busy.h5"
    layers = [
        {"layer": "fc1", "tiles": [0, 1], "rows": 128, "cols": 128},
        {"layer": "fc2", "tiles": [1, 2], "rows": 64, "cols": 128},
    ]
    _, chip, _ = write_sim_log(
        path,
        n_tiles=2,
        n_devices=CELLS + 700,
        tasks=("mnist", "fashion-mnist"),
        epochs_per_task=3,
        steps_per_epoch=10,
        change_rate=0.3,
        seed=3,
        layer_tiles=layers,
    )
    return path, chip


def _endurance_json(path: Path, *args: str) -> dict:
    res = CliRunner().invoke(cli, ["endurance", str(path), "--json", *args])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_endurance_equals_independent_count(busy_log: tuple[Path, object]) -> None:
    path, chip = busy_log
    ref = _independent(path)
    s = _endurance_json(path)
    prog = ref["prog"]
    assert s["devices"] == ref["devices"].size == CELLS + 700
    assert s["pct_under_25"] == pytest.approx(100.0 * np.mean(prog < 25))
    assert s["pct_over_50"] == pytest.approx(100.0 * np.mean(prog > 50))
    assert s["max_ops"] == prog.max()
    assert 0 < s["pct_over_50"] < 100 and 0 < s["pct_under_25"] < 100  # the log exercises both tails
    assert s["pulses"]["max_ops"] == ref["pulses"].max()
    assert s["pulses"]["total_ops"] == ref["pulses"].sum()
    assert s["total_ops"] == prog.sum()
    for q in (50, 90, 99, 99.9):
        assert s["percentiles"][f"p{q:g}"] == np.percentile(prog, q, method="inverted_cdf")
    assert s["per_epoch"]["programs"] == ref["per_epoch"]
    assert s["ops_rows"] == ref["rows"]
    # the chip's own counters are a second, independent witness
    assert int(chip.reset_count.sum()) == s["totals"]["reset"]
    assert int(chip.set_count.sum()) == s["totals"]["set"]
    # histogram: percentages of devices per integer bin sum to 100 and match the counts
    h = s["histogram"]
    assert sum(h["pct_devices"]) == pytest.approx(100.0)
    assert h["pct_devices"][0] == pytest.approx(100.0 * np.mean(prog < h["bin_edges"][1]))


def test_per_tile_per_layer_and_tile_detail(busy_log: tuple[Path, object]) -> None:
    path, chip = busy_log
    ref = _independent(path)
    s = _endurance_json(path, "--tile", "1")
    tiles = ref["devices"] // CELLS
    assert [t["tile"] for t in s["per_tile"]] == [0, 1]
    for t in s["per_tile"]:
        p = ref["prog"][tiles == t["tile"]]
        assert t["devices"] == p.size
        assert t["max_ops"] == p.max()
        assert t["pct_over_50"] == pytest.approx(100.0 * np.mean(p > 50))
    assert [lay["layer"] for lay in s["per_layer"]] == ["fc1", "fc2"]
    assert s["per_layer"][1]["devices"] == 700
    detail = np.array(s["tile_detail"]["ops"])
    assert detail.shape == (128, 128)
    np.testing.assert_array_equal(detail.reshape(-1), chip.reset_count[CELLS : 2 * CELLS])


def test_plot_written(busy_log: tuple[Path, object], tmp_path: Path) -> None:
    path, _ = busy_log
    out = tmp_path / "e.png"
    res = CliRunner().invoke(cli, ["endurance", str(path), "--plot", str(out), "--tile", "0"])
    assert res.exit_code == 0, res.output
    assert out.stat().st_size > 10_000
    assert "under 25" in res.output


def test_small_chunks_give_same_counts(busy_log: tuple[Path, object]) -> None:
    path, _ = busy_log
    a = _endurance_json(path)
    b = _endurance_json(path, "--chunk-rows", "1024")  # many chunks, prefetch thread in use
    for k in ("devices", "pct_under_25", "pct_over_50", "max_ops", "per_epoch", "per_tile", "failed"):
        assert a[k] == b[k]


def test_failed_devices_are_worn_out_ones(tmp_path: Path) -> None:
    cfg = SimConfig.ideal().with_(endurance_median_cycles=4.0, endurance_log_sigma=0.3)
    path, chip, _ = write_sim_log(
        tmp_path / "worn.h5",
        n_devices=2048,
        tasks=("mnist", "fashion-mnist"),
        epochs_per_task=2,
        steps_per_epoch=4,
        change_rate=0.05,
        sim_config=cfg,
    )
    s = _endurance_json(path)
    assert s["failed_known"] is True
    assert s["failed"] > 0
    # independent: last two snapshots + RESET rows between them, straight from the file
    with RunLog(path) as log:  # the one snapshot decoder (format 3: residual code, docs/runlog-schema.md)
        (g1, l1), (g2, l2) = (tuple(x.reshape(-1) for x in log.snapshot(k)) for k in (-2, -1))
        ops = log.ops[()]
        steps = log.epochs()["step"][-2:]
    thr = s["failed_threshold_us"]
    mm = (l1 >= 0) & (l2 >= 0) & ((g1 >= thr) != (l1 > 0)) & ((g2 >= thr) != (l2 > 0))
    win = (ops["op"] == 2) & (ops["step"] > steps[0]) & (ops["step"] <= steps[1])
    addr = ops["tile"][win].astype(np.int64) * CELLS + ops["row"][win].astype(np.int64) * 128 + ops["col"][win]
    reprog = np.zeros(mm.size, bool)
    reprog[addr] = True
    assert s["failed"] == int((mm & reprog).sum())
    assert s["failed_suspect"] == int((mm & ~reprog).sum())
    # with no read noise every counted device really is worn out in the simulator
    assert np.all(chip.failed_mask()[mm & reprog])


def test_failed_is_zero_on_a_healthy_chip(busy_log: tuple[Path, object]) -> None:
    path, chip = busy_log
    s = _endurance_json(path)
    assert not chip.failed_mask().any()
    assert s["failed"] == 0


def test_failed_unknown_without_two_snapshots(tmp_path: Path) -> None:
    path, _, _ = write_sim_log(tmp_path / "one.h5", n_devices=64, epochs_per_task=0)
    s = _endurance_json(path)
    assert s["failed"] is None and s["failed_known"] is False
    assert "snapshot" in s["failed_reason"]
    assert "failed_definition" in s


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=1, max_size=400), st.sampled_from([0.01, 0.05, 0.2, 0.5]))
def test_projection_is_the_largest_safe_number_of_runs(values: list[int], frac: float) -> None:
    c = np.array(values)
    e = 1000.0
    p = projected_runs(c, e, frac)
    if p["runs"] is None:
        assert np.mean(c > 0) <= frac + 1e-12
        return
    n = p["runs"]
    assert np.mean(n * c > e) <= frac + 1e-12
    assert np.mean((n + 1) * c > e) > frac


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 120), min_size=1, max_size=300))
def test_distribution_stats_match_numpy(values: list[int]) -> None:
    v = np.array(values)
    s = distribution_stats(v)
    assert s["pct_under_25"] == pytest.approx(100 * np.mean(v < 25))
    assert s["pct_over_50"] == pytest.approx(100 * np.mean(v > 50))
    assert s["max_ops"] == v.max()
    for q in (50, 90, 99, 99.9):
        assert s["percentiles"][f"p{q:g}"] == np.percentile(v, q, method="inverted_cdf")


# ---------------------------------------------------------------------------- live, crashed, corrupt logs
WRITER = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    from _synthlogs import write_sim_log
    from hwloop.chip.base import Op
    path, mode = sys.argv[1], sys.argv[2]
    _, chip, _ = write_sim_log(path, n_devices=256, tasks=("mnist", "fashion-mnist"), epochs_per_task=1,
                               steps_per_epoch=3, change_rate=0.2, close_status=None)
    w = chip._listeners[0].__self__
    w.step += 1
    idx = np.arange(10)
    w.listener(Op.RESET, idx, np.zeros(10, np.int8), np.full(10, np.nan, np.float32))  # never flushed
    print(w.f["ops"].shape[0], flush=True)
    if mode == "crash":
        os._exit(0)
    sys.stdin.readline()  # stay alive (run still being written) until the test is done
    w.close()
    """
)


def _writer(tmp_path: Path, mode: str) -> tuple[Path, subprocess.Popen, int]:
    path = tmp_path / f"{mode}.h5"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=script_env(MPLBACKEND="Agg"),
    )
    assert proc.stdout is not None
    flushed = int(proc.stdout.readline())
    return path, proc, flushed


def test_live_run_is_read_while_written(tmp_path: Path) -> None:
    path, proc, flushed = _writer(tmp_path, "live")
    try:
        s = _endurance_json(path)
        assert s["status"] == "running"
        assert s["ops_rows"] == flushed
        assert s["devices"] == 256
    finally:
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.close()
        proc.wait(timeout=30)


def test_crashed_run_counts_up_to_last_flush(tmp_path: Path) -> None:
    path, proc, flushed = _writer(tmp_path, "crash")
    proc.wait(timeout=30)
    s = _endurance_json(path)
    assert s["status"] == "crashed"
    assert s["ops_rows"] == flushed
    ref = _independent(path)
    assert s["max_ops"] == ref["prog"].max()


def _run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """The real entry point (error mapping included), in process: (exit code, stderr)."""
    with pytest.raises(SystemExit) as ei:
        main(args)
    return int(ei.value.code or 0), capsys.readouterr().err


def test_corrupt_truncated_foreign_files_exit_2(
    busy_log: tuple[Path, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, _ = busy_log
    data = src.read_bytes()
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(data[: len(data) // 3])
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"this is not hdf5\n" * 100)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    corrupt = tmp_path / "corrupt.h5"  # garbage over the object headers after the superblock
    bad = bytearray(data)
    bad[300 : 300 + 4096] = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    corrupt.write_bytes(bytes(bad))
    for p, why in (
        (trunc, "truncated"),
        (junk, "not an HDF5 file"),
        (foreign, "not an hwloop run log"),
        (tmp_path / "missing.h5", "does not exist"),
        (corrupt, "corrupt"),
    ):
        code, err = _run_main(["endurance", str(p)], capsys)
        assert code == 2, (p, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("hwloop: error:"), err
        assert p.name in lines[0] and why in lines[0]


def test_bad_tile_is_a_clear_error(busy_log: tuple[Path, object]) -> None:
    path, _ = busy_log
    res = CliRunner().invoke(cli, ["endurance", str(path), "--tile", "7"])
    assert res.exit_code != 0
    assert "outside the run's tiles" in str(res.exception)


def test_projection_in_json_uses_option(busy_log: tuple[Path, object]) -> None:
    path, _ = busy_log
    s = _endurance_json(path, "--endurance", "1000", "--fraction", "0.05")
    pr = s["projection"]
    prog = _independent(path)["prog"]
    assert pr["endurance_cycles"] == 1000 and pr["fraction"] == 0.05
    assert np.mean(pr["runs"] * prog > 1000) <= 0.05
    assert np.mean((pr["runs"] + 1) * prog > 1000) > 0.05
    assert math.isfinite(pr["ops_at_quantile"])


def test_log_ending_mid_epoch_counts_the_step_in_progress(tmp_path: Path) -> None:
    """A live or crashed log usually ends with a step without READ_ALL: it is counted as in progress."""
    from _synthlogs import _program

    path, chip, nominal = write_sim_log(
        tmp_path / "mid.h5", n_devices=300, epochs_per_task=1, steps_per_epoch=2, close_status=None
    )
    w = chip._listeners[0].__self__
    w.step += 1
    idx = np.arange(40)
    _program(chip, idx, ((nominal[idx] + 1) % 9).astype(np.int8))  # RESET, SET, READ; no READ_ALL
    w.close("interrupted")
    s = _endurance_json(path)
    assert s["status"] == "interrupted"
    assert s["per_epoch"]["in_progress"]["programs"] == 40
    assert sum(s["per_epoch"]["programs"]) + 40 == s["total_ops"] == _independent(path)["prog"].sum()


def test_log_without_device_operations(tmp_path: Path) -> None:
    """A --chip none run logs epochs and snapshots but no device operation: nothing is invented."""
    from hwloop.chip.default_table import default_table
    from hwloop.runlog import RunLogWriter

    w = RunLogWriter.create(
        tmp_path / "none.h5",
        config={"m_star": 3.0, "hidden": 32},
        table=default_table(),
        tasks=["mnist"],
        n_tiles=1,
        tile_backends=["none"],
        chip="none",
        seed=0,
    )
    for e in range(3):
        w.append_snapshot(e, np.zeros(CELLS, np.float32), np.zeros(CELLS, np.int8))
        if e:
            w.append_epoch({"epoch": e, "task": 0, "acc": [0.9], "step": 10 * e})
    w.close()
    s = _endurance_json(tmp_path / "none.h5")
    assert s["devices"] == 0 and s["max_ops"] == 0 and s["pct_under_25"] is None
    assert s["failed"] is None and "no device operations" in s["failed_reason"]
    assert s["per_epoch"]["programs"] == [0, 0, 0]
    res = CliRunner().invoke(cli, ["endurance", str(tmp_path / "none.h5")])
    assert res.exit_code == 0 and "nothing to count" in res.output


def test_endurance_of_a_real_training_run(tiny_data: Path, tmp_path: Path) -> None:
    """Acceptance: a log written by the trainer (`hwloop train --chip sim`, here in process on the tiny
    synthetic data sets) gives the same figures as a count straight from its op table."""
    from hwloop.orchestrator import train

    out = tmp_path / "train.h5"
    cfg = tiny_config(tiny_data, out, epochs_per_task=1, warmup=0, train_samples=200)
    res = train(cfg)
    s = _endurance_json(out)
    ref = _independent(out)
    assert s["status"] == "finished"
    assert s["devices"] == ref["devices"].size > 0
    assert s["total_ops"] == ref["prog"].sum() == res.programs
    assert s["max_ops"] == ref["prog"].max()
    assert s["pct_under_25"] == pytest.approx(100.0 * np.mean(ref["prog"] < 25))
    assert s["pct_over_50"] == pytest.approx(100.0 * np.mean(ref["prog"] > 50))
    assert s["per_epoch"]["programs"] == ref["per_epoch"]
    assert s["pulses"]["total_ops"] == ref["pulses"].sum()
    assert s["failed_known"] is True and s["failed"] == 0


def test_addresses_off_the_array_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _, _ = write_sim_log(tmp_path / "bad_addr.h5", n_devices=32, epochs_per_task=1, steps_per_epoch=1)
    with h5py.File(path, "r+") as f:
        row = f["ops"][5]
        row["row"] = 200
        f["ops"][5] = row
    code, err = _run_main(["endurance", str(path)], capsys)
    assert code == 2 and "outside 0..127" in err
