"""Training: levels, Algorithm 1, crossbar mapping, the hardware loop and its run log, resume, bad input."""

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
import torch

from hwloop.chip.default_table import default_table
from hwloop.crossbar import CrossbarMap
from hwloop.errors import ConfigError, DataError, RunLogError
from hwloop.orchestrator import ChipWeights, TrainConfig, train
from hwloop.runlog import OP_CODES, RunLog
from hwloop.training.data import load_dataset, parse_idx, parse_tasks, write_idx
from hwloop.training.levels import LevelSet
from hwloop.training.optim import MetaplasticAdam, metaplastic_factor

Q, SCALE_US = default_table().weight_levels()


def tiny_cfg(data: Path, out: Path, **kw: object) -> TrainConfig:
    base = dict(tasks="mnist,fashion-mnist", epochs_per_task=2, warmup=1, m_star=3.0, hidden=16, lr=5e-3,
                batch_size=50, train_samples=300, chip="sim", data_dir=str(data), verify_data=False,
                out=str(out), progress=False, eval_batch=200)
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- levels and rule
def test_levels_are_17_unequal_in_range() -> None:
    assert Q.size == 17
    assert Q[0] == pytest.approx(-1.5) and Q[-1] == pytest.approx(1.5) and Q[8] == 0.0
    gaps = np.diff(Q)
    assert gaps.max() - gaps.min() > 0.01  # unequally spaced
    np.testing.assert_allclose(Q, -Q[::-1])


def test_nearest_level_matches_brute_force() -> None:
    lv = LevelSet(Q)
    w = np.random.default_rng(0).uniform(-1.7, 1.7, 100_000)
    brute = np.argmin(np.abs(w[:, None] - Q[None, :]), axis=1)
    np.testing.assert_array_equal(lv.index_np(w.astype(np.float32)), brute)
    # exact ties at a midpoint go to the lower level
    np.testing.assert_array_equal(lv.index_np(lv.mid_np), np.arange(16))


def test_interval_width_is_the_interval_holding_w() -> None:
    lv = LevelSet(Q)
    w = np.random.default_rng(1).uniform(-1.5, 1.5, 10_000).astype(np.float32)
    i = np.clip(np.searchsorted(Q, w, side="right") - 1, 0, 15)
    expected = Q[i + 1] - Q[i]
    np.testing.assert_allclose(lv.interval_width_np(w, lv.index_np(w)), expected, rtol=1e-6)


@pytest.mark.parametrize("mode", ["midpoints", "center", "uniform"])
def test_hidden_weight_initialisation(mode: str) -> None:
    """midpoints: Gaussians on the midpoints of all 16 intervals, about equally often; center: only the two
    intervals next to zero; uniform: spread over [-1.5, 1.5]. All stay inside the outer levels."""
    from hwloop.orchestrator import _init_hidden
    from hwloop.training.model import QMLP

    lv = LevelSet(Q)
    model = QMLP(hidden=64)
    _init_hidden(model, lv, mode, torch.Generator().manual_seed(0))
    w = torch.cat([p.detach().reshape(-1) for p in model.hidden_weights()]).numpy()
    assert w.min() >= Q[0] and w.max() <= Q[-1]
    interval = np.clip(np.searchsorted(Q, w, side="right") - 1, 0, 15)
    counts = np.bincount(interval, minlength=16) / w.size
    if mode == "center":
        # centred on the midpoints +-Q_1/2 with sigma = Q_1/8: beyond +-Q_1 only past 4 sigma (6e-5)
        assert counts[7] + counts[8] > 0.999 and counts[7] == pytest.approx(0.5, abs=0.01)
        assert np.median(np.abs(w)) == pytest.approx(Q[9] / 2, rel=0.02)
    elif mode == "midpoints":
        assert np.all(np.abs(counts - 1 / 16) < 0.01), counts
    else:
        np.testing.assert_allclose(counts, np.diff(Q) / 3.0, atol=0.01)
    if mode == "midpoints":
        rel = np.abs(w - (Q[interval] + Q[interval + 1]) / 2) / (Q[interval + 1] - Q[interval])
        assert np.quantile(rel, 0.95) < 0.26  # about 1.96 sigma = 0.245 of the interval width


