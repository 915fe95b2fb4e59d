"""Calibration (issue 4): forming, V_gate sweep, CDF extraction, level selection and the calibration file.

Statistics used below (stated once):
- The standard error of a sample median of N Gaussian reads is about 1.2533 sigma / sqrt(N). For the
  lowest default level (sigma 4 uS, read noise ~0.4 uS) and N = 2048 it is 0.11 uS = 0.55 % of 20 uS,
  so the 2 % tolerance on medians is about 3.6 standard errors; higher levels have more margin.
- KS, device level: the simulator replays the stored level samples' quantile function, so the KS
  distance of M ~ 16,000 replayed conductances from them is its own sampling noise (95 % point
  1.36 / sqrt(M) ~ 0.011) < 0.02.
- KS, read level: the replayed reads (device + the simulator's read noise) against the measured reads
  of the level. This compares a smoothed replay with a raw ECDF of N reads, whose own fluctuation is of
  order 0.87 / sqrt(N): 0.038 at N = 512, 0.019 at N = 2048 (partly shared with the replay). The test uses
  N = 2048 per condition; at the default N = 512 the read-level distances are 0.015-0.03.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy import stats as sps

from hwloop.calibration import (
    CalibrationConfig,
    CalibrationResult,
    calibrate,
    load_calibration,
    read_oplog,
    select_levels,
    write_calibration,
)
from hwloop.calibration.stats import empirical_overlap, extract, separation
from hwloop.chip.base import CELLS_PER_TILE, Op
from hwloop.chip.cdf import GRID_POINTS, CdfTable, Level, load_table
from hwloop.chip.default_table import V_GATE
from hwloop.chip.sim import SimChip, SimConfig
from hwloop.errors import CalibrationError, SafetyLimitError

MID = (GRID_POINTS - 1) // 2


def true_medians(table: CdfTable, v_gate: np.ndarray) -> np.ndarray:
    """Median of the simulated chip's distribution at each gate voltage (before read noise)."""
    return table.hcs_grid_at(v_gate)[:, MID]


# ---------------------------------------------------------------- selection (pure functions)
def _brute_force_min_sep(
    v: np.ndarray,
    med: np.ndarray,
    s_dn: np.ndarray,
    s_up: np.ndarray,
    lcs_med: float,
    lcs_up: float,
    n_hcs: int,
) -> float:
    best = -np.inf
    for combo in itertools.combinations(range(v.size), n_hcs):
        c = np.array(combo)
        if np.any(np.diff(med[c]) <= 0) or med[c[0]] <= lcs_med:
            continue
        d = [separation(lcs_med, lcs_up, med[c[0]], s_dn[c[0]])]
        d += [separation(med[a], s_up[a], med[b], s_dn[b]) for a, b in itertools.pairwise(c)]
        best = max(best, float(np.min(d)))
    return best


