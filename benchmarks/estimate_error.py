"""`hwloop estimate` against measured runs on the virtual bench (paced at the bench's baud rate).

Each case starts a fresh virtual bench (``mode="process"``, so the emulator does not share the GIL with
the driver), runs one command through ``--chip real``, then estimates the same command from its op log on
the same bench file. The measured time is the command's own chip-operation wall time (``ops_wall_s``;
retention waits excluded; calibrate's ``wall_s.total``). Prints one JSON line with the relative errors.

    python benchmarks/estimate_error.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from hwloop.emulator import VirtualBench

BENCH = Path(__file__).resolve().parents[1] / "instruments" / "virtual.toml"


def _run(*args: str) -> dict:
    r = subprocess.run([sys.executable, "-m", "hwloop", *args], capture_output=True, text=True, timeout=600)
    if r.returncode:
        raise SystemExit(f"hwloop {' '.join(args[:1])} failed: {r.stderr.strip()}")
    return json.loads(r.stdout)


CASES = {
    "verify_128": ["verify", "--devices", "128"],
    "verify_512": ["verify", "--devices", "512", "--tolerance", "0.7"],
    "retention_128": ["retention", "--devices", "128", "--duration", "2", "--t-first", "0.5", "--schedule", "log:3"],
    "calibrate_32rows": ["calibrate", "--rows", "0:32", "--points", "8", "--devices", "256"],
}


def main() -> None:
    out: dict = {"benchmark": "estimate_error", "bench": str(BENCH), "cases": {}}
    with tempfile.TemporaryDirectory() as d:
        for name, args in CASES.items():
            log = Path(d) / f"{name}-ops.h5"
            extra = ["--out", str(Path(d) / f"{name}.h5")] if args[0] in ("retention", "calibrate") else []
            with VirtualBench(BENCH, seed=0, pace=True, mode="process") as vb:
                m = _run(
                    *args,
                    "--chip",
                    "real",
                    "--bench",
                    vb.bench_path,
                    "--log",
                    str(log),
                    "--no-progress",
                    "--json",
                    *extra,
                )
                e = _run("estimate", str(log), "--bench", vb.bench_path, "--json")
            meas = m["wall_s"]["total"] if args[0] == "calibrate" else m["ops_wall_s"]
            out["cases"][name] = {
                "measured_s": round(meas, 3),
                "estimated_s": round(e["time_s"], 3),
                "rel_err": round(e["time_s"] / meas - 1, 3),
                "frames": e["frames"],
                "ops": e["ops"],
                "energy_j": e["energy_j"],
            }
    errs = [abs(c["rel_err"]) for c in out["cases"].values()]
    out["max_abs_rel_err"] = max(errs)
    out["within_20_percent"] = all(x < 0.2 for x in errs)
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
