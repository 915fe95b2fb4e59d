"""Text for reports and summaries: mean ± standard deviation as the paper writes it, and Markdown tables.

One convention everywhere (``hwloop report``, a sweep's ``summary.md``): ``97.47 % ± 0.33 %`` is the mean and
the sample standard deviation (n − 1) over repetitions; a single run (or an unknown std) shows just its value,
``97.47 %``, because one run has no spread to show (the tables say how many runs each row holds); an unknown
mean is ``–``. Only the standard library and numpy, so low layers may use it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

DASH = "–"


def mean_std(values: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample standard deviation (ddof = 1) along axis 0, ignoring NaN; NaN where nothing is known.

    A 1-D input gives 0-d arrays (``float(m)`` for a number); a std needs at least two finite values.
    """
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    n = ok.sum(axis=0)
    s = np.where(ok, v, 0.0).sum(axis=0)
    mean = np.where(n > 0, s / np.maximum(n, 1), np.nan)
    dev = np.where(ok, v - mean, 0.0)
    var = np.where(n > 1, (dev**2).sum(axis=0) / np.maximum(n - 1, 1), np.nan)
    return mean, np.sqrt(var)


def format_pct(v: float | None, digits: int = 2) -> str:
    """``97.47 %``; ``–`` for None or a non-finite value."""
    return DASH if v is None or not math.isfinite(v) else f"{v:.{digits}f} %"


def format_pm(mean: float, std: float | None, n: int | None = None, digits: int = 2) -> str:
    """``97.47 % ± 0.33 %`` (percent in); the mean alone for one run (``n < 2``) or an unknown std; ``–`` if no mean."""
    if not math.isfinite(mean):
        return DASH
    if (n is not None and n < 2) or std is None or not math.isfinite(std):
        return format_pct(mean, digits)
    return f"{mean:.{digits}f} % ± {std:.{digits}f} %"


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A GitHub Markdown table as lines: header, ``|---|`` rule, one line per row (cells are not escaped)."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out
