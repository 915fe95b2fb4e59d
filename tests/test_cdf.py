"""CDF tables: loading (HDF5, CSV wide and long), validation, sampling and the shipped default table."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy import stats

from hwloop.chip import default_table as dt
from hwloop.chip.cdf import (
    FORMAT_NAME,
    FORMAT_VERSION,
    GRID_POINTS,
    CdfTable,
    Level,
    load_csv,
    load_h5,
    load_table,
)
from hwloop.errors import CdfTableError, HwloopError

MakeTable = Callable[..., CdfTable]


def ks_to_table(table: CdfTable, level: int, g_us: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance between samples and the table's CDF for ``level``."""
    x = np.sort(np.asarray(g_us, dtype=np.float64))
    f = table.cdf(level, x)
    n = x.size
    return float(max(np.max(np.arange(1, n + 1) / n - f), np.max(f - np.arange(n) / n)))


def assert_same_levels(a: CdfTable, b: CdfTable) -> None:
    assert [lv.name for lv in a.levels] == [lv.name for lv in b.levels]
    assert [lv.kind for lv in a.levels] == [lv.kind for lv in b.levels]
    np.testing.assert_array_equal(a.v_gate, b.v_gate)
    np.testing.assert_array_equal(a.icc_ua, b.icc_ua)
    for la, lb in zip(a.levels, b.levels, strict=True):
        for attr in ("samples_us", "quantiles_us", "probabilities"):
            va, vb = getattr(la, attr), getattr(lb, attr)
            assert (va is None) == (vb is None), (la.name, attr)
            if va is not None:
                np.testing.assert_array_equal(va, vb)
    np.testing.assert_array_equal(a.grid, b.grid)


# ------------------------------------------------------------------ shipped default table
def test_shipped_default_file_equals_builder_and_is_synthetic(default_cdf: CdfTable) -> None:
    built = dt.build_default_table()
    assert_same_levels(default_cdf, built)
    assert default_cdf.synthetic is True
    assert "SYNTHETIC" in default_cdf.provenance
    assert default_cdf.provenance == built.provenance
    assert default_cdf.extra == built.extra
    with h5py.File(dt.default_table_path(), "r") as f:
        assert f.attrs["synthetic"]
        assert f.attrs["format"] == FORMAT_NAME


def test_default_table_shape_follows_its_parameters(default_cdf: CdfTable) -> None:
    # medians and sigmas of the loaded table come back to the numbers in default_table.py
    np.testing.assert_allclose(default_cdf.medians_us[1:], dt.HCS_MEDIAN_US, rtol=1e-6)
    np.testing.assert_allclose(default_cdf.medians_us[0], dt.LCS_MEDIAN_US, rtol=1e-6)
    np.testing.assert_allclose(default_cdf.sigmas_us[1:], dt.HCS_SIGMA_US, rtol=0.02)
    np.testing.assert_array_equal(default_cdf.v_gate[1:], dt.V_GATE)
    assert np.all(np.diff(default_cdf.icc_ua[1:]) > 0)


# ------------------------------------------------------------------ sampling
@pytest.mark.parametrize("level", [0, 1, 4, 8])
def test_sampling_matches_the_source_distribution(default_cdf: CdfTable, level: int) -> None:
    """Samples follow the analytic distribution the default table was built from (not the table's own CDF)."""
    rng = np.random.default_rng(1234 + level)
    n = 20_000
    g = default_cdf.sample(level, rng, size=n)
    if level == 0:
        ref = stats.lognorm(s=dt.LCS_LOG_SIGMA, scale=dt.LCS_MEDIAN_US)
    else:
        ref = stats.norm(loc=dt.HCS_MEDIAN_US[level - 1], scale=dt.HCS_SIGMA_US[level - 1])
    d = stats.kstest(g, ref.cdf).statistic
    crit = 1.95 / np.sqrt(n)  # KS critical value at alpha = 0.001
    assert d < crit
    # the same check rejects the wrong distribution: a shift of a fifth of a sigma is caught
    shifted = g + 0.2 * np.std(g)
    assert stats.kstest(shifted, ref.cdf).statistic > 3 * crit


