"""The grid of a sweep: its axes, the parsing of axis values, and the name of each point."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from hwloop.errors import ConfigError
from hwloop.intlist import parse_int_list

#: grid axes (TrainConfig fields), in the order they vary (the last varies fastest), and their name prefix
AXES: tuple[str, ...] = ("m_star", "hidden", "lr", "seed")
AXIS_PREFIX = {"m_star": "m", "hidden": "h", "lr": "lr", "seed": "s"}
#: axes every sweep has (``lr`` is an axis only when the sweep was created with several values)
REQUIRED_AXES: tuple[str, ...] = ("m_star", "hidden", "seed")


# ---------------------------------------------------------------------------- parsing grid values
def parse_seeds(spec: str | int | Sequence[int]) -> list[int]:
    """Seeds as every integer list in hwloop (:mod:`hwloop.intlist`): ``"5"`` → seed 5; ``"0,3,7"``; ``"0-4"``."""
    return parse_int_list(spec, "--seeds")


def parse_list(spec: str | float | Sequence[float], kind: type, option: str) -> list:
    """A comma-separated list of numbers (``"0,1,2.5"``) into a list of ``kind``."""
    if isinstance(spec, (int, float)):
        vals = [kind(spec)]
    elif isinstance(spec, str):
        try:
            vals = [kind(p) if kind is float else int(p) for p in spec.split(",") if p.strip()]
        except ValueError as exc:
            raise ConfigError(f"{option} {spec!r}: give a comma-separated list of numbers, e.g. 0,1,2") from exc
    else:
        vals = [kind(v) for v in spec]
    if not vals:
        raise ConfigError(f"{option} {spec!r} gives no value")
    if not all(math.isfinite(v) for v in vals):
        raise ConfigError(f"{option} {spec!r}: every value must be a finite number (no nan or inf)")
    return unique(vals, option)


def unique(vals: list, option: str) -> list:
    """``vals``, or ``ConfigError`` naming ``option`` if a value is given twice."""
    dup = sorted({v for v in vals if vals.count(v) > 1})
    if dup:
        raise ConfigError(f"{option}: value(s) {', '.join(map(str, dup))} given twice")
    return vals


def format_value(v: Any) -> str:
    """An axis value as in point names and tables: floats with ``:g`` (``0.0005``, ``3``)."""
    return f"{v:g}" if isinstance(v, float) else str(v)


def point_name(params: dict[str, Any]) -> str:
    """Deterministic name of a point from its axis values, e.g. ``m3-h512-s0`` (``m3-h512-lr0.0005-s0``)."""
    return "-".join(f"{AXIS_PREFIX[a]}{format_value(params[a])}" for a in AXES if a in params)


def normalise_grid(grid: dict[str, Sequence]) -> dict[str, list]:
    """A grid checked (known axes, required axes present, no empty axis, no repeat) in ``AXES`` order."""
    unknown = sorted(set(grid) - set(AXES))
    if unknown:
        raise ConfigError(f"unknown sweep axis {', '.join(unknown)}; axes are {', '.join(AXES)}")
    missing = [a for a in REQUIRED_AXES if a not in grid]
    if missing:
        raise ConfigError(f"the sweep grid lacks the axis {', '.join(missing)}")
    kinds = {"m_star": float, "hidden": int, "lr": float, "seed": int}
    out = {}
    for a in AXES:
        if a in grid:
            vals = [kinds[a](v) for v in grid[a]]
            if not vals:
                raise ConfigError(f"the sweep axis {a} has no value")
            out[a] = unique(vals, a)
    return out
