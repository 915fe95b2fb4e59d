"""``hwloop chip``: inspect a chip backend (geometry, level table, provenance)."""

from __future__ import annotations

import click

from hwloop.chip.factory import CHIP_KINDS, load_table_option, open_chip
from hwloop.cli import cli
from hwloop.cli.common import cdf_option, echo_json, json_option


@cli.group()
def chip() -> None:
    """Inspect and check chip backends."""


@chip.command("info")
@click.option(
    "--chip",
    "kind",
    type=click.Choice(list(CHIP_KINDS)),
    default="sim",
    show_default=True,
    help="Backend: the simulated chip, or the real bench.",
)
@click.option(
    "--tiles",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Number of 128x128 tiles of the simulated chip.",
)
@click.option("--bench", type=click.Path(dir_okay=False), default=None, help="Bench file for --chip real.")
@cdf_option
@json_option
def chip_info(kind: str, tiles: int, bench: str | None, cdf: str | None, as_json: bool) -> None:
    """Print geometry, the level table (I_CC, median and sigma per level) and where it came from."""
    table = load_table_option(cdf)
    with open_chip(kind, n_tiles=tiles, table=table, bench=bench) as c:
        info = c.info()
    if as_json:
        echo_json(info)
        return
    click.echo(f"backend   {info['backend']}")
    click.echo(
        f"geometry  {info['tiles']} tile(s) of {info['rows']}x{info['cols']} 1T1R cells = {info['devices']:,} devices"
    )
    meta = info["table"]
    click.echo(f"table     {meta['source_path'] or '(in memory)'}")
    if meta["chip_id"]:
        click.echo(f"chip id   {meta['chip_id']}")
    click.echo(f"read at   {meta['read_voltage_v']} V")
    if meta["synthetic"]:
        click.echo("NOTE      synthetic table: not measured on a chip")
    click.echo("")
    click.echo(f"{'level':<6} {'kind':<4} {'V_gate (V)':>10} {'I_CC (uA)':>10} {'median (uS)':>12} {'sigma (uS)':>11}")
    for lv in info["levels"]:
        icc = f"{lv['icc_ua']:.1f}" if lv["kind"] == "HCS" else "-"
        click.echo(
            f"{lv['name']:<6} {lv['kind']:<4} {lv['v_gate']:>10.3f} {icc:>10} "
            f"{lv['median_us']:>12.2f} {lv['sigma_us']:>11.2f}"
        )
    click.echo("")
    click.echo(f"provenance: {meta['provenance']}")