def test_m_star_zero_is_plain_adam() -> None:
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.empty(50, 20).uniform_(-1, 1))
    a.metaplastic = True  # type: ignore[attr-defined]
    b = torch.nn.Parameter(a.detach().clone())
    opt_a = MetaplasticAdam([a], LevelSet(Q), lr=1e-2, m_star=0.0, clamp=False)
    opt_b = torch.optim.Adam([b], lr=1e-2)
    for _ in range(5):
        g = torch.randn(50, 20)
        a.grad, b.grad = g.clone(), g.clone()
        opt_a.step()
        opt_b.step()
    torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)


def test_metaplastic_rule_attenuates_only_steps_away_from_the_level() -> None:
    lv = LevelSet(Q)
    m_star, lr = 3.0, 1e-2
    w0 = torch.tensor([Q[10] + 0.01, Q[10] + 0.01, Q[10] - 0.02, Q[10] - 0.02], dtype=torch.float32)
    # Adam's first step is sign(g): w moves by -lr*sign(g)
    g = torch.tensor([-1.0, 1.0, 1.0, -1.0])  # away, toward, away, toward
    p = torch.nn.Parameter(w0.clone())
    p.metaplastic = True  # type: ignore[attr-defined]
    opt = MetaplasticAdam([p], lv, lr=lr, m_star=m_star)
    p.grad = g
    opt.step()
    step = (p.detach() - w0).numpy()
    ws = np.full(4, Q[10], dtype=np.float32)
    width = np.array([Q[11] - Q[10]] * 2 + [Q[10] - Q[9]] * 2, dtype=np.float32)
    m = 1.0 - np.tanh(2 * m_star / width * np.abs(w0.numpy() - ws) - m_star) ** 2
    expected = -lr * np.sign(g.numpy()) * np.where([True, False, True, False], m, 1.0)
    np.testing.assert_allclose(step, expected, rtol=1e-3, atol=1e-7)
    assert opt.attenuated == 2
    assert m[0] < 0.05  # near a level the rule nearly freezes the weight


def test_metaplastic_factor_peaks_at_midpoint() -> None:
    width = np.float32(0.2)
    f = metaplastic_factor(np.array([0.0, 0.05, 0.1], np.float32), np.zeros(3, np.float32), width, 3.0)
    assert f[2] == pytest.approx(1.0) and f[0] < f[1] < f[2]


# ---------------------------------------------------------------------------- crossbar
def test_paper_network_needs_82_tiles_and_1_34_m_devices() -> None:
    cmap = CrossbarMap([("fc1", (512, 784)), ("fc2", (512, 512)), ("fc3", (10, 512))])
    assert cmap.n_tiles == 82
    assert cmap.n_devices_used == 2 * (512 * 784 + 512 * 512 + 10 * 512)
    assert len(np.unique(cmap.devices)) == cmap.n_devices_used
    # pairs are adjacent columns of one row
    pos, neg = cmap.devices[0::2], cmap.devices[1::2]
    assert np.all(neg - pos == 1) and np.all(pos % 2 == 0)


def test_pair_levels_encoding() -> None:
    k = np.array([-8, -1, 0, 1, 8], dtype=np.int8)
    np.testing.assert_array_equal(CrossbarMap.pair_levels(k), [0, 8, 0, 1, 0, 0, 1, 0, 8, 0])


def test_chip_weights_program_only_changed_devices_and_read_back() -> None:
    from hwloop.chip.sim import SimChip, SimConfig

    table = default_table()
    cmap = CrossbarMap([("fc", (64, 100))])
    chip = SimChip(n_tiles=cmap.n_tiles, table=table, config=SimConfig.ideal(), seed=3)
    hw = ChipWeights(chip, cmap, LevelSet(Q), SCALE_US)
    assert hw.form() == 1.0
    rng = np.random.default_rng(0)
    k = rng.integers(-8, 9, cmap.n_weights).astype(np.int8)
    hw.program(k)
    # read weights sit around their levels (device variability only)
    err = hw.w_flat - Q[k + 8]
    assert abs(float(np.median(err))) < 0.02 and float(np.std(err)) < 0.15
    resets0 = chip.reset_count.sum()
    k2 = k.copy()
    flip = rng.choice(k.size, 50, replace=False)
    k2[flip] = np.where(k[flip] < 8, k[flip] + 1, 7)
    n = hw.program(k2)
    target_old, target_new = CrossbarMap.pair_levels(k), CrossbarMap.pair_levels(k2)
    assert n == int(np.count_nonzero(target_old != target_new))
    assert chip.reset_count.sum() - resets0 == n
    assert hw.program(k2) == 0  # nothing changed, nothing programmed


