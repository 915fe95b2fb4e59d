"""Speed of `hwloop endurance` analysis versus the floor: reading the op table once with h5py.

    python benchmarks/endurance_speed.py [RUN.h5] [--ops 20000000] [--chunk-rows 4194304] [--repeat 3]

Without a log path it synthesizes a big log (default 20 M op rows, 82 tiles = the paper's 1.3 M devices,
the trainer's RESET/SET/READ pattern with a skewed per-device change rate) in a temporary folder.
Prints one JSON line: analysis time, floor time (best of --repeat each, alternated), and their ratio.
The analysis is the whole `hwloop endurance` computation (counts, per-tile/per-epoch statistics,
failed devices, projection), without the CLI start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import h5py

from hwloop.analysis.endurance import DEFAULT_CHUNK_ROWS, EnduranceOptions, count_ops, endurance_summary, failure_window
from hwloop.analysis.logfile import open_runlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' synthetic-log helper
from _synthlogs import write_bulk_log


def read_floor(path: Path, chunk_rows: int) -> tuple[float, float]:
    """Wall and CPU time to read every row of /ops once (all columns), in chunks of chunk_rows."""
    t0, c0 = time.perf_counter(), time.process_time()
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        ds = f["ops"]
        n = ds.shape[0]
        for start in range(0, n, chunk_rows):
            ds[start : min(n, start + chunk_rows)]
    return time.perf_counter() - t0, time.process_time() - c0


def analyse(path: Path, chunk_rows: int) -> tuple[float, float, dict]:
    t0, c0 = time.perf_counter(), time.process_time()
    with open_runlog(path) as log:
        counts = count_ops(log, chunk_rows=chunk_rows, window_steps=failure_window(log))
        s = endurance_summary(log, EnduranceOptions(chunk_rows=chunk_rows), counts=counts)
    return time.perf_counter() - t0, time.process_time() - c0, s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log", nargs="?", help="run log to analyse (default: synthesize one)")
    ap.add_argument("--ops", type=int, default=20_000_000, help="rows of the synthetic log")
    ap.add_argument("--tiles", type=int, default=82, help="tiles of the synthetic log")
    ap.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS)
    ap.add_argument(
        "--repeat", type=int, default=5, help="repetitions; the minimum of each is kept (shared machines are noisy)"
    )
    a = ap.parse_args()
    tmp = None
    if a.log:
        path = Path(a.log)
        synth_s = None
    else:
        tmp = tempfile.TemporaryDirectory(prefix="hwloop-bench-")
        path = Path(tmp.name) / "big.h5"
        t0 = time.perf_counter()
        write_bulk_log(path, n_ops=a.ops, n_tiles=a.tiles)
        synth_s = time.perf_counter() - t0
    try:
        read_floor(path, a.chunk_rows)  # warm the page cache so both measure the same thing
        floors, analyses, floors_cpu, analyses_cpu = [], [], [], []
        summary: dict = {}
        for _ in range(a.repeat):
            fw, fc = read_floor(path, a.chunk_rows)
            aw, ac, summary = analyse(path, a.chunk_rows)
            floors.append(fw)
            floors_cpu.append(fc)
            analyses.append(aw)
            analyses_cpu.append(ac)
        floor_s, analysis_s = min(floors), min(analyses)
        print(
            json.dumps(
                {
                    "benchmark": "endurance_speed",
                    "log": str(path) if a.log else "synthetic",
                    "ops_rows": summary["ops_rows"],
                    "devices": summary["devices"],
                    "file_mb": round(path.stat().st_size / 1e6, 1),
                    "chunk_rows": a.chunk_rows,
                    "floor_read_s": round(floor_s, 3),
                    "analysis_s": round(analysis_s, 3),
                    "ratio": round(analysis_s / floor_s, 3),
                    "cpu_ratio": round(min(analyses_cpu) / min(floors_cpu), 3),
                    "load_avg_1min": os.getloadavg()[0],
                    "rows_per_s": round(summary["ops_rows"] / analysis_s),
                    "synthesize_s": None if synth_s is None else round(synth_s, 1),
                    "repeat": a.repeat,
                }
            )
        )
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
