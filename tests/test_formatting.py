"""The one mean ± std formatter and Markdown table writer (hwloop.formatting), used by report and sweep."""

from __future__ import annotations

import math
import statistics

import numpy as np

from hwloop.formatting import format_pct, format_pm, md_table, mean_std


def test_format_pm_as_the_paper_writes_it() -> None:
    assert format_pm(97.4712, 0.3349) == "97.47 % ± 0.33 %"
    assert format_pm(97.4712, 0.3349, n=15) == "97.47 % ± 0.33 %"
    # one run: the value alone, whether the caller passes n or a NaN std
    assert format_pm(86.09, 0.5, n=1) == "86.09 %"
    assert format_pm(86.09, math.nan) == "86.09 %"
    assert format_pm(86.09, None) == "86.09 %"
    assert format_pm(math.nan, 0.1, n=3) == "–"
    assert format_pct(None) == "–" and format_pct(1.0, digits=1) == "1.0 %"


def test_mean_std_matches_statistics_and_ignores_nan() -> None:
    vals = [97.1, 97.9, 96.8, 97.4]
    m, s = mean_std(vals)
    assert math.isclose(float(m), statistics.mean(vals)) and math.isclose(float(s), statistics.stdev(vals))
    cols = np.array([[1.0, np.nan], [3.0, np.nan], [np.nan, 5.0]])
    m, s = mean_std(cols)
    assert m.tolist() == [2.0, 5.0]
    assert math.isclose(s[0], math.sqrt(2.0)) and math.isnan(s[1])  # one value: no std
    m, s = mean_std([])
    assert math.isnan(float(m)) and math.isnan(float(s))


def test_md_table() -> None:
    assert md_table(["a", "b"], [["1", "2"], ["3", "4"]]) == ["| a | b |", "|---|---|", "| 1 | 2 |", "| 3 | 4 |"]
    assert md_table(["x"], []) == ["| x |", "|---|"]
