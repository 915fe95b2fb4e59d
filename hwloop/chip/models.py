"""Device models measured by characterisation, in files the simulated chip replays.

Two HDF5 formats (documented in ``docs/characterise.md``):

- **retention model** (``format = "hwloop-retention"``, written by ``hwloop retention``): per level k a
  relaxation g(t) = g_prog + (drift_us[k] + sigma_us[k] * z) * (1 - exp(-t / tau_s[k])), z ~ N(0, 1) per
  device, t the time since programming. The fitted parameters live in ``/fit`` (one row per level); the
  same file also holds the measured read-backs (``/times_s``, ``/g_us``).
- **endurance model** (``format = "hwloop-endurance-model"``, written by ``hwloop cycle``): the
  distribution of cycles to failure (``lognormal``: median and log-sigma; ``weibull``: scale and shape)
  and the fraction of failures stuck in HCS.

Both loaders refuse foreign or damaged files with a ``ChipError`` that names the file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np

from hwloop.errors import ChipError

RETENTION_FORMAT = "hwloop-retention"
ENDURANCE_FORMAT = "hwloop-endurance-model"
FORMAT_VERSION = 1
FIT_DTYPE = np.dtype(
    [
        ("level", "<i2"),
        ("median0_us", "<f8"),
        ("drift_us", "<f8"),
        ("sigma_us", "<f8"),
        ("tau_s", "<f8"),
        ("rms_median_us", "<f8"),
        ("rms_sigma_us", "<f8"),
    ]
)
DISTRIBUTIONS = ("lognormal", "weibull")


def _finite_pos(name: str, v: np.ndarray, where: str) -> None:
    if not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise ChipError(f"{where}: {name} must be finite and > 0; the file is damaged or not fitted")


@dataclass(frozen=True)
class RetentionModel:
    """Per-level relaxation parameters (index 0 = LCS, 1..n_hcs = HCS levels)."""

    drift_us: np.ndarray
    sigma_us: np.ndarray
    tau_s: np.ndarray
    median0_us: np.ndarray
    source: str = ""

    @property
    def n_levels(self) -> int:
        return int(self.tau_s.size)

    def check(self, n_levels: int) -> None:
        if self.n_levels != n_levels:
            raise ChipError(
                f"retention model {self.source or '(memory)'} has {self.n_levels} levels but the chip's table has "
                f"{n_levels}: measure retention with the same calibration"
            )

    def level_of(self, g_us: np.ndarray) -> np.ndarray:
        """Nearest level (by programmed conductance) for devices set off the tabled levels."""
        med = np.asarray(self.median0_us, dtype=np.float64)
        return np.abs(np.asarray(g_us, dtype=np.float64)[:, None] - med[None, :]).argmin(axis=1)


def load_retention_model(path: str | Path) -> RetentionModel:
    p = Path(path)
    try:
        with h5py.File(p, "r") as f:
            if f.attrs.get("format") != RETENTION_FORMAT:
                raise ChipError(
                    f"{p} is not a retention file (format {f.attrs.get('format')!r}); "
                    "give a file written by `hwloop retention`"
                )
            if "fit" not in f:
                raise ChipError(f"{p} holds no /fit table; rerun `hwloop retention` (it fits the model)")
            fit = f["fit"][()]
    except OSError as exc:
        raise ChipError(f"{p} is not a readable retention file ({exc})") from exc
    try:
        order = np.argsort(fit["level"])
        fit = fit[order]
        tau, sig, drift = (np.asarray(fit[k], dtype=np.float64) for k in ("tau_s", "sigma_us", "drift_us"))
    except (ValueError, KeyError) as exc:
        raise ChipError(f"{p}: /fit lacks a field ({exc}); the file is damaged") from exc
    if fit.size == 0 or not np.array_equal(fit["level"], np.arange(fit.size)):
        raise ChipError(f"{p}: /fit must hold one row per level 0..n-1")
    _finite_pos("tau_s", tau, str(p))
    if not (np.all(np.isfinite(sig)) and np.all(sig >= 0) and np.all(np.isfinite(drift))):
        raise ChipError(f"{p}: sigma_us must be finite and >= 0 and drift_us finite; the file is damaged")
    return RetentionModel(drift, sig, tau, np.asarray(fit["median0_us"], dtype=np.float64), source=str(p))


@dataclass(frozen=True)
class EnduranceModel:
    """Cycles-to-failure distribution of a device population."""

    distribution: str = "lognormal"
    median_cycles: float = 1e5
    log_sigma: float = 0.5
    weibull_scale: float = float("nan")
    weibull_shape: float = float("nan")
    stuck_hcs_fraction: float = 0.5
    source: str = ""

    def validate(self) -> None:
        where = self.source or "endurance model"
        if self.distribution not in DISTRIBUTIONS:
            raise ChipError(f"{where}: distribution {self.distribution!r}; expected one of {DISTRIBUTIONS}")
        if self.distribution == "lognormal":
            ok = np.isfinite(self.median_cycles) and self.median_cycles > 0 and np.isfinite(self.log_sigma)
            ok = ok and self.log_sigma >= 0
        else:
            ok = bool(
                np.isfinite(self.weibull_scale)
                and self.weibull_scale > 0
                and np.isfinite(self.weibull_shape)
                and self.weibull_shape > 0
            )
        if not ok:
            raise ChipError(f"{where}: {self.distribution} parameters are not finite and positive")
        if not 0 <= self.stuck_hcs_fraction <= 1:
            raise ChipError(f"{where}: stuck_hcs_fraction must be within [0, 1]")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Cycle budgets of ``n`` devices (float32)."""
        if self.distribution == "lognormal":
            b = np.exp(np.log(self.median_cycles) + self.log_sigma * rng.standard_normal(n))
        else:
            b = self.weibull_scale * rng.weibull(self.weibull_shape, n)
        return b.astype(np.float32)

    def as_dict(self) -> dict:
        return asdict(self)