# ---------------------------------------------------------------------------- data
def test_idx_round_trip_and_truncation(tmp_path: Path) -> None:
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.idx", a, gz=False)
    raw = (tmp_path / "x.idx").read_bytes()
    np.testing.assert_array_equal(parse_idx(raw), a)
    with pytest.raises(DataError, match="truncated"):
        parse_idx(raw[:-3])


def test_missing_data_lists_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWLOOP_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DataError) as exc:
        load_dataset("mnist", tmp_path / "given")
    msg = str(exc.value)
    assert str(tmp_path / "given") in msg and str(tmp_path / "env") in msg
    assert "/usr/share/datasets/mnist" in msg and str(tmp_path / "cache") in msg


def test_checksum_is_verified(tiny_data: Path) -> None:
    with pytest.raises(DataError, match="checksum"):
        load_dataset("mnist", tiny_data)
    assert load_dataset("mnist", tiny_data, verify=False).x_train.shape[1] == 784


def test_task_parsing() -> None:
    assert parse_tasks("mnist, fashion-mnist") == ["mnist", "fashion-mnist"]
    assert parse_tasks("permuted-mnist:3") == ["permuted-mnist-1", "permuted-mnist-2", "permuted-mnist-3"]
    with pytest.raises(DataError, match="unknown task"):
        parse_tasks("cifar10")


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
    return subprocess.run([sys.executable, "-m", "hwloop.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_resume_after_kill_reproduces_uninterrupted_run(tiny_data: Path, tmp_path: Path) -> None:
    # long enough (10 + 10 epochs) that the run cannot end between the checkpoint poll and the kill
    common = ["train", "--chip", "sim", "--tasks", "mnist,fashion-mnist", "--epochs-per-task", "10", "--warmup", "1",
              "--hidden", "16", "--batch-size", "50", "--train-samples", "300", "--lr", "5e-3", "--data-dir",
              str(tiny_data), "--no-verify-data", "--no-progress"]
    ref = _run_cli(*common, "--out", str(tmp_path / "ref.h5"), "--json")
    assert ref.returncode == 0, ref.stderr
    ref_acc = json.loads(ref.stdout)["final_acc"]
    # run again and kill -9 once two epochs are checkpointed
    out = tmp_path / "killed.h5"
    proc = subprocess.Popen([sys.executable, "-m", "hwloop.cli", *common, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    r = _run_cli("train", "--no-progress", "--tasks", "mnist", "--data-dir", str(tiny_data), "--no-verify-data",
                 "--calibration", str(cal), "--out", str(tmp_path / "x.h5"))
    assert r.returncode == 2 and "64x64" in r.stderr and "Traceback" not in r.stderr


def test_checkpoints_do_not_grow_the_log(tmp_path: Path) -> None:
    """Rewriting checkpoint slots reuses their space: 20 checkpoints cost about as much as 2."""
    from hwloop.runlog import RunLogWriter

    w = RunLogWriter.create(tmp_path / "ck.h5", config={}, table=default_table(), tasks=["a"], n_tiles=1,
                            tile_backends=["sim"], chip="sim", seed=0)
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
    args = ["train", "--chip", "sim", "--tasks", "mnist,fashion-mnist", "--epochs-per-task", "80", "--warmup", "1",
            "--hidden", "16", "--batch-size", "50", "--train-samples", "300", "--lr", "5e-3", "--data-dir",
            str(tiny_data), "--no-verify-data", "--no-progress", "--out", str(out)]
    # the child gets default SIGINT handling even if this test process inherited SIGINT ignored
    proc = subprocess.Popen([sys.executable, "-m", "hwloop.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for_checkpoints(out, 1)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "--resume" in err and "Traceback" not in err
    with RunLog(out) as log:
        assert log.status == "interrupted"
        n_epochs = len(log.epochs())
    assert 1 <= n_epochs < 160
    res = _run_cli("train", "--resume", str(out), "--no-progress", "--data-dir", str(tiny_data))
    assert res.returncode == 0, res.stderr
    with RunLog(out) as log:
        assert log.status == "finished" and len(log.epochs()) == 160
