"""One place that turns a chip's name into a chip: ``open_chip``, and the table behind ``--cdf``/``--calibration``.

Every caller goes through here: the CLI's chip commands (``hwloop chip``, ``bench``, ``calibrate``,
``characterise``) and the training run (``hwloop.orchestrator.build_chip_for_run``).

- ``sim``: a ``SimChip`` of ``n_tiles`` tiles replaying ``table`` (optionally the retention/endurance models
  measured by ``hwloop retention`` / ``hwloop cycle`` and a ``SimConfig``).
- ``real``: the ``RealChip`` of the bench file. With ``real_tiles`` (a tile list, ``hwloop.intlist``; ``""``
  means the first tiles the bench holds) it becomes a ``CompositeChip`` of ``n_tiles`` tiles: the listed
  tiles on the bench, the others simulated from the same table (what ``hwloop train --chip real`` uses).
"""

from __future__ import annotations

from typing import Any

from hwloop.chip.base import COLS, ROWS, Chip
from hwloop.chip.cdf import CdfTable, load_table
from hwloop.errors import ConfigError
from hwloop.intlist import parse_int_list

#: backends ``open_chip`` builds (``--chip none``, no device at all, is the training loop's business)
CHIP_KINDS = ("sim", "real")


def load_table_option(path: str | None) -> CdfTable:
    """The table named by ``--cdf``/``--calibration`` (a CDF table or a calibration file), else the default."""
    if path is None:
        from hwloop.chip.default_table import default_table

        return default_table()
    return load_table(path)


def check_tile_geometry(table: CdfTable) -> CdfTable:
    """Refuse a calibration measured on an array of another size than the tiles weights are mapped onto."""
    rows, cols = table.extra.get("rows", ROWS), table.extra.get("cols", COLS)
    if (rows, cols) != (ROWS, COLS):
        raise ConfigError(
            f"calibration {table.source_path} was measured on a {rows}x{cols} array, but hwloop maps weights "
            f"onto {ROWS}x{COLS} tiles: calibrate this chip with `hwloop calibrate`"
        )
    return table


def parse_real_tiles(spec: str | None, n_tiles: int, bench_tiles: int) -> list[int]:
    """``--real-tiles``: the tiles on the bench (default: the first ones it holds)."""
    if spec is None or spec == "":
        return list(range(min(bench_tiles, n_tiles)))
    tiles = parse_int_list(spec, "--real-tiles", upper=n_tiles)
    if len(tiles) > bench_tiles:
        raise ConfigError(f"--real-tiles asks for {len(tiles)} tiles but the bench holds {bench_tiles}")
    return tiles


def open_chip(
    kind: str,
    *,
    n_tiles: int,
    table: CdfTable,
    seed: int = 0,
    bench: str | None = None,
    real_tiles: str | None = None,
    sim_models: dict[str, Any] | None = None,
    sim_config: Any = None,
) -> Chip:
    """A chip backend by name (see the module docstring); the caller closes it (it is a context manager).

    ``sim_models``: keyword arguments of ``SimChip`` (``hwloop.chip.models.load_sim_models``), for the
    simulated chip or the simulated tiles of a composite one. ``sim_config``: a ``SimConfig``."""
    from hwloop.chip.sim import SimChip

    models = dict(sim_models or {})
    if sim_config is not None:
        models["config"] = sim_config
    if kind == "sim":
        return SimChip(n_tiles=n_tiles, table=table, seed=seed, **models)
    if kind != "real":
        raise ConfigError(f"unknown chip backend {kind!r}; choose one of {', '.join(CHIP_KINDS)}")
    if not bench:
        raise ConfigError("--chip real needs --bench FILE (a bench configuration, e.g. instruments/virtual.toml)")
    from hwloop.chip.real import RealChip

    real = RealChip.from_bench_file(bench, table=table)
    if real_tiles is None:
        return real
    from hwloop.chip.composite import CompositeChip

    try:
        on_bench = parse_real_tiles(real_tiles, n_tiles, real.n_tiles)
        sim_tiles = [t for t in range(n_tiles) if t not in set(on_bench)]
        parts: list[tuple[str, Chip, list[int]]] = [("real", real, on_bench)]
        if sim_tiles:
            parts.append(("sim", SimChip(n_tiles=len(sim_tiles), table=table, seed=seed, **models), sim_tiles))
        return CompositeChip(parts, n_tiles, table)
    except BaseException:
        real.close()
        raise


__all__ = ["CHIP_KINDS", "check_tile_geometry", "load_table_option", "open_chip", "parse_real_tiles"]
