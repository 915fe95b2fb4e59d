"""The ``Chip`` interface, once, over every backend: ``SimChip``, a ``CompositeChip`` of two simulated parts
(placed in swapped tile order, so routing matters) and ``RealChip`` driving the virtual bench (emulated FPGA
board on a pty and emulated SMU on loopback TCP, backed by a simulated chip).

What every backend must do: geometry and address checks, forming before programming, SET by level or by
gate voltage (exactly one), RESET, READ, operation counters, snapshot/restore, close twice, and the listener
contract (one call per operation with flat 1-D arrays; the level column and the conductance column as
documented in ``hwloop.chip.base``). Backend-specific behaviour (statistics, safety limits, faults) stays in
the backend's own test file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hwloop.chip.base import CELLS_PER_TILE, COLS, ROWS, Chip, Op
from hwloop.chip.composite import CompositeChip
from hwloop.chip.default_table import default_table
from hwloop.chip.real import RealChip
from hwloop.chip.sim import SimChip, SimConfig
from hwloop.emulator import Faults, VirtualBench
from hwloop.errors import ChipError

BENCH = Path(__file__).resolve().parents[1] / "instruments" / "virtual.toml"
TABLE = default_table()
BACKENDS = ["sim", "composite", "real"]


@pytest.fixture(params=BACKENDS)
def chip(request: pytest.FixtureRequest) -> Iterator[Chip]:
    ideal = SimConfig.ideal()  # perfect forming and no read noise: the contract, not the statistics
    if request.param == "sim":
        with SimChip(n_tiles=2, table=TABLE, seed=3, config=ideal) as c:
            yield c
    elif request.param == "composite":
        a = SimChip(n_tiles=1, table=TABLE, seed=4, config=ideal)
        b = SimChip(n_tiles=1, table=TABLE, seed=5, config=ideal)
        with CompositeChip([("a", a, [1]), ("b", b, [0])], 2, TABLE) as c:
            yield c
    else:
        with (
            VirtualBench(BENCH, seed=1, sim_config=ideal, pace=False, faults=Faults()) as vb,
            RealChip.from_bench_file(vb.bench_path, table=TABLE) as c,
        ):
            yield c


class Recorder:
    """A listener that keeps a copy of every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Op, np.ndarray, np.ndarray, np.ndarray]] = []

    def __call__(self, op: Op, idx: np.ndarray, level: np.ndarray, g_us: np.ndarray) -> None:
        self.calls.append((op, idx.copy(), level.copy(), g_us.copy()))

    @property
    def ops(self) -> list[Op]:
        return [c[0] for c in self.calls]


def last_tile_cells(chip: Chip, n: int) -> np.ndarray:
    """``n`` flat indices in the chip's last tile (tile 1 lives on the composite's first part)."""
    return (chip.n_tiles - 1) * CELLS_PER_TILE + np.arange(n) * 37


# ------------------------------------------------------------------ geometry and addresses
def test_geometry_and_address_checks(chip: Chip) -> None:
    assert chip.shape == (chip.n_tiles, ROWS, COLS)
    assert chip.n_devices == chip.n_tiles * CELLS_PER_TILE
    t = np.array([0, chip.n_tiles - 1])
    r, c = np.array([0, ROWS - 1]), np.array([5, COLS - 1])
    idx = chip.flat(t, r, c)
    for a, b in zip(chip.unflat(idx), (t, r, c), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ChipError, match="outside the array"):
        chip.flat(chip.n_tiles, 0, 0)
    with pytest.raises(ChipError, match="outside the array"):
        chip.flat(0, ROWS, 0)
    with pytest.raises(ChipError):
        chip.read_idx([chip.n_devices])
    with pytest.raises(ChipError, match="integers"):
        chip.read([0.5], [0], [0])


# ------------------------------------------------------------------ operations
def test_form_then_program_then_read(chip: Chip) -> None:
    idx = last_tile_cells(chip, 6)
    with pytest.raises(ChipError, match="not formed"):
        chip.set_idx(idx, level=1)
    formed = chip.form_idx(idx.reshape(2, 3))
    assert formed.shape == (2, 3) and formed.dtype == bool and formed.all()
    assert chip.formed_mask()[idx].all() and (chip.form_count[idx] == 1).all()
    chip.set_idx(idx[:3], level=TABLE.n_hcs)
    chip.set_idx(idx[3:], level=1)
    g = chip.read_idx(idx)
    assert g.shape == (6,) and np.isfinite(g).all()
    assert g[:3].min() > g[3:].max()  # the top HCS level conducts more than the lowest
    chip.reset_idx(idx)
    g0 = chip.read_idx(idx)
    assert g0.max() < g[3:].min()  # LCS below every HCS level
    assert (chip.set_count[idx] == 1).all() and (chip.reset_count[idx] == 1).all()
    np.testing.assert_array_equal(chip.program_count()[idx], 2)
    np.testing.assert_array_equal(chip.cycles[idx], 1.0)
    untouched = np.setdiff1d(np.arange(chip.n_devices), idx)
    assert chip.program_count()[untouched].sum() == 0


