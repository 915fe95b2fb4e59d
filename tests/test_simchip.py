"""SimChip: CDF replay, forming, read noise, wear-out, relaxation, addressing, state and determinism.

Statistical checks use fixed seeds and thresholds derived from the sample size (KS critical values,
binomial standard errors), never figures copied from a previous run.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats

from hwloop.chip import default_table as dt
from hwloop.chip.base import CELLS_PER_TILE, COLS, ROWS
from hwloop.chip.cdf import CdfTable
from hwloop.chip.sim import SimChip, SimConfig
from hwloop.errors import ChipError

MakeTable = Callable[..., CdfTable]
N_TILE = CELLS_PER_TILE


def ks_to_table(table: CdfTable, level: int, g_us: np.ndarray) -> float:
    x = np.sort(np.asarray(g_us, dtype=np.float64))
    f = table.cdf(level, x)
    n = x.size
    return float(max(np.max(np.arange(1, n + 1) / n - f), np.max(f - np.arange(n) / n)))


def ks_crit(n: int) -> float:
    # alpha = 1e-4 per check: the suite runs a few dozen KS checks, so a per-check false alarm must be rare
    return 2.30 / np.sqrt(n)


def formed_chip(
    n_tiles: int = 1, config: SimConfig | None = None, seed: int = 0, table: CdfTable | None = None
) -> SimChip:
    chip = SimChip(n_tiles=n_tiles, table=table, config=config or SimConfig.ideal(), seed=seed)
    chip.form_idx(np.arange(chip.n_devices))
    return chip


# ------------------------------------------------------------------ CDF replay
@pytest.mark.parametrize("level", [1, 3, 8])
def test_set_replays_the_level_distribution(default_cdf: CdfTable, level: int) -> None:
    chip = formed_chip(table=default_cdf, seed=level)
    idx = np.arange(chip.n_devices)
    chip.set_idx(idx, level=level)
    g = chip.read_idx(idx)  # ideal config: no read noise
    np.testing.assert_array_equal(g, chip.true_g_us(idx))
    ref = stats.norm(loc=dt.HCS_MEDIAN_US[level - 1], scale=dt.HCS_SIGMA_US[level - 1])
    assert stats.kstest(g, ref.cdf).statistic < ks_crit(g.size)
    assert ks_to_table(default_cdf, level, g) < ks_crit(g.size)
    # the check is able to fail: the neighbouring level's distribution is rejected
    other = level - 1 if level > 1 else level + 1
    assert ks_to_table(default_cdf, other, g) > 0.5


def test_reset_replays_lcs(default_cdf: CdfTable) -> None:
    chip = formed_chip(table=default_cdf, seed=2)
    idx = np.arange(chip.n_devices)
    chip.reset_idx(idx)
    g = chip.read_idx(idx)
    ref = stats.lognorm(s=dt.LCS_LOG_SIGMA, scale=dt.LCS_MEDIAN_US)
    assert stats.kstest(g, ref.cdf).statistic < ks_crit(g.size)
    assert ks_to_table(default_cdf, 0, g) < ks_crit(g.size)


def test_chip_on_a_shifted_table_is_detected(make_table: MakeTable) -> None:
    """A chip that replayed the wrong (shifted) table fails the KS check against the true table."""
    true_table = make_table(seed=1, n=4000)
    wrong_table = make_table(seed=1, n=4000, shift_us=1.0)  # a third of a sigma
    idx = np.arange(N_TILE)
    for tab, should_pass in ((true_table, True), (wrong_table, False)):
        chip = formed_chip(table=tab, seed=7)
        chip.set_idx(idx, level=2)
        d = ks_to_table(true_table, 2, chip.true_g_us(idx))
        assert bool(d < ks_crit(idx.size)) == should_pass, d


def test_mixed_levels_in_one_call(default_cdf: CdfTable) -> None:
    chip = formed_chip(table=default_cdf, seed=3)
    idx = np.arange(chip.n_devices)
    lv = (idx % default_cdf.n_hcs) + 1
    chip.set_idx(idx, level=lv)
    g = chip.read_idx(idx)
    for k in range(1, default_cdf.n_levels):
        assert ks_to_table(default_cdf, k, g[lv == k]) < ks_crit(int((lv == k).sum()))
    # every SET draws anew (cycle-to-cycle variability): a second SET gives different values
    chip.set_idx(idx, level=lv)
    assert np.mean(chip.read_idx(idx) == g) < 0.01


def test_vgate_between_levels_gives_median_between_neighbours(default_cdf: CdfTable) -> None:
    chip = formed_chip(n_tiles=2, table=default_cdf, seed=4)
    idx = np.arange(chip.n_devices)
    v = default_cdf.v_gate
    m = default_cdf.medians_us
    for k in (1, 5):
        chip.set_idx(idx, v_gate=0.5 * (v[k] + v[k + 1]))
        med = float(np.median(chip.read_idx(idx)))
        se = 1.2533 * float(default_cdf.sigmas_us[k]) / np.sqrt(idx.size)  # s.e. of a median
        assert m[k] < med < m[k + 1]
        assert abs(med - 0.5 * (m[k] + m[k + 1])) < 5 * se
    # SET at a tabled gate voltage is the same distribution as SET at that level
    chip.set_idx(idx, v_gate=v[3])
    assert ks_to_table(default_cdf, 3, chip.read_idx(idx)) < ks_crit(idx.size)
    # per-device gate voltages in one call
    vg = np.where(idx % 2 == 0, v[1], v[8])
    chip.set_idx(idx, v_gate=vg)
    g = chip.read_idx(idx)
    assert ks_to_table(default_cdf, 1, g[0::2]) < ks_crit(idx.size // 2)
    assert ks_to_table(default_cdf, 8, g[1::2]) < ks_crit(idx.size // 2)


# ------------------------------------------------------------------ read noise
def test_read_noise(default_cdf: CdfTable) -> None:
    cfg = SimConfig.ideal().with_(read_noise_rel=0.02, read_noise_abs_us=0.5)
    chip = formed_chip(table=default_cdf, config=cfg, seed=5)
    idx = np.arange(chip.n_devices)
    chip.set_idx(idx, level=6)
    true = chip.true_g_us(idx)
    reads = np.stack([chip.read_idx(idx) for _ in range(4)])
    assert np.all(reads[0] != reads[1])  # each read adds fresh noise
    np.testing.assert_array_equal(chip.true_g_us(idx), true)  # reading does not disturb
    z = (reads - true) / (cfg.read_noise_rel * true + cfg.read_noise_abs_us)
    assert abs(float(z.mean())) < 5 / np.sqrt(z.size)
    assert abs(float(z.std()) - 1.0) < 0.02


# ------------------------------------------------------------------ forming
def test_forming_yield_dead_devices_and_pristine_reads(default_cdf: CdfTable) -> None:
    cfg = SimConfig.default().with_(form_p_attempt=0.7, form_dead_fraction=0.05)
    chip = SimChip(n_tiles=1, table=default_cdf, config=cfg, seed=6)
    idx = np.arange(chip.n_devices)
    n = idx.size
    # pristine devices read near zero, far below LCS
    g0 = chip.read_idx(idx)
    assert abs(float(np.median(g0)) - cfg.pristine_g_us) < 0.02
    assert np.quantile(g0, 0.99) < np.quantile(default_cdf.grid[0], 0.01)
    assert not chip.formed_mask().any()
    ok1 = chip.form_idx(idx)
    p1 = (1 - cfg.form_dead_fraction) * cfg.form_p_attempt
    assert abs(ok1.mean() - p1) < 5 * np.sqrt(p1 * (1 - p1) / n)
    np.testing.assert_array_equal(ok1, chip.formed_mask())
    for _ in range(30):  # retries form every device that can form
        chip.form_idx(idx)
    unformed = ~chip.formed_mask()
    pd = cfg.form_dead_fraction
    assert abs(unformed.mean() - pd) < 5 * np.sqrt(pd * (1 - pd) / n)
    assert np.all(chip.form_count == 31)
    # formed devices sit in HCS at the forming condition; dead ones still read near zero
    g = chip.read_idx(idx)
    form_grid = default_cdf.hcs_grid_at(np.array([cfg.form_v_gate]))[0]
    assert np.median(g[~unformed]) == pytest.approx(np.median(form_grid), rel=0.02)
    assert np.quantile(g[unformed], 0.99) < np.quantile(default_cdf.grid[0], 0.01)
    # programming a pristine/dead device is refused, with its address
    dead = np.flatnonzero(unformed)
    with pytest.raises(ChipError, match="not formed"):
        chip.set_idx(dead[:3], level=1)
    with pytest.raises(ChipError, match="not formed"):
        chip.reset_idx(np.concatenate([np.flatnonzero(~unformed)[:5], dead[:1]]))
    t, r, c = chip.unflat(dead[:1])
    with pytest.raises(ChipError, match=f"row={r[0]}, col={c[0]}"):
        chip.set(t, r, c, level=2)
    assert chip.set_count.sum() == 0 and chip.reset_count.sum() == 0  # nothing happened


def test_programming_a_pristine_chip_raises() -> None:
    chip = SimChip(n_tiles=1, seed=0)
    with pytest.raises(ChipError, match="form them"):
        chip.set(0, 0, 0, level=1)
    with pytest.raises(ChipError, match="form them"):
        chip.reset(0, [1, 2], 3)


# ------------------------------------------------------------------ wear-out
def _cycle(chip: SimChip, idx: np.ndarray, n: int, level: int) -> None:
    for _ in range(n):
        chip.reset_idx(idx)
        chip.set_idx(idx, level=level)


def test_wear_out_device_fails_and_sticks(default_cdf: CdfTable) -> None:
    budget = 8.0
    cfg = SimConfig.ideal().with_(endurance_median_cycles=budget, endurance_log_sigma=0.0)
    chip = formed_chip(table=default_cdf, config=cfg, seed=8)
    idx = np.arange(chip.n_devices)
    _cycle(chip, idx, int(budget) - 1, level=4)
    assert not chip.failed_mask().any()
    g_alive = chip.read_idx(idx)
    assert ks_to_table(default_cdf, 4, g_alive) < ks_crit(idx.size)
    _cycle(chip, idx, 2, level=4)  # past the budget
    failed = chip.failed_mask()
    assert failed.all()
    assert np.all(chip.cycles[failed] > budget)
    stuck = chip.true_g_us(idx).copy()
    # stuck at HCS (top level) or LCS, about half each (stuck_hcs_fraction = 0.5)
    hcs = stuck > 0.5 * (default_cdf.medians_us[0] + default_cdf.medians_us[-1])
    frac = cfg.stuck_hcs_fraction
    assert abs(hcs.mean() - frac) < 5 * np.sqrt(frac * (1 - frac) / idx.size)
    assert ks_to_table(default_cdf, default_cdf.n_hcs, stuck[hcs]) < ks_crit(int(hcs.sum()))
    assert ks_to_table(default_cdf, 0, stuck[~hcs]) < ks_crit(int((~hcs).sum()))
    # once failed, programming no longer moves the device (pulses are still counted)
    sets_before = chip.set_count.copy()
    _cycle(chip, idx, 3, level=1)
    np.testing.assert_array_equal(chip.true_g_us(idx), stuck)
    assert np.all(chip.set_count == sets_before + 3)
    assert chip.failed_mask().all()


def test_wear_out_spread_between_devices(default_cdf: CdfTable) -> None:
    median_cycles, log_sigma = 12.0, 0.5
    cfg = SimConfig.ideal().with_(endurance_median_cycles=median_cycles, endurance_log_sigma=log_sigma)
    chip = formed_chip(table=default_cdf, config=cfg, seed=9)
    idx = np.arange(chip.n_devices)
    n = idx.size
    frac_failed = []
    for _ in range(24):
        _cycle(chip, idx, 1, level=2)
        frac_failed.append(chip.failed_mask().mean())
    frac = np.array(frac_failed)
    assert np.all(np.diff(frac) >= 0)  # failure is permanent
    # after c whole cycles a device has failed iff its budget is below c: P = lognormal CDF(c)
    expect = stats.lognorm(s=log_sigma, scale=median_cycles).cdf(np.arange(1, 25))
    assert np.all(np.abs(frac - expect) < 5 * np.sqrt(expect * (1 - expect) / n) + 1e-9)
    assert frac[5] > 0.05 and frac[-1] < 0.99  # genuine spread, not one cliff


def test_default_endurance_is_about_1e5_cycles() -> None:
    chip = SimChip(n_tiles=1, config=SimConfig.default(), seed=10)
    med = float(np.median(chip.budget))
    assert abs(np.log(med / SimConfig.default().endurance_median_cycles)) < 0.05
    assert SimConfig.default().endurance_median_cycles == pytest.approx(1e5)


# ------------------------------------------------------------------ relaxation
def test_relaxation_settles_with_time(default_cdf: CdfTable) -> None:
    idx = np.arange(N_TILE)
    off = formed_chip(table=default_cdf, seed=11)
    off.set_idx(idx, level=1)
    g_off = off.true_g_us(idx).copy()
    off.elapse(1000.0)
    np.testing.assert_array_equal(off.true_g_us(idx), g_off)  # relaxation off: no drift

    cfg = SimConfig.ideal().with_(relax_rel=0.05, relax_tau_s=10.0)
    chip = formed_chip(table=default_cdf, config=cfg, seed=11)
    lv = np.where(idx % 2 == 0, 1, 8)
    chip.set_idx(idx, level=lv)
    g0 = chip.true_g_us(idx).copy()
    drift = []
    for t in (1.0, 9.0, 90.0, 100.0):  # chip time after programming: 1, 10, 100, 200 s
        chip.elapse(t)
        drift.append(np.abs(chip.true_g_us(idx) - g0))
    mean_drift = [float(d.mean()) for d in drift]
    assert mean_drift[0] < mean_drift[1] < mean_drift[2]
    assert mean_drift[3] == pytest.approx(mean_drift[2], rel=1e-3)  # settled after many tau
    rel = drift[3] / g0
    assert rel[lv == 1].mean() > rel[lv == 8].mean()  # low-G levels relax more


# ------------------------------------------------------------------ addressing and arguments
def test_address_out_of_range() -> None:
    chip = formed_chip(n_tiles=2, seed=0)
    for addr in ((2, 0, 0), (0, ROWS, 0), (0, 0, COLS), (-1, 0, 0), (0, 0, -1)):
        with pytest.raises(ChipError, match="outside the array"):
            chip.read(*addr)
    with pytest.raises(ChipError, match="1 bad address"):
        chip.set([0, 1, 1], [0, 5, 200], [0, 0, 0], level=1)
    with pytest.raises(ChipError, match="outside the array"):
        chip.read_idx([0, chip.n_devices])
    with pytest.raises(ChipError, match="outside the array"):
        chip.form_idx([-1])
    with pytest.raises(ChipError, match="integers"):
        chip.read([0.5], [0], [0])
    # the last tile's last cell is addressable, and maps to the last flat index
    assert chip.flat(1, ROWS - 1, COLS - 1).item() == chip.n_devices - 1
    t, r, c = chip.unflat(np.arange(chip.n_devices))
    np.testing.assert_array_equal(chip.flat(t, r, c), np.arange(chip.n_devices))


def test_bad_set_arguments(default_cdf: CdfTable) -> None:
    chip = formed_chip(table=default_cdf, seed=0)
    with pytest.raises(ChipError, match="exactly one"):
        chip.set_idx([0], level=1, v_gate=1.5)
    with pytest.raises(ChipError, match="exactly one"):
        chip.set_idx([0])
    with pytest.raises(ChipError, match=r"1\.\.8"):
        chip.set_idx([0], level=0)
    with pytest.raises(ChipError, match=r"1\.\.8"):
        chip.set_idx([0], level=default_cdf.n_hcs + 1)
    with pytest.raises(ChipError, match="integer"):
        chip.set_idx([0], level=1.5)
    with pytest.raises(ChipError, match="finite"):
        chip.set_idx([0], v_gate=np.nan)
    with pytest.raises(ChipError, match="at least one tile"):
        SimChip(n_tiles=0)
    assert chip.set_count.sum() == 0


def test_tiles_are_independent_and_counters(default_cdf: CdfTable) -> None:
    chip = formed_chip(n_tiles=2, table=default_cdf, seed=12)
    rows, cols = np.meshgrid(np.arange(ROWS), np.arange(COLS), indexing="ij")
    chip.reset(np.zeros_like(rows), rows, cols)
    chip.set(np.ones_like(rows), rows, cols, level=8)
    g = chip.read_all()
    assert g.shape == (2, ROWS, COLS)
    # addresses of any shape: reads come back in that shape
    g1 = chip.read(np.ones_like(rows), rows, cols)
    assert g1.shape == (ROWS, COLS) and np.median(g1) == pytest.approx(np.median(g[1]), rel=0.01)
    assert chip.form_idx(np.arange(6).reshape(2, 3)).shape == (2, 3)
    assert np.median(g[0]) == pytest.approx(default_cdf.medians_us[0], rel=0.05)
    assert np.median(g[1]) == pytest.approx(default_cdf.medians_us[8], rel=0.01)
    np.testing.assert_array_equal(chip.reset_count.reshape(2, -1).sum(axis=1), [N_TILE, 0])
    np.testing.assert_array_equal(chip.set_count.reshape(2, -1).sum(axis=1), [0, N_TILE])
    np.testing.assert_array_equal(chip.program_count(), np.ones(chip.n_devices))


# the listener contract is tested once, over every backend, in test_chip_contract.py


# ------------------------------------------------------------------ determinism and state
def _script(chip: SimChip) -> list[np.ndarray]:
    """A fixed mix of every operation; returns everything it read."""
    idx = np.arange(chip.n_devices)
    out = [chip.form_idx(idx).astype(np.float32)]
    ok = np.flatnonzero(chip.formed_mask())
    chip.reset_idx(ok[::3])
    chip.set_idx(ok[1::3], level=(ok[1::3] % 8) + 1)
    chip.set_idx(ok[2::3], v_gate=1.73)
    out.append(chip.read_idx(idx))
    chip.elapse(5.0)
    out.append(chip.read_idx(ok[:1000]))
    return out


def test_same_seed_same_chip() -> None:
    cfg = SimConfig.default().with_(relax_rel=0.02)
    a = _script(SimChip(n_tiles=1, config=cfg, seed=42))
    b = _script(SimChip(n_tiles=1, config=cfg, seed=42))
    c = _script(SimChip(n_tiles=1, config=cfg, seed=43))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[1], c[1])
    # a Generator may be passed instead of a seed
    d = _script(SimChip(n_tiles=1, config=cfg, seed=np.random.default_rng(42)))
    np.testing.assert_array_equal(a[1], d[1])


def test_snapshot_restore_gives_identical_behaviour() -> None:
    cfg = SimConfig.default().with_(relax_rel=0.02, endurance_median_cycles=3.0)
    chip = SimChip(n_tiles=1, config=cfg, seed=21)
    _script(chip)
    snap = chip.snapshot()
    first = [*_script(chip), chip.failed_mask().copy(), chip.cycles.copy()]
    # restore in place, and into a fresh chip built with another seed
    chip.restore(snap)
    again = [*_script(chip), chip.failed_mask().copy(), chip.cycles.copy()]
    other = SimChip(n_tiles=1, config=cfg, seed=999)
    other.restore(snap)
    third = [*_script(other), other.failed_mask().copy(), other.cycles.copy()]
    for x, y, z in zip(first, again, third, strict=True):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)
    assert first[-2].any()  # the script did wear devices out, so the test covers that state too


def test_snapshot_is_a_copy_and_checks_geometry() -> None:
    chip = formed_chip(seed=22)
    snap = chip.snapshot()
    g = snap["g_us"].copy()
    chip.set_idx(np.arange(100), level=8)
    np.testing.assert_array_equal(snap["g_us"], g)
    with pytest.raises(ChipError, match="same geometry"):
        SimChip(n_tiles=2).restore(snap)


def test_info(default_cdf: CdfTable) -> None:
    chip = SimChip(n_tiles=2, table=default_cdf)
    info = chip.info()
    assert info["devices"] == 2 * ROWS * COLS and info["tiles"] == 2
    assert [lv["name"] for lv in info["levels"]] == [lv.name for lv in default_cdf.levels]
    assert info["table"]["synthetic"] is True
    assert info["sim_config"] == SimConfig.default().as_dict()
