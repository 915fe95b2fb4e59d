"""Selection of the HCS levels from a gate-voltage sweep, by dynamic programming.

Criterion (stated): choose ``n_hcs`` sweep conditions, rising in gate voltage *and* in median conductance,
that **maximise the worst-case separation** ``d`` (equivalently minimise the worst-case overlap) over the
chain of adjacent pairs LCS-HCS1, HCS1-HCS2, ..., HCS(n-1)-HCSn (``hwloop.calibration.stats``).

A max-min objective is flat in every pair except the worst one, so on a discrete sweep many selections
share the optimum. Ties are broken by a second dynamic programme over the selections that reach the
optimum: it maximises the sum of ``log d`` over the pairs, which spreads the slack evenly.
Both passes are exact (O(n_hcs * M^2) for M sweep conditions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwloop.calibration.stats import separation
from hwloop.errors import CalibrationError

CRITERION = "maximin-separation"
CRITERION_TEXT = (
    "maximise the worst-case separation d = (median_b - median_a) / (s_up_a + s_down_b) over adjacent "
    "pairs LCS-HCS1 ... HCS7-HCS8 (equivalently minimise the worst-case Gaussian-equivalent overlap "
    "Phi(-d)); levels rise in gate voltage and median; ties broken by maximising sum(log d)"
)


@dataclass
class Selection:
    index: np.ndarray  # (n_hcs,) indices into the sweep, ascending
    separation: np.ndarray  # (n_hcs,) d of LCS-HCS1, HCS1-HCS2, ...
    min_separation: float
    worst_pair: int  # index into ``separation`` of the worst pair


def select_levels(
    v_gate: np.ndarray,
    median_us: np.ndarray,
    s_down_us: np.ndarray,
    s_up_us: np.ndarray,
    lcs_median_us: float,
    lcs_s_up_us: float,
    n_hcs: int = 8,
    allowed: np.ndarray | None = None,
) -> Selection:
    """Pick ``n_hcs`` sweep conditions by the max-min separation criterion (see module docstring).

    ``allowed`` (bool per condition) restricts the candidates, e.g. to a gate-voltage window.
    """
    v = np.asarray(v_gate, dtype=np.float64)
    med = np.asarray(median_us, dtype=np.float64)
    m = v.size
    ok = np.ones(m, dtype=bool) if allowed is None else np.asarray(allowed, dtype=bool)
    # D[i, j]: separation of candidate i (lower) from candidate j (upper); valid only if both rise
    d_pair = separation(med[:, None], np.asarray(s_up_us)[:, None], med[None, :], np.asarray(s_down_us)[None, :])
    valid = (v[None, :] > v[:, None]) & (med[None, :] > med[:, None]) & ok[:, None] & ok[None, :]
    d_pair = np.where(valid, d_pair, -np.inf)
    d_lcs = separation(lcs_median_us, lcs_s_up_us, med, np.asarray(s_down_us))
    d_lcs = np.where((med > lcs_median_us) & ok, d_lcs, -np.inf)

    # pass 1: best[k, j] = best worst-case separation of a chain of k+1 levels ending at candidate j
    best = np.full((n_hcs, m), -np.inf)
    best[0] = d_lcs
    for k in range(1, n_hcs):
        best[k] = np.max(np.minimum(best[k - 1][:, None], d_pair), axis=0)
    d_star = float(np.max(best[n_hcs - 1]))
    if not np.isfinite(d_star):
        n_rising = int(np.sum(np.diff(np.maximum.accumulate(med)) > 0) + 1)
        raise CalibrationError(
            f"the sweep has no {n_hcs} conditions rising in conductance above LCS (about {n_rising} distinct "
            f"rising levels among {m} conditions); widen the gate-voltage range or add sweep points"
        )

    # pass 2: among chains whose every pair reaches d_star, maximise sum(log d)
    thr = d_star - 1e-9 * max(1.0, abs(d_star))
    ok_lcs = d_lcs >= thr
    ok_pair = d_pair >= thr
    if d_star <= 0:  # degenerate (overlapping levels): fall back to the raw separations for the tie-break
        log_lcs, log_pair = np.where(ok_lcs, d_lcs, -np.inf), np.where(ok_pair, d_pair, -np.inf)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            log_lcs = np.where(ok_lcs, np.log(np.maximum(d_lcs, 1e-300)), -np.inf)
            log_pair = np.where(ok_pair, np.log(np.maximum(d_pair, 1e-300)), -np.inf)
    score = np.full((n_hcs, m), -np.inf)
    back = np.zeros((n_hcs, m), dtype=np.intp)
    score[0] = log_lcs
    for k in range(1, n_hcs):
        cand = score[k - 1][:, None] + log_pair
        back[k] = np.argmax(cand, axis=0)
        score[k] = cand[back[k], np.arange(m)]
    j = int(np.argmax(score[n_hcs - 1]))
    idx = [j]
    for k in range(n_hcs - 1, 0, -1):
        j = int(back[k, j])
        idx.append(j)
    index = np.array(idx[::-1], dtype=np.intp)
    seps = np.concatenate([[d_lcs[index[0]]], d_pair[index[:-1], index[1:]]])
    return Selection(index=index, separation=seps, min_separation=float(seps.min()), worst_pair=int(np.argmin(seps)))