def test_ks_against_table_detects_a_shifted_table(make_table: MakeTable) -> None:
    table = make_table(seed=3, n=2000)
    shifted = make_table(seed=3, n=2000, shift_us=1.0)  # a third of a sigma
    rng = np.random.default_rng(5)
    n = 20_000
    crit = 1.95 / np.sqrt(n)
    for level in range(1, table.n_levels):
        assert ks_to_table(table, level, table.sample(level, rng, size=n)) < crit
        assert ks_to_table(table, level, shifted.sample(level, rng, size=n)) > 3 * crit


def test_sample_vectorized_levels_and_determinism(default_cdf: CdfTable) -> None:
    lv = np.repeat(np.arange(default_cdf.n_levels), 4000)
    a = default_cdf.sample(lv, np.random.default_rng(9))
    b = default_cdf.sample(lv, np.random.default_rng(9))
    np.testing.assert_array_equal(a, b)
    med = np.median(a.reshape(default_cdf.n_levels, -1), axis=1)
    sig = default_cdf.sigmas_us
    assert np.all(np.abs(med - default_cdf.medians_us) < 4 * sig / np.sqrt(4000) * 1.3)
    assert np.all(np.diff(med) > 0)
    assert np.all(a >= default_cdf.grid.min())


def test_cdf_is_a_distribution_function(default_cdf: CdfTable) -> None:
    x = np.linspace(-5.0, 200.0, 5001)
    for level in range(default_cdf.n_levels):
        f = default_cdf.cdf(level, x)
        assert f[0] == 0.0 and f[-1] == 1.0
        assert np.all(np.diff(f) >= 0)
        f_med = default_cdf.cdf(level, np.array([default_cdf.medians_us[level]]))[0]
        assert f_med == pytest.approx(0.5, abs=1e-3)


def test_cdf_of_samples_with_ties(make_table: MakeTable) -> None:
    t = make_table()
    lv = t.levels[1]
    lv2 = Level("HCS1", "HCS", lv.v_gate, lv.icc_ua, samples_us=np.round(lv.samples_us))  # many ties
    t2 = CdfTable([t.levels[0], lv2, *t.levels[2:]])
    f = t2.cdf(1, np.sort(lv2.samples_us))
    assert np.all(np.diff(f) >= 0)


