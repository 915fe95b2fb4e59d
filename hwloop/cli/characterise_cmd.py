"""Characterisation commands: ``hwloop verify``, ``hwloop retention``, ``hwloop cycle``, ``hwloop estimate``.

Each runs over the ``Chip`` interface (``--chip sim`` or ``--chip real --bench FILE``, the virtual bench
included), writes an HDF5 op log of every pulse (the calibration op-log format), shows a progress bar on
stderr and refuses bad input with one line and exit code 2. File formats: docs/characterise.md.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
import numpy as np

from hwloop.calibration.session import safe_name
from hwloop.chip.base import CELLS_PER_TILE, Chip
from hwloop.chip.factory import load_table_option, open_chip
from hwloop.chip.verify import WINDOW_MODES
from hwloop.cli import cli
from hwloop.cli.common import bench_option, chip_kind_option, echo_json
from hwloop.errors import CalibrationError, ConfigError


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def chip_options(f: Callable) -> Callable:
    opts = [
        chip_kind_option,
        bench_option,
        click.option(
            "--cdf",
            "--calibration",
            "cdf",
            type=click.Path(dir_okay=False),
            default=None,
            help="Calibration file or CDF table: the levels (gate voltages, windows) and, for --chip sim, "
            "the simulated devices. Default: the built-in synthetic table.",
        ),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the simulated chip."),
        click.option(
            "--retention",
            "retention_model",
            type=click.Path(dir_okay=False),
            default=None,
            help="--chip sim: replay this retention model (a file from `hwloop retention`).",
        ),
        click.option(
            "--endurance-model",
            type=click.Path(dir_okay=False),
            default=None,
            help="--chip sim: draw device budgets from this endurance model (a file from `hwloop cycle`).",
        ),
        click.option(
            "--relax-rel",
            type=click.FloatRange(0, 1),
            default=0.0,
            show_default=True,
            help="--chip sim: built-in relaxation strength (relative; 0 = none).",
        ),
        click.option(
            "--relax-tau-s",
            type=click.FloatRange(0, None, min_open=True),
            default=10.0,
            show_default=True,
            help="--chip sim: built-in relaxation time constant (s of chip time).",
        ),
        click.option(
            "--chip-id",
            default=None,
            help="Chip identifier stored in the files (default: sim-seed<N> or the bench name).",
        ),
        click.option(
            "--log",
            "log_path",
            type=click.Path(dir_okay=False),
            default=None,
            help="HDF5 op log of every pulse. Default: runs/<command>-<chip-id>-<UTC time>-ops.h5",
        ),
        click.option("--no-log", is_flag=True, help="Do not write the op log."),
        click.option("--no-progress", is_flag=True, help="Hide the progress bar (stderr)."),
        click.option("--json", "as_json", is_flag=True, help="Print a machine-readable JSON summary."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _finite(name: str, v: float) -> None:
    if not math.isfinite(v):
        raise ConfigError(f"--{name} must be a finite number, got {v}")


def open_shared_chip(kw: dict[str, Any], n_devices: int) -> tuple[Chip, str]:
    """The chip named by the shared options (``hwloop.chip.factory.open_chip``), and its id."""
    from hwloop.chip.models import load_sim_models
    from hwloop.chip.sim import SimConfig

    kind, seed = kw["kind"], kw["seed"]
    table = load_table_option(kw["cdf"])
    sim_only = {
        "--retention": kw["retention_model"],
        "--endurance-model": kw["endurance_model"],
        "--relax-rel": kw["relax_rel"] or None,
    }
    given = [k for k, v in sim_only.items() if v]
    if kind == "real" and given:
        raise ConfigError(f"{', '.join(given)} set the simulated chip's models; they cannot be used with --chip real")
    n_tiles = max(1, -(-n_devices // CELLS_PER_TILE))
    if kind == "sim" and n_tiles > 64:
        raise ConfigError(f"{n_devices} devices need {n_tiles} tiles; give at most {64 * CELLS_PER_TILE:,} devices")
    chip = open_chip(
        kind,
        n_tiles=n_tiles,
        table=table,
        seed=seed,
        bench=kw["bench"],
        sim_models=load_sim_models(kw["retention_model"], kw["endurance_model"]),
        sim_config=SimConfig.default().with_(relax_rel=kw["relax_rel"], relax_tau_s=kw["relax_tau_s"]),
    )
    if n_devices > chip.n_devices:
        chip.close()
        raise ConfigError(
            f"{n_devices} devices do not fit on the bench's {chip.n_devices} devices: give fewer --devices"
        )
    default_id = f"sim-seed{seed}" if kind == "sim" else (chip.describe()["chip_id"] or "real")
    return chip, kw["chip_id"] or default_id


@contextmanager
def op_logging(chip: Chip, kw: dict[str, Any], command: str, cid: str, phases: dict[str, int]) -> Iterator[Any]:
    """An op log on the chip's listeners for the duration (None with --no-log); closed on any exit."""
    from hwloop.calibration import OpLog

    if kw["no_log"]:
        yield None
        return
    lp = Path(kw["log_path"]) if kw["log_path"] else Path("runs") / f"{command}-{safe_name(cid)}-{_stamp()}-ops.h5"
    log = OpLog(
        lp,
        chip_id=cid,
        backend=type(chip).__name__,
        calibration_file=str(kw["cdf"] or ""),
        phases=phases,
        command=command,
    )
    log.level_v_gate = chip.table.v_gate.astype(np.float64)
    chip.add_listener(log.listener)
    log.start_clock(time.perf_counter())
    try:
        yield log
    finally:
        chip.remove_listener(log.listener)
        log.close()


