"""Retention: program a population per level, read it back on a logarithmic time schedule, fit relaxation.

The model fitted per level k (the one ``SimChip(retention=...)`` replays, ``hwloop.chip.models``):

    g_i(t) = g_i(0) + (drift_us + sigma_us * z_i) * (1 - exp(-t / tau_s)),   z_i ~ N(0, 1)

The fit works on each device's change since its first read right after programming,
dg_i(t) = g_i(t) - g_i(0), which removes the programming spread: mean dg(t) = drift * s(t) and
var dg(t) = sigma^2 s(t)^2 + 2 sigma_read^2, s(t) = 1 - exp(-t/tau). The four parameters (drift, sigma,
tau, sigma_read) come from one least-squares fit over the schedule (scipy).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

from hwloop.characterise.population import ChipClock, form_population
from hwloop.chip.base import Chip
from hwloop.chip.models import FIT_DTYPE, FORMAT_VERSION, RETENTION_FORMAT
from hwloop.errors import CalibrationError, ConfigError


def parse_schedule(spec: str, duration_s: float, t_first_s: float) -> np.ndarray:
    """``log:K``: K read times spaced evenly in log t from ``t_first_s`` to ``duration_s``."""
    m = re.fullmatch(r"\s*log\s*:\s*(\d+)\s*", spec or "")
    if not m:
        raise ConfigError(f"--schedule {spec!r}: give log:K (K read times, log-spaced), e.g. log:20")
    k = int(m.group(1))
    if not 2 <= k <= 1000:
        raise ConfigError(f"--schedule {spec!r}: K must be 2..1000")
    if not (np.isfinite(duration_s) and np.isfinite(t_first_s) and 0 < t_first_s < duration_s):
        raise ConfigError(
            f"--t-first ({t_first_s} s) and --duration ({duration_s} s) must be finite with 0 < t-first < duration"
        )
    return np.geomspace(t_first_s, duration_s, k)


def parse_levels(spec: str, n_levels: int) -> np.ndarray:
    """``all`` or a comma list of level indices (0 = LCS, 1..n_hcs)."""
    if spec.strip().lower() == "all":
        return np.arange(n_levels)
    try:
        lv = sorted({int(x) for x in spec.split(",") if x.strip()})
    except ValueError as exc:
        raise ConfigError(f"--levels {spec!r}: give all or level indices like 0,1,8") from exc
    if not lv or lv[0] < 0 or lv[-1] >= n_levels:
        raise ConfigError(f"--levels {spec!r}: levels must be within 0..{n_levels - 1} (0 = LCS)")
    return np.array(lv)


@dataclass
class RetentionData:
    levels: np.ndarray  # (L,)
    devices: np.ndarray  # (L, N) flat indices
    times_s: np.ndarray  # (K+1,) measured time of each read pass since programming ended (first ~0)
    g_us: np.ndarray  # (K+1, L, N)
    fit: np.ndarray = field(default_factory=lambda: np.zeros(0, FIT_DTYPE))
    wait_s: float = 0.0  # wall time spent waiting for the schedule (0 on the simulated chip)

    @property
    def median_us(self) -> np.ndarray:
        return np.median(self.g_us, axis=2)

    @property
    def sigma_us(self) -> np.ndarray:
        return self.g_us.std(axis=2)


def measure(
    chip: Chip,
    levels: np.ndarray,
    n_per_level: int,
    times_s: np.ndarray,
    *,
    progress: Callable[[int], None] | None = None,
    on_phase: Callable[[int], None] | None = None,
) -> RetentionData:
    """Program ``n_per_level`` devices to each level (single shot), read them at 0 and at ``times_s``."""
    n = int(levels.size) * n_per_level
    dev = form_population(chip, n).reshape(levels.size, n_per_level)
    lv = np.repeat(levels, n_per_level)
    flat = dev.reshape(-1)
    if on_phase:
        on_phase(0)
    chip.reset_idx(flat)
    hcs = lv > 0
    if hcs.any():
        chip.set_idx(flat[hcs], level=lv[hcs])
    clock = ChipClock(chip)
    reads = np.empty((times_s.size + 1, levels.size, n_per_level), dtype=np.float32)
    t_meas = np.empty(times_s.size + 1)
    wait = 0.0
    for j, t in enumerate(np.concatenate([[0.0], times_s])):
        wait += clock.wait_until(float(t))
        t_meas[j] = clock.since_start()
        if on_phase:
            on_phase(j + 1)
        reads[j] = chip.read_idx(flat).reshape(levels.size, n_per_level)
        if progress:
            progress(1)
    return RetentionData(levels, dev, t_meas, reads, wait_s=wait)


def _model(t: np.ndarray, drift: float, sigma: float, log_tau: float, noise2: float) -> tuple[np.ndarray, np.ndarray]:
    s = 1.0 - np.exp(-t / np.exp(log_tau))
    return drift * s, np.sqrt(sigma**2 * s**2 + noise2)


def fit_level(times_s: np.ndarray, g_us: np.ndarray) -> dict:
    """Fit drift, sigma, tau (and read noise) to one level's reads ``g_us`` (K+1, N); first row at t ~ 0."""
    from scipy.optimize import least_squares

    d = (g_us[1:] - g_us[0]).astype(np.float64)
    t = times_s[1:] - times_s[0]
    mean, std = d.mean(axis=1), d.std(axis=1)
    n = d.shape[1]
    noise2_0 = max(float(std[0] ** 2), 1e-12)

    # weights: the standard errors of the sample mean and standard deviation
    def resid(p: np.ndarray) -> np.ndarray:
        m, s = _model(t, p[0], abs(p[1]), p[2], p[3] ** 2)
        return np.concatenate(
            [(mean - m) / np.maximum(s / np.sqrt(n), 1e-9), (std - s) / np.maximum(s / np.sqrt(2 * n), 1e-9)]
        )

    span = np.sqrt(max(float(std[-1] ** 2) - noise2_0, 1e-12))
    best = None
    for log_tau in np.linspace(np.log(t[0]), np.log(t[-1]), 7):  # multi-start over tau
        r = least_squares(resid, x0=[float(mean[-1]), span, log_tau, np.sqrt(noise2_0)], method="lm")
        if best is None or r.cost < best.cost:
            best = r
    assert best is not None
    drift, sigma, log_tau, noise = best.x
    m, s = _model(t, drift, abs(sigma), log_tau, noise**2)
    return {
        "drift_us": float(drift),
        "sigma_us": float(abs(sigma)),
        "tau_s": float(np.exp(log_tau)),
        "read_noise_us": float(abs(noise) / np.sqrt(2)),
        "rms_median_us": float(np.sqrt(np.mean((mean - m) ** 2))),
        "rms_sigma_us": float(np.sqrt(np.mean((std - s) ** 2))),
    }


