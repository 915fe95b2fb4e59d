"""Safety fuzz: many generated requests against the real drivers and the emulated instruments.

    python benchmarks/safety_fuzz.py [--requests 10000] [--seed 0]

Every request goes through the real driver path (``FpgaBoard`` over a pty, ``Keithley2600`` over a
loopback TCP socket) to the emulated instruments, whose own limits are wide open so that they execute
whatever arrives and record it. The oracle restates the bench limits as plain comparisons, independent
of ``Limits.check``, and counts every operation that reached an instrument past a limit. Request kinds:

- ``pulse``: ``set_dac`` + ``pulse`` with random levels (NaN, inf, values around each limit), random op
- ``batch``: random batches, 1 in 40 with a large condition table (up to 131,073 conditions, hostile
  entries past index 65,536 where an (op, condition) key could alias)
- ``bench``: a bench file with random ``[limits]`` values (NaN, inf, negative, zero, strings, bools,
  huge); an accepted one must have every limit finite, positive and under its cap, and what its limits
  pass must be inside them
- ``lost_ack``: ``set_dac`` whose answers are all lost (the board holds the new levels), then a pulse
- ``smu``: DC and pulsed SMU requests with random level, current limit and width

Prints ONE JSON line: requests tried, refused, per kind, and ``reached_instrument_past_limit`` (must be 0).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np

from hwloop.chip.sim import SimChip, SimConfig
from hwloop.emulator.board import BoardEmulator
from hwloop.emulator.device import EmulatedChip
from hwloop.emulator.smu import SmuEmulator
from hwloop.errors import ConfigError, InstrumentError, SafetyLimitError
from hwloop.instruments.bench import BoardOp, Condition, Limits, bench_from_dict
from hwloop.instruments.caps import BOARD_CAPS, KEITHLEY_2600B
from hwloop.instruments.fpga import FpgaBoard
from hwloop.instruments.smu import Keithley2600
from hwloop.instruments.visa import VisaAdapter

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
BENCH = Limits()
WIDE_OPEN = Limits(
    max_v_wl=1e3, max_v_bl=1e3, max_v_sl=1e3, max_v_gate_set=1e3, max_v_form=1e3, max_v_read=1e3, max_width_ns=2**32 - 1
)
SPECIAL_V = [
    0.0,
    0.3,
    0.3004,
    0.3006,
    2.4,
    2.4006,
    2.5,
    2.5006,
    3.0,
    3.0006,
    4.0,
    4.0006,
    5.0,
    5.0006,
    -5.0006,
    math.nan,
    math.inf,
    -math.inf,
]


def within(op: int, c: Condition, lim: Limits = BENCH) -> bool:
    bl_max = {BoardOp.FORM: lim.max_v_form, BoardOp.READ: lim.max_v_read}.get(BoardOp(op), lim.max_v_bl)
    ok = (
        abs(c.v_wl) <= lim.max_v_wl
        and abs(c.v_sl) <= lim.max_v_sl
        and abs(c.v_bl) <= bl_max
        and 0 < c.width_ns <= lim.max_width_ns
    )
    if op != BoardOp.READ and c.v_bl > c.v_sl:
        ok = ok and c.v_wl <= lim.max_v_gate_set
    return bool(ok)


class Fuzz:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        sim = SimChip(n_tiles=1, config=SimConfig.ideal(), seed=seed)
        self.chip = EmulatedChip(sim)
        self.emu = BoardEmulator(self.chip, WIDE_OPEN, pace=False).start()
        self.smu_emu = SmuEmulator(self.chip).start()
        self.board = FpgaBoard(self.emu.port, limits=BENCH, timeout_s=0.05, retries=1)
        self.board.identify()
        self.smu = Keithley2600(VisaAdapter(self.smu_emu.resource, visa_library="@py", timeout_ms=2000), BENCH)
        self.base = tomllib.loads((ROOT / "instruments" / "virtual.toml").read_text())
        self.tried: dict[str, int] = {}
        self.refused: dict[str, int] = {}
        self.past_limit = 0
        self.insane_bench_accepted = 0

    # ------------------------------------------------------------ generators
    def volt(self) -> float:
        if self.rng.random() < 0.3:
            return float(self.rng.choice(SPECIAL_V))
        return float(self.rng.uniform(-6.0, 6.0))

    def cond(self) -> Condition:
        r = self.rng
        if r.random() < 0.5:  # inside every limit, so both outcomes occur
            return Condition(
                float(r.uniform(0, 2.4)), float(r.uniform(0, 0.3)), float(r.uniform(0, 3.0)), int(r.integers(1, 10_001))
            )
        width = int(r.choice([0, 1, 10_000, 10_001])) if r.random() < 0.2 else int(r.integers(0, 20_000))
        return Condition(self.volt(), self.volt(), self.volt(), width)

    def hostile(self) -> object:
        r = self.rng
        k = int(r.integers(0, 8))
        return [math.nan, math.inf, -1.0, 0, True, "1.0", float(r.uniform(0, 50)), float(10 ** r.uniform(-12, 4))][k]

    # ------------------------------------------------------------ request kinds
    def pulse(self) -> bool:
        c = self.cond()
        op = BoardOp(int(self.rng.integers(0, 4)))
        self.board.select(0, 0, int(self.rng.integers(0, 128)))
        self.board.set_dac(c.v_wl, c.v_bl, c.v_sl)
        self.board.pulse(op, c.width_ns)
        return True

    def batch(self) -> bool:
        r = self.rng
        n = int(r.integers(1, 40))
        if r.random() < 1 / 40:
            n_cond = int(r.choice([65_537, 70_000, 131_073]))
            conds = [self.cond()] * n_cond
            ci = r.integers(0, n_cond, n)
            ci[: n // 2] = r.choice([k for k in (65_536, 65_537, 131_072) if k < n_cond], n // 2)
            for k in set(ci.tolist()):
                conds[k] = self.cond()
        else:
            conds = [self.cond() for _ in range(int(r.integers(1, 5)))]
            ci = r.integers(0, len(conds), n)
        op = r.integers(0, 4, n)
        col = r.permutation(128)[:n]
        self.board.batch(np.zeros(n, int), np.zeros(n, int), col, op, ci, conds)
        return True

    def bench(self) -> bool:
        data = json.loads(json.dumps(self.base))
        keys = [f.name for f in fields(Limits)]
        for _ in range(int(self.rng.integers(1, 4))):
            data["limits"][keys[int(self.rng.integers(0, len(keys)))]] = self.hostile()
        try:
            b = bench_from_dict(data, "fuzz.toml")
        except ConfigError:
            return False
        lim = b.limits
        cap = KEITHLEY_2600B[b.smu_model()]
        sane = all(
            type(getattr(lim, f.name)) is type(getattr(Limits(), f.name))
            and math.isfinite(getattr(lim, f.name))
            and getattr(lim, f.name) > 0
            for f in fields(Limits)
        )
        sane = sane and max(lim.max_v_wl, lim.max_v_bl, lim.max_v_sl, lim.max_v_form) <= BOARD_CAPS.max_v
        sane = sane and lim.smu_max_v <= cap.max_v and lim.smu_max_current_a <= cap.max_current_a
        if not sane:
            self.insane_bench_accepted += 1
        for _ in range(8):  # what the loaded limits pass must be inside them
            c, op = self.cond(), BoardOp(int(self.rng.integers(0, 4)))
            try:
                lim.check(op, c)
            except SafetyLimitError:
                continue
            if not within(op, c.quantized(), lim):
                self.past_limit += 1
        return True

    def lost_ack(self) -> bool:
        r = self.rng
        self.board.select(0, 0, 7)
        self.board.set_dac(1.4, 1.8, 0.0)
        hot = [(1.6, 3.8, 0.0), (4.8, 0.0, 2.6), (2.2, 1.8, 0.0)][int(r.integers(0, 3))]
        self.emu.faults.inject(*["drop_answer"] * (self.board.retries + 1))
        try:
            self.board.set_dac(*hot)
        except InstrumentError:
            pass
        finally:
            self.emu.faults._script.clear()
        self.board.select(0, 0, 7)
        self.board.pulse(BoardOp(int(r.integers(0, 3))), 1000)
        return True

    def smu_request(self) -> bool:
        r = self.rng
        v = float(r.choice([0.5, 0.50001, -0.5, math.nan, math.inf])) if r.random() < 0.2 else float(r.uniform(-1, 1))
        i = (
            float(r.choice([1e-3, 1.0001e-3, 1e-11, 5e-11, math.nan]))
            if r.random() < 0.2
            else float(10 ** r.uniform(-11, -2.5))
        )
        if r.random() < 0.3:
            w = float(r.choice([0.01, 0.0100001, 5e-5, math.nan])) if r.random() < 0.3 else float(r.uniform(0, 0.012))
            self.smu.pulse_voltage_measure_current(v, w, i)
        else:
            self.smu.source_voltage_measure_current(v, i)
        return True

    # ------------------------------------------------------------ run
    def run(self, n: int) -> dict:
        kinds = [
            ("pulse", self.pulse, 0.40),
            ("batch", self.batch, 0.25),
            ("bench", self.bench, 0.15),
            ("lost_ack", self.lost_ack, 0.01),
            ("smu", self.smu_request, 0.19),
        ]
        p = np.array([k[2] for k in kinds])
        picks = self.rng.choice(len(kinds), size=n, p=p / p.sum())
        n_smu_cmds = 0
        for k in picks:
            name, fn, _ = kinds[int(k)]
            self.tried[name] = self.tried.get(name, 0) + 1
            ops_before = len(self.emu.log.ops)
            cmds_before = len(self.smu_emu.state.commands)
            try:
                accepted = fn()
            except (SafetyLimitError, InstrumentError):
                accepted = False
            if not accepted:
                self.refused[name] = self.refused.get(name, 0) + 1
            for op, cond, _ in self.emu.log.ops[ops_before:]:
                if not within(op, cond):
                    self.past_limit += 1
            new_cmds = self.smu_emu.state.commands[cmds_before:]
            n_smu_cmds += len(new_cmds)
            self.past_limit += sum(not _smu_cmd_ok(c) for c in new_cmds)
        return {
            "benchmark": "safety_fuzz",
            "requests_tried": int(n),
            "requests_refused": int(sum(self.refused.values())),
            "reached_instrument_past_limit": int(self.past_limit + self.emu.violations),
            "insane_bench_accepted": self.insane_bench_accepted,
            "tried_by_kind": self.tried,
            "refused_by_kind": self.refused,
            "board_cell_ops": int(sum(c for _, _, c in self.emu.log.ops)),
            "smu_commands": n_smu_cmds,
            "smu_errors_left": len(self.smu_emu.state.errors),
        }

    def close(self) -> None:
        self.smu.close()
        self.board.close()
        self.emu.stop()
        self.smu_emu.stop()


def _smu_cmd_ok(line: str) -> bool:
    """The SMU limits restated on the commands that reached the instrument."""
    for cmd in (x.strip() for x in line.split(";")):
        if "levelv = " in cmd and not abs(float(cmd.split("=")[-1])) <= BENCH.smu_max_v:
            return False
        if "listv(" in cmd and not abs(float(cmd.split("{")[1].rstrip("})"))) <= BENCH.smu_max_v:
            return False
        if ("limiti = " in cmd or "rangei = " in cmd) and not (
            KEITHLEY_2600B["2636B"].min_current_limit_a <= float(cmd.split("=")[-1]) <= BENCH.smu_max_current_a
        ):
            return False
        if "timer[1].delay" in cmd and not 0 < float(cmd.split("=")[-1]) <= BENCH.smu_max_width_s:
            return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    fz = Fuzz(args.seed)
    t0 = time.perf_counter()
    try:
        out = fz.run(args.requests)
    finally:
        fz.close()
    out["wall_s"] = round(time.perf_counter() - t0, 2)
    out["seed"] = args.seed
    print(json.dumps(out))
    if out["reached_instrument_past_limit"] or out["insane_bench_accepted"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
