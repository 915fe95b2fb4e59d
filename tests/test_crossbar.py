"""Crossbar layer: the map of weights onto tiles and ``ChipWeights`` programming a simulated chip."""

from __future__ import annotations

import numpy as np

from hwloop.chip.default_table import default_table
from hwloop.crossbar import CrossbarMap
from hwloop.crossbar.weights import ChipWeights
from hwloop.training.levels import LevelSet

Q, SCALE_US = default_table().weight_levels()


# ---------------------------------------------------------------------------- crossbar
def test_paper_network_needs_82_tiles_and_1_34_m_devices() -> None:
    cmap = CrossbarMap([("fc1", (512, 784)), ("fc2", (512, 512)), ("fc3", (10, 512))])
    assert cmap.n_tiles == 82
    assert cmap.n_devices_used == 2 * (512 * 784 + 512 * 512 + 10 * 512)
    assert len(np.unique(cmap.devices)) == cmap.n_devices_used
    # pairs are adjacent columns of one row
    pos, neg = cmap.devices[0::2], cmap.devices[1::2]
    assert np.all(neg - pos == 1) and np.all(pos % 2 == 0)


def test_pair_levels_encoding() -> None:
    k = np.array([-8, -1, 0, 1, 8], dtype=np.int8)
    np.testing.assert_array_equal(CrossbarMap.pair_levels(k), [0, 8, 0, 1, 0, 0, 1, 0, 8, 0])


def test_chip_weights_program_only_changed_devices_and_read_back() -> None:
    from hwloop.chip.sim import SimChip, SimConfig

    table = default_table()
    cmap = CrossbarMap([("fc", (64, 100))])
    chip = SimChip(n_tiles=cmap.n_tiles, table=table, config=SimConfig.ideal(), seed=3)
    hw = ChipWeights(chip, cmap, LevelSet(Q), SCALE_US)
    assert hw.form() == 1.0
    rng = np.random.default_rng(0)
    k = rng.integers(-8, 9, cmap.n_weights).astype(np.int8)
    hw.program(k)
    # read weights sit around their levels (device variability only)
    err = hw.w_flat - Q[k + 8]
    assert abs(float(np.median(err))) < 0.02 and float(np.std(err)) < 0.15
    resets0 = chip.reset_count.sum()
    k2 = k.copy()
    flip = rng.choice(k.size, 50, replace=False)
    k2[flip] = np.where(k[flip] < 8, k[flip] + 1, 7)
    n = hw.program(k2)
    target_old, target_new = CrossbarMap.pair_levels(k), CrossbarMap.pair_levels(k2)
    assert n == int(np.count_nonzero(target_old != target_new))
    assert chip.reset_count.sum() - resets0 == n
    assert hw.program(k2) == 0  # nothing changed, nothing programmed
