"""The CDF figure of a calibration (like Fig. 4b of D'Agostino et al. 2023): one curve per level."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hwloop.calibration.fileio import CalibrationFile


def plot_cdf(cal: CalibrationFile, out: str | Path, *, show_sweep: bool = False, dpi: int = 150) -> Path:
    """Empirical CDFs of LCS and the HCS levels (conductance in µS vs cumulative probability) to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    try:
        if show_sweep and "samples_us" in cal.sweep:
            for row in np.sort(cal.sweep["samples_us"], axis=1):
                ax.plot(row, np.arange(1, row.size + 1) / row.size, color="0.85", lw=0.6, zorder=1)
        cmap = matplotlib.colormaps["viridis"]
        n_hcs = cal.table.n_hcs
        for k, (lv, reads) in enumerate(zip(cal.table.levels, cal.reads_us, strict=True)):
            g = np.sort(np.asarray(reads, dtype=np.float64))  # the measured CDF (raw reads)
            p = np.arange(1, g.size + 1) / g.size
            if lv.kind == "LCS":
                color, label = "0.2", f"LCS (RESET), median {np.median(g):.1f} µS"
            else:
                color = cmap(0.1 + 0.8 * (k - 1) / max(n_hcs - 1, 1))
                icc = f", I_CC {lv.icc_ua:.0f} µA" if np.isfinite(lv.icc_ua) else ""
                label = f"{lv.name}: V_WL {lv.v_gate:.3f} V{icc}"
            ax.step(g, p, where="post", color=color, lw=1.4, label=label, zorder=2)
        ax.set_xlabel("Conductance G (µS)")
        ax.set_ylabel("Cumulative probability")
        ax.set_ylim(0, 1)
        ax.set_xlim(left=0)
        chip = cal.attrs.get("chip_id", "")
        ax.set_title(f"Calibration of {chip}: {n_hcs} HCS levels and LCS" if chip else "Calibration CDFs")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right", frameon=True)
        fig.tight_layout()
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=dpi)
    finally:
        plt.close(fig)
    return out
