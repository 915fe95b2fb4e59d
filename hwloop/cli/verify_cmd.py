"""``hwloop verify``: program-and-verify of every level on a region; its success rate and pulses per program."""

from __future__ import annotations

import time
from typing import Any

import click
import numpy as np

from hwloop.chip.verify import WINDOW_MODES
from hwloop.cli import cli
from hwloop.cli.characterise_common import check_finite, chip_options, op_logging, open_shared_chip, set_phase, step_bar
from hwloop.cli.common import echo_json


@cli.command("verify")
@chip_options
@click.option(
    "--devices",
    "n_devices",
    type=click.IntRange(1, 1 << 20),
    default=1024,
    show_default=True,
    help="Devices per level to program and verify.",
)
@click.option("--levels", default="all", show_default=True, help="Target levels: all, or indices like 1,4,8 (0 = LCS).")
@click.option(
    "--tolerance",
    type=click.FloatRange(0, None, min_open=True),
    default=1.0,
    show_default=True,
    help="Window half-width: k sigma (--window sigma) or the fraction k of the gap to the neighbours "
    "(--window midpoint).",
)
@click.option(
    "--window",
    type=click.Choice(list(WINDOW_MODES)),
    default="sigma",
    show_default=True,
    help="Window of a level: median +- k sigma, or the midpoints to the neighbouring levels.",
)
@click.option(
    "--max-pulses",
    type=click.IntRange(1, 255),
    default=10,
    show_default=True,
    help="Pulse budget: SET attempts (each after a RESET) per device.",
)
@click.option(
    "--ispp-step",
    "ispp_step_v",
    type=click.FloatRange(0, 0.5),
    default=0.0,
    show_default=True,
    help="ISPP: raise the SET gate voltage by this much (V) per attempt (refused past max_v_gate_set).",
)
def verify_cmd(
    n_devices: int, levels: str, tolerance: float, window: str, max_pulses: int, ispp_step_v: float, **kw: Any
) -> None:
    """Program-and-verify a population to every level and report attempts, pulses and success.

    Each attempt is RESET, SET at the level's gate voltage (plus the ISPP step), READ; only the devices
    outside their window are tried again, up to --max-pulses. Windows come from the calibration (--cdf).

    \b
    hwloop verify --chip sim --devices 1000 --tolerance 1.0
    hwloop verify --chip real --bench BENCH.toml --calibration calibration/chip.h5 --ispp-step 0.02
    """
    from hwloop.characterise.population import form_population
    from hwloop.characterise.retention import parse_levels
    from hwloop.chip.verify import level_windows, program_verify

    check_finite("tolerance", tolerance)
    chip, cid = open_shared_chip(kw, n_devices * 9)
    with chip:
        lv = parse_levels(levels, chip.table.n_levels)
        lo, hi = level_windows(chip.table, window, tolerance)
        with op_logging(chip, kw, "verify", cid, {"forming": 0, "program": 1}) as log:
            set_phase(log, 0)
            t0 = time.perf_counter()  # forming included: the op log (and so an estimate) holds it too
            dev = form_population(chip, n_devices * lv.size)
            target = np.repeat(lv, n_devices)
            bar = step_bar(max_pulses, "verify", kw["no_progress"])
            try:
                res = program_verify(
                    chip,
                    dev,
                    target,
                    lo,
                    hi,
                    max_pulses=max_pulses,
                    ispp_step_v=ispp_step_v,
                    on_attempt=lambda a: (set_phase(log, 1, -1, a), bar.update(1)),
                )
            finally:
                bar.close()
            wall = time.perf_counter() - t0
        per_level = [
            {
                "level": int(k),
                "window_us": [float(lo[k]), float(hi[k])],
                "success_rate": float(res.success[target == k].mean()),
                "mean_attempts": float(res.attempts[target == k].mean()),
            }
            for k in lv
        ]
        out = {
            "chip_id": cid,
            "backend": type(chip).__name__,
            **res.summary(),
            "per_level": per_level,
            "tolerance": tolerance,
            "window": window,
            "max_pulses": max_pulses,
            "ispp_step_v": ispp_step_v,
            "ops_wall_s": wall,
            "oplog": str(log.path) if log else None,
        }
    if kw["as_json"]:
        echo_json(out)
        return
    click.echo(
        f"verify on {out['backend']} ({cid}): {out['devices']:,} devices, window {window} k={tolerance:g}, "
        f"budget {max_pulses}"
    )
    click.echo(f"{'level':>5} {'window (uS)':>18} {'success':>8} {'attempts':>9}")
    for r in per_level:
        click.echo(
            f"{r['level']:>5} {r['window_us'][0]:>8.2f}-{r['window_us'][1]:<9.2f} "
            f"{r['success_rate']:>8.1%} {r['mean_attempts']:>9.2f}"
        )
    click.echo(
        f"all: success {out['success_rate']:.2%}, {out['mean_attempts']:.2f} attempts and "
        f"{out['pulses_per_program']:.2f} pulses per program, {wall:.2f} s"
        + (f"; op log {out['oplog']}" if out["oplog"] else "")
    )