@pytest.mark.parametrize("seed", range(12))
def test_dp_selection_matches_exhaustive_search(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m, n_hcs = 11, 4
    v = np.sort(rng.uniform(1.4, 2.2, m))
    med = np.cumsum(rng.uniform(-2.0, 12.0, m)) + 20.0  # mostly rising, sometimes not
    s_dn, s_up = rng.uniform(1, 5, m), rng.uniform(1, 5, m)
    sel = select_levels(v, med, s_dn, s_up, 3.0, 1.0, n_hcs=n_hcs)
    want = _brute_force_min_sep(v, med, s_dn, s_up, 3.0, 1.0, n_hcs)
    assert sel.min_separation == pytest.approx(want, rel=1e-12)
    assert np.all(np.diff(sel.index) > 0) and np.all(np.diff(med[sel.index]) > 0)


def test_selection_fails_clearly_when_sweep_has_too_few_rising_levels() -> None:
    v = np.linspace(1.4, 2.2, 10)
    med = np.array([20, 20, 20, 25, 25, 25, 25, 30, 30, 30], dtype=float)
    with pytest.raises(CalibrationError, match="rising"):
        select_levels(v, med, np.ones(10), np.ones(10), 3.0, 1.0, n_hcs=8)


def test_overlap_and_extract() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(10, 1, 4000), rng.normal(20, 1, 4000)
    assert empirical_overlap(a, b) == 0.0
    assert empirical_overlap(a, rng.normal(10, 1, 4000)) == pytest.approx(0.5, abs=0.03)
    # two unit Gaussians 2 sigma apart: d = 2 / (1 + 1) = 1, equal-error rate Phi(-1) = 15.9 %
    c = rng.normal(12, 1, 200_000)
    e = extract(np.stack([rng.normal(10, 1, 200_000), c]))
    d = separation(e["median_us"][0], e["s_up_us"][0], e["median_us"][1], e["s_down_us"][1])
    assert d == pytest.approx(1.0, abs=0.02)
    assert empirical_overlap(rng.normal(10, 1, 200_000), c) == pytest.approx(sps.norm.cdf(-1), abs=0.01)


# ---------------------------------------------------------------- acceptance on the simulated chip
@pytest.fixture(scope="module")
def default_run() -> tuple[SimChip, CalibrationConfig, CalibrationResult]:
    chip = SimChip(1, seed=3)
    cfg = CalibrationConfig.default().with_(n_devices=2048)
    return chip, cfg, calibrate(chip, cfg)


def test_sim_default_table_measured_levels_match_table(default_run) -> None:
    """Every measured sweep condition (the 8 tabled gate voltages lie on the default grid) has the
    table's median within 2 %; LCS too."""
    chip, _cfg, res = default_run
    table = chip.table
    on_grid = [int(np.argmin(np.abs(res.v_gate - v))) for v in V_GATE]
    assert np.allclose(res.v_gate[on_grid], V_GATE, atol=1e-4)  # V_GATE is rounded to 0.1 mV
    np.testing.assert_allclose(res.stats["median_us"][on_grid], table.medians_us[1:], rtol=0.02)
    np.testing.assert_allclose(res.stats["median_us"], true_medians(table, res.v_gate), rtol=0.02)
    assert res.lcs_stats["median_us"][0] == pytest.approx(table.medians_us[0], rel=0.02)


def test_sim_default_table_selection(default_run) -> None:
    """Acceptance: calibration recovers the default table's levels. The chosen gate voltages are within
    one sweep step of the tabled ones and the medians within 2 % of the table's; the chosen levels rise
    and are at least as well separated as the table's own 8 levels measured in the same sweep.

    The built-in table is separation-optimal by construction (equal d between adjacent levels, see
    docs/cdf-format.md), so a one-step move of any interior level costs ~25 % of d on one side: far more
    than the sampling noise of d at N = 2048 (a few %)."""
    chip, cfg, res = default_run
    idx = res.selection.index
    v_sel = res.v_gate[idx]
    assert np.all(np.diff(v_sel) > 0) and np.all(np.diff(res.stats["median_us"][idx]) > 0)
    assert np.all(np.abs(v_sel - V_GATE) <= cfg.v_step + 1e-9), (v_sel, V_GATE)
    np.testing.assert_allclose(res.stats["median_us"][idx], chip.table.medians_us[1:], rtol=0.02)
    st, lst = res.stats, res.lcs_stats
    tab = [int(np.argmin(np.abs(res.v_gate - v))) for v in V_GATE]
    d_tab = [separation(lst["median_us"][0], lst["s_up_us"][0], st["median_us"][tab[0]], st["s_down_us"][tab[0]])]
    d_tab += [
        separation(st["median_us"][a], st["s_up_us"][a], st["median_us"][b], st["s_down_us"][b])
        for a, b in itertools.pairwise(tab)
    ]
    assert res.selection.min_separation >= min(d_tab)
    assert res.selection.min_separation == pytest.approx(float(np.min(res.selection.separation)))


def test_non_optimal_table_has_its_interior_levels_moved() -> None:
    """The criterion really chooses: on a table whose levels are not separation-optimal (medians spaced
    more widely as G rises while sigma falls, so HCS1-HCS2 is the tightest pair), the interior levels move
    up off the tabled voltages and the worst separation improves on the tabled levels'."""
    p = np.linspace(0.0, 1.0, 2049)
    pt = np.clip(p, 5e-5, 1 - 5e-5)
    levels = [Level("LCS", "LCS", 4.8, 0.0, quantiles_us=sps.lognorm.ppf(pt, s=0.45, scale=3.0), probabilities=p)]
    med = [20.0, 30.0, 41.0, 53.0, 66.0, 80.0, 96.0, 114.0]
    sig = np.linspace(4.0, 2.6, 8)
    for k in range(8):
        q = sps.norm.ppf(pt, loc=med[k], scale=sig[k])
        levels.append(Level(f"HCS{k + 1}", "HCS", float(V_GATE[k]), 10.0 * (k + 1), quantiles_us=q, probabilities=p))
    table = CdfTable(levels=levels, provenance="test: widening spacing", synthetic=True, chip_id="wide")
    cfg = CalibrationConfig.default().with_(n_devices=1024)
    res = calibrate(SimChip(1, table=table, seed=5), cfg)
    v_sel = res.v_gate[res.selection.index]
    assert v_sel[0] == pytest.approx(V_GATE[0]) and v_sel[-1] == pytest.approx(V_GATE[-1])
    assert np.all(v_sel[1:-1] > V_GATE[1:-1] + cfg.v_step / 2), v_sel  # HCS2..HCS7 all move up
    assert res.selection.min_separation > 1.5  # the tabled chain's worst pair is ~1.3


def equal_spacing_table() -> CdfTable:
    """A table whose 8 levels ARE the max-min-separation optimum of its own sweep: equal sigma, medians
    linear in gate voltage (20..114 uS at 1.4..2.2 V), so the best 8 conditions are the tabled ones."""
    p = np.linspace(0.0, 1.0, 2049)
    pt = np.clip(p, 5e-5, 1 - 5e-5)
    levels = [Level("LCS", "LCS", 4.8, 0.0, quantiles_us=sps.lognorm.ppf(pt, s=0.45, scale=3.0), probabilities=p)]
    med = np.linspace(20.0, 114.0, 8)
    for k in range(8):
        levels.append(
            Level(
                f"HCS{k + 1}",
                "HCS",
                float(V_GATE[k]),
                10.0 * (k + 1),
                quantiles_us=sps.norm.ppf(pt, loc=med[k], scale=3.0),
                probabilities=p,
            )
        )
    return CdfTable(levels=levels, provenance="test: equal spacing", synthetic=True, chip_id="eq")


def test_sim_recovers_table_levels_when_they_are_optimal() -> None:
    table = equal_spacing_table()
    chip = SimChip(1, table=table, seed=11)
    cfg = CalibrationConfig.default().with_(n_devices=2048)
    res = calibrate(chip, cfg)
    v_sel = res.v_gate[res.selection.index]
    assert np.all(np.abs(v_sel - table.v_gate[1:]) <= cfg.v_step + 1e-9), v_sel
    np.testing.assert_allclose(res.stats["median_us"][res.selection.index], table.medians_us[1:], rtol=0.02)


def test_forming_retries_and_yield() -> None:
    """P(form per attempt) 0.5: yield after 1 + r attempts is 1 - 0.5^(1+r) (times 1 - dead fraction).
    16,384 devices: standard error of a yield near 0.5 is 0.004; tolerance 0.02."""
    cfg0 = SimConfig.default().with_(form_p_attempt=0.5, form_dead_fraction=0.01)
    for retries in (0, 3):
        chip = SimChip(1, config=cfg0, seed=retries)
        res = calibrate(chip, CalibrationConfig.quick().with_(form_retries=retries))
        assert res.forming_yield == pytest.approx((1 - 0.5 ** (1 + retries)) * 0.99, abs=0.02)
        assert res.form_attempts.max() == 1 + retries
        assert res.op_counts["FORM"] == int(res.form_attempts.sum())
        # devices used are all formed
        assert chip.formed_mask()[res.cells].all()


def test_op_counts_and_oplog(tmp_path) -> None:
    from hwloop.calibration import OpLog

    chip = SimChip(1, seed=0)
    cfg = CalibrationConfig.quick()
    log = OpLog(tmp_path / "ops.h5", chip_id="t")
    chip.add_listener(log.listener)
    res = calibrate(chip, cfg)
    log.close()
    mn = cfg.n_conditions * cfg.n_devices
    reads = cfg.reads_per_device
    assert res.op_counts["SET"] == mn and res.op_counts["RESET"] == mn and res.op_counts["READ"] == 2 * reads * mn
    rows = read_oplog(tmp_path / "ops.h5")
    assert rows.size == sum(res.op_counts.values())
    for op in Op:
        assert int(np.sum(rows["op"] == int(op))) == res.op_counts[op.name]
    reads = rows[rows["op"] == int(Op.READ)]
    assert np.all(np.isfinite(reads["g_us"]))
    flat = (reads["tile"].astype(np.int64) * 128 + reads["row"]) * 128 + reads["col"]
    assert set(np.unique(flat)) <= set(res.cells.ravel().tolist())


# ---------------------------------------------------------------- file round trip and feedback
@pytest.fixture(scope="module")
def cal_file(
    tmp_path_factory: pytest.TempPathFactory,
    default_run: tuple[SimChip, CalibrationConfig, CalibrationResult],
) -> tuple[Path, CalibrationResult]:
    _chip, _cfg, res = default_run
    p = tmp_path_factory.mktemp("cal") / "chip.h5"
    write_calibration(res, p, chip_id="sim-test", synthetic=True, source_table="default")
    return p, res


def test_file_layout_and_weight_levels(cal_file) -> None:
    p, res = cal_file
    with h5py.File(p, "r") as f:
        assert f.attrs["format"] == "hwloop-calibration" and f.attrs["g_unit"] == "uS"
        assert sorted(f["levels"]) == sorted(["LCS", *[f"HCS{k}" for k in range(1, 9)]])
        assert f["sweep/samples_us"].shape == (res.config.n_conditions, res.config.n_devices)
        raw = {name: f["levels"][name]["samples_us"][()] for name in f["levels"]}
        q_file = f["weights/q"][()]
    table = load_table(p)  # loads as a CDF table
    q, scale = table.weight_levels(1.5)
    np.testing.assert_allclose(q_file, q)
    assert q.size == 17 and q[0] == pytest.approx(-1.5) and q[-1] == pytest.approx(1.5) and q[8] == 0
    assert np.all(np.diff(q) > 0)
    med = np.array([np.median(raw["LCS"]), *[np.median(raw[f"HCS{k}"]) for k in range(1, 9)]])
    np.testing.assert_allclose(q[9:], (med[1:] - med[0]) / scale, rtol=1e-9)
    assert scale == pytest.approx((med[-1] - med[0]) / 1.5)
    cal = load_calibration(p)
    assert [lv["median_us"] for lv in cal.describe()["levels"]] == pytest.approx(med.tolist())


def test_simulator_replays_calibrated_cdfs(cal_file) -> None:
    """--cdf <calibration>: the simulator's reads per level are within KS 0.02 of the calibrated CDFs (the
    measured reads stored with each level). The simulator adds its own read noise, which is why the
    file's level samples have the measured read noise taken out."""
    from hwloop.chip.factory import load_table_option, open_chip

    p, _ = cal_file
    table = load_table_option(str(p))
    measured = load_calibration(p).reads_us
    chip = open_chip("sim", n_tiles=1, table=table, seed=5)
    ok = chip.form_idx(np.arange(CELLS_PER_TILE))
    cells = np.flatnonzero(ok)
    for k, lv in enumerate(table.levels):
        if k == 0:
            chip.reset_idx(cells)
        else:
            chip.set_idx(cells, level=k)
        d_dev = sps.ks_2samp(chip.true_g_us(cells), lv.samples_us).statistic
        d_read = sps.ks_2samp(chip.read_idx(cells), measured[k]).statistic
        assert d_dev < 0.02 and d_read < 0.02, (lv.name, d_dev, d_read)


def test_safety_limit_refused_before_any_operation() -> None:
    class LimitedChip(SimChip):
        def check_v_gate(self, v_gate: object) -> None:
            v = np.asarray(v_gate)
            if np.any(v > 2.0):
                raise SafetyLimitError(f"V_WL {v.max():.2f} V exceeds the bench limit 2.0 V")

    chip = LimitedChip(1, seed=0)
    ops: list[Op] = []
    chip.add_listener(lambda op, *_: ops.append(op))
    with pytest.raises(SafetyLimitError):
        calibrate(chip, CalibrationConfig.quick())
    assert ops == []
    res = calibrate(chip, CalibrationConfig.quick().with_(v_gate_stop=2.0, n_conditions=16))
    assert res.v_gate.max() <= 2.0


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"n_devices": 600, "rows": (0, 4)}, "only .* usable"),
        ({"v_gate_stop": 1.0}, "must be above"),
        ({"n_conditions": 5}, "cannot give 8 HCS"),
        ({"n_devices": 4}, "too few"),
        ({"tiles": (3,)}, "do not exist"),
    ],
)
def test_bad_configuration(kw: dict, match: str) -> None:
    with pytest.raises(CalibrationError, match=match):
        calibrate(SimChip(1, seed=0), CalibrationConfig.quick().with_(**kw))
