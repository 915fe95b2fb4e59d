"""Kill every writer (train, calibrate, sweep) at random points, then check what it left behind.

Prints ONE JSON line. Each kill starts the writer as its own process (group), waits a random time drawn
over its normal run time, and sends SIGKILL or SIGTERM (chosen at random, half each). Then:

- ``opened``: the files it was writing open (run log: ``RunLog``; calibration op log: ``read_oplog``; the
  calibration file, if written, loads; sweep: every point's log). A kill before a file was created counts
  as opened (nothing to open) and is reported in ``no_file``.
- ``resumed``: the resume finishes (``train --resume`` / ``sweep --out`` again; ``calibrate`` has no resume:
  it is run again into the same files with ``--force``) with a complete log: epochs 1..N, once each.
  A train log killed before its first checkpoint cannot be resumed; it is started again (``restarted``).
- ``ops_missing``: train and sweep on the simulated chip are deterministic, so after the resume the log
  must hold exactly as many ``/ops`` rows as an uninterrupted reference run (missing or doubled rows
  both count). Calibrate runs on the virtual bench (emulated board in this process): the board's own
  SET/RESET pulse counts per device against the op log's rows. A SIGTERM is taken when the array call
  in progress ends (``hwloop.signals.stop_point``), when every frame the board executed has been
  acknowledged and logged: after a SIGTERM every pulse the board executed must be in the log
  (``ops_missing`` counts those missing, must be 0). After a SIGKILL the rows buffered since the last
  flush (``FLUSH_EVERY_S`` = 0.5 s) are lost by design: reported apart as ``lost_unflushed_max``.

Usage: ``python benchmarks/kill_writers.py [--kills 20] [--writers train,calibrate,sweep] [--seed 0]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout's hwloop, and the tests' data helper

ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
TRAIN = [
    "--chip",
    "sim",
    "--tasks",
    "mnist",
    "--epochs-per-task",
    "4",
    "--warmup",
    "1",
    "--hidden",
    "16",
    "--batch-size",
    "20",
    "--train-samples",
    "200",
    "--lr",
    "5e-3",
    "--no-verify-data",
    "--no-progress",
    "--threads",
    "1",
]
SWEEP = [
    "--m",
    "0,3",
    "--hidden",
    "16",
    "--seeds",
    "1",
    "--workers",
    "1",
    "--threads",
    "1",
    "--no-progress",
    "--tasks",
    "mnist",
    "--epochs-per-task",
    "2",
    "--warmup",
    "0",
    "--batch-size",
    "50",
    "--train-samples",
    "200",
    "--chip",
    "sim",
    "--no-verify-data",
    "--lr",
    "0.05",
]
CALIB = ["--chip", "real", "--rows", "0:16", "--devices", "128", "--points", "17", "--no-progress"]


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hwloop.cli", *args], capture_output=True, text=True, env=ENV, timeout=timeout
    )


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hwloop.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
        start_new_session=True,
    )


def _kill(proc: subprocess.Popen, sig: int) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig) if sig == signal.SIGKILL else proc.send_signal(sig)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for _ in range(300):  # until the whole group (sweep workers) is gone
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _sleep_after(path: Path, proc: subprocess.Popen, rng: np.random.Generator, span_s: float) -> None:
    """Wait until the writer has created ``path`` (its start-up, mostly imports, is not a point worth
    killing at), then a random time over the rest of its run (or until it ends)."""
    deadline = time.monotonic() + 120
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(float(rng.uniform(0.0, span_s)))


def make_data(root: Path) -> Path:
    from _synthdata import make_idx_dataset

    make_idx_dataset(root, "mnist", seed=1)
    return root


def _timed(args: list[str]) -> float:
    t = time.monotonic()
    r = _cli(*args)
    if r.returncode != 0:
        raise RuntimeError(f"reference run failed: {r.stderr[-2000:]}")
    return time.monotonic() - t


# ---------------------------------------------------------------------------- train
class TrainWriter:
    name = "train"

    def __init__(self, data: Path, work: Path) -> None:
        from hwloop.runlog import RunLog

        self.data, self.work = data, work
        ref = work / "train-ref.h5"
        self.run_s = _timed(["train", *TRAIN, "--data-dir", str(data), "--out", str(ref)])
        with RunLog(ref) as log:
            self.ref_rows = int(log.ops.shape[0])
            self.n_epochs = len(log.epochs())

    def once(self, k: int, rng: np.random.Generator, sig: int | None = None) -> dict:
        from hwloop.runlog import RunLog

        out = self.work / f"train-{k}.h5"
        sig = sig or (signal.SIGKILL if rng.random() < 0.5 else signal.SIGTERM)
        proc = _spawn("train", *TRAIN, "--data-dir", str(self.data), "--out", str(out))
        _sleep_after(out, proc, rng, self.run_s * 0.8)
        _kill(proc, sig)
        res = {
            "signal": signal.Signals(sig).name,
            "opened": True,
            "no_file": not out.exists(),
            "resumed": False,
            "restarted": False,
            "ops_missing": 0,
        }
        if out.exists():
            try:
                with RunLog(out) as log:
                    _ = log.status, log.epochs(), log.ops.shape
            except Exception as exc:  # any failure to open is what this counts
                res["opened"], res["open_error"] = False, str(exc)
                return res
            r = _cli("train", "--resume", str(out), "--data-dir", str(self.data), "--no-progress")
            if r.returncode == 2 and "no checkpoint yet" in r.stderr:
                out.unlink()
                r = _cli("train", *TRAIN, "--data-dir", str(self.data), "--out", str(out))
                res["restarted"] = True
        else:
            r = _cli("train", *TRAIN, "--data-dir", str(self.data), "--out", str(out))
            res["restarted"] = True
        if r.returncode != 0:
            res["resume_error"] = r.stderr.strip()[-300:]
            return res
        with RunLog(out) as log:
            ep = log.epochs()["epoch"].tolist()
            res["resumed"] = log.status == "finished" and ep == list(range(1, self.n_epochs + 1))
            res["ops_missing"] = abs(int(log.ops.shape[0]) - self.ref_rows)
        out.unlink()
        return res


# ---------------------------------------------------------------------------- sweep
class SweepWriter:
    name = "sweep"

    def __init__(self, data: Path, work: Path) -> None:
        from hwloop.runlog import RunLog
        from hwloop.sweep import load_manifest

        self.data, self.work = data, work
        ref = work / "sweep-ref"
        self.run_s = _timed(["sweep", "--out", str(ref), *SWEEP, "--data-dir", str(data)])
        man = load_manifest(ref)
        self.ref_rows = {}
        for p in man.points:
            with RunLog(man.log_path(p)) as log:
                self.ref_rows[p.name] = int(log.ops.shape[0])

    def once(self, k: int, rng: np.random.Generator, sig: int | None = None) -> dict:
        from hwloop.runlog import RunLog
        from hwloop.sweep import load_manifest

        d = self.work / f"sweep-{k}"
        sig = sig or (signal.SIGKILL if rng.random() < 0.5 else signal.SIGTERM)
        proc = _spawn("sweep", "--out", str(d), *SWEEP, "--data-dir", str(self.data))
        _sleep_after(d / "sweep.json", proc, rng, self.run_s * 0.8)
        _kill(proc, sig)
        res = {
            "signal": signal.Signals(sig).name,
            "opened": True,
            "no_file": not d.exists(),
            "resumed": False,
            "restarted": False,
            "ops_missing": 0,
        }
        for f in sorted(d.glob("**/*.h5")) if d.exists() else []:
            try:
                with RunLog(f) as log:
                    _ = log.status, log.epochs(), log.ops.shape
            except Exception as exc:
                res["opened"], res["open_error"] = False, f"{f.name}: {exc}"
        if (d / "sweep.json").exists():
            r = _cli("sweep", "--out", str(d), "--no-progress")
        else:
            shutil.rmtree(d, ignore_errors=True)
            r = _cli("sweep", "--out", str(d), *SWEEP, "--data-dir", str(self.data))
            res["restarted"] = True
        if r.returncode != 0:
            res["resume_error"] = r.stderr.strip()[-300:]
            return res
        man = load_manifest(d)
        ok = True
        for p in man.points:
            with RunLog(man.log_path(p)) as log:
                ep = log.epochs()["epoch"].tolist()
                ok &= log.status == "finished" and ep == list(range(1, len(ep) + 1)) and len(ep) > 0
                res["ops_missing"] += abs(int(log.ops.shape[0]) - self.ref_rows[p.name])
        res["resumed"] = bool(ok)
        shutil.rmtree(d, ignore_errors=True)
        return res


# ---------------------------------------------------------------------------- calibrate
class CalibrateWriter:
    name = "calibrate"

    def __init__(self, data: Path, work: Path) -> None:
        from hwloop.emulator import VirtualBench

        self.work = work
        with VirtualBench(str(ROOT / "instruments/virtual.toml"), seed=0, pace=False) as vb:
            self.frame = vb.config.fpga.max_batch_ops
            self.run_s = _timed(
                [
                    "calibrate",
                    *CALIB,
                    "--bench",
                    vb.bench_path,
                    "--out",
                    str(work / "cal-ref.h5"),
                    "--log",
                    str(work / "cal-ref-ops.h5"),
                ]
            )

    def once(self, k: int, rng: np.random.Generator, sig: int | None = None) -> dict:
        from hwloop.calibration import load_calibration
        from hwloop.calibration.oplog import read_oplog
        from hwloop.emulator import VirtualBench

        out, oplog = self.work / f"cal-{k}.h5", self.work / f"cal-{k}-ops.h5"
        sig = sig or (signal.SIGKILL if rng.random() < 0.5 else signal.SIGTERM)
        res = {
            "signal": signal.Signals(sig).name,
            "opened": True,
            "no_file": False,
            "resumed": False,
            "restarted": True,
            "ops_missing": 0,
            "acked_missing": 0,
            "lost_unflushed": 0,
        }
        with VirtualBench(str(ROOT / "instruments/virtual.toml"), seed=k, pace=False) as vb:
            proc = _spawn("calibrate", *CALIB, "--bench", vb.bench_path, "--out", str(out), "--log", str(oplog))
            _sleep_after(oplog, proc, rng, self.run_s * 0.6)
            _kill(proc, sig)
            time.sleep(0.1)
            n = 128 * 128
            sim_sets = vb.sim.set_count[:n].astype(np.int64)
            sim_resets = vb.sim.reset_count[:n].astype(np.int64)
        res["no_file"] = not oplog.exists()
        rows = np.zeros(0)
        if oplog.exists():
            try:
                rows = read_oplog(oplog)
            except Exception as exc:
                res["opened"], res["open_error"] = False, str(exc)
        if out.exists():
            try:
                load_calibration(out)
            except Exception as exc:
                res["opened"], res["open_error"] = False, f"calibration file: {exc}"
        missing = 0
        if rows.size or sim_sets.sum() or sim_resets.sum():
            for code, sim in ((1, sim_sets), (2, sim_resets)):
                m = rows["op"] == code if rows.size else np.zeros(0, bool)
                flat = (
                    (rows["tile"][m].astype(np.int64) * 128 + rows["row"][m]) * 128 + rows["col"][m]
                    if rows.size
                    else np.zeros(0, np.int64)
                )
                logged = np.bincount(flat, minlength=n)[:n]
                missing += int(np.maximum(sim - logged, 0).sum())
        res["ops_missing"] = missing
        if sig == signal.SIGTERM:
            res["acked_missing"] = missing
        else:
            res["lost_unflushed"] = missing
        with VirtualBench(str(ROOT / "instruments/virtual.toml"), seed=k, pace=False) as vb:
            r = _cli("calibrate", *CALIB, "--bench", vb.bench_path, "--out", str(out), "--log", str(oplog), "--force")
        if r.returncode == 0:
            load_calibration(out)
            res["resumed"] = read_oplog(oplog).size > 0
        else:
            res["resume_error"] = r.stderr.strip()[-300:]
        for p in (out, oplog):
            p.unlink(missing_ok=True)
        return res


WRITERS = {"train": TrainWriter, "calibrate": CalibrateWriter, "sweep": SweepWriter}


def run(kills: int, writers: list[str], seed: int, work: Path) -> dict:
    data = make_data(work / "data")
    rng = np.random.default_rng(seed)
    out: dict = {"benchmark": "kill_writers", "kills_per_writer": kills, "seed": seed}
    for name in writers:
        w = WRITERS[name](data, work)
        rs = [w.once(k, rng) for k in range(kills)]
        summ = {
            "kills": len(rs),
            "sigkill": sum(r["signal"] == "SIGKILL" for r in rs),
            "logs_opened": sum(r["opened"] for r in rs),
            "no_file_yet": sum(r["no_file"] for r in rs),
            "resumes_finished": sum(r["resumed"] for r in rs),
            "restarted": sum(r["restarted"] for r in rs),
            "ops_missing": sum(r["ops_missing"] for r in rs)
            if name != "calibrate"
            else sum(r["acked_missing"] for r in rs),
            "ref_run_s": round(w.run_s, 2),
        }
        if name == "calibrate":
            summ["lost_unflushed_max"] = max((r["lost_unflushed"] for r in rs), default=0)
            summ["frame_entries"] = w.frame
        errs = [
            r.get("open_error") or r.get("resume_error") for r in rs if r.get("open_error") or r.get("resume_error")
        ]
        if errs:
            summ["errors"] = errs[:3]
        out[name] = summ
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--writers", default="train,calibrate,sweep")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hwloop-kill-") as tmp:
        res = run(a.kills, a.writers.split(","), a.seed, Path(tmp))
    res["wall_s"] = round(time.monotonic() - t0, 1)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
