"""Chip backends behind one vectorized interface (see ``hwloop.chip.base``)."""

from hwloop.chip.base import CELLS_PER_TILE, COLS, ROWS, Chip, Op
from hwloop.chip.cdf import CdfTable, Level, load_table
from hwloop.chip.sim import SimChip, SimConfig

__all__ = ["CELLS_PER_TILE", "COLS", "ROWS", "CdfTable", "Chip", "Level", "Op", "SimChip", "SimConfig", "load_table"]
