"""hwloop serve: the JSON endpoints over real run logs, refused requests, the token, the CLI's errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette", reason="hwloop serve needs the serve extra: pip install -e '.[serve]'")
pytest.importorskip("httpx2", reason="the Starlette test client needs httpx2 (in the test extra)")

from _tiny import tiny_config
from starlette.testclient import TestClient

from hwloop.analysis.endurance import count_ops
from hwloop.runlog import RunLog
from hwloop.serve.app import build_app
from hwloop.serve.roots import Roots

ROOT = Path(__file__).resolve().parents[1]
LOCAL = "http://127.0.0.1:8750"


@pytest.fixture(scope="module")
def finished_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real two-task training run (sim chip, tiny synthetic data), finished."""
    from hwloop.orchestrator import train

    d = tmp_path_factory.mktemp("runs")
    out = d / "sub" / "done.h5"
    cfg = tiny_config(tiny_data, out, train_samples=200, threads=1)
    train(cfg)
    return out


@pytest.fixture
def served(finished_run: Path, tmp_path: Path) -> tuple[TestClient, Path]:
    """A folder with the finished run (hard link), a damaged log, and a symlink pointing outside."""
    folder = tmp_path / "served"
    (folder / "sub").mkdir(parents=True)
    os.link(finished_run, folder / "sub" / "done.h5")
    data = finished_run.read_bytes()
    (folder / "damaged.h5").write_bytes(data[: len(data) // 2])
    outside = tmp_path / "secret.h5"
    outside.write_bytes(data)
    (folder / "escape.h5").symlink_to(outside)
    (tmp_path / "secret.txt").write_text("not yours")
    return TestClient(build_app(Roots.from_args([str(folder)])), base_url=LOCAL), folder


def test_run_list_shows_status_and_errors_and_skips_symlinks_out(served: tuple[TestClient, Path]) -> None:
    client, _ = served
    r = client.get("/api/runs")
    assert r.status_code == 200
    rows = {row["rel"]: row for row in r.json()["runs"]}
    assert set(rows) == {"sub/done.h5", "damaged.h5"}  # escape.h5 leaves the folder: not listed
    done = rows["sub/done.h5"]
    assert done["status"] == "finished" and done["tasks"] == ["mnist", "fashion-mnist"]
    assert done["hidden"] == 16 and done["m_star"] == 3.0 and done["seed"] == 0
    assert done["epochs_done"] == done["epochs_total"] == 4
    assert len(done["final_acc_pct"]) == 2 and all(0 <= a <= 100 for a in done["final_acc_pct"])
    assert done["stalled"] is False and done["size_bytes"] > 0
    assert rows["damaged.h5"]["status"] == "error" and "truncated" in rows["damaged.h5"]["error"]


def test_run_detail_matches_the_log(served: tuple[TestClient, Path], finished_run: Path) -> None:
    client, _ = served
    d = client.get("/api/run", params={"id": "0:sub/done.h5"}).json()
    with RunLog(finished_run) as log:
        ep = log.epochs()
        snaps = log.snapshot_epochs()
    assert d["epoch"] == ep["epoch"].tolist() == [1, 2, 3, 4]
    assert d["programs"] == ep["programs"].astype(int).tolist()
    np.testing.assert_allclose(d["acc_pct"]["mnist"], 100 * ep["acc"][:, 0], atol=1e-3)
    assert d["acc_pct"]["fashion-mnist"][:2] == [None, None]  # not evaluated before its task
    assert d["task_switches"] == [2.5] and d["warmup_end"] == 1.5
    assert d["snapshot_epochs"] == snaps.tolist()


def test_maps_are_downsampled_and_wear_matches_endurance(served: tuple[TestClient, Path], finished_run: Path) -> None:
    client, _ = served
    m = client.get("/api/map", params={"id": "0:sub/done.h5", "snap": -1, "tile": 0}).json()
    assert len(m["g_us"]) == 64 and len(m["g_us"][0]) == 64 and m["factor"] == 2
    with RunLog(finished_run) as log:
        prog = count_ops(log).programs.reshape(-1, 128, 128)[0]
        g, lv = log.snapshot(int(log.snapshot_epochs().size) - 1)
    assert m["programs_max"] == int(prog[lv.reshape(-1, 128, 128)[0] >= 0].max())
    full = client.get("/api/map", params={"id": "0:sub/done.h5", "snap": -1, "tile": 0, "factor": 1}).json()
    g0 = np.where(lv.reshape(-1, 128, 128)[0] >= 0, g.reshape(-1, 128, 128)[0], np.nan)
    got = np.array([[np.nan if v is None else v for v in row] for row in full["g_us"]])
    np.testing.assert_allclose(got, g0, atol=0.01)
    bad = client.get("/api/map", params={"id": "0:sub/done.h5", "tile": 999})
    assert bad.status_code == 422 and "no tile 999" in bad.json()["error"]
    assert client.get("/api/map", params={"id": "0:sub/done.h5", "snap": 99}).status_code == 422
    h = client.get("/api/hist", params={"id": "0:sub/done.h5", "snap": -1}).json()
    assert sum(lvl["devices"] for lvl in h["levels"]) == int((lv >= 0).sum())
    assert len(h["levels"]) == 9 and all(len(lvl["cdf_g_us"]) == len(lvl["cdf_p"]) for lvl in h["levels"])


def test_compare_mean_and_std(served: tuple[TestClient, Path], finished_run: Path) -> None:
    client, folder = served
    os.link(finished_run, folder / "copy.h5")
    c = client.get("/api/compare", params=[("id", "0:sub/done.h5"), ("id", "0:copy.h5"), ("id", "0:damaged.h5")])
    c = c.json()
    assert len(c["runs"]) == 2 and len(c["errors"]) == 1
    assert c["mean_pct"]["mnist"] == c["runs"][0]["acc_pct"]["mnist"]
    assert c["std_pct"]["mnist"][0] == 0.0 and c["n"]["mnist"] == [2, 2, 2, 2]


@pytest.mark.parametrize(
    "rid",
    [
        "0:../secret.h5",
        "0:/etc/passwd",
        "0:sub/../../secret.h5",
        "0:escape.h5",
        "1:sub/done.h5",
        "0:../secret.txt",
        "x",
        "0:sub\\..\\..\\secret.h5",
    ],
)
def test_requests_outside_the_folders_are_refused(served: tuple[TestClient, Path], rid: str) -> None:
    client, _ = served
    for ep in ("/api/run", "/api/map", "/api/hist", "/api/compare"):
        r = client.get(ep, params={"id": rid})
        assert r.status_code == 403, (ep, rid, r.text)
        assert "error" in r.json()
    assert client.get("/api/run?id=0:..%2Fsecret.h5").status_code == 403  # encoded once, decoded by the server
    assert client.get("/api/run?id=0:sub%2F..%2F..%2Fsecret.h5").status_code == 403


def test_no_write_endpoint_and_no_arbitrary_static(served: tuple[TestClient, Path]) -> None:
    client, _ = served
    for method in ("post", "put", "delete", "patch"):
        assert getattr(client, method)("/api/runs").status_code == 405
    assert client.get("/static/../../pyproject.toml").status_code == 404
    assert client.get("/static/app.py").status_code == 404
    assert client.get("/api/nothing").status_code == 404
    assert client.get("/api/map", params={"id": "0:sub/done.h5", "factor": "9999"}).status_code == 403


def test_vanished_log_is_an_error_not_a_crash(served: tuple[TestClient, Path]) -> None:
    client, folder = served
    (folder / "sub" / "done.h5").unlink()
    r = client.get("/api/run", params={"id": "0:sub/done.h5"})
    assert r.status_code == 404 and "does not exist" in r.json()["error"]
    assert client.get("/api/runs").status_code == 200


def test_loopback_refuses_foreign_host_header(served: tuple[TestClient, Path]) -> None:
    client, _ = served
    assert client.get("/api/runs", headers={"host": "evil.example"}).status_code == 400
    assert client.get("/api/runs", headers={"host": "127.0.0.1:8750"}).status_code == 200


def test_token_is_checked_on_every_request(finished_run: Path) -> None:
    tok = "t" * 24
    app = build_app(Roots.from_args([str(finished_run.parent)]), token=tok, loopback=False)
    c = TestClient(app)
    for url in ("/", "/api/runs", "/static/dashboard.js", "/static/plotly.min.js", "/api/run?id=0:done.h5"):
        assert c.get(url).status_code == 401, url
    assert c.get("/api/runs", params={"token": "x" * 24}).status_code == 401
    assert c.get("/api/runs", headers={"authorization": f"Bearer {tok}"}).status_code == 200
    r = c.get("/", params={"token": tok})
    assert r.status_code == 200 and "hwloop_token" in r.headers.get("set-cookie", "")
    assert c.get("/api/runs").status_code == 200  # the cookie the page got


def _get(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _serve_proc(args: list[str], env_extra: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "hwloop", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_cli_non_loopback_generates_a_token(finished_run: Path) -> None:
    p = _serve_proc([str(finished_run.parent), "--host", "0.0.0.0", "--port", "0"])
    try:
        line = p.stdout.readline() if p.stdout else ""
        assert "?token=" in line, line
        url = line.split()[2]
        base, tok = url.split("?token=")
        base = base.replace("0.0.0.0", "127.0.0.1")
        assert _get(base + "api/runs")[0] == 401
        code, body = _get(base + "api/runs", {"authorization": f"Bearer {tok}"})
        assert code == 200 and json.loads(body)["runs"][0]["status"] == "finished"
    finally:
        p.terminate()
        p.wait(10)


def test_cli_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    p = _serve_proc([str(tmp_path / "missing")])
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2 and err.strip().count("\n") == 0 and "is not a folder" in err
    p = _serve_proc([str(tmp_path), "--token", "short"])
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "at least 16" in err
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        p = _serve_proc([str(tmp_path), "--port", str(s.getsockname()[1])])
        _, err = p.communicate(timeout=60)
    finally:
        s.close()
    assert p.returncode == 2 and "choose another --port" in err and "Traceback" not in err


def test_cli_without_the_extra_says_how_to_install(tmp_path: Path) -> None:
    """A Python where starlette cannot be imported (a meta-path finder hides it): one line, exit 2."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('starlette', 'uvicorn'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Hide())\n"
    )
    p = _serve_proc([str(tmp_path)], {"PYTHONPATH": f"{hide}{os.pathsep}{ROOT}"})
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "pip install -e '.[serve]'" in err and "Traceback" not in err


def test_live_run_epochs_appear(tiny_data: Path, tmp_path: Path) -> None:
    """A run being written (in process, epoch callback) is listed as running, and each new epoch is served."""
    from hwloop.orchestrator import TrainConfig, train

    out = tmp_path / "live.h5"
    client = TestClient(build_app(Roots.from_args([str(tmp_path)])), base_url=LOCAL)
    seen: list[tuple[str, int]] = []

    def on_epoch(rec: dict) -> None:
        row = client.get("/api/runs").json()["runs"][0]
        d = client.get("/api/run", params={"id": "0:live.h5"}).json()
        seen.append((row["status"], len(d["epoch"])))
        assert d["since_flush_s"] < 60 and row["eta_s"] is not None and d["stalled"] is False

    cfg = TrainConfig(
        tasks="mnist",
        epochs_per_task=2,
        warmup=0,
        hidden=8,
        batch_size=50,
        train_samples=100,
        chip="sim",
        data_dir=str(tiny_data),
        verify_data=False,
        out=str(out),
        progress=False,
        eval_batch=200,
        threads=1,
    )
    t0 = time.monotonic()
    train(cfg, on_epoch=on_epoch)
    assert seen == [("running", 1), ("running", 2)], seen
    assert time.monotonic() - t0 < 60
    assert client.get("/api/runs").json()["runs"][0]["status"] == "finished"


def test_serving_leaves_the_log_byte_identical(served: tuple[TestClient, Path], finished_run: Path) -> None:
    import hashlib

    client, _ = served
    before = hashlib.sha256(finished_run.read_bytes()).hexdigest()
    for url in ("/api/runs", "/api/run", "/api/map", "/api/hist", "/api/compare"):
        assert client.get(url, params={"id": "0:sub/done.h5"}).status_code == 200, url
    assert hashlib.sha256(finished_run.read_bytes()).hexdigest() == before


def _writer(path: Path) -> object:
    from hwloop.chip.default_table import default_table
    from hwloop.runlog import RunLogWriter

    return RunLogWriter.create(
        path,
        config={"epochs_per_task": 2, "m_star": 3.0, "hidden": 8, "seed": 1},
        table=default_table(),
        tasks=["mnist"],
        n_tiles=1,
        tile_backends=["sim"],
        chip="sim",
        seed=1,
    )


def test_stalled_flag_follows_the_heartbeat(tmp_path: Path) -> None:
    w = _writer(tmp_path / "w.h5")
    try:
        w.flush()
        time.sleep(0.3)
        quick = TestClient(build_app(Roots.from_args([str(tmp_path)]), stall_s=0.2), base_url=LOCAL)
        row = quick.get("/api/runs").json()["runs"][0]
        assert row["status"] == "running" and row["stalled"] is True and row["since_flush_s"] >= 0.3
        w.flush()  # a new heartbeat
        patient = TestClient(build_app(Roots.from_args([str(tmp_path)]), stall_s=60), base_url=LOCAL)
        row = patient.get("/api/runs").json()["runs"][0]
        assert row["stalled"] is False and row["since_flush_s"] < 60
    finally:
        w.close()


def test_a_dead_writer_shows_as_crashed(tmp_path: Path) -> None:
    code = (
        "import os, sys; sys.path.insert(0, sys.argv[2]); from pathlib import Path\n"
        "from hwloop.chip.default_table import default_table\n"
        "from hwloop.runlog import RunLogWriter\n"
        "w = RunLogWriter.create(Path(sys.argv[1]), config={}, table=default_table(), tasks=['mnist'], n_tiles=1,"
        " tile_backends=['sim'], chip='sim', seed=0)\n"
        "w.flush(); os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "dead.h5"), str(ROOT)], check=True, timeout=60)
    client = TestClient(build_app(Roots.from_args([str(tmp_path)])), base_url=LOCAL)
    row = client.get("/api/runs").json()["runs"][0]
    assert row["status"] == "crashed" and row["stalled"] is False
    assert client.get("/api/map", params={"id": "0:dead.h5"}).status_code == 422  # no snapshot yet: one error


def test_sweep_groups_are_listed_and_compared(finished_run: Path, tmp_path: Path) -> None:
    """A sweep folder (manifest written by hwloop.sweep.plan): its group of seeds, compared mean ± std."""
    from hwloop.sweep import plan

    folder = tmp_path / "served"
    sweep_dir = folder / "grid"
    man = plan(sweep_dir, {"m_star": [3.0], "hidden": [16], "seed": [0, 1]}, {"tasks": "mnist,fashion-mnist"})
    sweep_dir.mkdir(parents=True)
    for p in man.points:
        os.link(finished_run, man.log_path(p))
        p.status = "finished"
    man.save()
    client = TestClient(build_app(Roots.from_args([str(folder)])), base_url=LOCAL)
    sw = client.get("/api/runs").json()["sweeps"]
    assert len(sw) == 1 and sw[0]["rel"] == "grid" and "error" not in sw[0], sw
    (group,) = sw[0]["groups"]
    assert group["params"] == {"m_star": 3.0, "hidden": 16} and len(group["runs"]) == 2
    c = client.get("/api/compare", params=[("id", r) for r in group["runs"]]).json()
    assert c["n"]["mnist"] == [2, 2, 2, 2] and c["errors"] == []
    (folder / "grid" / "sweep.json").write_text("{not json")
    sw = client.get("/api/runs").json()["sweeps"]
    assert "unreadable" in sw[0]["error"]


def test_a_log_with_unexpected_content_is_one_error(finished_run: Path, tmp_path: Path) -> None:
    import h5py

    folder = tmp_path / "served"
    folder.mkdir()
    odd = folder / "odd.h5"
    odd.write_bytes(finished_run.read_bytes())
    with h5py.File(odd, "r+") as f:  # an epoch table without the accuracy column
        del f["epochs"]
        f.create_dataset("epochs", data=np.zeros(3, dtype=[("epoch", "<u4")]))
    client = TestClient(build_app(Roots.from_args([str(folder)])), base_url=LOCAL)
    r = client.get("/api/runs")
    assert r.status_code == 200
    row = r.json()["runs"][0]
    assert row["status"] == "error" and "unexpected run log content" in row["error"] and "acc" in row["error"]
    r = client.get("/api/run", params={"id": "0:odd.h5"})
    assert r.status_code == 422 and "acc" in r.json()["error"]
