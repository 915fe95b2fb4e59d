"""Link efficiency of batched programming through the virtual bench.

    python benchmarks/bench_link.py [--bench instruments/virtual.toml] [--cells 8192] [--rounds 3]
    python benchmarks/bench_link.py --smu b1500 [--smu-cells 256] [--rounds 5]

Definition. The FPGA link is a UART at the bench's baud rate, 8N1: 10 bit times per byte, so it carries
at most ``baud / 10`` bytes per second in each direction. A programming operation costs one batch entry
of ``OP_ENTRY_BYTES`` (5) bytes in the request direction (the answer to a programming batch is a few bytes),
so the most operations per second the link allows is::

    link_limit_ops_per_s = (baud / 10) / OP_ENTRY_BYTES

and::

    link_efficiency = achieved_ops_per_s / link_limit_ops_per_s

where ``achieved_ops_per_s`` counts device operations (RESET and SET pulses, each one cell) completed per
wall-clock second through ``RealChip.reset_idx`` / ``set_idx``: host-side Python and numpy, framing (8
bytes a frame), condition tables, CRCs, ACK turnaround, the board's own execution time (pulse width plus
settling per entry) and any retry all count against it. ``read_link_efficiency`` is the same for READ
(request direction still 5 bytes per entry; the 2-byte ADC answers travel the other way).

The driver splits a request into frames of ``max_batch_ops`` entries (bench file) and keeps two frames in
flight when they commute (distinct cells), so the next request travels while the board executes the
previous one and answers. READ answers carry 2 bytes per entry back; the last frame's answer cannot
overlap anything, which is what keeps ``read_link_efficiency`` below the programming figure.

Pacing. A pty has no baud rate, so the emulated board paces its byte stream itself: it acts on a request
no earlier than its last byte would have arrived at the configured baud rate, and delivers each answer no
earlier than its last byte would have left (see ``hwloop/emulator/board.py``). The emulator runs in its
own process so that it does not share the GIL with the driver. ``unpaced_ops_per_s`` repeats the
programming with pacing off: what the host and emulator manage with no link limit at all, which shows
whether Python or the link is the bottleneck.

With ``--smu b1500`` (or ``keithley2600``) it measures SMU reads instead: ``RealChip.read_smu`` (board
SELECT, then one DC source-measure through the SMU driver per cell) through that emulated SMU and through
the emulated Keithley 2636B, both emulators in their own processes, rounds interleaved, in one run:
``smu_read_ratio_vs_keithley`` is reads per second through the chosen SMU over reads per second through
the Keithley path (median of the rounds).

Prints ONE JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from hwloop.chip.default_table import default_table
from hwloop.chip.real import RealChip
from hwloop.chip.sim import SimConfig
from hwloop.emulator import VirtualBench
from hwloop.instruments.bench import load_bench
from hwloop.instruments.fpga_protocol import OP_ENTRY_BYTES

ROOT = Path(__file__).resolve().parents[1]


def measure(bench_file: Path, cells: int, rounds: int, pace: bool, seed: int) -> dict:
    table = default_table()
    rng = np.random.default_rng(seed)
    with (
        VirtualBench(bench_file, seed=seed, sim_config=SimConfig.ideal(), pace=pace, mode="process") as vb,
        RealChip.from_bench_file(vb.bench_path, table=table, use_smu=False) as chip,
    ):
        idx = np.arange(cells)
        formed = chip.form_idx(idx)
        idx = idx[formed]
        assert chip.board is not None
        stats0 = (chip.board.stats.retries, chip.board.stats.bytes_tx)
        n_ops = 0
        t0 = time.perf_counter()
        for _ in range(rounds):
            chip.reset_idx(idx)
            chip.set_idx(idx, level=rng.integers(1, table.n_hcs + 1, idx.size))
            n_ops += 2 * idx.size
        t_prog = time.perf_counter() - t0
        prog_bytes = chip.board.stats.bytes_tx - stats0[1]
        prog_retries = chip.board.stats.retries - stats0[0]
        t0 = time.perf_counter()
        for _ in range(rounds):
            chip.read_idx(idx)
        t_read = time.perf_counter() - t0
        return {
            "ops": n_ops,
            "elapsed_s": t_prog,
            "read_ops": rounds * idx.size,
            "read_elapsed_s": t_read,
            "formed": int(idx.size),
            "retries": prog_retries,
            "bytes_tx": prog_bytes,
        }


def measure_smu_reads(bench_file: Path, smu: str, cells: int, rounds: int, seed: int) -> dict:
    """Reads per second through ``read_smu`` on the emulated ``smu`` and on the emulated Keithley path."""
    table = default_table()
    drivers = [smu, "keithley2600"] if smu != "keithley2600" else [smu, smu]
    rates: dict[int, list[float]] = {0: [], 1: []}
    with (
        VirtualBench(
            bench_file, seed=seed, sim_config=SimConfig.ideal(), pace=False, mode="process", smu=drivers[0]
        ) as vb0,
        VirtualBench(
            bench_file, seed=seed, sim_config=SimConfig.ideal(), pace=False, mode="process", smu=drivers[1]
        ) as vb1,
        RealChip.from_bench_file(vb0.bench_path, table=table) as c0,
        RealChip.from_bench_file(vb1.bench_path, table=table) as c1,
    ):
        chips = (c0, c1)
        idx = np.arange(cells)
        for c in chips:
            c.set_idx(idx[c.form_idx(idx)], level=table.n_hcs)
            c.read_smu(idx[:4])  # warm-up: configure the SMU
        for _ in range(rounds):
            for k, c in enumerate(chips):
                t0 = time.perf_counter()
                c.read_smu(idx)
                rates[k].append(cells / (time.perf_counter() - t0))
        idn = (c0.smu_idn, c1.smu_idn)
    med = [float(np.median(rates[k])) for k in (0, 1)]
    return {
        "benchmark": "bench_link_smu",
        "bench": str(bench_file),
        "smu": drivers[0],
        "smu_idn": idn[0],
        "baseline": drivers[1],
        "baseline_idn": idn[1],
        "cells": cells,
        "rounds": rounds,
        "smu_reads_per_s": round(med[0], 1),
        "keithley_reads_per_s": round(med[1], 1),
        "smu_read_ratio_vs_keithley": round(med[0] / med[1], 4),
        "smu_reads_per_s_rounds": [round(x, 1) for x in rates[0]],
        "keithley_reads_per_s_rounds": [round(x, 1) for x in rates[1]],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench", type=Path, default=ROOT / "instruments" / "virtual.toml")
    ap.add_argument("--cells", type=int, default=8192)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--smu",
        choices=["b1500", "keithley2600"],
        default=None,
        help="measure SMU reads through this emulated SMU against the Keithley path instead",
    )
    ap.add_argument("--smu-cells", type=int, default=64, help="cells read through the SMU per round")
    args = ap.parse_args()
    if args.smu is not None:
        print(json.dumps(measure_smu_reads(args.bench, args.smu, args.smu_cells, max(args.rounds, 3), args.seed)))
        return
    bench = load_bench(args.bench)
    baud = bench.fpga.baud
    limit_ops = baud / 10.0 / OP_ENTRY_BYTES
    paced = measure(args.bench, args.cells, args.rounds, True, args.seed)
    unpaced = measure(args.bench, args.cells, 1, False, args.seed)
    ops_per_s = paced["ops"] / paced["elapsed_s"]
    read_ops_per_s = paced["read_ops"] / paced["read_elapsed_s"]
    print(
        json.dumps(
            {
                "benchmark": "bench_link",
                "bench": str(args.bench),
                "baud": baud,
                "bits_per_byte": 10,
                "entry_bytes": OP_ENTRY_BYTES,
                "max_batch_ops": bench.fpga.max_batch_ops,
                "cells": paced["formed"],
                "program_ops": paced["ops"],
                "elapsed_s": round(paced["elapsed_s"], 4),
                "ops_per_s": round(ops_per_s, 1),
                "link_limit_ops_per_s": round(limit_ops, 1),
                "link_efficiency": round(ops_per_s / limit_ops, 4),
                "read_ops_per_s": round(read_ops_per_s, 1),
                "read_link_efficiency": round(read_ops_per_s / limit_ops, 4),
                "wire_bytes_per_op": round(paced["bytes_tx"] / paced["ops"], 4),
                "retries": paced["retries"],
                "unpaced_ops_per_s": round(unpaced["ops"] / unpaced["elapsed_s"], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
