"""hwloop sweep: grid planning, manifest, summaries, local and Ray executors, resume after a kill, failures.

Every sweep here is tiny (H = 16, 200 training images, 1 epoch per task) on the synthetic ``tiny_data`` set.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hwloop.errors import ConfigError
from hwloop.orchestrator import TrainConfig, train
from hwloop.runlog import RunLog
from hwloop.sweep import (
    PointRecord,
    cpu_cores,
    format_pm,
    load_manifest,
    parse_list,
    parse_seeds,
    plan,
    point_name,
    results_from_log,
    run_sweep,
    summarize,
)

if TYPE_CHECKING:
    from conftest import RunCli

GRID = {"m_star": [0.0, 3.0], "hidden": [16], "seed": [0, 1]}


def base_cfg(data: Path, chip: str = "sim", **kw: object) -> dict:
    cfg = dict(
        tasks="permuted-mnist:2",
        epochs_per_task=1,
        warmup=0,
        batch_size=50,
        train_samples=200,
        chip=chip,
        data_dir=str(data),
        verify_data=False,
        lr=0.05,
    )
    cfg.update(kw)
    return cfg


def cli_args(data: Path, chip: str = "sim") -> list[str]:
    return [
        "--tasks",
        "permuted-mnist:2",
        "--epochs-per-task",
        "1",
        "--warmup",
        "0",
        "--batch-size",
        "50",
        "--train-samples",
        "200",
        "--chip",
        chip,
        "--data-dir",
        str(data),
        "--no-verify-data",
        "--lr",
        "0.05",
    ]


def digest(p: Path) -> tuple[int, str]:
    return p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------- grid parsing and naming
def test_parse_seeds_forms() -> None:
    # one meaning for every integer list (hwloop.intlist): a number is that seed, never a count
    assert parse_seeds("5") == [5]
    assert parse_seeds(3) == [3]
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0,3,7") == [0, 3, 7]
    assert parse_seeds("7,") == [7]
    assert parse_seeds("10-12") == [10, 11, 12]
    for bad in ("x", "3-1", "1,1", "", "-1"):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


def test_parse_list_and_point_names() -> None:
    assert parse_list("0,1,2.5", float, "--m") == [0.0, 1.0, 2.5]
    assert parse_list("256,512", int, "--hidden") == [256, 512]
    with pytest.raises(ConfigError):
        parse_list("1,a", float, "--m")
    with pytest.raises(ConfigError):
        parse_list("2,2", int, "--hidden")
    assert point_name({"m_star": 3.0, "hidden": 512, "seed": 0}) == "m3-h512-s0"
    assert point_name({"m_star": 2.2, "hidden": 256, "lr": 5e-4, "seed": 14}) == "m2.2-h256-lr0.0005-s14"


def test_plan_grid_is_the_cartesian_product(tmp_path: Path) -> None:
    man = plan(
        tmp_path / "sw", {"m_star": [0, 1, 2, 3, 4, 5], "hidden": [256, 512, 1024], "seed": [0, 1]}, {"chip": "none"}
    )
    assert len(man.points) == 6 * 3 * 2
    names = [p.name for p in man.points]
    assert len(set(names)) == len(names)
    assert names[0] == "m0-h256-s0" and names[1] == "m0-h256-s1" and names[-1] == "m5-h1024-s1"
    p = man.point("m3-h512-s1")
    assert p.config["m_star"] == 3.0 and p.config["hidden"] == 512 and p.config["seed"] == 1
    assert p.config["chip"] == "none" and p.log == "m3-h512-s1.h5"
    assert man.group_axes == ["m_star", "hidden"]


def test_existing_folder_may_grow_but_not_change(tmp_path: Path) -> None:
    d = tmp_path / "sw"
    man = plan(d, {"m_star": [0, 3], "hidden": [16], "seed": [0]}, {"chip": "none", "warmup": 0})
    man.points[0].status = "finished"
    man.save()
    grown = plan(d, {"m_star": [0, 3, 5], "hidden": [16], "seed": [0, 1]}, {"chip": "none", "warmup": 0})
    assert [p.name for p in grown.points][:2] == ["m0-h16-s0", "m0-h16-s1"]
    assert len(grown.points) == 6
    assert grown.point("m0-h16-s0").status == "finished"  # kept from the manifest
    # continuing without a grid or base keeps everything
    same = plan(d)
    assert same.grid == man.grid and same.base == man.base
    with pytest.raises(ConfigError, match="only grow"):
        plan(d, {"m_star": [3], "hidden": [16], "seed": [0]}, {})
    with pytest.raises(ConfigError, match="warmup"):
        plan(d, None, {"warmup": 2})
    with pytest.raises(ConfigError, match="same axes"):
        plan(d, {"m_star": [0, 3], "hidden": [16], "lr": [1e-3, 1e-2], "seed": [0]}, {})
    # the data location is free to change
    moved = plan(d, None, {"data_dir": str(tmp_path / "elsewhere")})
    assert moved.base["data_dir"] == str((tmp_path / "elsewhere").resolve())


def test_load_manifest_refuses_other_folders(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a sweep folder"):
        load_manifest(tmp_path)
    (tmp_path / "sweep.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ConfigError, match="not an hwloop sweep"):
        load_manifest(tmp_path)


# ---------------------------------------------------------------------------- summaries
def test_format_pm_paper_style() -> None:
    assert format_pm(97.4712, 0.3349) == "97.47 % ± 0.33 %"
    assert format_pm(86.09, float("nan")) == "86.09 %"  # one seed: the value alone, as in hwloop report


def test_summarize_groups_over_seeds(tmp_path: Path) -> None:
    man = plan(tmp_path / "sw", {"m_star": [0, 3], "hidden": [16], "seed": [0, 1, 2]}, {"chip": "none"})
    accs = {"m0-h16-s0": 0.91, "m0-h16-s1": 0.95, "m0-h16-s2": 0.90, "m3-h16-s0": 0.80, "m3-h16-s1": 0.85}
    for p in man.points:
        if p.name in accs:
            p.status, p.final_acc = "finished", {"mnist": accs[p.name], "fashion-mnist": 1 - accs[p.name]}
    man.point("m3-h16-s2").status = "failed"
    rows = summarize(man)
    assert [(r["m_star"], r["hidden"], r["n_points"], r["n_finished"]) for r in rows] == [(0, 16, 3, 3), (3, 16, 3, 2)]
    m0 = [100 * accs[f"m0-h16-s{s}"] for s in range(3)]
    mean, std = rows[0]["acc"]["mnist"]
    assert mean == pytest.approx(statistics.mean(m0)) and std == pytest.approx(statistics.stdev(m0))
    assert rows[1]["seeds"] == [0, 1]


# ---------------------------------------------------------------------------- determinism of train
@pytest.mark.parametrize("chip", ["none", "sim"])
def test_train_is_deterministic_for_a_seed(tiny_data: Path, tmp_path: Path, chip: str) -> None:
    runs = []
    for i in range(2):
        cfg = TrainConfig(
            **base_cfg(tiny_data, chip, hidden=16, m_star=3.0, seed=4),
            out=str(tmp_path / f"{i}.h5"),
            progress=False,
            threads=1,
        )
        res = train(cfg)
        with RunLog(res.log) as log:
            ep = log.epochs()
            ops = log.ops.shape[0]
        acc = [[None if math.isnan(x) else x for x in row] for row in ep["acc"].tolist()]  # NaN: task not seen yet
        runs.append((res.final_acc, acc, ep["train_loss"].tolist(), ep["programs"].tolist(), ops))
    assert runs[0] == runs[1]


# ---------------------------------------------------------------------------- local and Ray executors
@pytest.fixture(scope="module")
def local_sweep(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("local") / "sw"
    res = run_sweep(d, GRID, base_cfg(tiny_data), workers=2, progress=False)
    assert res.ok, res.failed
    return d


def test_local_sweep_writes_manifest_logs_and_summary(local_sweep: Path, tiny_data: Path) -> None:
    man = load_manifest(local_sweep)
    assert [p.name for p in man.points] == ["m0-h16-s0", "m0-h16-s1", "m3-h16-s0", "m3-h16-s1"]
    assert man.executor["kind"] == "local" and man.executor["workers"] == 2
    for p in man.points:
        assert p.status == "finished" and p.error is None and p.attempts == 1
        assert man.log_path(p).is_file()
        with RunLog(man.log_path(p)) as log:
            assert log.status == "finished"
            assert log.config["m_star"] == p.params["m_star"] and log.config["seed"] == p.params["seed"]
            assert log.config["lr"] == 0.05 and log.config["threads"] == max(1, cpu_cores() // 2)
        assert p.final_acc == results_from_log(man.log_path(p))["final_acc"]
        assert set(p.final_acc) == {"permuted-mnist-1", "permuted-mnist-2"}
        assert p.wall_s > 0 and p.run_wall_s >= p.wall_s
    # the sweep ran exactly what `train` runs for that point
    p = man.point("m3-h16-s1")
    ref = train(TrainConfig(**{**p.config, "out": str(local_sweep.parent / "ref.h5"), "progress": False, "threads": 1}))
    assert ref.final_acc == p.final_acc
    # accuracy is above chance on the synthetic set (the runs learn something)
    assert statistics.mean(q.final_acc["permuted-mnist-1"] for q in man.points) > 0.3
    # summaries: mean ± std per configuration, computed here from the points
    csv_lines = (local_sweep / "summary.csv").read_text().splitlines()
    assert csv_lines[0].startswith("m_star,hidden,n_points,n_finished,permuted-mnist-1_mean_pct")
    rows = {r["m_star"]: r for r in summarize(man)}
    vals = [100 * man.point(f"m3-h16-s{s}").final_acc["permuted-mnist-2"] for s in (0, 1)]
    assert rows[3.0]["acc"]["permuted-mnist-2"] == pytest.approx((statistics.mean(vals), statistics.stdev(vals)))
    md = (local_sweep / "summary.md").read_text()
    assert format_pm(statistics.mean(vals), statistics.stdev(vals)) in md


def test_rerun_skips_finished_points(local_sweep: Path, tiny_data: Path) -> None:
    before = {p: digest(p) for p in sorted(local_sweep.glob("*.h5"))}
    res = run_sweep(local_sweep, progress=False)
    assert res.ran == [] and len(res.skipped) == 4
    assert {p: digest(p) for p in sorted(local_sweep.glob("*.h5"))} == before
    assert all(p.attempts == 1 for p in load_manifest(local_sweep).points)


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'hwloop[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_sweep_agrees_with_local(ray_session, local_sweep: Path, tiny_data: Path, tmp_path: Path) -> None:
    d = tmp_path / "ray"
    res = run_sweep(d, GRID, base_cfg(tiny_data), ray_address="auto", progress=False)
    assert res.ok, res.failed
    assert ray_session.is_initialized()  # a Ray session it did not start is left running
    man_r, man_l = load_manifest(d), load_manifest(local_sweep)
    assert man_r.executor["kind"] == "ray"
    assert [(p.name, p.status, p.final_acc) for p in man_r.points] == [
        (p.name, p.status, p.final_acc) for p in man_l.points
    ]
    strip = [{k: v for k, v in r.items() if k != "wall_s_mean"} for r in summarize(man_r)]
    assert strip == [{k: v for k, v in r.items() if k != "wall_s_mean"} for r in summarize(man_l)]

    # mean/std columns of the CSV summaries are identical (wall time aside)
    def acc_cols(p: Path) -> list[list[str]]:
        return [line.split(",")[:-1] for line in p.read_text().splitlines()]

    assert acc_cols(d / "summary.csv") == acc_cols(local_sweep / "summary.csv")


def test_ray_sweep_returning_log_bytes(ray_session, local_sweep: Path, tiny_data: Path, tmp_path: Path) -> None:
    d = tmp_path / "ray-return"
    grid = {"m_star": [3.0], "hidden": [16], "seed": [0, 1]}
    res = run_sweep(d, grid, base_cfg(tiny_data), ray_address="auto", ray_logs="return", progress=False)
    assert res.ok, res.failed
    man = load_manifest(d)
    for p in man.points:
        assert man.log_path(p).is_file()
        with RunLog(man.log_path(p)) as log:
            assert log.status == "finished"
        assert p.final_acc == load_manifest(local_sweep).point(p.name).final_acc


# ---------------------------------------------------------------------------- resume after a kill
def test_killed_sweep_resumes_without_redoing_finished_points(tiny_data: Path, tmp_path: Path, run_cli: RunCli) -> None:
    d = tmp_path / "killed"
    # 4 points, one worker, 2 epochs per task: the kill comes while the second point runs (or before it starts)
    args = [
        "sweep",
        "--out",
        str(d),
        "--m",
        "0,3",
        "--hidden",
        "16",
        "--seeds",
        "0-1",
        "--workers",
        "1",
        "--threads",
        "1",
        "--no-progress",
        *cli_args(tiny_data, "none"),
        "--epochs-per-task",
        "2",
    ]
    code = "import sys; from hwloop.cli import main; main(sys.argv[1:])"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    first = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and first is None and proc.poll() is None:
            time.sleep(0.05)
            try:
                man = load_manifest(d)
            except ConfigError:
                continue
            done = [p for p in man.points if p.status == "finished"]
            if done:
                first = done[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and its worker, at once
        proc.wait(timeout=30)
        for _ in range(300):  # until the worker (a grandchild) is gone too
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
    print(f"killed after {time.monotonic() - deadline + 60:.1f} s")
    assert first is not None, f"no point finished before the kill: {proc.stderr.read().decode()[-2000:]}"
    log_first = d / first.log
    before = digest(log_first)
    killed = load_manifest(d)
    unfinished = [p.name for p in killed.points if p.status != "finished"]
    assert unfinished, "every point finished before the kill; the test needs a slower point"

    t0 = time.monotonic()
    rc, stdout, err = run_cli("sweep", "--out", d, "--no-progress", "--json")
    print(f"re-run {time.monotonic() - t0:.1f} s")
    assert rc == 0, err
    out = json.loads(stdout)
    assert first.name in out["skipped"]
    assert set(out["ran"]) == set(unfinished)
    man = load_manifest(d)
    assert all(p.status == "finished" for p in man.points)
    assert digest(log_first) == before  # neither rewritten nor touched
    assert man.point(first.name).attempts == 1
    for p in man.points:
        with RunLog(man.log_path(p)) as log:
            assert log.status == "finished"
            assert log.epochs()["epoch"].tolist() == [1, 2, 3, 4]  # none lost or duplicated by the resume


# ---------------------------------------------------------------------------- a failed point
def test_failed_point_is_recorded_and_the_rest_finish(tiny_data: Path, tmp_path: Path, run_cli: RunCli) -> None:
    d = tmp_path / "failing"
    grid = {"m_star": [3.0], "hidden": [16], "seed": [0, 1]}
    base = base_cfg(tiny_data, "none", epochs_per_task=2)
    man = plan(d, grid, base)
    man.save()

    # seed 1's log slot holds an interrupted run (with a checkpoint) of another configuration: resuming fails
    def stop(rec: dict) -> None:
        raise KeyboardInterrupt

    alien = TrainConfig(
        **{**man.point("m3-h16-s1").config, "hidden": 8, "out": str(d / "m3-h16-s1.h5"), "progress": False}
    )
    with pytest.raises(KeyboardInterrupt):
        train(alien, on_epoch=stop)

    code, _, err = run_cli("sweep", "--out", d, "--no-progress")
    assert code == 1
    assert "1 of 2 points failed" in err and "m3-h16-s1" in err
    man = load_manifest(d)
    ok, bad = man.point("m3-h16-s0"), man.point("m3-h16-s1")
    assert ok.status == "finished" and ok.final_acc
    assert bad.status == "failed" and "changed configuration" in bad.error and "hidden" in bad.error
    assert "m3-h16-s1" not in (d / "summary.md").read_text()  # groups, not points
    rows = summarize(man)
    assert rows[0]["n_finished"] == 1 and math.isnan(rows[0]["acc"]["permuted-mnist-1"][1])
    # --skip-failed leaves it alone, and still exits non-zero
    assert run_cli("sweep", "--out", d, "--no-progress", "--skip-failed", "--json").code == 1
    assert load_manifest(d).point("m3-h16-s1").attempts == 1


def test_cli_refuses_a_changed_configuration(tmp_path: Path, tiny_data: Path, run_cli: RunCli) -> None:
    d = tmp_path / "sw"
    plan(d, GRID, base_cfg(tiny_data)).save()
    code, _, err = run_cli("sweep", "--out", d, "--warmup", "3", "--no-progress")
    assert code == 2 and len(err.splitlines()) == 1  # one line, exit code 2
    assert "another configuration" in err and "warmup" in err
    code, out, err = run_cli("sweep", "--out", d, "--seeds", "0-2", "--dry-run")
    assert code == 0, err
    assert "6 points" in out and "m3-h16-s2" in out
    # one integer-list grammar: "3" is seed 3 alone, so the grid would lose seeds 0 and 1
    code, _, err = run_cli("sweep", "--out", d, "--seeds", "3", "--dry-run")
    assert code == 2 and "can only grow" in err


def test_point_record_roundtrip(tmp_path: Path) -> None:
    rec = PointRecord(
        name="m1-h2-s3", log="m1-h2-s3.h5", params={"m_star": 1.0}, config={}, status="failed", error="boom"
    )
    assert PointRecord.from_dict({**rec.__dict__, "unknown_future_key": 1}) == rec
