"""Options and builders shared by several commands (chip selection, CDF tables, output)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from hwloop.chip.base import Chip
from hwloop.chip.cdf import CdfTable, load_table
from hwloop.errors import ConfigError
from hwloop.jsonutil import json_default

CHIP_CHOICES = ("sim", "real")


def load_cdf_option(path: str | None) -> CdfTable:
    """The table named by ``--cdf``/``--calibration`` (a CDF table or a calibration file), else the default."""
    if path is None:
        from hwloop.chip.default_table import default_table

        return default_table()
    return load_table(path)


def cdf_option(f: Callable) -> Callable:
    return click.option(
        "--cdf", "cdf", type=click.Path(dir_okay=False), default=None,
        help="Conductance CDF table for the simulated chip: your own table (.h5/.csv) or a calibration "
        "file. Default: the built-in synthetic HfOx table.",
    )(f)


def seed_option(f: Callable) -> Callable:
    return click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")(f)


def json_option(f: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print a machine-readable JSON summary.")(f)


def build_chip(kind: str, *, n_tiles: int, table: CdfTable, seed: int = 0, bench: str | None = None) -> Chip:
    """A chip backend by name: ``sim`` (SimChip) or ``real`` (RealChip over the bench file)."""
    if kind == "sim":
        from hwloop.chip.sim import SimChip

        return SimChip(n_tiles=n_tiles, table=table, seed=seed)
    if kind == "real":
        if not bench:
            raise ConfigError("--chip real needs --bench FILE (a bench configuration, e.g. instruments/virtual.toml)")
        from hwloop.chip.real import RealChip

        return RealChip.from_bench_file(bench, table=table)
    raise ConfigError(f"unknown chip backend {kind!r}; choose one of {', '.join(CHIP_CHOICES)}")


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, default=json_default))