def save_endurance_model(model: EnduranceModel, path: str | Path, **extra: object) -> None:
    """Write an endurance-model file; ``extra`` arrays/attrs (the measured cycles to failure) go alongside."""
    model.validate()
    p = Path(path)
    with h5py.File(p, "w") as f:
        f.attrs["format"] = ENDURANCE_FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        for k, v in asdict(model).items():
            if k != "source":
                f.attrs[k] = v
        for k, v in extra.items():
            if isinstance(v, np.ndarray):
                f.create_dataset(k, data=v, compression="gzip")
            elif isinstance(v, dict):
                f.attrs[k] = json.dumps(v)
            else:
                f.attrs[k] = v


def load_endurance_model(path: str | Path) -> EnduranceModel:
    p = Path(path)
    try:
        with h5py.File(p, "r") as f:
            a = dict(f.attrs)
    except OSError as exc:
        raise ChipError(f"{p} is not a readable endurance-model file ({exc})") from exc
    if a.get("format") != ENDURANCE_FORMAT:
        raise ChipError(
            f"{p} is not an endurance-model file (format {a.get('format')!r}); give a file written by `hwloop cycle`"
        )
    try:
        m = EnduranceModel(
            distribution=str(a["distribution"]),
            median_cycles=float(a["median_cycles"]),
            log_sigma=float(a["log_sigma"]),
            weibull_scale=float(a.get("weibull_scale", np.nan)),
            weibull_shape=float(a.get("weibull_shape", np.nan)),
            stuck_hcs_fraction=float(a["stuck_hcs_fraction"]),
            source=str(p),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ChipError(f"{p}: endurance model lacks {exc}; the file is damaged") from exc
    m.validate()
    return m


def load_sim_models(retention: str | None, endurance: str | None) -> dict:
    """Keyword arguments of ``SimChip`` for the model files named by ``--retention`` / ``--endurance-model``."""
    out: dict = {}
    if retention:
        out["retention"] = load_retention_model(retention)
    if endurance:
        out["endurance"] = load_endurance_model(endurance)
    return out