def test_vgate_interpolation_median_between_neighbours(default_cdf: CdfTable) -> None:
    v = default_cdf.v_gate[1:]
    mid = 0.5 * (v[:-1] + v[1:])
    grids = default_cdf.hcs_grid_at(mid)
    med = grids[:, (GRID_POINTS - 1) // 2]
    m = default_cdf.medians_us[1:]
    np.testing.assert_allclose(med, 0.5 * (m[:-1] + m[1:]), rtol=1e-9)
    # at a tabled voltage the grid is the tabled level's; outside the range the nearest level
    np.testing.assert_array_equal(default_cdf.hcs_grid_at(v), default_cdf.grid[1:])
    out = default_cdf.hcs_grid_at(np.array([v[0] - 1.0, v[-1] + 1.0]))
    np.testing.assert_array_equal(out, default_cdf.grid[[1, -1]])


def test_vgate_interpolation_with_a_single_hcs_level(make_table: MakeTable) -> None:
    t = make_table(n_hcs=1)
    g = t.hcs_grid_at(np.array([0.5, t.v_gate[1], 3.0]))
    for row in g:
        np.testing.assert_array_equal(row, t.grid[1])


def test_icc_interpolation_is_monotone(default_cdf: CdfTable) -> None:
    v = np.linspace(default_cdf.v_gate[1], default_cdf.v_gate[-1], 50)
    icc = default_cdf.icc_at(v)
    assert np.all(np.diff(icc) > 0)
    np.testing.assert_allclose(default_cdf.icc_at(default_cdf.v_gate[1:]), default_cdf.icc_ua[1:], rtol=1e-9)


def test_weight_levels(default_cdf: CdfTable) -> None:
    q, scale_us = default_cdf.weight_levels(w_max=1.5)
    assert q.size == 2 * default_cdf.n_hcs + 1
    np.testing.assert_allclose(q, -q[::-1])
    assert q[-1] == pytest.approx(1.5) and q[default_cdf.n_hcs] == 0.0
    assert np.all(np.diff(q) > 0)
    np.testing.assert_allclose(q[-1] * scale_us, default_cdf.medians_us[-1] - default_cdf.medians_us[0])


# ------------------------------------------------------------------ round trips
def test_h5_round_trip_quantiles(default_cdf: CdfTable, tmp_path: Path) -> None:
    p = tmp_path / "t.h5"
    default_cdf.save_h5(p)
    back = load_table(p)
    assert_same_levels(default_cdf, back)
    assert back.synthetic and back.provenance == default_cdf.provenance
    assert back.extra == default_cdf.extra and back.chip_id == default_cdf.chip_id
    assert back.read_voltage_v == default_cdf.read_voltage_v


def test_h5_round_trip_samples(make_table: MakeTable, tmp_path: Path) -> None:
    t = make_table(seed=11)
    t.extra = {"note": "x", "n": [1, 2]}
    p = tmp_path / "s.h5"
    t.save_h5(p)
    back = load_h5(p)
    assert_same_levels(t, back)
    assert back.extra == t.extra and back.synthetic is False and back.provenance == t.provenance


def test_csv_wide_round_trip_samples(make_table: MakeTable, tmp_path: Path) -> None:
    t = make_table(seed=12)
    # unequal sample counts per level: short columns leave empty cells
    t.levels[2].samples_us = t.levels[2].samples_us[:123]
    t = CdfTable(t.levels, provenance="bench A, wafer 3", chip_id="c7", read_voltage_v=0.2)
    p = tmp_path / "w.csv"
    t.save_csv(p)
    back = load_table(p)
    assert_same_levels(t, back)
    assert back.provenance == "bench A, wafer 3" and back.chip_id == "c7" and back.read_voltage_v == 0.2


def test_csv_wide_round_trip_quantiles(default_cdf: CdfTable, tmp_path: Path) -> None:
    p = tmp_path / "q.csv"
    default_cdf.save_csv(p)
    back = load_csv(p)
    assert_same_levels(default_cdf, back)
    assert back.synthetic is True


def test_csv_wide_round_trip_mixed_samples_and_quantiles(
    default_cdf: CdfTable, make_table: MakeTable, tmp_path: Path
) -> None:
    lcs = make_table(seed=2).levels[0]  # raw samples
    t = CdfTable([lcs, *default_cdf.levels[1:]])  # HCS as quantiles
    p = tmp_path / "mixed.csv"
    t.save_csv(p)
    assert_same_levels(t, load_csv(p))


def test_csv_long_form(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    data = {"LCS": rng.lognormal(1.0, 0.4, 300), "L1": rng.normal(40, 3, 200), "L2": rng.normal(70, 3, 250)}
    lines = [
        "# hwloop-cdf 1",
        "# g_unit: uS",
        "# provenance: long-form test",
        "# level: name=LCS kind=LCS v_gate=4.8 icc_ua=0",
        "# level: name=L2 kind=HCS v_gate=2.0 icc_ua=150",
        "# level: name=L1 kind=HCS v_gate=1.6 icc_ua=40",
        "level,g_us",
    ]
    flat = [(k, float(x)) for k, v in data.items() for x in v]
    order = rng.permutation(len(flat))
    lines += [f"{flat[i][0]},{flat[i][1]!r}" for i in order]  # rows in any order
    p = tmp_path / "long.csv"
    p.write_text("\n".join(lines) + "\n")
    t = load_table(p)
    assert [lv.name for lv in t.levels] == ["LCS", "L1", "L2"]  # ordered by gate voltage
    for lv in t.levels:
        np.testing.assert_array_equal(np.sort(lv.samples_us), np.sort(data[lv.name]))
    assert t.v_gate.tolist() == [4.8, 1.6, 2.0] and t.icc_ua.tolist() == [0.0, 40.0, 150.0]
    assert t.provenance == "long-form test"


@pytest.mark.parametrize("layout", ["root", "cdf_group"])
def test_calibration_file_loads_as_a_cdf_table(default_cdf: CdfTable, tmp_path: Path, layout: str) -> None:
    """A calibration file keeps the table's layout at its root (or in a ``cdf`` group) with its own format."""
    p = tmp_path / "cal.h5"
    with h5py.File(p, "w") as f:
        grp = f if layout == "root" else f.create_group("cdf")
        default_cdf.write_h5_group(grp)
        grp.attrs["format"] = "hwloop-calibration"
        f.attrs["format"] = "hwloop-calibration"
        f.create_group("selection").attrs["n_hcs"] = default_cdf.n_hcs  # other groups are ignored
    back = load_table(p)
    assert_same_levels(default_cdf, back)
    assert back.provenance == default_cdf.provenance


# ------------------------------------------------------------------ bad tables
def _write_h5(path: Path, table: CdfTable, **attrs: object) -> Path:
    table.save_h5(path)
    with h5py.File(path, "a") as f:
        for k, v in attrs.items():
            f.attrs[k] = v
    return path


def _raises_one(match: str, fn: Callable[[], object]) -> CdfTableError:
    with pytest.raises(CdfTableError, match=match) as ei:
        fn()
    msg = str(ei.value)
    assert "\n" not in msg and len(msg) < 400
    return ei.value


def test_bad_non_monotone_levels(make_table: MakeTable) -> None:
    t = make_table()
    lv = t.levels
    swapped = [
        lv[0],
        Level(lv[1].name, "HCS", lv[2].v_gate, 1, samples_us=lv[1].samples_us),
        Level(lv[2].name, "HCS", lv[1].v_gate, 1, samples_us=lv[2].samples_us),
    ]
    _raises_one("non-monotone", lambda: CdfTable(swapped))
    hi_lcs = Level("LCS", "LCS", 4.8, 0, samples_us=lv[3].samples_us + 10)
    _raises_one("LCS median", lambda: CdfTable([hi_lcs, *lv[1:]]))


def test_bad_non_monotone_levels_in_csv(make_table: MakeTable, tmp_path: Path) -> None:
    t = make_table()
    p = tmp_path / "t.csv"
    t.save_csv(p)
    text = p.read_text().replace("name=HCS1 kind=HCS v_gate=1.4", "name=HCS1 kind=HCS v_gate=1.9")
    p.write_text(text)
    _raises_one("non-monotone", lambda: load_table(p))


def test_bad_empty_level(make_table: MakeTable, tmp_path: Path) -> None:
    t = make_table()
    empty = Level("HCS9", "HCS", 3.0, 1, samples_us=np.array([]))
    _raises_one("empty", lambda: CdfTable([*t.levels, empty]))
    # CSV: a column with no values at all
    p = tmp_path / "t.csv"
    t.save_csv(p)
    lines = p.read_text().splitlines()
    hdr = next(i for i, ln in enumerate(lines) if not ln.startswith("#"))
    lines.insert(hdr, "# level: name=HCS9 kind=HCS v_gate=3.0 icc_ua=300")
    lines[hdr + 1] += ",HCS9"
    lines[hdr + 2 :] = [ln + "," for ln in lines[hdr + 2 :]]
    p.write_text("\n".join(lines) + "\n")
    _raises_one("empty", lambda: load_table(p))
    # HDF5: a level group with no data set
    h = tmp_path / "t.h5"
    t.save_h5(h)
    with h5py.File(h, "a") as f:
        g = f["levels"].create_group("HCS9")
        g.attrs.update({"kind": "HCS", "v_gate": 3.0, "icc_ua": 300.0})
    _raises_one("empty", lambda: load_table(h))


def test_bad_units_siemens(make_table: MakeTable, tmp_path: Path) -> None:
    t = make_table()
    in_s = [Level(lv.name, lv.kind, lv.v_gate, lv.icc_ua, samples_us=lv.samples_us * 1e-6) for lv in t.levels]
    _raises_one("siemens", lambda: CdfTable(in_s))
    # a g_s column (long form) and a g_unit that is not uS (CSV and HDF5)
    p = tmp_path / "g_s.csv"
    p.write_text("# level: name=HCS1 kind=HCS v_gate=1.5 icc_ua=20\nlevel,g_s\nLCS,3e-6\nHCS1,4e-5\n")
    _raises_one("g_us", lambda: load_table(p))
    p2 = tmp_path / "unit.csv"
    t.save_csv(p2)
    p2.write_text(p2.read_text().replace("# g_unit: uS", "# g_unit: S"))
    _raises_one("unit", lambda: load_table(p2))
    h = _write_h5(tmp_path / "unit.h5", t, g_unit="S")
    _raises_one("unit", lambda: load_table(h))


def test_bad_format_version(make_table: MakeTable, tmp_path: Path) -> None:
    t = make_table()
    h = _write_h5(tmp_path / "v.h5", t, format_version=FORMAT_VERSION + 1)
    _raises_one("format version", lambda: load_table(h))
    p = tmp_path / "v.csv"
    t.save_csv(p)
    text = p.read_text()
    p.write_text(text.replace(f"# hwloop-cdf {FORMAT_VERSION}", f"# hwloop-cdf {FORMAT_VERSION + 1}"))
    _raises_one("format version", lambda: load_table(p))
    h2 = _write_h5(tmp_path / "f.h5", t, format="something-else")
    _raises_one("not an hwloop CDF table", lambda: load_table(h2))


def test_bad_quantiles_and_kinds(make_table: MakeTable) -> None:
    t = make_table()
    p = np.linspace(0, 1, 5)
    falling = Level("HCS9", "HCS", 3.0, 1, quantiles_us=np.array([200, 199, 198, 197, 196.0]), probabilities=p)
    _raises_one("quantiles must rise", lambda: CdfTable([*t.levels, falling]))
    no_p = Level("HCS9", "HCS", 3.0, 1, quantiles_us=np.array([200, 201, 202, 203, 204.0]))
    _raises_one("probabilities", lambda: CdfTable([*t.levels, no_p]))
    odd = Level("X", "MID", 3.0, 1, samples_us=np.array([200.0]))
    _raises_one("unknown level kind", lambda: CdfTable([*t.levels, odd]))
    _raises_one("exactly one LCS", lambda: CdfTable(t.levels[1:]))
    _raises_one("no levels", lambda: CdfTable([]))
    nan = Level("HCS9", "HCS", 3.0, 1, samples_us=np.array([200.0, np.nan]))
    _raises_one("non-finite", lambda: CdfTable([*t.levels, nan]))
    no_v = Level("HCS9", "HCS", float("nan"), 1, samples_us=np.array([200.0]))
    _raises_one("gate voltage", lambda: CdfTable([*t.levels, no_v]))
    same_v = Level("HCS9", "HCS", t.levels[1].v_gate, 1, samples_us=np.array([200.0]))
    _raises_one("same gate voltage", lambda: CdfTable([*t.levels, same_v]))


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("missing.csv", None, "does not exist"),
        ("garbage.h5", b"this is not hdf5", "not a readable HDF5"),
        ("binary.csv", b"\xff\xfe\x00\x81\x82 not text", "not a readable CSV"),
        ("text.csv", b"LCS,HCS1\n3.0,abc\n", "not a number"),
        ("nodata.csv", b"# hwloop-cdf 1\n", "no data rows"),
        ("short.csv", b"level,g_us\nLCS\n", "not a readable CSV"),
        ("novgate.csv", b"LCS,HCS1\n3.0,50\n", "no gate voltage"),
        ("badmeta.csv", b"# level: name=HCS1 kind=HCS v_gate=high\nLCS,HCS1\n3.0,50\n", "not a readable CSV"),
    ],
)
def test_bad_files_give_one_cdf_table_error(tmp_path: Path, name: str, content: bytes | None, match: str) -> None:
    p = tmp_path / name
    if content is not None:
        p.write_bytes(content)
    err = _raises_one(match, lambda: load_table(p))
    assert isinstance(err, HwloopError)
