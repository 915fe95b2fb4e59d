"""The default CDF table shipped with hwloop: SYNTHETIC, made from published HfOx 1T1R characteristics.

Measured per-level data of the paper's chip are not public. These numbers are chosen to match what is
published for the CEA-Leti 130 nm HfOx 1T1R technology:

- SET gate voltages V_WL 1.4-2.2 V (Bonnet et al., Nat. Commun. 2023, Methods), setting I_CC from about
  10 to 200 µA; here I_CC rises geometrically with V_WL.
- HCS conductances per level roughly Gaussian, median rising with I_CC, *absolute* sigma falling as G
  rises (Bonnet et al. 2023; Esmanhotto et al., Adv. Intell. Syst. 2022). Medians 20-114 µS are chosen
  so that the 8 levels are equally separable given their sigma (the levels a max-separation calibration
  picks); with sigma falling as G rises they are then unequally spaced, as in the paper's Fig. 4b.
- LCS lognormal around a few µS.

Regenerate the shipped file with ``python -m hwloop.chip.default_table``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
from scipy import stats

from hwloop.chip.cdf import CdfTable, Level, load_h5

#: SET gate voltages (V) of the 8 HCS levels.
V_GATE = np.round(np.linspace(1.4, 2.2, 8), 4)
#: Compliance currents (µA): geometric from 10 to 200 µA across the gate range.
ICC_UA = np.round(10.0 * (200.0 / 10.0) ** ((V_GATE - 1.4) / 0.8), 2)
#: HCS medians (µS): equally *separable* levels, so unequally spaced. Adjacent levels are the same number
#: of one-sigma half-widths apart, d = (m_b - m_a) / (s_a + s_b) = 1.95, counting the simulator's default
#: read noise (1 % of G + 0.2 µS) in s; since sigma falls as G rises, the spacing narrows as G rises
#: (15.3 µS at the bottom, 11.7 µS at the top). These are the levels a max-separation calibration of
#: this chip picks (``hwloop.calibration.select``), so ``hwloop calibrate --chip sim`` recovers them.
HCS_MEDIAN_US = np.array([20.0, 35.3, 50.0, 64.0, 77.4, 90.1, 102.3, 114.0])
#: HCS sigma (µS): absolute spread falls as G rises.
HCS_SIGMA_US = np.array([4.0, 3.8, 3.6, 3.4, 3.2, 3.0, 2.8, 2.6])
#: LCS: lognormal, median and log-sigma.
LCS_MEDIAN_US = 3.0
LCS_LOG_SIGMA = 0.45
#: RESET condition (V_SL 2.6 V, V_WL 4.8 V, 100 ns): the LCS gate voltage recorded in the table.
V_GATE_RESET = 4.8
#: Quantile points stored per level. The extreme probabilities are truncated at TAIL.
N_QUANTILES = 2049
TAIL = 5e-5

PROVENANCE = (
    "SYNTHETIC default table, not measured on a chip. Built by hwloop.chip.default_table from published "
    "characteristics of CEA-Leti 130 nm HfOx 1T1R devices: SET V_BL 1.8 V / 1 us with V_WL 1.4-2.2 V "
    "setting I_CC 10-200 uA, RESET V_SL 2.6 V / V_WL 4.8 V / 100 ns (Bonnet et al., Nat. Commun. 2023, "
    "Methods); Gaussian HCS with absolute sigma falling as G rises (Bonnet 2023; Esmanhotto et al., "
    "Adv. Intell. Syst. 2022); lognormal LCS of a few uS. Medians 20-114 uS and sigmas 4.0-2.6 uS are "
    "chosen values, not fits; the medians make adjacent levels equally separable (d = 1.95 half-widths "
    "in reads), so a max-separation calibration of this table picks the tabled levels. "
    "Replace with your own measured table (hwloop calibrate, or --cdf FILE)."
)

DEFAULT_FILE = "default_cdf.h5"


def _probabilities() -> np.ndarray:
    return np.linspace(0.0, 1.0, N_QUANTILES)


def _truncated(p: np.ndarray) -> np.ndarray:
    return np.clip(p, TAIL, 1.0 - TAIL)


def build_default_table() -> CdfTable:
    """Build the synthetic default table from the parameters above (quantile form)."""
    p = _probabilities()
    pt = _truncated(p)
    levels = [
        Level(
            name="LCS",
            kind="LCS",
            v_gate=V_GATE_RESET,
            icc_ua=0.0,
            quantiles_us=stats.lognorm.ppf(pt, s=LCS_LOG_SIGMA, scale=LCS_MEDIAN_US),
            probabilities=p,
        )
    ]
    for k in range(8):
        levels.append(
            Level(
                name=f"HCS{k + 1}",
                kind="HCS",
                v_gate=float(V_GATE[k]),
                icc_ua=float(ICC_UA[k]),
                quantiles_us=stats.norm.ppf(pt, loc=HCS_MEDIAN_US[k], scale=HCS_SIGMA_US[k]),
                probabilities=p,
            )
        )
    return CdfTable(
        levels=levels,
        read_voltage_v=0.1,
        provenance=PROVENANCE,
        synthetic=True,
        chip_id="synthetic-hfox-1t1r-16kb",
        extra={
            "set": {"v_bl": 1.8, "width_ns": 1000},
            "reset": {"v_sl": 2.6, "v_wl": 4.8, "width_ns": 100},
            "form": {"v_wl": 1.6, "v_bl_start": 1.6, "v_bl_stop": 4.0},
            "sources": [
                "Bonnet et al., Nat. Commun. 14, 7530 (2023), Methods",
                "Esmanhotto et al., Adv. Intell. Syst. 4, 2200145 (2022)",
                "D'Agostino et al., AICAS 2023, Fig. 4b (shape only)",
            ],
        },
    )


def default_table_path() -> Path:
    return Path(str(resources.files("hwloop") / "data" / DEFAULT_FILE))


def default_table() -> CdfTable:
    """The shipped default table (loaded from the package's data file)."""
    table = load_h5(default_table_path())
    table.source_path = f"built-in synthetic table ({DEFAULT_FILE})"
    return table


if __name__ == "__main__":  # pragma: no cover - regeneration helper
    out = Path(__file__).resolve().parent.parent / "data" / DEFAULT_FILE
    build_default_table().save_h5(out)
    print(f"wrote {out}")