def test_set_needs_exactly_one_of_level_and_gate_voltage(chip: Chip) -> None:
    idx = np.arange(4)
    chip.form_idx(idx)
    for kw in ({}, {"level": 1, "v_gate": 1.8}):
        with pytest.raises(ChipError, match="exactly one"):
            chip.set_idx(idx, **kw)
    for bad in (0, TABLE.n_hcs + 1):
        with pytest.raises(ChipError, match="SET level"):
            chip.set_idx(idx, level=bad)
    with pytest.raises(ChipError, match="integer"):
        chip.set_idx(idx, level=1.5)
    with pytest.raises(ChipError, match="finite"):
        chip.set_idx(idx, v_gate=float("nan"))
    assert chip.set_count[idx].sum() == 0  # nothing refused was counted
    chip.set_idx(idx, v_gate=np.array([1.5, 1.7, 1.9, 2.1]))
    assert (chip.set_count[idx] == 1).all()
    g = chip.read_idx(idx)
    assert np.corrcoef([1.5, 1.7, 1.9, 2.1], g)[0, 1] > 0.9  # a higher gate voltage sets a higher G


def test_read_all_snapshot_restore_and_close(chip: Chip) -> None:
    idx = np.arange(3)
    chip.form_idx(idx)
    chip.set_idx(idx, level=2)
    assert chip.read_all().shape == chip.shape
    snap = chip.snapshot()
    chip.reset_idx(idx)
    chip.restore(snap)
    assert (chip.reset_count[idx] == 0).all() and (chip.set_count[idx] == 1).all()
    with pytest.raises(ChipError, match="same geometry"):
        chip.restore({**snap, "set_count": snap["set_count"][:10]})
    info = chip.info()
    assert info["devices"] == chip.n_devices and info["backend"] == type(chip).__name__
    chip.close()
    chip.close()  # safe twice


# ------------------------------------------------------------------ the listener contract
def test_listeners_get_one_array_call_per_operation(chip: Chip) -> None:
    rec = Recorder()
    chip.add_listener(rec)
    idx = last_tile_cells(chip, 3)
    chip.form_idx(idx.reshape(3, 1))  # any address shape: listeners see flat 1-D arrays
    chip.reset_idx(idx)
    chip.set_idx(idx, level=[1, 2, 3])
    chip.set_idx(idx, v_gate=1.8)
    g = chip.read_idx(idx)
    assert rec.ops == [Op.FORM, Op.RESET, Op.SET, Op.SET, Op.READ]
    for _, i, lv, gu in rec.calls:
        np.testing.assert_array_equal(i, idx)  # global flat indices, even on the composite
        assert i.ndim == lv.ndim == gu.ndim == 1 and lv.dtype == np.int8 and gu.dtype == np.float32
    form, reset, set_lv, set_vg, read = rec.calls
    np.testing.assert_array_equal(form[2], -1)
    np.testing.assert_array_equal(reset[2], 0)
    np.testing.assert_array_equal(set_lv[2], [1, 2, 3])
    np.testing.assert_array_equal(set_vg[2], -1)  # a SET by gate voltage has no tabled level
    np.testing.assert_array_equal(read[2], -1)
    for call in (form, reset, set_lv, set_vg):
        assert np.isnan(call[3]).all()  # only a READ measures
    np.testing.assert_array_equal(read[3], g.astype(np.float32))
    # every listener sees every call; a removed one sees no more
    other = Recorder()
    chip.add_listener(other)
    chip.read_idx(idx)
    chip.remove_listener(rec)
    chip.read_idx(idx)
    assert rec.ops == [Op.FORM, Op.RESET, Op.SET, Op.SET, Op.READ, Op.READ]
    assert other.ops == [Op.READ, Op.READ]


def test_refused_operations_reach_no_listener(chip: Chip) -> None:
    rec = Recorder()
    chip.add_listener(rec)
    with pytest.raises(ChipError):
        chip.set_idx([0], level=1)  # not formed
    with pytest.raises(ChipError):
        chip.read_idx([chip.n_devices])
    assert rec.calls == []


# ------------------------------------------------------------------ who the chip is
def test_describe_names_the_chip_its_backend_and_whether_its_data_are_simulated(chip: Chip) -> None:
    d = chip.describe()
    assert set(d) == {"chip_id", "synthetic", "backend"}
    assert d["backend"] == type(chip).__name__ and isinstance(d["chip_id"], str)
    # every backend here is backed by a simulated chip: the virtual bench's board says it is emulated
    assert d["synthetic"] is True
    if isinstance(chip, RealChip):
        assert d["chip_id"] == chip.bench.name != ""  # a bench chip is named by its bench file
    else:
        assert d["chip_id"] == ""  # a simulated chip has no id of its own (callers name it by seed)


def test_describe_of_a_board_that_is_not_emulated_is_not_synthetic(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same driver path, with a board that does not identify itself as emulated: measured data, also
    in a composite with a simulated part."""
    from hwloop.emulator import board as emulated_board

    monkeypatch.setattr(emulated_board, "BOARD_ID", "lab FPGA addressing board, fw 1.0")
    ideal = SimConfig.ideal()
    with (
        VirtualBench(BENCH, seed=1, sim_config=ideal, pace=False, faults=Faults()) as vb,
        RealChip.from_bench_file(vb.bench_path, table=TABLE) as real,
    ):
        assert real.describe()["synthetic"] is False
        n = real.n_tiles
        sim = SimChip(n_tiles=1, table=TABLE, config=ideal)
        mix = CompositeChip([("real", real, list(range(n))), ("sim", sim, [n])], n + 1, TABLE)
        assert mix.describe() == {"chip_id": real.bench.name, "synthetic": False, "backend": "CompositeChip"}
