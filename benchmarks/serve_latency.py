"""hwloop serve: how fast a flushed epoch reaches the served JSON, how big the page's data is, and what a
polling dashboard costs the writer.

1. **Latency and size** on a full-protocol-sized log: a writer process creates a run log through the real
   ``RunLogWriter`` with the paper's network (784-512-512-10 = 82 tiles, 2 tasks x 50 epochs in its
   configuration) and appends epochs (ops rows, an 82-tile snapshot, an epoch row; accuracies and
   conductances are synthetic draws, conductances from the default CDF table) every ``--interval-s``. A
   real ``hwloop serve`` process serves the folder; this process polls ``/api/run`` every
   ``--poll-s`` and records, per epoch, the time from just before the writer's flush to the first response
   listing it. Then it fetches what the page loads for that run (run list, run detail, a tile map with its
   wear map, the level histogram) and reports the bytes raw and gzip-compressed (as served), and the
   static files (page, dashboard.js, plotly.min.js) separately.
2. **Writer slowdown**: real ``hwloop train --chip sim`` runs, alternately without and with a client
   polling the dashboard every second for that run (run list, run detail, tile map, histogram: more than
   the page asks for), ``--reps`` pairs. Ratio = median epoch time with / median epoch time without
   (epoch ``wall_s`` from the logs), in this one run. Also the CPU time the server process used while
   polled, as a fraction of one core (what it takes from a writer that shares its core).

Prints one JSON line.

    python benchmarks/serve_latency.py [--epochs 8] [--interval-s 3] [--reps 3] [--hidden 512] [--train-samples 6000]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
N_TILES_FULL = 82  # 784-512-512-10 as differential pairs on 128 x 128 tiles: 49 + 32 + 1


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


# ---------------------------------------------------------------------------- the writer process
def writer_main(path: str, epochs: int, interval_s: float, programs: int, fill: int) -> None:
    from hwloop.chip.base import CELLS_PER_TILE, Op
    from hwloop.chip.default_table import default_table
    from hwloop.runlog import RunLogWriter
    from hwloop.training.config import TrainConfig

    rng = np.random.default_rng(0)
    table = default_table()
    cfg = {**TrainConfig().__dict__, "out": path}
    n_dev = N_TILES_FULL * CELLS_PER_TILE
    layers = [
        {"layer": "fc1", "tiles": [0, 49]},
        {"layer": "fc2", "tiles": [49, 81]},
        {"layer": "fc3", "tiles": [81, 82]},
    ]
    w = RunLogWriter.create(
        path,
        config=cfg,
        table=table,
        tasks=["mnist", "fashion-mnist"],
        n_tiles=N_TILES_FULL,
        tile_backends=["sim"] * N_TILES_FULL,
        chip="sim",
        seed=0,
        layer_tiles=layers,
    )
    level = rng.integers(0, table.n_levels, n_dev).astype(np.int8)

    def snapshot(epoch: int) -> None:
        g = table.sample(level.astype(np.int64), rng).astype(np.float32)
        w.append_snapshot(epoch, g, level)

    snapshot(0)
    for e in range(1, epochs + 1):  # one iteration per epoch written
        t_start = time.monotonic()
        idx = rng.choice(n_dev, programs, replace=False)
        new = rng.integers(0, table.n_levels, programs).astype(np.int8)
        w.step = e * 100
        w.listener(Op.RESET, idx, np.zeros(programs, np.int8), np.full(programs, np.nan, np.float32))
        w.listener(Op.SET, idx, new, np.full(programs, np.nan, np.float32))
        w.listener(Op.READ, idx, new, table.sample(new.astype(np.int64), rng).astype(np.float32))
        level[idx] = new
        snapshot(e)
        task = 0 if e <= fill // 2 else 1
        acc = np.full(2, np.nan, np.float32)
        acc[: task + 1] = rng.uniform(0.8, 0.99, task + 1)
        rec = {
            "epoch": e,
            "task": task,
            "m_star": 0.0 if e <= 10 else 3.0,
            "lr": 2e-3,
            "acc": acc,
            "train_loss": float(rng.uniform(0.1, 1.0)),
            "train_acc": 0.9,
            "programs": programs,
            "sets": programs,
            "resets": programs,
            "reads": programs,
            "wall_s": time.monotonic() - t_start,
            "step": w.step,
        }
        t_flush = time.time()
        w.append_epoch(rec)
        print(json.dumps({"epoch": e, "t_flush": t_flush, "t_done": time.time()}), flush=True)
        time.sleep(interval_s)
    for e in range(epochs + 1, fill + 1):  # the rest of the protocol's epoch rows, untimed, no snapshots
        task = 0 if e <= fill // 2 else 1
        acc = np.full(2, np.nan, np.float32)
        acc[: task + 1] = rng.uniform(0.8, 0.99, task + 1)
        w.append_epoch(
            {
                "epoch": e,
                "task": task,
                "m_star": 3.0,
                "lr": 2e-3,
                "acc": acc,
                "train_loss": 0.3,
                "train_acc": 0.9,
                "programs": programs,
                "wall_s": interval_s,
                "step": e * 100,
            }
        )
    print(json.dumps({"filled": fill}), flush=True)
    w.close("finished", compact=False)


# ---------------------------------------------------------------------------- helpers
def start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen(
        [sys.executable, "-m", "hwloop", "serve", str(folder), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    line = p.stdout.readline() if p.stdout else ""
    if not line.startswith("hwloop serve: "):
        raise SystemExit(f"hwloop serve did not start: {line} {p.stderr.read() if p.stderr else ''}")
    return p, line.split()[2]


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def get(url: str, gz: bool = False) -> tuple[bytes, int]:
    """(decoded body, bytes on the wire)."""
    req = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"} if gz else {})
    with urllib.request.urlopen(req, timeout=120) as r:
        body = r.read()
        wire = len(body)
        if r.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
    return body, wire


# ---------------------------------------------------------------------------- part 1
def latency_and_size(tmp: Path, a: argparse.Namespace) -> dict:
    folder = tmp / "full"
    folder.mkdir()
    log = folder / "full.h5"
    srv, base = start_server(folder)
    wr = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--writer",
            str(log),
            "--epochs",
            str(a.epochs),
            "--interval-s",
            str(a.interval_s),
            "--programs",
            str(a.programs),
            "--fill-epochs",
            str(a.fill_epochs),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    flushes: dict[int, float] = {}
    seen: dict[int, float] = {}

    def read_writer() -> None:
        for line in wr.stdout or []:
            d = json.loads(line)
            if "filled" in d:
                continue
            flushes[int(d["epoch"])] = float(d["t_flush"])

    th = threading.Thread(target=read_writer, daemon=True)
    th.start()
    url = base + "api/run?id=0:full.h5"
    try:
        deadline = time.monotonic() + 120 + a.epochs * (a.interval_s + 30)
        while time.monotonic() < deadline:
            try:
                body, _ = get(url)
                now = time.time()
                for e in json.loads(body)["epoch"]:
                    seen.setdefault(int(e), now)
            except (OSError, ValueError):
                pass  # the log does not exist yet, or its creation is not flushed yet
            if len(seen) >= a.epochs:
                break
            time.sleep(a.poll_s)
        wr.wait(600)
        th.join(10)
        if wr.returncode:
            raise SystemExit(f"writer failed: {wr.stderr.read() if wr.stderr else ''}")
        lat = [seen[e] - flushes[e] for e in sorted(flushes) if e in seen]
        sizes: dict[str, dict[str, int]] = {}
        t0 = time.monotonic()
        page = {
            "runs": "api/runs",
            "run": "api/run?id=0:full.h5",
            "map": "api/map?id=0:full.h5&snap=-1&tile=0",
            "hist": "api/hist?id=0:full.h5&snap=-1",
        }
        timings = {}
        for k, u in page.items():
            t = time.monotonic()
            raw, _ = get(base + u)
            timings[k] = time.monotonic() - t  # the first request for it
            t = time.monotonic()
            _, wire = get(base + u, gz=True)
            timings[k + "_again"] = time.monotonic() - t  # the same, gzip-compressed
            sizes[k] = {"raw": len(raw), "gzip": wire}
        data_wall = time.monotonic() - t0
        static = {}
        for k, u in {
            "page": "",
            "dashboard.js": "static/dashboard.js",
            "plotly.min.js": "static/plotly.min.js",
        }.items():
            raw, _ = get(base + u)
            _, wire = get(base + u, gz=True)
            static[k] = {"raw": len(raw), "gzip": wire}
    finally:
        stop(wr)
        stop(srv)
    return {
        "log_bytes": log.stat().st_size,
        "epochs_written": len(flushes),
        "latency_s": {"median": statistics.median(lat), "max": max(lat), "all": [round(x, 3) for x in lat]},
        "page_poll_s": a.page_poll_s,
        "latency_page_worst_s": max(lat) + a.page_poll_s,
        "data_bytes": {
            "raw": sum(v["raw"] for v in sizes.values()),
            "gzip": sum(v["gzip"] for v in sizes.values()),
            "per_request": sizes,
        },
        "data_fetch_s": {k: round(v, 3) for k, v in timings.items()},
        "data_fetch_wall_s": data_wall,
        "static_bytes": static,
    }


# ---------------------------------------------------------------------------- part 2
def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def train_once(
    tmp: Path, name: str, a: argparse.Namespace, with_dashboard: bool, ddir: str | None, cpu: dict
) -> list[float]:
    from hwloop.runlog import RunLog

    folder = tmp / name
    folder.mkdir()
    out = folder / "run.h5"
    cmd = [
        sys.executable,
        "-m",
        "hwloop",
        "train",
        "--chip",
        "sim",
        "--tasks",
        "mnist",
        "--epochs-per-task",
        str(a.train_epochs),
        "--warmup",
        "0",
        "--hidden",
        str(a.hidden),
        "--train-samples",
        str(a.train_samples),
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    if ddir:
        cmd += ["--data-dir", ddir, "--no-verify-data"]
    srv = poller = None
    stop_flag = threading.Event()
    polls = [0]
    if with_dashboard:
        srv, base = start_server(folder)

        def poll() -> None:
            urls = [
                "api/runs",
                "api/run?id=0:run.h5",
                "api/map?id=0:run.h5&snap=-1&tile=0",
                "api/hist?id=0:run.h5&snap=-1",
            ]
            while not stop_flag.is_set():
                for u in urls:
                    try:
                        get(base + u)
                        polls[0] += 1
                    except OSError:
                        pass
                stop_flag.wait(1.0)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
    t0 = time.monotonic()
    try:
        subprocess.run(cmd, check=True, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        stop_flag.set()
        if poller is not None:
            poller.join(30)
        wall = time.monotonic() - t0
        if srv is not None:
            cpu[name] = {"server_cpu_s": cpu_s(srv.pid), "train_wall_s": wall}
            stop(srv)
    if with_dashboard and polls[0] == 0:
        raise SystemExit("the dashboard was never polled successfully")
    with RunLog(out) as log:
        return log.epochs()["wall_s"].astype(float).tolist()


def synthetic_data(tmp: Path) -> str | None:
    from hwloop.errors import DataError
    from hwloop.training.data import load_dataset, write_idx

    try:
        load_dataset("mnist")
        return None
    except DataError:
        rng = np.random.default_rng(0)
        d = tmp / "data" / "mnist"
        d.mkdir(parents=True)
        for split, n in (("train", 6000), ("t10k", 1000)):
            y = rng.integers(0, 10, n).astype(np.uint8)
            x = np.clip(rng.normal(60 + 15 * y[:, None, None], 50, (n, 28, 28)), 0, 255).astype(np.uint8)
            write_idx(d / f"{split}-images-idx3-ubyte.gz", x)
            write_idx(d / f"{split}-labels-idx1-ubyte.gz", y)
        return str(tmp / "data")


def writer_slowdown(tmp: Path, a: argparse.Namespace) -> dict:
    ddir = synthetic_data(tmp)
    times: dict[str, list[float]] = {"without": [], "with": []}
    cpu: dict[str, dict[str, float]] = {}
    for rep in range(a.reps):  # interleaved: without, with, without, with ...
        for mode in ("without", "with"):
            times[mode] += train_once(tmp, f"{mode}{rep}", a, mode == "with", ddir, cpu)
    srv_cpu = sum(v["server_cpu_s"] for v in cpu.values())
    srv_wall = sum(v["train_wall_s"] for v in cpu.values())
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "epoch_s_without": med["without"],
        "epoch_s_with": med["with"],
        "ratio": med["with"] / med["without"],
        "epochs_each": {k: len(v) for k, v in times.items()},
        "all_epoch_s": times,
        "server_cpu_s": srv_cpu,
        "server_cpu_fraction_of_a_core": srv_cpu / srv_wall if srv_wall else None,
        "data": "synthetic" if ddir else "MNIST",
        "hidden": a.hidden,
        "train_samples": a.train_samples,
    }


def main() -> None:
    from hwloop.serve.app import POLL_MS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--writer", help=argparse.SUPPRESS)
    ap.add_argument("--epochs", type=int, default=8, help="epochs the synthetic full-size writer appends")
    ap.add_argument("--interval-s", type=float, default=3.0, help="pause between the writer's epochs")
    ap.add_argument("--programs", type=int, default=100_000, help="devices reprogrammed per synthetic epoch")
    ap.add_argument(
        "--fill-epochs",
        type=int,
        default=100,
        help="epoch rows in the log when its size is measured (the full protocol has 100)",
    )
    ap.add_argument("--poll-s", type=float, default=0.1, help="how often the latency probe polls")
    ap.add_argument("--reps", type=int, default=3, help="without/with pairs of training runs")
    ap.add_argument("--train-epochs", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--train-samples", type=int, default=6000)
    ap.add_argument("--skip-slowdown", action="store_true")
    a = ap.parse_args()
    a.page_poll_s = POLL_MS / 1000.0
    if a.writer:
        writer_main(a.writer, a.epochs, a.interval_s, a.programs, max(a.fill_epochs, a.epochs))
        return
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        out = {"benchmark": "serve_latency", "n_tiles": N_TILES_FULL, **latency_and_size(tmp, a)}
        if not a.skip_slowdown:
            out["writer_slowdown"] = writer_slowdown(tmp, a)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
