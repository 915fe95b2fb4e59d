"""``hwloop continual`` on a tiny real permuted-MNIST run (3 tasks, 1 epoch each, first task warmed up):
its figures follow the log, and a changed log changes them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
from _tiny import tiny_config

from hwloop.analysis.continual import read_continual
from hwloop.errors import RunLogError
from hwloop.orchestrator import train


@pytest.fixture(scope="module")
def permuted_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("continual") / "pm3.h5"
    res = train(tiny_config(tiny_data, out, tasks="permuted-mnist:3", epochs_per_task=1, warmup=1))
    assert res.status == "finished" and res.epochs == 3
    return out


def test_figures_follow_the_epoch_table(permuted_run: Path, tmp_path: Path) -> None:
    s = read_continual(str(permuted_run))
    assert s["tasks"] == ["permuted-mnist-1", "permuted-mnist-2", "permuted-mnist-3"]
    with h5py.File(permuted_run, "r") as f:
        ep = f["epochs"][()]
        devices = sum(d["devices"] for d in json.loads(f.attrs["layer_tiles_json"]))
    acc = ep["acc"]  # (epoch, task), one epoch per task
    for i in range(3):
        for j in range(3):
            want = float(acc[j, i]) if j >= i else None
            assert s["accuracy_matrix"][i][j] == want
    assert s["avg_final_acc"] == pytest.approx(float(np.mean(acc[2])))
    forget = [max(acc[0, 0], acc[1, 0]) - acc[2, 0], acc[1, 1] - acc[2, 1]]
    assert s["avg_forgetting"] == pytest.approx(float(np.mean(forget)))
    assert s["devices"] == devices == 2 * (784 * 16 + 16 * 16 + 16 * 10)
    assert s["programs_per_device"] == pytest.approx(ep["programs"].sum() / devices)
    assert s["programs_per_task"] == [int(p) for p in ep["programs"]]


def test_changing_the_log_changes_the_numbers(permuted_run: Path, tmp_path: Path, run_cli) -> None:
    copy = tmp_path / "edited.h5"
    copy.write_bytes(permuted_run.read_bytes())
    before = read_continual(str(copy))
    with h5py.File(copy, "r+") as f:
        ep = f["epochs"][()]
        ep["acc"][0, 0] = 0.99  # task 1 was better at its end: more forgetting
        ep["acc"][2, 2] = 0.05  # the last task learned badly: lower final accuracy
        ep["programs"][1] += 1000
        f["epochs"][...] = ep
    after = read_continual(str(copy))
    assert after["accuracy_matrix"][0][0] == pytest.approx(0.99)
    expected_forget = np.mean([0.99 - after["accuracy_matrix"][0][2], after["forgetting"][1]])
    assert after["avg_forgetting"] == pytest.approx(float(expected_forget))
    assert after["avg_forgetting"] != pytest.approx(before["avg_forgetting"])
    assert after["avg_final_acc"] == pytest.approx(before["avg_final_acc"] + (0.05 - before["final_acc"][2]) / 3)
    assert after["programs"] == before["programs"] + 1000
    # the command prints and writes the same numbers
    r = run_cli("continual", str(copy), "--json", "--out", str(tmp_path / "c.json"))
    assert r.code == 0, r.err
    printed = json.loads(r.out)
    assert printed["avg_forgetting"] == pytest.approx(after["avg_forgetting"])
    assert json.loads((tmp_path / "c.json").read_text())["accuracy_matrix"] == printed["accuracy_matrix"]
    text = run_cli("continual", str(copy), "--against", str(permuted_run))
    assert text.code == 0, text.err
    assert f"{100 * after['avg_forgetting']:.2f} points" in text.out
    assert "last task permuted-mnist-3: 5.00 %" in text.out


def test_partial_run_and_bad_input(tiny_data: Path, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "partial.h5"
    train(tiny_config(tiny_data, out, tasks="permuted-mnist:3", epochs_per_task=1, warmup=1))
    with h5py.File(out, "r+") as f:  # keep only the first task's epoch, as a run stopped after it
        f["epochs"].resize((1,))
    s = read_continual(str(out))
    assert s["tasks_finished"] == 1 and s["avg_forgetting"] is None
    assert not math.isnan(s["avg_final_acc"])
    with h5py.File(out, "r+") as f:
        f["epochs"].resize((0,))
    r = run_cli("continual", str(out))
    assert r.code == 2 and "no task" in r.err and len(r.err.strip().splitlines()) == 1
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not a run log")
    r = run_cli("continual", str(junk))
    assert r.code == 2 and "Traceback" not in r.err


def test_plot_draws_the_run_and_its_baseline(permuted_run: Path, tmp_path: Path, run_cli) -> None:
    png = tmp_path / "pm3.png"
    r = run_cli("continual", str(permuted_run), "--against", str(permuted_run), "--plot", str(png))
    assert r.code == 0, r.err
    from PIL import Image

    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > im.size[1] > 200
        # not a blank canvas: the curves and the matrix's colours give many distinct pixel values
        assert len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)) > 50
    r = run_cli("continual", str(permuted_run), "--plot", str(tmp_path / "no-such-dir" / "x.png"))
    assert r.code == 2 and "--plot" in r.err and len(r.err.strip().splitlines()) == 1
    assert not (tmp_path / "no-such-dir").exists()


def test_against_compares_at_the_same_point_of_the_sequence(permuted_run: Path, tmp_path: Path, run_cli) -> None:
    """A run that has finished 2 of 3 tasks is compared with the baseline's task 2 after task 2, not after
    task 3; a baseline of other tasks, or with fewer finished tasks, is refused."""
    from hwloop.analysis.continual import compare_last_task

    base_log = tmp_path / "base.h5"
    base_log.write_bytes(permuted_run.read_bytes())
    with h5py.File(base_log, "r+") as f:
        ep = f["epochs"][()]
        ep["acc"][2, 1] = 0.33  # task 2 after task 3, in the baseline: the baseline's end differs from A[2][2]
        f["epochs"][...] = ep
    base = read_continual(str(base_log))
    partial = tmp_path / "partial.h5"
    partial.write_bytes(permuted_run.read_bytes())
    with h5py.File(partial, "r+") as f:
        ep = f["epochs"][()]
        ep["acc"][1, 1] = 0.5  # task 2 after task 2, in the partial run only
        f["epochs"][...] = ep
        f["epochs"].resize((2,))
    run = read_continual(str(partial))
    c = compare_last_task(run, base)
    assert c["task"] == "permuted-mnist-2"
    assert base["accuracy_matrix"][1][2] == pytest.approx(0.33) != base["accuracy_matrix"][1][1]
    assert c["baseline_acc"] == base["accuracy_matrix"][1][1]
    assert c["difference"] == pytest.approx(0.5 - base["accuracy_matrix"][1][1])
    r = run_cli("continual", str(permuted_run), "--against", str(partial))  # baseline with fewer tasks
    assert r.code == 2 and "has not finished" in r.err and len(r.err.strip().splitlines()) == 1
    other = dict(base, tasks=["mnist", "fashion-mnist", "x"])
    with pytest.raises(RunLogError, match="task sequence"):
        compare_last_task(run, other)
