"""Options shared by several commands (CDF table, seed, JSON output); chips come from ``hwloop.chip.factory``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from hwloop.chip.factory import CHIP_KINDS
from hwloop.jsonutil import json_default


def cdf_option(f: Callable) -> Callable:
    return click.option(
        "--cdf",
        "cdf",
        type=click.Path(dir_okay=False),
        default=None,
        help="Conductance CDF table for the simulated chip: your own table (.h5/.csv) or a calibration "
        "file. Default: the built-in synthetic HfOx table.",
    )(f)


def chip_kind_option(f: Callable) -> Callable:
    """``--chip sim|real`` (``hwloop.chip.factory.CHIP_KINDS``), the parameter ``kind``."""
    return click.option(
        "--chip",
        "kind",
        type=click.Choice(CHIP_KINDS),
        default="sim",
        show_default=True,
        help="Backend: the simulated chip, or the real bench (--bench; the virtual bench too).",
    )(f)


def bench_option(f: Callable) -> Callable:
    return click.option(
        "--bench",
        type=click.Path(dir_okay=False),
        default=None,
        help="Bench configuration for --chip real (e.g. instruments/virtual.toml, or the file `hwloop emulate` "
        "prints).",
    )(f)


def seed_option(f: Callable) -> Callable:
    return click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")(f)


def json_option(f: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print a machine-readable JSON summary.")(f)


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, default=json_default))