def _bar(total: int, desc: str, disable: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, disable=disable, leave=False)


def _check_out(out: str | None, force: bool) -> None:
    if out and Path(out).exists() and not force:
        raise CalibrationError(f"{out} exists; give another --out or --force to overwrite it")


def _set_phase(log: Any, phase: int, condition: int = -1, attempt: int = 0) -> None:
    if log is None:
        return
    log.flush()
    log.phase, log.condition, log.attempt = phase, int(min(condition, 32767)), int(min(attempt, 255))


# ---------------------------------------------------------------------------------------------- verify
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

    _finite("tolerance", tolerance)
    chip, cid = open_shared_chip(kw, n_devices * 9)
    with chip:
        lv = parse_levels(levels, chip.table.n_levels)
        lo, hi = level_windows(chip.table, window, tolerance)
        with op_logging(chip, kw, "verify", cid, {"forming": 0, "program": 1}) as log:
            _set_phase(log, 0)
            t0 = time.perf_counter()  # forming included: the op log (and so an estimate) holds it too
            dev = form_population(chip, n_devices * lv.size)
            target = np.repeat(lv, n_devices)
            bar = _bar(max_pulses, "verify", kw["no_progress"])
            try:
                res = program_verify(
                    chip,
                    dev,
                    target,
                    lo,
                    hi,
                    max_pulses=max_pulses,
                    ispp_step_v=ispp_step_v,
                    on_attempt=lambda a: (_set_phase(log, 1, -1, a), bar.update(1)),
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


# ---------------------------------------------------------------------------------------------- retention
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

    _finite("duration", duration_s)
    _finite("t-first", t_first_s)
    times = R.parse_schedule(schedule, duration_s, t_first_s)
    _check_out(out, force)
    table = load_table_option(kw["cdf"])
    lv = R.parse_levels(levels, table.n_levels)
    chip, cid = open_shared_chip(kw, n_devices * lv.size)
    with chip:
        out_path = Path(out) if out else Path("runs") / f"retention-{safe_name(cid)}-{_stamp()}.h5"
        _check_out(str(out_path), force)
        with op_logging(chip, kw, "retention", cid, {"forming": 0, "program": 1, "read": 2}) as log:
            bar = _bar(times.size + 1, "retention", kw["no_progress"])
            t0 = time.perf_counter()
            try:
                data = R.measure(
                    chip,
                    lv,
                    n_devices,
                    times,
                    progress=bar.update,
                    on_phase=lambda j: _set_phase(log, 1 if j == 0 else 2, j - 1),
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


# ---------------------------------------------------------------------------------------------- cycle
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

    _check_out(out, force)
    chip, cid = open_shared_chip(kw, n_devices)
    with chip:
        out_path = Path(out) if out else Path("runs") / f"endurance-{safe_name(cid)}-{_stamp()}.h5"
        _check_out(str(out_path), force)
        with op_logging(chip, kw, "cycle", cid, {"forming": 0, "cycling": 1}) as log:
            bar = _bar(cycles, "cycle", kw["no_progress"])
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
                    on_cycle=lambda c: _set_phase(log, 1, c) if c % read_every == 1 or read_every == 1 else None,
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


# ---------------------------------------------------------------------------------------------- estimate
@cli.command("estimate")
@click.argument("plan", type=click.Path(dir_okay=False), required=False)
@click.option(
    "--bench",
    type=click.Path(dir_okay=False),
    required=True,
    help="Bench file whose pulse widths, link rate and batch size the estimate uses.",
)
@click.option(
    "--cdf",
    "--calibration",
    "cdf",
    type=click.Path(dir_okay=False),
    default=None,
    help="Calibration or CDF table for I_CC and conductances (default: the built-in table).",
)
@click.option(
    "--calibration-sweep",
    is_flag=True,
    help="Estimate a calibration sweep with the default `hwloop calibrate` options (PLAN not needed).",
)
@click.option(
    "--train-config",
    type=click.Path(dir_okay=False),
    default=None,
    help="Estimate a training run from a JSON file of `hwloop train` options (TrainConfig fields).",
)
@click.option(
    "--programs-per-step",
    type=click.FloatRange(0, None),
    default=500.0,
    show_default=True,
    help="With --train-config: device programs per training step (take it from an earlier run).",
)
@click.option(
    "--frame-overhead-ms",
    type=click.FloatRange(0, 1000),
    default=3.0,
    show_default=True,
    help="Host turnaround per link frame (ms; 3 measured on the virtual bench); not in the bench file.",
)
@click.option(
    "--form-steps",
    type=float,
    default=float("nan"),
    help="Mean forming-ramp steps a device needs (default: half the bench's ramp).",
)
@click.option(
    "--settle-ns",
    type=click.FloatRange(0, 1e6),
    default=200.0,
    show_default=True,
    help="Board settling time per batch entry (ns).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the estimate as JSON.")
def estimate_cmd(
    plan: str | None,
    bench: str,
    cdf: str | None,
    calibration_sweep: bool,
    train_config: str | None,
    programs_per_step: float,
    frame_overhead_ms: float,
    settle_ns: float,
    form_steps: float,
    as_json: bool,
) -> None:
    """Predict bench time and programming energy of a plan before running it.

    PLAN is an op log (calibrate, retention, cycle, verify) or a run log (train): the estimate replays its
    array calls on --bench. Or give --calibration-sweep or --train-config. The model is in
    docs/characterise.md.

    \b
    hwloop estimate runs/cycle-sim-seed0-...-ops.h5 --bench instruments/virtual.toml
    hwloop estimate --calibration-sweep --bench instruments/example-keithley2636b.toml
    """
    from hwloop.characterise import estimate as E
    from hwloop.instruments.bench import load_bench

    chosen = sum(bool(x) for x in (plan, calibration_sweep, train_config))
    if chosen != 1:
        raise ConfigError("give exactly one plan: an op log / run log (PLAN), --calibration-sweep or --train-config")
    b = load_bench(bench)
    table = load_table_option(cdf)
    v_set = None
    if plan:
        if not Path(plan).is_file():
            raise ConfigError(f"plan {plan} does not exist")
        p = E.plan_from_log(plan, table)
    elif calibration_sweep:
        from hwloop.calibration.procedure import CalibrationConfig

        cc = CalibrationConfig.default()
        p, v_set = E.plan_calibration(cc, len(b.form_conditions()))
    else:
        p = _train_plan(str(train_config), programs_per_step)
    est = E.estimate(p, b, table, E.Timing(frame_overhead_ms * 1e-3, settle_ns, form_steps), set_v_gates=v_set)
    if as_json:
        echo_json(est)
        return
    click.echo(f"plan    {est['source']} ({est['array_calls']:,} array calls, {est['frames']:,} frames)")
    click.echo("ops     " + "  ".join(f"{k} {v:,}" for k, v in est["ops"].items()))
    tp = est["time_parts_s"]
    click.echo(
        f"time    {est['time_s']:.3f} s on {est['bench']} (frames {tp['frame_overhead']:.3f} s, link "
        f"{tp['link']:.3f} s, pulses/reads {tp['pulses_and_reads']:.3f} s)"
    )
    click.echo(
        f"energy  {est['energy_j']:.3e} J (" + ", ".join(f"{k} {v:.2e}" for k, v in est["energy_by_op_j"].items()) + ")"
    )
    if est["assumptions"]["note"]:
        click.echo(f"note    {est['assumptions']['note']}")


def _train_plan(path: str, programs_per_step: float) -> Any:
    import json

    from hwloop.characterise import estimate as E
    from hwloop.crossbar import CrossbarMap
    from hwloop.training.config import TrainConfig

    try:
        d = json.loads(Path(path).read_text())
        cfg = TrainConfig(**{k: v for k, v in d.items() if k in TrainConfig.__dataclass_fields__})
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"--train-config {path}: not a JSON object of `hwloop train` options ({exc})") from exc
    cfg.validate()
    n_tasks = len([t for t in cfg.tasks.split(",") if t.strip()])
    h = cfg.hidden
    cmap = CrossbarMap([("fc1", (h, 784)), ("fc2", (h, h)), ("fc3", (10, h))])
    samples = cfg.train_samples or 60000
    steps = n_tasks * cfg.epochs_per_task * (samples // cfg.batch_size)
    return E.plan_training(cmap.n_devices_used, steps, n_tasks * cfg.epochs_per_task, programs_per_step)
