"""``hwloop emulate`` (the virtual bench; defined in ``hwloop.emulator.command``) and ``hwloop chip check``."""

from __future__ import annotations

import click
import numpy as np

from hwloop.chip.factory import load_table_option, open_chip
from hwloop.cli import cli
from hwloop.cli.chip_cmd import chip
from hwloop.cli.common import cdf_option, echo_json, json_option
from hwloop.emulator.command import emulate
from hwloop.errors import ConfigError

cli.add_command(emulate)


@chip.command("check")
@click.option(
    "--chip",
    "kind",
    type=click.Choice(["real"]),
    default="real",
    show_default=True,
    help="Backend to check (the real bench, or the virtual bench through its bench file).",
)
@click.option("--bench", type=click.Path(dir_okay=False), required=True, help="Bench file.")
@click.option(
    "--cells",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Number of cells of tile 0, row 0 to smoke-test.",
)
@click.option(
    "--level", type=click.IntRange(min=1), default=None, help="SET level for the test (default: the top HCS level)."
)
@cdf_option
@json_option
def chip_check(kind: str, bench: str, cells: int, level: int | None, cdf: str | None, as_json: bool) -> None:
    """Identify the instruments and run FORM / SET / RESET / READ on a few cells, printing a table.

    The cells are (tile 0, row 0, col 0..CELLS-1). Reads come from the board's ADCs; the last column is
    the same cell measured slowly through the SMU after the SET.
    """
    table = load_table_option(cdf)
    level = table.n_hcs if level is None else level
    if level > table.n_hcs:
        raise ConfigError(f"--level must be 1..{table.n_hcs}")
    with open_chip(kind, n_tiles=1, table=table, bench=bench) as c:
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
    rows = [
        {
            "col": int(k),
            "formed": bool(formed[k]),
            "g_form_us": float(g_form[k]),
            "g_set_us": float(g_set[k]),
            "g_set_smu_us": float(g_smu[k]),
            "g_reset_us": float(g_reset[k]),
        }
        for k in range(cells)
    ]
    if as_json:
        echo_json(
            {
                "board": info["bench"]["board"],
                "smu": info["bench"]["smu"],
                "level": level,
                "expected_median_us": {"set": float(table.medians_us[level]), "reset": float(table.medians_us[0])},
                "cells": rows,
            }
        )
        return
    click.echo(f"bench   {info['bench']['name']}  ({bench})")
    click.echo(f"board   {info['bench']['board']}")
    click.echo(f"smu     {info['bench']['smu']}")
    click.echo(
        f"test    FORM, SET level {level} (table median {table.medians_us[level]:.1f} uS), "
        f"RESET (LCS median {table.medians_us[0]:.1f} uS) on tile 0, row 0, cols 0..{cells - 1}"
    )
    click.echo("")
    click.echo(f"{'cell':<10} {'formed':<6} {'G form':>8} {'G set':>8} {'G set SMU':>10} {'G reset':>8}   (uS)")
    for r in rows:
        click.echo(
            f"(0,0,{r['col']:<3}) {'yes' if r['formed'] else 'NO':<6} {r['g_form_us']:>8.2f} "
            f"{r['g_set_us']:>8.2f} {r['g_set_smu_us']:>10.2f} {r['g_reset_us']:>8.2f}"
        )
    n_ok = int(formed.sum())
    click.echo("")
    click.echo(f"{n_ok}/{cells} cells formed; set/reset/read went through without an instrument error")
