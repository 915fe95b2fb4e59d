"""CDF extraction and level-separation figures for calibration.

Every function works on whole arrays: ``samples_us`` has shape ``(n_conditions, n_devices)``.

Separation criterion (the one the level selection maximises, see ``docs/calibration-format.md``):
for a lower level ``a`` and the next level up ``b``,

    d(a, b) = (median_b - median_a) / (s_up_a + s_down_b)

where ``s_up_a = q_a(0.8413) - median_a`` is the upper one-sigma half-width of ``a`` and
``s_down_b = median_b - q_b(0.1587)`` the lower one-sigma half-width of ``b`` (quantile-based, so it holds for
skewed levels such as the lognormal LCS). ``overlap = Phi(-d)`` is the equal-error rate of the two levels if
their facing tails were Gaussian: the fraction of devices of either level that fall on the wrong side of the
best threshold between them. The *empirical* equal-error rate from the raw samples is reported beside it.
"""

from __future__ import annotations

import numpy as np
from scipy import special

#: Probabilities of the quantiles stored per level and per sweep condition (0.005 steps, with 0 and 1).
QUANTILE_PROBABILITIES = np.linspace(0.0, 1.0, 201)
#: One-sigma probabilities of a Gaussian (Phi(-1), Phi(+1)).
P_MINUS_1SIGMA = float(special.ndtr(-1.0))
P_PLUS_1SIGMA = float(special.ndtr(1.0))


def extract(samples_us: np.ndarray) -> dict[str, np.ndarray]:
    """Median, standard deviation, quantiles and one-sigma half-widths per row of ``samples_us``.

    Returns arrays: ``median_us`` (M,), ``sigma_us`` (M,), ``quantiles_us`` (M, len(QUANTILE_PROBABILITIES)),
    ``s_down_us`` (M,) and ``s_up_us`` (M,).
    """
    s = np.atleast_2d(np.asarray(samples_us, dtype=np.float64))
    q = np.quantile(s, QUANTILE_PROBABILITIES, axis=1).T
    lo, med, hi = np.quantile(s, [P_MINUS_1SIGMA, 0.5, P_PLUS_1SIGMA], axis=1)
    return {
        "median_us": med,
        "sigma_us": np.std(s, axis=1),
        "quantiles_us": q,
        "s_down_us": med - lo,
        "s_up_us": hi - med,
    }


def separation(
    med_lo_us: np.ndarray, s_up_lo_us: np.ndarray, med_hi_us: np.ndarray, s_down_hi_us: np.ndarray
) -> np.ndarray:
    """Separation d (in one-sigma half-widths) of lower levels from upper levels (broadcasting)."""
    spread = np.maximum(np.asarray(s_up_lo_us) + np.asarray(s_down_hi_us), 1e-12)
    return (np.asarray(med_hi_us) - np.asarray(med_lo_us)) / spread


def gaussian_overlap(d: np.ndarray) -> np.ndarray:
    """Equal-error rate Phi(-d) of two levels ``d`` half-widths apart."""
    return special.ndtr(-np.asarray(d, dtype=np.float64))


def empirical_overlap(lower_us: np.ndarray, upper_us: np.ndarray) -> float:
    """Empirical equal-error rate of two sample sets.

    The minimum over thresholds t of max(P(lower > t), P(upper < t)).
    """
    a = np.sort(np.asarray(lower_us, dtype=np.float64))
    b = np.sort(np.asarray(upper_us, dtype=np.float64))
    t = np.concatenate([a, b])
    above_a = 1.0 - np.searchsorted(a, t, side="right") / a.size
    below_b = np.searchsorted(b, t, side="left") / b.size
    return float(np.min(np.maximum(above_a, below_b)))


def ks_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov distance (max |ECDF_x - ECDF_y|)."""
    a = np.sort(np.asarray(x, dtype=np.float64))
    b = np.sort(np.asarray(y, dtype=np.float64))
    t = np.concatenate([a, b])
    fa = np.searchsorted(a, t, side="right") / a.size
    fb = np.searchsorted(b, t, side="right") / b.size
    return float(np.max(np.abs(fa - fb)))


def remove_read_noise(read1_us: np.ndarray, read2_us: np.ndarray) -> tuple[np.ndarray, float]:
    """Device conductances with the read noise taken out, from two reads of the same devices.

    The read-noise variance is ``var(read1 - read2) / 2``, so the device spread is
    ``var(read1) - var_read``. The deviations of the first reads from their median are shrunk by
    ``sqrt(var_device / var(read1))`` (moment matching: exact in sigma for Gaussian levels, a close
    approximation for the skewed LCS). A simulator that adds the same read noise back then reproduces the
    measured CDF of the first reads. Returns (device samples in µS, read-noise sigma in µS).
    """
    r1 = np.asarray(read1_us, dtype=np.float64).reshape(-1)
    r2 = np.asarray(read2_us, dtype=np.float64).reshape(-1)
    var_read = float(np.var(r1 - r2) / 2.0)
    var_1 = float(np.var(r1))
    if var_1 <= 0:
        return r1.copy(), float(np.sqrt(var_read))
    var_dev = max(var_1 - var_read, 0.01 * var_1)
    med = float(np.median(r1))
    g = med + np.sqrt(var_dev / var_1) * (r1 - med)
    return np.maximum(g, 0.0), float(np.sqrt(var_read))
