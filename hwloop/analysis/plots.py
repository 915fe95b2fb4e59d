"""Figures (matplotlib, Agg backend). Every axis is labelled with its quantity and unit."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from hwloop.chip.cdf import CdfTable

OPS_LABEL = "programming operations per device (level changes)"


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _hist_axes(ax: plt.Axes, summary: dict, label: str | None = None, step: bool = False) -> None:
    h = summary["histogram"]
    edges = np.asarray(h["bin_edges"], dtype=float)
    pct = np.asarray(h["pct_devices"], dtype=float)
    if step:
        ax.stairs(pct, edges, label=label)
    else:
        ax.bar(
            edges[:-1],
            pct,
            width=np.diff(edges),
            align="edge",
            color="tab:blue",
            edgecolor="none",
            label=label,
        )
    ax.set_xlabel(OPS_LABEL)
    ax.set_ylabel("devices (% of devices used)")


def plot_endurance(summary: dict, path: Path, tile_map: np.ndarray | None = None, tile: int | None = None) -> Path:
    """Fig. 5b histogram, programming operations per epoch, and (optionally) a heat map of one tile."""
    n = 3 if tile_map is not None else 2
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.2))
    ax = axes[0]
    _hist_axes(ax, summary)
    for x, txt in (
        (25, f"{summary['pct_under_25']:.2f} % < 25"),
        (50, f"{summary['pct_over_50']:.2f} % > 50"),
    ):
        ax.axvline(x, color="k", ls="--", lw=0.8)
        # one label per line, at different heights, so that close lines don't overprint each other
        ax.text(x, ax.get_ylim()[1] * (0.9 if x == 25 else 0.78), " " + txt, fontsize=8)
    ax.set_title(f"{summary['devices']:,} devices, max {summary['max_ops']} operations")
    ax = axes[1]
    pe = summary["per_epoch"]
    ax.plot(pe["epoch"], pe["programs"], "o-", label="programming operations (RESET rows)")
    ax.plot(pe["epoch"], pe["pulses"], "s--", label="raw pulses (SET + RESET)")
    ax.set_xlabel("epoch (0 = initial programming)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("operations per epoch (count)")
    ax.set_yscale("symlog")
    ax.legend(fontsize=8)
    ax.set_title("operations per epoch")
    if tile_map is not None:
        ax = axes[2]
        im = ax.imshow(tile_map, cmap="viridis", interpolation="nearest", origin="upper")
        ax.set_xlabel("column (cell index)")
        ax.set_ylabel("row (cell index)")
        ax.set_title(f"tile {tile}: operations per device")
        fig.colorbar(im, ax=ax, label=OPS_LABEL)
    return _save(fig, path)


def plot_endurance_overlay(summaries: list[tuple[str, dict]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, s in summaries:
        _hist_axes(ax, s, label=name, step=True)
    for x in (25, 50):
        ax.axvline(x, color="k", ls="--", lw=0.8)
    ax.set_title("Programming operations per device (Fig. 5b)")
    if len(summaries) <= 12:
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_accuracy(
    curves: list[dict],
    tasks: list[str],
    boundaries: list[float],
    title: str,
    path: Path,
    warmup_end: float | None = None,
) -> Path:
    """Accuracy per task vs epoch; ``curves``: one dict per run with epoch and acc_pct (n_epochs, n_tasks).
    With several runs the mean is drawn with a band of ± one standard deviation."""
    fig, ax = plt.subplots(figsize=(7.0, 4.3))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, task in enumerate(tasks):
        c = colors[i % len(colors)]
        if len(curves) == 1:
            ax.plot(curves[0]["epoch"], curves[0]["acc_pct"][:, i], ".-", ms=4, color=c, label=task)
            continue
        n = min(len(cv["epoch"]) for cv in curves)
        stack = np.stack([cv["acc_pct"][:n, i] for cv in curves])
        ep = curves[0]["epoch"][:n]
        ok = np.isfinite(stack).any(axis=0)
        mean = np.full(n, np.nan)
        std = np.full(n, np.nan)
        mean[ok] = np.nanmean(stack[:, ok], axis=0)
        std[ok] = np.nanstd(stack[:, ok], axis=0, ddof=1) if stack.shape[0] > 1 else 0.0
        ax.plot(ep, mean, ".-", ms=4, color=c, label=f"{task} (mean of {len(curves)})")
        ax.fill_between(ep, mean - std, mean + std, color=c, alpha=0.25, lw=0)
    if warmup_end is not None:
        ax.axvspan(0.5, warmup_end, color="grey", alpha=0.12, lw=0, label="warm-up (m* = 0)")
    for k, b in enumerate(boundaries):
        ax.axvline(b, color="grey", ls="--", lw=1.0)
        ax.text(b, 2, f" task {k + 2} starts", rotation=90, va="bottom", fontsize=8, color="grey")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(textwrap.fill(title, 90), fontsize=8)
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_mstar(points: dict, tasks: list[str], path: Path) -> Path:
    """Fig. 2a: accuracy per task vs m*, at the end of the run (solid) and at the end of each task's own
    training (dashed); error bars are ± one standard deviation over repetitions."""
    fig, ax = plt.subplots(figsize=(6.5, 4.3))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ms = np.asarray(points["m_star"], dtype=float)
    for i, task in enumerate(tasks):
        c = colors[i % len(colors)]
        fin_m, fin_s = np.asarray(points["final_mean"])[:, i], np.asarray(points["final_std"])[:, i]
        end_m, end_s = np.asarray(points["end_mean"])[:, i], np.asarray(points["end_std"])[:, i]
        ax.errorbar(ms, fin_m, yerr=np.nan_to_num(fin_s), fmt="o-", color=c, capsize=3, label=f"{task}: end of run")
        ax.errorbar(
            ms,
            end_m,
            yerr=np.nan_to_num(end_s),
            fmt="s--",
            color=c,
            alpha=0.6,
            capsize=3,
            label=f"{task}: end of its own training",
        )
    ax.set_xlabel("metaplasticity m* (dimensionless)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Accuracy vs m* (Fig. 2a)")
    return _save(fig, path)


def plot_cdfs(table: CdfTable, path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 4.3))
    p = np.linspace(0.0, 1.0, table.grid.shape[1])
    for k, lv in enumerate(table.levels):
        lab = f"{lv.name}" + (f" (I_CC {lv.icc_ua:.0f} µA)" if lv.kind == "HCS" else "")
        ax.plot(table.grid[k], p, label=lab)
    ax.set_xlabel("conductance G (µS)")
    ax.set_ylabel("cumulative probability (fraction of devices)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_continual(summary: dict, path: Path, baseline: dict | None = None) -> Path:
    """A continual-learning run (``hwloop continual --plot``): the accuracy of every task per epoch, with
    the task boundaries (and ``baseline``'s curves dashed, e.g. the same tasks at m* = 0), and the
    accuracy matrix (task i after training task j) as a table of colours."""
    fig, (ax, axm) = plt.subplots(1, 2, figsize=(12.0, 4.6), gridspec_kw={"width_ratios": [1.6, 1.0]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ept = summary["epochs_per_task"]
    for run, style, tag in ((summary, "-", ""), (baseline, "--", " (baseline)")):
        if run is None:
            continue
        ep = np.asarray(run["epochs"], dtype=float)
        for i, task in enumerate(run["tasks"]):
            acc = np.array([np.nan if a is None else 100 * a for a in run["acc_per_epoch"][task]], dtype=float)
            label = task + tag if i < 10 else None
            ax.plot(ep, acc, style, lw=1.2, color=colors[i % len(colors)], alpha=1.0 if not tag else 0.5, label=label)
    for k in range(1, len(summary["tasks"])):
        ax.axvline(k * ept + 0.5, color="grey", ls=":", lw=0.8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", ncol=2)
    ax.set_title(textwrap.fill(str(summary["log"]), 80), fontsize=8)
    n = summary["tasks_finished"]
    m = np.array([[np.nan if v is None else 100 * v for v in row] for row in summary["accuracy_matrix"]])
    # n >= 1: read_continual refuses a log without a finished task
    im = axm.imshow(m, vmin=max(0.0, float(np.nanmin(m)) - 5), vmax=100, cmap="viridis")
    for i in range(n):
        for j in range(i, n):
            axm.text(j, i, f"{m[i, j]:.1f}", ha="center", va="center", fontsize=7, color="w" if m[i, j] < 90 else "k")
    axm.set_xticks(range(n), [str(j + 1) for j in range(n)])
    axm.set_yticks(range(n), summary["tasks"][:n], fontsize=7)
    axm.set_xlabel("after training task j")
    axm.set_title("test accuracy (%) of task i after task j", fontsize=9)
    fig.colorbar(im, ax=axm, fraction=0.046, pad=0.04)
    return _save(fig, path)
