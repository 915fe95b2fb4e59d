"""The paper's figure layouts, redrawn from measured runs (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from hwloop.analysis import plots as base_plots
from hwloop.analysis.plots import _save, plt

TASK_LABEL = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}
COLORS = {"mnist": "tab:blue", "fashion-mnist": "tab:orange"}


def _curve_stats(curves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    n = min(c.shape[0] for c in curves)
    stack = np.stack([c[:n] for c in curves]).astype(float)
    mean = np.full(stack.shape[1:], np.nan)
    std = np.zeros(stack.shape[1:])
    ok = np.isfinite(stack).any(axis=0)
    mean[ok] = np.nanmean(stack[:, ok], axis=0)
    if stack.shape[0] > 1:
        std[ok] = np.nanstd(stack[:, ok], axis=0, ddof=1)
    return mean, std


def _draw_curves(
    ax, epochs: np.ndarray, curves: list[np.ndarray], tasks: list[str], label: str, ls: str, band: bool
) -> None:
    mean, std = _curve_stats(curves)
    ep = epochs[: mean.shape[0]]
    for i, t in enumerate(tasks):
        c = COLORS.get(t)
        ax.plot(ep, mean[:, i], ls, color=c, lw=1.4, marker=".", ms=3, label=f"{TASK_LABEL.get(t, t)} {label}")
        if band and len(curves) > 1:
            ax.fill_between(ep, mean[:, i] - std[:, i], mean[:, i] + std[:, i], color=c, alpha=0.25, lw=0)


def plot_curves_with_bnn(panels: list[dict], tasks: list[str], path: Path, title: str) -> Path:
    """Figs. 2b/2c and 5a: accuracy per epoch of the QNN (mean ± std band when repeated) and the BNN (dashed).

    ``panels``: one dict each with ``title``, ``epochs``, ``qnn`` (list of (n_epochs, n_tasks) % arrays),
    ``bnn`` (same, may be empty), ``boundary`` (x of the task switch)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6.0 * len(panels), 4.2), squeeze=False)
    for ax, p in zip(axes[0], panels, strict=True):
        if p["qnn"]:
            n = len(p["qnn"])
            _draw_curves(ax, p["epochs"], p["qnn"], tasks, f"QNN ({n} run{'s' if n > 1 else ''})", "-", True)
        if p["bnn"]:
            _draw_curves(ax, p["bnn_epochs"], p["bnn"], tasks, "BNN", "--", False)
        if p.get("boundary") is not None:
            ax.axvline(p["boundary"], color="grey", ls=":", lw=1)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.set_title(p["title"], fontsize=9)
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_mstar(points: dict, tasks: list[str], path: Path) -> Path:
    """Fig. 2a (accuracy vs m*), the analysis package's layout."""
    return base_plots.plot_mstar(points, tasks, path)


def plot_cdfs(table, path: Path, title: str) -> Path:
    """Fig. 4b (CDFs of the 8 HCS levels and LCS of the calibration in use)."""
    return base_plots.plot_cdfs(table, path, title)


def plot_endurance_vs_paper(hist: dict, measured: dict, paper: dict, path: Path, title: str) -> Path:
    """Fig. 5b: % of devices vs programming operations, the paper's 76.12 % < 25 and 10.16 % > 50 marked."""
    fig, ax = plt.subplots(figsize=(6.8, 4.3))
    edges = np.asarray(hist["bin_edges"], dtype=float)
    pct = np.asarray(hist["pct_devices"], dtype=float)
    ax.bar(edges[:-1], pct, width=np.diff(edges), align="edge", color="tab:blue", edgecolor="none", label="measured")
    ax.axvline(25, color="k", ls="--", lw=0.8)
    ax.axvline(50, color="k", ls="--", lw=0.8)
    ax.set_xlim(0, max(float(edges[-1]) if edges.size else 0.0, 60.0))
    note = (
        f"< 25 operations: {measured['pct_under_25']:.2f} % (paper {paper['pct_under_25']:.2f} %)\n"
        f"> 50 operations: {measured['pct_over_50']:.2f} % (paper {paper['pct_over_50']:.2f} %)"
    )
    ax.text(
        0.97,
        0.80,
        note,
        transform=ax.transAxes,
        ha="right",
        va="top",
        fontsize=8,
        bbox={"facecolor": "white", "edgecolor": "grey", "alpha": 0.9},
    )
    ax.set_xlabel(base_plots.OPS_LABEL)
    ax.set_ylabel("devices (% of devices used)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)
