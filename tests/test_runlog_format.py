"""Run-log format 3 (residual/keyframe snapshots, off-thread compression, group commit) and reading
format 1 and 2 logs.

``tests/data/runlog-v1.h5.gz`` is a small run log written by hwloop at 93517e8 (format 1: float32
snapshots), before the format changed: 784-8-8-10, MNIST then Fashion-MNIST for 1 epoch each on the sim
chip, synthetic data. ``tests/data/runlog-v2.h5.gz`` is the same run written by hwloop at 1a3be95
(format 2: uint16 snapshots at 0.01 µS), synthetic data from ``tests/_synthdata.py``, seed 0.
``endurance``, ``report`` and ``runs ls`` must keep reading both.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from hwloop.chip.base import Op
from hwloop.chip.default_table import default_table
from hwloop.cli import cli
from hwloop.errors import RunLogError
from hwloop.runlog import (
    FORMAT_VERSION,
    G_LSB_US,
    G_RES_LSB_US,
    G_RES_Q_MAX,
    OPS_G_STEPS_PER_US,
    SNAPSHOT_KEY_EVERY,
    RunLog,
    RunLogWriter,
    decode_g_us,
    decode_residual,
    encode_g_us,
    encode_residual,
    frame_checkpoint,
    residual_q,
    unframe_checkpoint,
)

V1_LOG = Path(__file__).parent / "data" / "runlog-v1.h5.gz"
V2_LOG = Path(__file__).parent / "data" / "runlog-v2.h5.gz"


@pytest.fixture()
def v1_log(tmp_path: Path) -> Path:
    out = tmp_path / "runs" / "old.h5"
    out.parent.mkdir()
    out.write_bytes(gzip.decompress(V1_LOG.read_bytes()))
    return out


def test_v1_log_reads_through_the_api(v1_log: Path) -> None:
    with RunLog(v1_log) as log:
        assert int(log.attrs["format_version"]) == 1 and log.status == "finished"
        assert log.snapshot_epochs().tolist() == [0, 1, 2]
        g, lv = log.snapshot(2)
        assert g.dtype == np.float32 and lv.dtype == np.int8 and g.shape == (3, 128, 128)
        used = lv >= 0
        assert used.sum() > 12_000 and np.all(g[lv > 0] > g[lv == 0].mean())
        assert len(log.epochs()) == 2 and log.ops.shape[0] > 40_000


def test_v1_log_endurance_report_and_runs_ls(v1_log: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["endurance", str(v1_log), "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert s["total_ops"] == 13810 and s["devices"] == 12832
    r = CliRunner().invoke(cli, ["report", str(v1_log), "-o", str(tmp_path / "rep"), "--json"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "rep" / "report.md").exists()
    r = CliRunner().invoke(cli, ["runs", "ls", str(v1_log.parent), "--json"])
    assert r.exit_code == 0, r.output
    assert "old.h5" in r.output and "finished" in r.output


def test_v1_log_cannot_be_resumed(v1_log: Path) -> None:
    with pytest.raises(RunLogError, match="older hwloop"):
        RunLogWriter.reopen(v1_log)


@pytest.fixture()
def v2_log(tmp_path: Path) -> Path:
    out = tmp_path / "runs" / "old2.h5"
    out.parent.mkdir()
    out.write_bytes(gzip.decompress(V2_LOG.read_bytes()))
    return out


def test_v2_log_reads_through_the_api(v2_log: Path) -> None:
    with RunLog(v2_log) as log:
        assert int(log.attrs["format_version"]) == 2 and log.status == "finished"
        assert log.snapshot_epochs().tolist() == [0, 1, 2]
        g, lv = log.snapshot(2)
        assert g.dtype == np.float32 and lv.dtype == np.int8 and g.shape == (3, 128, 128)
        assert (lv >= 0).sum() > 12_000 and np.all(g[lv > 0] > g[lv == 0].mean())
        # the 0.01 µS code: every value is on the grid
        used = g[lv >= 0]
        np.testing.assert_allclose((used + 20) / G_LSB_US, np.rint((used + 20) / G_LSB_US), atol=2e-2)
        assert len(log.epochs()) == 2 and log.ops.shape[0] > 40_000


def test_v2_log_endurance_report_and_runs_ls(v2_log: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["endurance", str(v2_log), "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert s["total_ops"] == 13978 and s["devices"] == 12832
    r = CliRunner().invoke(cli, ["report", str(v2_log), "-o", str(tmp_path / "rep"), "--json"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "rep" / "report.md").exists()
    r = CliRunner().invoke(cli, ["runs", "ls", str(v2_log.parent), "--json"])
    assert r.exit_code == 0, r.output
    assert "old2.h5" in r.output and "finished" in r.output


def test_v2_log_cannot_be_resumed(v2_log: Path) -> None:
    with pytest.raises(RunLogError, match="older hwloop"):
        RunLogWriter.reopen(v2_log)


def test_residual_code_round_trip_saturation_and_nan() -> None:
    ref = default_table().medians_us.astype(np.float32)
    lv = np.array([0, 1, 8, -1, -3, 2, 2, 0, 1], dtype=np.int8)
    g = np.array([3.3, 25.0, 130.2, 0.0, 7.0, 1e4, np.nan, -1e4, 20.04], dtype=np.float32)
    q, nan = residual_q(g, lv, ref)
    back = decode_residual(encode_residual(q, nan, None), lv, ref, None)
    ok = [0, 1, 2, 3, 4, 8]
    np.testing.assert_allclose(back[ok], g[ok], atol=G_RES_LSB_US / 2 + 1e-4)
    assert back[5] == pytest.approx(ref[2] + G_RES_Q_MAX * G_RES_LSB_US, rel=1e-5)  # saturates
    assert back[7] == pytest.approx(ref[0] - G_RES_Q_MAX * G_RES_LSB_US, rel=1e-5)
    assert np.isnan(back[6])
    # as a difference from a keyframe on other levels (and with NaN where the keyframe had one)
    lv2 = np.array([1, 0, 8, 0, -3, 3, 0, 2, 1], dtype=np.int8)
    g2 = np.array([24.0, 2.9, np.nan, 4.0, 7.1, 60.0, 3.0, -1e4, 19.9], dtype=np.float32)
    q2, nan2 = residual_q(g2, lv2, ref)
    key = encode_residual(q, nan, None)
    back2 = decode_residual(encode_residual(q2, nan2, np.where(nan, 0, q)), lv2, ref, key)
    ok2 = [0, 1, 3, 4, 5, 6, 8]
    np.testing.assert_allclose(back2[ok2], g2[ok2], atol=G_RES_LSB_US / 2 + 1e-4)
    assert np.isnan(back2[2])


def test_snapshot_code_resolution_and_nan() -> None:
    g = np.array([-25.0, -20.0, 0.0, 0.004, 3.14159, 124.1, 600.0, 700.0, np.nan], dtype=np.float32)
    back = decode_g_us(encode_g_us(g))
    inside = slice(1, 7)
    np.testing.assert_allclose(back[inside], g[inside], atol=G_LSB_US / 2 + 1e-4)
    assert back[0] == pytest.approx(-20.0) and back[7] == pytest.approx(-20 + 65534 * G_LSB_US)  # saturate
    assert np.isnan(back[8])


def _writer(path: Path, n_tiles: int = 2) -> RunLogWriter:
    return RunLogWriter.create(
        path,
        config={},
        table=default_table(),
        tasks=["a"],
        n_tiles=n_tiles,
        tile_backends=["sim"] * n_tiles,
        chip="sim",
        seed=0,
    )


def test_snapshots_written_off_thread_read_back_in_order(tmp_path: Path) -> None:
    w = _writer(tmp_path / "s.h5")
    rng = np.random.default_rng(0)
    snaps = []
    lv0 = rng.integers(-1, 9, (2, 128, 128)).astype(np.int8)
    for e in range(4):
        g = rng.uniform(0, 130, (2, 128, 128)).astype(np.float32)
        lv = lv0.copy()
        lv.reshape(-1)[rng.integers(0, lv.size, 500)] = e  # a few level changes per row
        snaps.append((g.copy(), lv.copy()))
        w.submit_snapshot(e, g, lv)
        g[:] = -1  # the writer took a copy
    w.close()
    with RunLog(tmp_path / "s.h5") as log:  # (HDF5 refuses a second, differently opened handle in one process)
        assert log.snapshot_epochs().tolist() == [0, 1, 2, 3]
        for e, (g, lv) in enumerate(snaps):
            got_g, got_l = log.snapshot(e)
            np.testing.assert_allclose(got_g, g, atol=G_RES_LSB_US / 2 + 1e-4)
            np.testing.assert_array_equal(got_l, lv)
        tile1 = log.snapshot(0)
    with h5py.File(tmp_path / "s.h5", "r") as f:
        sg = f["snapshots"]
        assert sg["g_res"].dtype == np.uint16 and int(f.attrs["format_version"]) == FORMAT_VERSION == 3
        assert sg["key"][()].tolist() == [-1, 0, 0, 0]  # row 0 a keyframe, the others coded against it
        # the raw chunks are ordinary HDF5 (shuffle + gzip): h5py decodes them on its own
        q, nan = residual_q(tile1[0], tile1[1], sg["g_res"].attrs["ref_us"])
        np.testing.assert_array_equal(sg["g_res"][0], encode_residual(q, nan, None))


def test_keyframes_every_n_rows_and_after_reopen(tmp_path: Path) -> None:
    """A keyframe every SNAPSHOT_KEY_EVERY rows; a resumed writer starts with a keyframe; a row naming a
    row that is not a keyframe is refused as damage (the test can fail: decode against a wrong key)."""
    w = _writer(tmp_path / "k.h5", n_tiles=1)
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 120, (1, 128, 128)).astype(np.float32)
    lv = rng.integers(0, 9, (1, 128, 128)).astype(np.int8)
    snaps = []
    n = SNAPSHOT_KEY_EVERY + 3
    for e in range(n):
        g = base + rng.normal(0, 0.3, base.shape).astype(np.float32)  # read noise around a fixed state
        if e == 4:
            lv[0, :5] = -1
            g[0, 0, :7] = np.nan
        snaps.append((g.copy(), lv.copy()))
        w.submit_snapshot(e, g, lv)
        w.flush()
    w.submit_checkpoint(lambda: b"ck", n - 1)
    w.close(compact=False)
    with RunLog(tmp_path / "k.h5") as log:
        keys = log.f["snapshots"]["key"][()].tolist()
        assert keys == [-1] + [0] * (SNAPSHOT_KEY_EVERY - 1) + [-1] + [SNAPSHOT_KEY_EVERY] * 2
        for e, (g, lv_e) in enumerate(snaps):
            got_g, got_l = log.snapshot(e)
            np.testing.assert_array_equal(got_l, lv_e)
            np.testing.assert_array_equal(np.isnan(got_g), np.isnan(g))
            fin = ~np.isnan(g)
            np.testing.assert_allclose(got_g[fin], g[fin], atol=G_RES_LSB_US / 2 + 1e-4)
    w2, _, _ = RunLogWriter.reopen(tmp_path / "k.h5")
    w2.submit_snapshot(n, snaps[0][0], snaps[0][1])
    w2.close(compact=False)
    with h5py.File(tmp_path / "k.h5", "r+") as f:
        assert f["snapshots"]["key"][-1] == -1
        f["snapshots"]["key"][2] = 1  # row 1 is not a keyframe
    with RunLog(tmp_path / "k.h5") as log, pytest.raises(RunLogError, match="keyframe"):
        log.snapshot(2)


def test_a_row_whose_levels_moved_is_a_keyframe(tmp_path: Path) -> None:
    w = _writer(tmp_path / "m.h5", n_tiles=1)
    rng = np.random.default_rng(2)
    g = rng.uniform(0, 120, (1, 128, 128)).astype(np.float32)
    lv = rng.integers(0, 9, (1, 128, 128)).astype(np.int8)
    w.submit_snapshot(0, g, lv)
    lv2 = lv.copy()
    lv2.reshape(-1)[: int(0.04 * lv.size)] = -1  # 4 % moved: still a delta row
    w.submit_snapshot(1, g, lv2)
    lv3 = lv.copy()
    lv3.reshape(-1)[: int(0.06 * lv.size)] = -1  # 6 % moved against the keyframe: a new keyframe
    w.submit_snapshot(2, g, lv3)
    w.submit_snapshot(3, g, lv3)
    w.close(compact=False)
    with RunLog(tmp_path / "m.h5") as log:
        assert log.f["snapshots"]["key"][()].tolist() == [-1, 0, -1, 2]
        for k, want in enumerate((lv, lv2, lv3, lv3)):
            got_g, got_l = log.snapshot(k)
            np.testing.assert_array_equal(got_l, want)
            np.testing.assert_allclose(got_g, g, atol=G_RES_LSB_US / 2 + 1e-4)


def test_close_drops_the_stale_checkpoint_slot_and_rounds_op_reads(tmp_path: Path) -> None:
    w = _writer(tmp_path / "c.h5", n_tiles=1)
    w.listener(Op.READ, np.arange(5), np.full(5, -1, np.int8), np.array([1.0, 2.3, 3.14159, 50.001, 99.9], np.float32))
    w.submit_checkpoint(lambda: b"A" * 5000, 1)
    w.submit_checkpoint(lambda: b"B" * 3000, 2)
    w.close()
    with RunLog(tmp_path / "c.h5") as log:
        cg = log.f["checkpoint"]
        assert (
            int(cg["index"][0]) == 1 and cg["blob_a"].shape == (0,) and cg["blob_b"].shape[0] >= int(cg["index"][1]) > 0
        )
        assert unframe_checkpoint(cg["blob_b"][: int(cg["index"][1])].tobytes()) == b"B" * 3000
        g = log.ops[:]["g_us"]
        np.testing.assert_array_equal(g * OPS_G_STEPS_PER_US, np.rint(g * OPS_G_STEPS_PER_US))
        np.testing.assert_allclose(g, [1.0, 2.3, 3.14159, 50.001, 99.9], atol=0.5 / OPS_G_STEPS_PER_US + 1e-6)


def test_checkpoint_counts_are_taken_at_submission(tmp_path: Path) -> None:
    w = _writer(tmp_path / "c.h5", n_tiles=1)
    from hwloop.chip.base import Op

    idx = np.arange(10)
    w.listener(Op.RESET, idx, np.zeros(10, np.int8), np.full(10, np.nan, np.float32))
    w.submit_snapshot(0, np.zeros((1, 128, 128), np.float32), np.zeros((1, 128, 128), np.int8))
    w.submit_checkpoint(lambda: b"state-at-10-rows", 1)
    w.listener(Op.RESET, idx, np.zeros(10, np.int8), np.full(10, np.nan, np.float32))  # after the checkpoint
    w.close()
    w2, info, blob = RunLogWriter.reopen(tmp_path / "c.h5")
    w2.close()
    assert blob == b"state-at-10-rows" and info.ops_rows == 10 and info.snapshots_rows == 1


def test_group_commit_flushes_at_most_every_flush_s(tmp_path: Path) -> None:
    from hwloop.chip.base import Op

    w = _writer(tmp_path / "g.h5", n_tiles=1)
    w.flush_s = 0.3
    idx = np.arange(5)
    flushed = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.0:
        w.listener(Op.RESET, idx, np.zeros(5, np.int8), np.full(5, np.nan, np.float32))
        if w.maybe_flush():
            flushed.append(time.monotonic() - t0)
        time.sleep(0.01)
    assert 2 <= len(flushed) <= 4 and all(b - a >= 0.29 for a, b in itertools.pairwise(flushed))
    logical = w.ops_rows
    assert logical - w.f["ops"].shape[0] > 0  # rows since the last flush are only in memory ...
    w.close()
    with RunLog(tmp_path / "g.h5") as log:
        assert log.ops.shape[0] == logical  # ... and close (any stop) writes them


_KILL_WRITER = r"""
import sys, numpy as np
from hwloop.chip.base import Op
from hwloop.chip.base import Op
from hwloop.chip.default_table import default_table
from hwloop.runlog import RunLogWriter
w = RunLogWriter.create(sys.argv[1], config={}, table=default_table(), tasks=["a"], n_tiles=1,
                        tile_backends=["sim"], chip="sim", seed=0)
