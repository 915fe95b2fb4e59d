"""``hwloop retention``: program levels, read them back on a schedule, fit the relaxation model.
Formats: docs/characterise.md."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from hwloop.calibration.session import safe_name
from hwloop.chip.factory import load_table_option
from hwloop.cli import cli
from hwloop.cli.characterise_common import (
    check_finite,
    check_out,
    chip_options,
    op_logging,
    open_shared_chip,
    set_phase,
    stamp,
    step_bar,
)
from hwloop.cli.common import echo_json


@cli.command("retention")
@chip_options
@click.option("--levels", default="all", show_default=True, help="Levels to measure: all, or indices like 0,1,8.")
@click.option(
    "--devices",
    "n_devices",
    type=click.IntRange(2, 1 << 20),
    default=500,
    show_default=True,
    help="Devices programmed per level.",
)
@click.option(
    "--duration",
    "duration_s",
    type=float,
    default=1000.0,
    show_default=True,
    help="Last read time after programming (s; chip time on the sim chip, wall time on a bench).",
)
@click.option(
    "--t-first",
    "t_first_s",
    type=float,
    default=0.1,
    show_default=True,
    help="First scheduled read time (s). A reference read is taken right after programming too.",
)
@click.option(
    "--schedule",
    default="log:20",
    show_default=True,
    help="Read schedule: log:K = K read times evenly spaced in log t from --t-first to --duration.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Retention file. Default: runs/retention-<chip-id>-<UTC time>.h5",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Figure of median and sigma vs log t per level (png/pdf/svg). Default: next to --out.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing --out.")
def retention_cmd(
    levels: str,
    n_devices: int,
    duration_s: float,
    t_first_s: float,
    schedule: str,
    out: str | None,
    plot_path: str | None,
    force: bool,
    **kw: Any,
) -> None:
    """Retention: program a population per level, read it back on a logarithmic schedule, fit relaxation.

    Per level it fits g(t) = g(0) + (drift + sigma z)(1 - exp(-t/tau)) and writes the retention file
    (docs/characterise.md), which `--retention FILE` replays on the simulated chip.

    \b
    hwloop retention --chip sim --relax-rel 0.05 --levels all --devices 500 --duration 1000 --schedule log:20
    hwloop retention --chip real --bench BENCH.toml --calibration cal.h5 --duration 3600 --schedule log:12
    """
    from hwloop.characterise import retention as R

    check_finite("duration", duration_s)
    check_finite("t-first", t_first_s)
    times = R.parse_schedule(schedule, duration_s, t_first_s)
    check_out(out, force)
    table = load_table_option(kw["cdf"])
    lv = R.parse_levels(levels, table.n_levels)
    chip, cid = open_shared_chip(kw, n_devices * lv.size)
    with chip:
        out_path = Path(out) if out else Path("runs") / f"retention-{safe_name(cid)}-{stamp()}.h5"
        check_out(str(out_path), force)
        with op_logging(chip, kw, "retention", cid, {"forming": 0, "program": 1, "read": 2}) as log:
            bar = step_bar(times.size + 1, "retention", kw["no_progress"])
            t0 = time.perf_counter()
            try:
                data = R.measure(
                    chip,
                    lv,
                    n_devices,
                    times,
                    progress=bar.update,
                    on_phase=lambda j: set_phase(log, 1 if j == 0 else 2, j - 1),
                )
            finally:
                bar.close()
            wall = time.perf_counter() - t0
        fit = R.fit(data)
        R.write(
            data,
            out_path,
            chip_id=cid,
            backend=type(chip).__name__,
            schedule=schedule,
            duration_s=duration_s,
            calibration=str(kw["cdf"] or ""),
            oplog=str(log.path) if log else "",
            synthetic=kw["kind"] == "sim",
        )
        fig = R.plot(data, plot_path or out_path.with_suffix(".png"))
    rows = [{k: (float(r[k]) if k != "level" else int(r[k])) for k in fit.dtype.names} for r in fit]
    summary = {
        "retention_file": str(out_path),
        "plot": str(fig),
        "oplog": str(log.path) if log else None,
        "times_s": data.times_s.tolist(),
        "fit": rows,
        "ops_wall_s": wall - data.wait_s,
        "wait_s": data.wait_s,
        "chip_id": cid,
    }
    if kw["as_json"]:
        echo_json(summary)
        return
    click.echo(f"retention of {lv.size} level(s) x {n_devices} devices, {times.size} reads to {duration_s:g} s")
    click.echo(f"{'level':>5} {'median0 (uS)':>12} {'drift (uS)':>10} {'sigma (uS)':>10} {'tau (s)':>9}")
    for r in rows:
        click.echo(
            f"{r['level']:>5} {r['median0_us']:>12.2f} {r['drift_us']:>10.3f} {r['sigma_us']:>10.3f} {r['tau_s']:>9.3g}"
        )
    click.echo(f"wrote {out_path} and {fig}" + (f"  (op log {log.path}, {log.rows:,} rows)" if log else ""))
