"""Endurance cycling: SET/RESET a population, read the window every K cycles, find failures, fit the
cycles-to-failure distribution (lognormal and Weibull, with censoring).

A *cycle* is one RESET then one SET (at ``set_level``, default the top HCS level). On every K-th cycle
(and the last) the devices are read after the RESET and after the SET: the *window reads*. A read cycle
is a failure sign when the device is

- ``stuck_hcs``: the read after RESET is at or above the LCS/HCS split (``characterise.wear.class_split_us``),
- ``stuck_lcs``: the read after SET is below the split,
- ``closed``: neither, but G_HCS / G_LCS < ``min_ratio``.

A device fails after ``confirm`` read cycles in a row show a sign; it is then no longer cycled. Its cycles
to failure lie in (last good read cycle, first failing read cycle] (interval-censored); a device still
working at the end is right-censored at its cycle count. Cycle counts include the device's cycles before
the run (``Chip.cycles``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hwloop.characterise.population import form_population
from hwloop.characterise.wear import class_split_us
from hwloop.chip.base import Chip
from hwloop.chip.models import EnduranceModel
from hwloop.errors import ConfigError

MODES = {"ok": 0, "stuck_hcs": 1, "stuck_lcs": 2, "closed": 3}


@dataclass
class CycleResult:
    devices: np.ndarray
    failed: np.ndarray  # bool
    mode: np.ndarray  # uint8 MODES code of the failure (0: not failed)
    lo_cycles: np.ndarray  # last cycle known good (interval start); for survivors, the censoring count
    hi_cycles: np.ndarray  # first failing read cycle (interval end); NaN for survivors
    read_cycles: np.ndarray  # cycle numbers of the read passes
    g_lcs_median_us: np.ndarray  # median over live devices per read pass
    g_hcs_median_us: np.ndarray
    split_us: float
    pulses: int = 0


def run_cycles(
    chip: Chip,
    n_devices: int,
    cycles: int,
    read_every: int,
    *,
    set_level: int | None = None,
    confirm: int = 2,
    min_ratio: float = 2.0,
    progress: Callable[[int], None] | None = None,
    on_cycle: Callable[[int], None] | None = None,
) -> CycleResult:
    if cycles < 1 or read_every < 1 or confirm < 1:
        raise ConfigError("--cycles, --read-every and --confirm must be at least 1")
    if not (np.isfinite(min_ratio) and min_ratio >= 1.0):
        raise ConfigError(f"--min-ratio must be a finite number >= 1, got {min_ratio}")
    lv = chip.table.n_hcs if set_level is None else int(set_level)
    if not 1 <= lv <= chip.table.n_hcs:
        raise ConfigError(f"--set-level must be 1..{chip.table.n_hcs}")
    dev = form_population(chip, n_devices)
    split = class_split_us(chip.table)
    n = dev.size
    c0 = chip.cycles[dev].copy()
    failed = np.zeros(n, dtype=bool)
    mode = np.zeros(n, dtype=np.uint8)
    streak = np.zeros(n, dtype=np.int64)
    first_bad = np.full(n, np.nan)
    last_good = c0.astype(np.float64)
    lo = np.zeros(n)
    hi = np.full(n, np.nan)
    read_cyc: list[int] = []
    med_l: list[float] = []
    med_h: list[float] = []
    live = np.arange(n)
    pulses = 0
    for c in range(1, cycles + 1):
        if live.size == 0:
            break
        if on_cycle:
            on_cycle(c)
        d = dev[live]
        reading = c % read_every == 0 or c == cycles
        chip.reset_idx(d)
        g_l = chip.read_idx(d) if reading else None
        chip.set_idx(d, level=lv)
        pulses += 2 * int(d.size)
        if progress:
            progress(1)
        if not reading:
            continue
        g_h = chip.read_idx(d)
        assert g_l is not None
        now = c0[live] + c
        sign = np.zeros(live.size, dtype=np.uint8)
        ratio_ok = g_h >= min_ratio * np.maximum(g_l, 1e-6)
        sign[~ratio_ok] = MODES["closed"]
        sign[g_h < split] = MODES["stuck_lcs"]
        sign[g_l >= split] = MODES["stuck_hcs"]
        bad = sign > 0
        start = bad & (streak[live] == 0)
        first_bad[live[start]] = now[start]
        streak[live] = np.where(bad, streak[live] + 1, 0)
        last_good[live[~bad]] = now[~bad]
        done = streak[live] >= confirm
        if done.any():
            k = live[done]
            failed[k] = True
            mode[k] = sign[done]
            lo[k] = last_good[k]
            hi[k] = first_bad[k]
            live = live[~done]
        read_cyc.append(c)
        med_l.append(float(np.median(g_l)))
        med_h.append(float(np.median(g_h)))
    survivors = ~failed
    lo[survivors] = np.where(streak[survivors] > 0, last_good[survivors], c0[survivors] + c)
    return CycleResult(dev, failed, mode, lo, hi, np.array(read_cyc), np.array(med_l), np.array(med_h), split, pulses)


def _loglik(dist: object, lo: np.ndarray, hi: np.ndarray, right: np.ndarray) -> float:
    cdf = dist.cdf  # type: ignore[attr-defined]
    p = np.concatenate([cdf(hi) - cdf(lo), 1.0 - cdf(right)])
    return float(np.sum(np.log(np.maximum(p, 1e-300))))


def fit_cycles(res: CycleResult) -> dict:
    """Lognormal and Weibull fits by maximum likelihood over interval- and right-censored counts."""
    from scipy import stats

    f = res.failed
    if f.sum() < 3:
        raise ConfigError(
            f"only {int(f.sum())} device(s) failed in the run: cycle longer (--cycles) or more "
            "devices to fit a distribution"
        )
    lo = np.maximum(res.lo_cycles[f], 0.5)
    hi = np.maximum(res.hi_cycles[f], lo + 1e-6)
    right = np.maximum(res.lo_cycles[~f], 0.5)
    data = stats.CensoredData(interval=np.column_stack([lo, hi]), right=right)
    with np.errstate(divide="ignore", invalid="ignore"):  # the optimiser probes parameters with zero mass
        s, _, scale = stats.lognorm.fit(data, floc=0)
        c, _, wscale = stats.weibull_min.fit(data, floc=0)
    ln = stats.lognorm(s, scale=scale)
    wb = stats.weibull_min(c, scale=wscale)
    ll_ln, ll_wb = _loglik(ln, lo, hi, right), _loglik(wb, lo, hi, right)
    n_f = int(f.sum())
    stuck = res.mode[f]
    n_stuck = int(np.isin(stuck, (MODES["stuck_hcs"], MODES["stuck_lcs"])).sum())
    frac_hcs = float((stuck == MODES["stuck_hcs"]).sum() / n_stuck) if n_stuck else 0.5
    return {
        "devices": int(f.size),
        "failed": n_f,
        "censored": int((~f).sum()),
        "modes": {k: int((stuck == v).sum()) for k, v in MODES.items() if v},
        "lognormal": {
            "median_cycles": float(scale),
            "log_sigma": float(s),
            "loglik": ll_ln,
            "se_log_median": float(s / np.sqrt(n_f)),
            "se_log_sigma": float(s / np.sqrt(2 * n_f)),
        },
        "weibull": {"scale_cycles": float(wscale), "shape": float(c), "loglik": ll_wb},
        "best": "lognormal" if ll_ln >= ll_wb else "weibull",
        "stuck_hcs_fraction": frac_hcs,
    }


def model_from_fit(fit: dict, distribution: str | None = None) -> EnduranceModel:
    dist = distribution or fit["best"]
    return EnduranceModel(
        distribution=dist,
        median_cycles=fit["lognormal"]["median_cycles"],
        log_sigma=fit["lognormal"]["log_sigma"],
        weibull_scale=fit["weibull"]["scale_cycles"],
        weibull_shape=fit["weibull"]["shape"],
        stuck_hcs_fraction=fit["stuck_hcs_fraction"],
    )
