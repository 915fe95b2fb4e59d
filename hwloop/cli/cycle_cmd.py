"""``hwloop cycle``: RESET/SET cycling to failure, and the endurance model the simulated chip replays.
Formats: docs/characterise.md."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from hwloop.calibration.session import safe_name
from hwloop.cli import cli
from hwloop.cli.characterise_common import (
    check_out,
    chip_options,
    op_logging,
    open_shared_chip,
    set_phase,
    stamp,
    step_bar,
)
from hwloop.cli.common import echo_json
from hwloop.errors import CalibrationError


@cli.command("cycle")
@chip_options
@click.option(
    "--devices", "n_devices", type=click.IntRange(3, 1 << 20), default=1000, show_default=True, help="Devices to cycle."
)
@click.option(
    "--cycles",
    type=click.IntRange(1, 10**9),
    default=1000,
    show_default=True,
    help="SET/RESET cycles (each RESET then SET).",
)
@click.option(
    "--read-every",
    type=click.IntRange(1, 10**9),
    default=10,
    show_default=True,
    help="Window reads (after RESET and after SET) every K cycles, and on the last.",
)
@click.option("--set-level", type=int, default=None, help="HCS level of the SET (default: the top level).")
@click.option(
    "--confirm",
    type=click.IntRange(1, 100),
    default=2,
    show_default=True,
    help="Read cycles in a row with a failure sign before a device counts as failed.",
)
@click.option(
    "--min-ratio",
    type=click.FloatRange(1.0, 1e6),
    default=2.0,
    show_default=True,
    help="Closed window: G_HCS / G_LCS below this ratio.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Endurance-model file. Default: runs/endurance-<chip-id>-<UTC time>.h5",
)
@click.option("--force", is_flag=True, help="Overwrite an existing --out.")
def cycle_cmd(
    n_devices: int,
    cycles: int,
    read_every: int,
    set_level: int | None,
    confirm: int,
    min_ratio: float,
    out: str | None,
    force: bool,
    **kw: Any,
) -> None:
    """Endurance cycling: SET/RESET a population with window reads, detect failures (stuck HCS, stuck LCS,
    closed window) and fit the cycles-to-failure distribution (lognormal and Weibull, censored MLE).

    The endurance-model file it writes (docs/characterise.md) is what `--endurance-model FILE` replays on
    the simulated chip.

    \b
    hwloop cycle --chip sim --devices 1000 --cycles 1000 --read-every 10
    hwloop cycle --chip real --bench BENCH.toml --devices 256 --cycles 100000 --read-every 100
    """
    from hwloop.characterise import cycle as C
    from hwloop.chip.models import save_endurance_model

    check_out(out, force)
    chip, cid = open_shared_chip(kw, n_devices)
    with chip:
        out_path = Path(out) if out else Path("runs") / f"endurance-{safe_name(cid)}-{stamp()}.h5"
        check_out(str(out_path), force)
        with op_logging(chip, kw, "cycle", cid, {"forming": 0, "cycling": 1}) as log:
            bar = step_bar(cycles, "cycle", kw["no_progress"])
            t0 = time.perf_counter()
            try:
                res = C.run_cycles(
                    chip,
                    n_devices,
                    cycles,
                    read_every,
                    set_level=set_level,
                    confirm=confirm,
                    min_ratio=min_ratio,
                    progress=bar.update,
                    on_cycle=lambda c: set_phase(log, 1, c) if c % read_every == 1 or read_every == 1 else None,
                )
            finally:
                bar.close()
            wall = time.perf_counter() - t0
        if int(res.failed.sum()) < 3:
            win = (
                f"last window: median HCS {res.g_hcs_median_us[-1]:.1f} uS, LCS {res.g_lcs_median_us[-1]:.1f} uS"
                if res.read_cycles.size
                else "no window read"
            )
            raise CalibrationError(
                f"only {int(res.failed.sum())} of {res.devices.size} devices failed in {cycles:,} cycles ({win}): "
                "nothing to fit, no model file written; cycle longer (--cycles)"
                + (f". Every pulse is in the op log {log.path}" if log else "")
            )
        fit = C.fit_cycles(res)
        model = C.model_from_fit(fit)
        save_endurance_model(
            model,
            out_path,
            devices=res.devices,
            failed=res.failed,
            mode=res.mode,
            lo_cycles=res.lo_cycles,
            hi_cycles=res.hi_cycles,
            read_cycles=res.read_cycles,
            g_lcs_median_us=res.g_lcs_median_us,
            g_hcs_median_us=res.g_hcs_median_us,
            fit_json=fit,
            chip_id=cid,
            backend=type(chip).__name__,
            cycles=cycles,
            read_every=read_every,
            confirm=confirm,
            split_us=res.split_us,
            oplog=str(log.path) if log else "",
            synthetic=kw["kind"] == "sim",
        )
    summary = {
        "endurance_file": str(out_path),
        "oplog": str(log.path) if log else None,
        **fit,
        "pulses": res.pulses,
        "ops_wall_s": wall,
        "chip_id": cid,
    }
    if kw["as_json"]:
        echo_json(summary)
        return
    ln, wb = fit["lognormal"], fit["weibull"]
    click.echo(
        f"cycled {fit['devices']:,} devices up to {cycles:,} cycles: {fit['failed']:,} failed "
        f"({', '.join(f'{k} {v}' for k, v in fit['modes'].items())}), {fit['censored']:,} still working"
    )
    click.echo(
        f"lognormal  median {ln['median_cycles']:.4g} cycles, log-sigma {ln['log_sigma']:.3f} "
        f"(loglik {ln['loglik']:.1f})"
    )
    click.echo(f"weibull    scale {wb['scale_cycles']:.4g} cycles, shape {wb['shape']:.3f} (loglik {wb['loglik']:.1f})")
    click.echo(f"best fit   {fit['best']}; stuck in HCS {fit['stuck_hcs_fraction']:.1%} of stuck devices")
    click.echo(f"wrote {out_path}" + (f"  (op log {log.path}, {log.rows:,} rows)" if log else ""))
