"""The orchestrator: the hardware loop and its run log, resume, bad input.

The layers below it have their own files: test_training_levels.py (levels, initialisation, Algorithm 1),
test_training_data.py (data sets), test_crossbar.py (crossbar map, ChipWeights)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from _tiny import tiny_config

from hwloop.chip.default_table import default_table
from hwloop.errors import ConfigError, RunLogError
from hwloop.orchestrator import TrainConfig, train
from hwloop.runlog import OP_CODES, RunLog

Q, SCALE_US = default_table().weight_levels()


def tiny_cfg(data: Path, out: Path, **kw: object) -> TrainConfig:
    return tiny_config(data, out, **kw)


# ---------------------------------------------------------------------------- the hardware loop
def test_sim_run_logs_every_operation(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run.h5"
    res = train(tiny_cfg(tiny_data, out))
    assert res.status == "finished" and res.epochs == 4 and set(res.final_acc) == {"mnist", "fashion-mnist"}
    with RunLog(out) as log:
        assert log.status == "finished"
        ops = log.ops[()]
        ep = log.epochs()
        n_snap = len(log.snapshot_epochs())
        cfg = log.config
        g_last, lvl_last = log.snapshot(n_snap - 1)
    assert cfg["m_star"] == 3.0 and cfg["hidden"] == 16
    assert len(ep) == 4 and n_snap == 5  # epoch 0 (after initial programming) + 4 epochs
    assert list(ep["m_star"]) == [0.0, 3.0, 3.0, 3.0]  # warm-up epoch without metaplasticity
    assert np.isnan(ep["acc"][0][1]) and not np.isnan(ep["acc"][2][1])
    op = ops["op"]
    # every device level change is a RESET; HCS targets are followed by a SET at that level; all read back
    resets, sets, reads = (op == OP_CODES[k] for k in ("RESET", "SET", "READ"))
    assert resets.sum() == res.programs
    assert sets.sum() <= resets.sum() and reads.sum() == resets.sum()
    assert np.all(ops["level"][sets] >= 1) and np.all(ops["level"][resets] == 0)
    assert np.all(np.isfinite(ops["g_us"][reads])) and np.all(np.isnan(ops["g_us"][sets]))
    assert (op == OP_CODES["READ_ALL"]).sum() == n_snap
    assert np.all(np.diff(ops["t_s"]) >= 0) and np.all(np.diff(ops["step"].astype(np.int64)) >= 0)
    # per-epoch program counts add up to the op table
    assert int(ep["programs"].sum()) == int((resets & (ops["step"] > 0)).sum())
    # the last level snapshot agrees with the last level each device was programmed to
    flat = (ops["tile"].astype(np.int64) * 128 + ops["row"]) * 128 + ops["col"]
    last = np.full(lvl_last.size, -1, dtype=np.int64)
    prog = resets | sets
    order = np.flatnonzero(prog)
    last[flat[order]] = ops["level"][order]
    touched = last >= 0
    np.testing.assert_array_equal(lvl_last.reshape(-1)[touched], last[touched])
    assert np.all(np.isfinite(g_last))


def test_forward_uses_weights_read_from_chip(tiny_data: Path, tmp_path: Path) -> None:
    from hwloop.orchestrator import Trainer

    tr = Trainer(tiny_cfg(tiny_data, tmp_path / "r.h5", epochs_per_task=1, tasks="mnist"))
    tr.run()
    w = tr.model.layers[0].w_used.numpy().reshape(-1)
    g = tr.hw.g_us[: 2 * w.size]  # layer fc1 holds the first devices
    np.testing.assert_allclose(w, (g[0::2] - g[1::2]) / tr.scale_us, rtol=1e-5, atol=1e-6)
    q_nominal = tr.levels.q_np[tr.levels.index_np(tr.model.layers[0].weight.detach().numpy().reshape(-1))]
    assert not np.allclose(w, q_nominal)  # device variability is really in the forward pass


def test_chip_none_uses_ideal_levels(tiny_data: Path, tmp_path: Path) -> None:
    from hwloop.orchestrator import Trainer

    tr = Trainer(tiny_cfg(tiny_data, tmp_path / "n.h5", chip="none", epochs_per_task=1, tasks="mnist"))
    res = tr.run()
    w = tr.model.layers[1].w_used.numpy().reshape(-1)
    assert np.all(np.isin(w, tr.levels.q_np))
    with RunLog(res.log) as log:
        assert log.ops.shape[0] == 0  # no device, so no device operation
        assert len(log.snapshot_epochs()) == 2


def test_same_seed_same_run(tiny_data: Path, tmp_path: Path) -> None:
    a = train(tiny_cfg(tiny_data, tmp_path / "a.h5", epochs_per_task=1))
    b = train(tiny_cfg(tiny_data, tmp_path / "b.h5", epochs_per_task=1))
    c = train(tiny_cfg(tiny_data, tmp_path / "c.h5", epochs_per_task=1, seed=1))
    assert a.final_acc == b.final_acc and a.programs == b.programs
    assert a.programs != c.programs


def _wait_for_checkpoints(log: Path, n: int, timeout_s: float = 120.0) -> None:
    """Poll a live run log (SWMR) until it holds ``n`` checkpointed epochs, or the timeout passes (the
    caller's assertions then say what went wrong)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            with h5py.File(log, "r", libver="latest", swmr=True) as f:
                if f["checkpoint"]["index"][2] >= n:
                    return
        except (OSError, KeyError):  # not created yet, or the checkpoint group not written yet
            pass


def _run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hwloop.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_resume_after_kill_reproduces_uninterrupted_run(tiny_data: Path, tmp_path: Path) -> None:
    # long enough (10 + 10 epochs) that the run cannot end between the checkpoint poll and the kill
    common = [
        "train",
        "--chip",
        "sim",
        "--tasks",
        "mnist,fashion-mnist",
        "--epochs-per-task",
        "10",
        "--warmup",
        "1",
        "--hidden",
        "16",
        "--batch-size",
        "50",
        "--train-samples",
        "300",
        "--lr",
        "5e-3",
        "--data-dir",
        str(tiny_data),
        "--no-verify-data",
        "--no-progress",
    ]
    ref = _run_cli(*common, "--out", str(tmp_path / "ref.h5"), "--json")
    assert ref.returncode == 0, ref.stderr
    ref_acc = json.loads(ref.stdout)["final_acc"]
    # run again and kill -9 once two epochs are checkpointed
    out = tmp_path / "killed.h5"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hwloop.cli", *common, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for_checkpoints(out, 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with RunLog(out) as log:
        assert log.status == "crashed"
        assert 2 <= len(log.epochs()) < 20
    res = _run_cli("train", "--resume", str(out), "--json", "--no-progress", "--data-dir", str(tiny_data))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["final_acc"] == ref_acc
    with RunLog(out) as log, RunLog(tmp_path / "ref.h5") as ref_log:
        assert log.status == "finished" and len(log.epochs()) == 20
        assert log.ops.shape == ref_log.ops.shape  # no operation lost or logged twice


def test_resume_refuses_changed_configuration(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    train(tiny_cfg(tiny_data, out, epochs_per_task=1, tasks="mnist"))
    r = _run_cli("train", "--resume", str(out), "--m-star", "1", "--data-dir", str(tiny_data))
    assert r.returncode == 2
    assert "changed configuration" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--tasks", "mnist,cifar"], "unknown task"),
        (["--tasks", "mnist", "--data-dir", "/nonexistent-hwloop"], "looked in"),
        (["--chip", "real"], "--bench"),
        (["--m-star", "-1"], "m-star"),
        (["--resume", "/nonexistent/run.h5"], "does not exist"),
    ],
)
def test_bad_train_input_is_one_line_exit_2(args: list[str], needle: str, tmp_path: Path) -> None:
    env = {"HWLOOP_DATA": str(tmp_path / "nodata"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    r = _run_cli("train", "--no-progress", "--out", str(tmp_path / "x.h5"), *args, env=env)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr


def test_corrupt_log_and_foreign_file_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    r = _run_cli("train", "--resume", str(bad))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "run log" in r.stderr
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = 1
    with pytest.raises(RunLogError, match="not an hwloop run log"):
        RunLog(foreign)


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        TrainConfig(bn_mode="weird").validate()
    with pytest.raises(ConfigError):
        TrainConfig(train_samples=10, batch_size=100).validate()


def test_calibration_from_another_geometry_is_refused(tiny_data: Path, tmp_path: Path) -> None:
    cal = tmp_path / "cal64.h5"
    with h5py.File(cal, "w") as f:
        default_table().write_h5_group(f)
        f.attrs["rows"] = 64
        f.attrs["cols"] = 64
    r = _run_cli(
        "train",
        "--no-progress",
        "--tasks",
        "mnist",
        "--data-dir",
        str(tiny_data),
        "--no-verify-data",
        "--calibration",
        str(cal),
        "--out",
        str(tmp_path / "x.h5"),
    )
    assert r.returncode == 2 and "64x64" in r.stderr and "Traceback" not in r.stderr


def test_checkpoints_do_not_grow_the_log(tmp_path: Path) -> None:
    """Rewriting checkpoint slots reuses their space: 20 checkpoints cost about as much as 2."""
    from hwloop.runlog import RunLogWriter

    w = RunLogWriter.create(
        tmp_path / "ck.h5",
        config={},
        table=default_table(),
        tasks=["a"],
        n_tiles=1,
        tile_backends=["sim"],
        chip="sim",
        seed=0,
    )
    blob = np.random.default_rng(0).integers(0, 256, 3_000_000, dtype=np.uint8).tobytes()
    sizes = []
    for epoch in range(1, 21):
        w.save_checkpoint(blob, epoch)
        sizes.append((tmp_path / "ck.h5").stat().st_size)
    w.close()
    assert sizes[-1] < sizes[1] + 1_000_000
    _, info, got = RunLogWriter.reopen(tmp_path / "ck.h5")
    _.close()
    assert got == blob and info.epoch == 20


def test_finished_log_is_compact(tiny_data: Path, tmp_path: Path) -> None:
    """SWMR appends leave unused space behind; a finished run log is rewritten without it."""
    out = tmp_path / "c.h5"
    train(tiny_cfg(tiny_data, out, epochs_per_task=2))
    sizes: list[int] = []
    with h5py.File(out, "r") as f:
        f.visititems(lambda _n, o: sizes.append(o.id.get_storage_size()) if isinstance(o, h5py.Dataset) else None)
    assert out.stat().st_size < 1.2 * sum(sizes) + 200_000
    with RunLog(out) as log:
        assert log.status == "finished" and log.ops.shape[0] > 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"])
def test_ctrl_c_marks_the_log_interrupted_and_resume_finishes_it(sig: int, tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "int.h5"
    # long enough (80 + 80 epochs) that the run cannot end between the checkpoint poll and the signal
    args = [
        "train",
        "--chip",
        "sim",
        "--tasks",
        "mnist,fashion-mnist",
        "--epochs-per-task",
        "80",
        "--warmup",
        "1",
        "--hidden",
        "16",
        "--batch-size",
        "50",
        "--train-samples",
        "300",
        "--lr",
        "5e-3",
        "--data-dir",
        str(tiny_data),
        "--no-verify-data",
        "--no-progress",
        "--out",
        str(out),
    ]
    # the child gets default SIGINT handling even if this test process inherited SIGINT ignored
    proc = subprocess.Popen(
        [sys.executable, "-m", "hwloop.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    _wait_for_checkpoints(out, 1)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    with RunLog(out) as log:
        assert log.status == "interrupted"
        n_epochs = len(log.epochs())
    assert 1 <= n_epochs < 160
    res = _run_cli("train", "--resume", str(out), "--no-progress", "--data-dir", str(tiny_data))
    assert res.returncode == 0, res.stderr
    with RunLog(out) as log:
        assert log.status == "finished" and len(log.epochs()) == 160