idx = np.arange(16384)
n = 0
while True:  # back-to-back flushes of 3 x 16384 rows: a kill lands inside a flush most of the time
    for op in (Op.RESET, Op.SET, Op.READ):
        w.listener(op, idx, np.ones(idx.size, np.int8), np.full(idx.size, 1.0, np.float32))
    w.flush()
    n += 1
    print(n, flush=True)
"""


def test_kill_9_mid_flush_keeps_every_completed_flush(tmp_path: Path) -> None:
    path = tmp_path / "k.h5"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_WRITER, str(path)], stdout=subprocess.PIPE, text=True, env={**os.environ}
    )
    assert proc.stdout is not None
    done = 0
    while done < 5:
        line = proc.stdout.readline()
        assert line, "the writer died before it flushed"
        done = int(line)
    time.sleep(0.013)  # somewhere inside a later flush
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with RunLog(path) as log:
        assert log.status == "crashed"
        rows = log.ops.shape[0]
        assert rows >= done * 3 * 16384 and rows % (3 * 16384) == 0  # whole flushes only
        assert np.all(log.ops[-16384:]["op"] == 3)  # the last flush is complete, down to its READs
    r = CliRunner().invoke(cli, ["endurance", str(path), "--json"])
    assert r.exit_code == 0, r.output


def test_checkpoint_framing_checks_its_crc_and_still_reads_old_zlib_slots() -> None:
    payload = bytes(range(256)) * 40
    slot = frame_checkpoint(payload)
    assert slot[:8] == b"HWLOOPCK" and unframe_checkpoint(slot) == payload
    damaged = bytearray(slot)
    damaged[-100] ^= 0x01  # one bit of the payload
    with pytest.raises(ValueError, match="CRC"):
        unframe_checkpoint(bytes(damaged))
    with pytest.raises(ValueError, match="CRC"):
        unframe_checkpoint(slot[:10])  # cut inside the CRC field
    assert unframe_checkpoint(zlib.compress(payload, 1)) == payload  # logs written before the framing
    with pytest.raises(ValueError):
        unframe_checkpoint(b"not a checkpoint")


def test_checkpoint_payload_deflates_integer_arrays_and_restores_every_array_exactly() -> None:
    import io

    import torch

    from hwloop.training.checkpoint import compact_state, load_payload, serialise

    rng = np.random.default_rng(0)
    chip = {
        "level": rng.integers(0, 9, 1 << 16).astype(np.int8),
        "set_count": rng.integers(0, 30, 1 << 16).astype(np.uint32),
        "formed": np.ones(1 << 16, dtype=bool),  # constant: a marker of its own
        "dead": rng.random(1 << 16) < 0.01,
        "g_us": rng.random(1 << 16).astype(np.float32),
        "small": np.arange(3, dtype=np.int64),
    }
    blob = serialise({"chip": compact_state(chip), "hw": None, "step": 7})
    raw = torch.load(io.BytesIO(blob), weights_only=False)["chip"]
    assert set(raw["level"]) == {"__zlib__", "shape", "dtype"} and set(raw["dead"]) == {"__zlib__", "shape", "dtype"}
    assert "__constant__" in raw["formed"] and set(raw["g_us"]) == {"__array__"}  # floats raw, as a tensor
    assert isinstance(raw["small"], np.ndarray)  # under DEFLATE_MIN_BYTES
    back = load_payload(blob)
    assert back["step"] == 7 and back["hw"] is None
    for k, v in chip.items():
        assert back["chip"][k].dtype == v.dtype and np.array_equal(back["chip"][k], v), k
        assert isinstance(back["chip"][k], np.ndarray) and back["chip"][k].flags.writeable, k
