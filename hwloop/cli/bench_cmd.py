"""``hwloop emulate`` (the virtual bench) and ``hwloop chip check`` (identify and smoke-test a bench)."""

from __future__ import annotations

import click
import numpy as np

from hwloop.cli import cli
from hwloop.cli.chip_cmd import chip
from hwloop.cli.common import build_chip, cdf_option, echo_json, json_option, load_cdf_option
from hwloop.cli.types import FiniteFloat
from hwloop.errors import ConfigError


@cli.command("emulate")
@click.option("--bench", type=click.Path(exists=True, dir_okay=False), required=True,
              help="Bench file to emulate (e.g. instruments/virtual.toml): tiles, baud rate, tables, limits.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the emulated chip.")
@click.option("--no-pace", is_flag=True, help="Do not pace the pty at the baud rate (as fast as possible).")
@click.option("--drop-rate", type=FiniteFloat(0, 1), default=0.0, show_default=True,
              help="Probability that a request frame is lost before the board.")
@click.option("--drop-answer-rate", type=FiniteFloat(0, 1), default=0.0, show_default=True,
              help="Probability that an answer frame is lost after the board executed the request.")
@click.option("--garble-rate", type=FiniteFloat(0, 1), default=0.0, show_default=True,
              help="Probability that an answer frame arrives with a flipped bit (bad CRC).")
@click.option("--garble-request-rate", type=FiniteFloat(0, 1), default=0.0, show_default=True,
              help="Probability that a request frame arrives corrupted (the board NAKs it).")
@click.option("--delay-ms", type=FiniteFloat(min=0), default=0.0, show_default=True,
              help="Extra latency before every board answer.")
@click.option("--smu-error-rate", type=FiniteFloat(0, 1), default=0.0, show_default=True,
              help="Probability that an SMU command leaves an error in its error queue.")
@click.option("--disconnect-after", type=click.IntRange(min=0), default=0, show_default=True,
              help="Close the FPGA link after this many frames (0: never).")
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="Directory for the generated bench file (default: a new temporary directory).")
@click.option("--ideal", is_flag=True,
              help="Emulate an ideal chip: no read noise, perfect forming, no wear-out (CDF spread stays).")
@cdf_option
def emulate(bench: str, seed: int, no_pace: bool, drop_rate: float, drop_answer_rate: float,
            garble_rate: float, garble_request_rate: float, delay_ms: float, smu_error_rate: float,
            disconnect_after: int, workdir: str | None, ideal: bool, cdf: str | None) -> None:
    """Start the virtual bench: an emulated FPGA board on a pty and an emulated Keithley 2636B on a loopback
    TCP socket, both backed by a simulated chip. Prints ONE JSON line; its `bench` field is a bench file
    that points at the emulated instruments (use it with `--chip real --bench FILE`). Runs until Ctrl-C or
    SIGTERM.
    """
    from hwloop.chip.sim import SimConfig
    from hwloop.emulator.faults import Faults
    from hwloop.emulator.run import run_forever

    faults = Faults(drop_rate=drop_rate, drop_answer_rate=drop_answer_rate, garble_rate=garble_rate,
                    garble_request_rate=garble_request_rate, delay_s=delay_ms / 1e3,
                    smu_error_rate=smu_error_rate, disconnect_after=disconnect_after, seed=seed)
    run_forever(bench, seed=seed, faults=faults, pace=not no_pace, workdir=workdir,
                sim_config=SimConfig.ideal() if ideal else None, table=load_cdf_option(cdf))


@chip.command("check")
@click.option("--chip", "kind", type=click.Choice(["real"]), default="real", show_default=True,
              help="Backend to check (the real bench, or the virtual bench through its bench file).")
@click.option("--bench", type=click.Path(dir_okay=False), required=True, help="Bench file.")
@click.option("--cells", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Number of cells of tile 0, row 0 to smoke-test.")
@click.option("--level", type=click.IntRange(min=1), default=None,
              help="SET level for the test (default: the top HCS level).")
@cdf_option
@json_option
def chip_check(kind: str, bench: str, cells: int, level: int | None, cdf: str | None, as_json: bool) -> None:
    """Identify the instruments and run FORM / SET / RESET / READ on a few cells, printing a table.

    The cells are (tile 0, row 0, col 0..CELLS-1). Reads come from the board's ADCs; the last column is
    the same cell measured slowly through the SMU after the SET.
    """
    table = load_cdf_option(cdf)
    level = table.n_hcs if level is None else level
    if level > table.n_hcs:
        raise ConfigError(f"--level must be 1..{table.n_hcs}")
    with build_chip(kind, n_tiles=1, table=table, bench=bench) as c:
        info = c.info()
        cols = np.arange(cells)
        zeros = np.zeros(cells, dtype=np.int64)
        formed = c.form(zeros, zeros, cols)
        idx = c.flat(zeros, zeros, cols)[formed]
        g_form = c.read_idx(c.flat(zeros, zeros, cols))
        g_set = np.full(cells, np.nan, dtype=np.float32)
        g_smu = np.full(cells, np.nan, dtype=np.float32)
        g_reset = np.full(cells, np.nan, dtype=np.float32)
        if idx.size:
            c.set_idx(idx, level=level)
            g_set[formed] = c.read_idx(idx)
            g_smu[formed] = c.read_smu(idx)  # type: ignore[attr-defined]
            c.reset_idx(idx)
            g_reset[formed] = c.read_idx(idx)
    rows = [{"col": int(k), "formed": bool(formed[k]), "g_form_us": float(g_form[k]),
             "g_set_us": float(g_set[k]), "g_set_smu_us": float(g_smu[k]), "g_reset_us": float(g_reset[k])}
            for k in range(cells)]
    if as_json:
        echo_json({"board": info["bench"]["board"], "smu": info["bench"]["smu"], "level": level,
                   "expected_median_us": {"set": float(table.medians_us[level]),
                                          "reset": float(table.medians_us[0])},
                   "cells": rows})
        return
    click.echo(f"bench   {info['bench']['name']}  ({bench})")
    click.echo(f"board   {info['bench']['board']}")
    click.echo(f"smu     {info['bench']['smu']}")
    click.echo(f"test    FORM, SET level {level} (table median {table.medians_us[level]:.1f} uS), "
               f"RESET (LCS median {table.medians_us[0]:.1f} uS) on tile 0, row 0, cols 0..{cells - 1}")
    click.echo("")
    click.echo(f"{'cell':<10} {'formed':<6} {'G form':>8} {'G set':>8} {'G set SMU':>10} "
               f"{'G reset':>8}   (uS)")
    for r in rows:
        click.echo(f"(0,0,{r['col']:<3}) {'yes' if r['formed'] else 'NO':<6} {r['g_form_us']:>8.2f} "
                   f"{r['g_set_us']:>8.2f} {r['g_set_smu_us']:>10.2f} {r['g_reset_us']:>8.2f}")
    n_ok = int(formed.sum())
    click.echo("")
    click.echo(f"{n_ok}/{cells} cells formed; set/reset/read went through without an instrument error")