def fit(data: RetentionData) -> np.ndarray:
    rows = np.zeros(data.levels.size, dtype=FIT_DTYPE)
    for k, lv in enumerate(data.levels):
        f = fit_level(data.times_s, data.g_us[:, k, :])
        rows[k] = (
            int(lv),
            float(np.median(data.g_us[0, k])),
            f["drift_us"],
            f["sigma_us"],
            f["tau_s"],
            f["rms_median_us"],
            f["rms_sigma_us"],
        )
    data.fit = rows
    return rows


def write(
    data: RetentionData,
    path: str | Path,
    *,
    chip_id: str,
    backend: str,
    schedule: str,
    duration_s: float,
    calibration: str = "",
    oplog: str = "",
    synthetic: bool = True,
) -> Path:
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(p, "w") as f:
            a = f.attrs
            a["format"] = RETENTION_FORMAT
            a["format_version"] = FORMAT_VERSION
            a["created_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            a["chip_id"], a["backend"], a["schedule"] = chip_id, backend, schedule
            a["duration_s"], a["calibration_file"], a["oplog"] = duration_s, calibration, oplog
            a["synthetic"] = synthetic
            a["model"] = "g(t) = g(0) + (drift_us + sigma_us*z) * (1 - exp(-t/tau_s)), z ~ N(0,1) per device"
            f.create_dataset("levels", data=data.levels.astype(np.int16))
            f.create_dataset("devices", data=data.devices.astype(np.int64), compression="gzip")
            f.create_dataset("times_s", data=data.times_s)
            f.create_dataset("g_us", data=data.g_us, compression="gzip", chunks=(1, 1, data.g_us.shape[2]))
            f.create_dataset("median_us", data=data.median_us)
            f.create_dataset("sigma_us", data=data.sigma_us)
            f.create_dataset("fit", data=data.fit)
    except OSError as exc:
        raise CalibrationError(f"cannot write the retention file {p} ({exc}); give another --out") from exc
    return p


def plot(data: RetentionData, out: str | Path) -> Path:
    """Median and sigma of every level against log t, with the fitted model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    try:
        t = data.times_s[1:]
        tt = np.geomspace(t[0], t[-1], 200)
        cmap = matplotlib.colormaps["viridis"]
        for k, lv in enumerate(data.levels):
            c = cmap(k / max(data.levels.size - 1, 1))
            a1.semilogx(t, data.median_us[1:, k], "o", ms=3, color=c, label=f"level {lv}")
            a2.semilogx(t, data.sigma_us[1:, k], "o", ms=3, color=c)
            if data.fit.size:
                r = data.fit[k]
                s = 1.0 - np.exp(-(tt - data.times_s[0]) / r["tau_s"])
                a1.semilogx(tt, data.median_us[0, k] + r["drift_us"] * s, "-", lw=1, color=c)
                s0 = data.sigma_us[0, k]
                a2.semilogx(tt, np.sqrt(s0**2 + (r["sigma_us"] * s) ** 2), "-", lw=1, color=c)
        a1.set_xlabel("time since programming t (s)")
        a1.set_ylabel("median G (µS)")
        a2.set_xlabel("time since programming t (s)")
        a2.set_ylabel("σ of G (µS)")
        a1.legend(fontsize=7)
        for a in (a1, a2):
            a.grid(alpha=0.3)
        fig.tight_layout()
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=120)
    finally:
        plt.close(fig)
    return out
