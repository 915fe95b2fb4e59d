"""Planning a sweep: the manifest for a new folder, or an existing folder's merged with a new request."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from hwloop import __version__
from hwloop.errors import ConfigError
from hwloop.sweep.grid import REQUIRED_AXES, format_value, normalise_grid, point_name
from hwloop.sweep.manifest import FREE_BASE, MANIFEST_NAME, NOT_BASE, Manifest, PointRecord, load_manifest, utc_now
from hwloop.training.config import TrainConfig, describe_difference


def default_base(axes: Sequence[str] = REQUIRED_AXES) -> dict[str, Any]:
    """The base configuration of a sweep over ``axes`` with every TrainConfig default."""
    return {k: v for k, v in asdict(TrainConfig()).items() if k not in NOT_BASE and k not in axes}


def _normalise_base(base: dict[str, Any], axes: Sequence[str]) -> dict[str, Any]:
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(base) - known)
    if unknown:
        raise ConfigError(f"unknown training option(s) in the sweep base: {', '.join(unknown)}")
    out = default_base(axes)
    out.update({k: v for k, v in base.items() if k not in NOT_BASE and k not in axes})
    for k in ("calibration", "bench", "data_dir"):  # workers (Ray) may run in another folder
        if out.get(k):
            out[k] = str(Path(out[k]).expanduser().resolve())
    return out


def _point_config(base: dict, params: dict) -> dict:
    return {**base, **params}


def build_points(sweep_dir: Path, grid: dict[str, list], base: dict) -> list[PointRecord]:
    pts = []
    names: dict[str, dict] = {}
    for combo in itertools.product(*grid.values()):
        params = dict(zip(grid, combo, strict=True))
        name = point_name(params)
        if name in names:
            raise ConfigError(f"grid values {names[name]} and {params} give the same point name {name!r}")
        names[name] = params
        cfg = _point_config(base, params)
        TrainConfig(**cfg).validate()
        pts.append(PointRecord(name=name, log=f"{name}.h5", params=params, config=cfg))
    return pts


def plan(
    sweep_dir: str | Path,
    grid: dict[str, Sequence] | None = None,
    base: dict[str, Any] | None = None,
    explicit: set[str] | None = None,
) -> Manifest:
    """The manifest for a sweep: a new one, or the folder's existing one merged with the request.

    ``grid``/``base`` may be None for an existing folder (continue it as it is). For an existing folder the
    rules are: the axes must be the same; each axis may gain values (the grid grows; points already there
    keep their names, logs and results), but may not lose any; the base configuration must be the same,
    except the fields in ``FREE_BASE`` (those that don't change the experiment: data location, bench file,
    device ...). ``explicit`` names the base fields the user set; the others are taken from the existing
    manifest (so a bare re-run continues).
    """
    d = Path(sweep_dir)
    exists = (d / MANIFEST_NAME).is_file()
    if not exists:
        if grid is None:
            raise ConfigError(f"{d} has no {MANIFEST_NAME}: give the grid (--m, --hidden, --seeds) to start a sweep")
        g = normalise_grid(grid)
        b = _normalise_base(base or {}, list(g))
        if d.exists() and any(d.glob("*.h5")):
            raise ConfigError(f"{d} already holds run logs but no {MANIFEST_NAME}: choose an empty or new --out")
        now = utc_now()
        return Manifest(dir=d, grid=g, base=b, points=build_points(d, g, b), created_utc=now, updated_utc=now)
    old = load_manifest(d)
    if grid is None:
        g = old.grid
    else:
        g = normalise_grid(grid)
        if list(g) != list(old.grid):
            raise ConfigError(
                f"{d} is a sweep over {', '.join(old.grid)}, not over {', '.join(g)}: "
                "use the same axes (a new --out for another grid)"
            )
        lost = {a: [v for v in old.grid[a] if v not in g[a]] for a in g}
        lost = {a: v for a, v in lost.items() if v}
        if lost:
            detail = "; ".join(f"{a} {', '.join(map(format_value, v))}" for a, v in lost.items())
            raise ConfigError(
                f"{d}: the grid lacks values of the existing sweep ({detail}); a sweep folder can only grow. "
                "Repeat its values (or omit the grid options to continue it as it is), or use a new --out"
            )
        # keep the old order, new values at the end of each axis
        g = {a: list(old.grid[a]) + [v for v in g[a] if v not in old.grid[a]] for a in g}
    b = dict(old.base)
    if base is not None:
        req = _normalise_base(base, list(g))
        keys = (set(base) if explicit is None else set(explicit)) & set(req)
        for k in keys & FREE_BASE:
            b[k] = req[k]
        diff = sorted(k for k in keys - FREE_BASE if req[k] != old.base.get(k))
        if diff:
            detail = describe_difference(diff, old.base, req, "sweep")
            raise ConfigError(
                f"{d} is a sweep with another configuration ({detail}); drop those options to continue it, "
                "or use a new --out"
            )
    pts = build_points(d, g, b)
    by_name = {p.name: p for p in old.points}
    merged = []
    for p in pts:
        if p.name in by_name:
            rec = by_name[p.name]
            rec.config = p.config  # free fields (data location) may have changed
            merged.append(rec)
        else:
            merged.append(p)
    return Manifest(
        dir=d,
        grid=g,
        base=b,
        points=merged,
        created_utc=old.created_utc,
        updated_utc=old.updated_utc,
        hwloop_version=__version__,
        executor=old.executor,
    )
