"""``DIR/report.md`` (+ PNGs and ``summary.json``): every figure and table of the paper from the runs of DIR
(read by ``results``), formatted here.

Every number is read from the run logs when the report is written (never from a cache): change a run and
the report changes. Each measured number stands beside the paper's (``hwloop/data/paper_dagostino2023.json``),
with the difference in units of the paper's standard deviation where the paper gives one.
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from hwloop.analysis.endurance import endurance_summary
from hwloop.analysis.footprint import fmt_count, mlp_weights
from hwloop.analysis.logfile import open_runlog
from hwloop.formatting import format_pm, md_table, mean_std
from hwloop.jsonutil import json_default
from hwloop.reproduce import plots
from hwloop.reproduce.planner import Block
from hwloop.reproduce.presets import FULL_RUN_MIN, Protocol
from hwloop.reproduce.results import (
    TASKS,
    acc_stats,
    block_runs,
    bnn_runs,
    curves,
    epoch_numbers,
    load_paper,
    same_value,
    select_runs,
    task_columns,
)

LABEL = {"mnist": "MNIST", "fashion-mnist": "F-MNIST"}


# ---------------------------------------------------------------------------- formatting
def _paper_pm(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, (list, tuple)):
        return f"{v[0]:.2f} % ± {v[1]:.2f} %"
    return f"{float(v):.2f} %"


def _pct(v: float) -> str:
    """An accuracy in % for a table, or "–" where no run gives one."""
    return f"{v:.2f} %" if math.isfinite(v) else "–"


def sigma_diff(measured: float, paper: Any) -> str:
    """'+1.2 σ' (measured − paper over the paper's std), or '+0.84 pp' when the paper gives no std."""
    if paper is None or not math.isfinite(measured):
        return "–"
    if isinstance(paper, (list, tuple)):
        mean, std = float(paper[0]), float(paper[1])
        if std > 0:
            return f"{(measured - mean) / std:+.1f} σ"
        return f"{measured - mean:+.2f} pp"
    return f"{measured - float(paper):+.2f} pp"


def _md(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table (``hwloop.formatting.md_table``) and the blank line after it."""
    return [*md_table(header, rows), ""]


def _missing_note(missing: list[str]) -> list[str]:
    if not missing:
        return []
    return [
        f"*Not finished yet (left out of every number below): {', '.join(missing)}. "
        "Run the same `hwloop reproduce` command again to continue.*",
        "",
    ]


# ---------------------------------------------------------------------------- the sections
def _fig2a(out: Path, proto: Protocol, paper: dict, summary: dict) -> list[str]:
    runs, missing = block_runs(out, "qnn-mstar")
    lines = [
        "## Fig. 2a: accuracy after both tasks vs m*",
        "",
        f"784-{proto.hidden}-{proto.hidden}-10, {proto.epochs_per_task} + {proto.epochs_per_task} epochs, "
        f"{proto.seeds_mstar} seed(s) per m*. Final = after the last Fashion-MNIST epoch (what Fig. 2a "
        "plots); max = maximum over all epochs of the run. The paper gives no numbers for Fig. 2a, only "
        "the claims listed below the table.",
        "",
        *_missing_note(missing),
    ]
    rows, pts = [], {"m_star": [], "final_mean": [], "final_std": [], "end_mean": [], "end_std": []}
    summary["fig2a"] = []
    for m in proto.m_stars:
        sel = select_runs(runs, m_star=float(m))
        fm, fs = acc_stats(sel, "final")
        bm, bs = acc_stats(sel, "max")
        n = len(sel)
        if n:
            end = np.array(
                [[r.end_of_task_acc()[c] if c is not None else np.nan for c in task_columns(r)] for r in sel]
            )
            em, es = mean_std(end)
            pts["m_star"].append(float(m))
            pts["final_mean"].append(fm)
            pts["final_std"].append(fs)
            pts["end_mean"].append(em)
            pts["end_std"].append(es)
        rows.append(
            [
                f"{m:g}",
                str(n),
                format_pm(fm[0], fs[0], n),
                format_pm(fm[1], fs[1], n),
                format_pm(bm[0], bs[0], n),
                format_pm(bm[1], bs[1], n),
            ]
        )
        summary["fig2a"].append(
            {
                "m_star": float(m),
                "n": n,
                "final_mean_pct": fm.tolist(),
                "final_std_pct": fs.tolist(),
                "max_mean_pct": bm.tolist(),
                "max_std_pct": bs.tolist(),
            }
        )
    lines += _md(["m*", "runs", "MNIST final", "F-MNIST final", "MNIST max", "F-MNIST max"], rows)
    claims = paper["fig2a"]["claims"]
    lines += ["Paper's claims: " + "; ".join(claims) + ".", ""]
    at3 = next((r for r in summary["fig2a"] if same_value(r["m_star"], 3.0) and r["n"]), None)
    if at3:
        ref = paper["fig2a"]["claims_pct_at_m3"]
        lines += [
            f"At m* = 3 (final): MNIST {at3['final_mean_pct'][0]:.2f} % (paper: over {ref['mnist']:.0f} %), "
            f"F-MNIST {at3['final_mean_pct'][1]:.2f} % (paper: {ref['fashion-mnist']:.0f} %).",
            "",
        ]
    if pts["m_star"]:
        plots.plot_mstar({k: np.asarray(v) for k, v in pts.items()}, [LABEL[t] for t in TASKS], out / "fig2a.png")
        lines += ["![Fig. 2a](fig2a.png)", ""]
    return lines


def _fig2bc(out: Path, proto: Protocol, paper: dict, summary: dict) -> list[str]:
    runs, missing = block_runs(out, "qnn-curves")
    bnn, bmissing = bnn_runs(out)
    lines = [
        "## Figs. 2b, 2c: accuracy per epoch at m* = 2.2 and m* = 3, with the BNN",
        "",
        f"QNN 784-{proto.hidden}-{proto.hidden}-10 (seed 0) and the BNN 784-{proto.bnn_hidden}-"
        f"{proto.bnn_hidden}-10 (meta {proto.bnn_meta:g}, dashed). The paper gives these as curves only.",
        "",
        *_missing_note(missing + bmissing),
    ]
    panels, rows = [], []
    bnn_curves = curves(bnn)
    summary["fig2bc"] = []
    for k, m in zip("bc", proto.curve_m_stars, strict=False):
        sel = select_runs(runs, m_star=float(m))
        panels.append(
            {
                "title": f"Fig. 2{k}: m* = {m:g}",
                "epochs": epoch_numbers(sel),
                "qnn": curves(sel),
                "bnn": bnn_curves,
                "bnn_epochs": epoch_numbers(bnn),
                "boundary": proto.epochs_per_task + 0.5,
            }
        )
        for who, rs in ((f"QNN m* = {m:g}", sel), ("BNN", bnn)):
            fm, _ = acc_stats(rs, "final")
            bm, _ = acc_stats(rs, "max")
            rows.append([f"2{k}", who, str(len(rs)), _pct(fm[0]), _pct(fm[1]), _pct(bm[0]), _pct(bm[1])])
            summary["fig2bc"].append(
                {"panel": f"2{k}", "model": who, "n": len(rs), "final_pct": fm.tolist(), "max_pct": bm.tolist()}
            )
    lines += _md(["fig", "model", "runs", "MNIST final", "F-MNIST final", "MNIST max", "F-MNIST max"], rows)
    if any(p["qnn"] or p["bnn"] for p in panels):
        plots.plot_curves_with_bnn(panels, list(TASKS), out / "fig2bc.png", "Sequential MNIST → Fashion-MNIST")
        lines += ["![Figs. 2b, 2c](fig2bc.png)", ""]
    return lines


def _fig4b(out: Path, proto: Protocol, paper: dict, summary: dict, table, table_src: str) -> list[str]:
    lines = [
        "## Fig. 4b: conductance CDFs of the 8 HCS levels and LCS",
        "",
        f"Calibration in use: {table_src}. Provenance: {table.provenance.rstrip('.')}. "
        "The paper gives the CDFs as curves only.",
        "",
    ]
    med, sig, icc = table.medians_us, table.sigmas_us, table.icc_ua
    rows = [
        [lv.name, lv.kind, f"{icc[k]:.1f}" if lv.kind == "HCS" else "–", f"{med[k]:.2f}", f"{sig[k]:.2f}"]
        for k, lv in enumerate(table.levels)
    ]
    lines += _md(["level", "state", "I_CC (µA)", "median G (µS)", "σ of G (µS)"], rows)
    summary["fig4b"] = {
        "source": table_src,
        "levels": [
            {"name": lv.name, "median_us": float(med[k]), "sigma_us": float(sig[k])}
            for k, lv in enumerate(table.levels)
        ],
    }
    plots.plot_cdfs(table, out / "fig4b.png", f"CDFs of the calibration in use ({Path(table_src).name})")
    return [*lines, "![Fig. 4b](fig4b.png)", ""]


def _fig5a(out: Path, proto: Protocol, paper: dict, summary: dict) -> list[str]:
    runs, missing = block_runs(out, "qnn-reps")
    bnn, bmissing = bnn_runs(out)
    ref = paper["fig5a"]["acc_pct"]
    n = len(runs)
    lines = [
        "## Fig. 5a: repeated hardware-in-the-loop runs (mean ± std band), with the BNN",
        "",
        f"m* = {proto.m_star:g}, 784-{proto.hidden}-{proto.hidden}-10, {proto.reps} repetitions planned "
        f"(paper: {paper['fig5a']['repetitions']}), chip {proto.chip}. The paper's numbers are a *maximum "
        "accuracy*: they are compared with the maximum over all epochs of each run (mean ± std over runs); "
        "the final value is printed beside it.",
        "",
        *_missing_note(missing + bmissing),
    ]
    fm, fs = acc_stats(runs, "final")
    bm, bs = acc_stats(runs, "max")
    rows = [
        [
            LABEL[t],
            str(n),
            format_pm(bm[j], bs[j], n),
            format_pm(fm[j], fs[j], n),
            _paper_pm(ref[t]),
            sigma_diff(float(bm[j]), ref[t]),
            sigma_diff(float(fm[j]), ref[t]),
        ]
        for j, t in enumerate(TASKS)
    ]
    lines += _md(["task", "runs", "measured max", "measured final", "paper (max)", "Δ max", "Δ final"], rows)
    summary["fig5a"] = {
        "n": n,
        "max_mean_pct": bm.tolist(),
        "max_std_pct": bs.tolist(),
        "final_mean_pct": fm.tolist(),
        "final_std_pct": fs.tolist(),
        "paper": ref,
    }
    if runs or bnn:
        plots.plot_curves_with_bnn(
            [
                {
                    "title": f"m* = {proto.m_star:g}, {n} runs",
                    "epochs": epoch_numbers(runs),
                    "qnn": curves(runs),
                    "bnn": curves(bnn),
                    "bnn_epochs": epoch_numbers(bnn),
                    "boundary": proto.epochs_per_task + 0.5,
                }
            ],
            list(TASKS),
            out / "fig5a.png",
            "Fig. 5a: hardware-in-the-loop repetitions",
        )
        lines += ["![Fig. 5a](fig5a.png)", ""]
    return lines


def _fig5b(out: Path, proto: Protocol, paper: dict, summary: dict) -> list[str]:
    runs, missing = block_runs(out, "qnn-reps")
    ref = paper["fig5b"]
    lines = [
        "## Fig. 5b: devices vs their number of programming operations",
        "",
        "Programming operations = level changes (RESET rows per device in the run log), over both tasks, "
        f"m* = {proto.m_star:g}. Mean ± std over the repetitions; the histogram is the first run's.",
        "",
        "At m* = 3 almost all of a device's operations happen in the m* = 0 warm-up, and a level change "
        "reprograms only the cell of the pair whose own level changes; why the paper's hardware counts are "
        "higher is measured in hwloop's `docs/results/2026-12-01-fig5b-explained.md` "
        "(`benchmarks/fig5b_counting.py` applies its counting rules to these runs).",
        "",
        *_missing_note(missing),
    ]
    stats = []
    for r in runs:
        with open_runlog(r.path) as log:
            stats.append(endurance_summary(log))
    stats = [s for s in stats if s.get("pct_under_25") is not None]
    if not stats:
        return [*lines, "No finished run with device operations yet.", ""]
    under = np.array([[s["pct_under_25"], s["pct_over_50"]] for s in stats])
    m, sd = mean_std(under)
    n = len(stats)
    rows = [
        [
            "devices with < 25 operations",
            format_pm(m[0], sd[0], n),
            f"{ref['pct_under_25']:.2f} %",
            sigma_diff(float(m[0]), ref["pct_under_25"]),
        ],
        [
            "devices with > 50 operations",
            format_pm(m[1], sd[1], n),
            f"{ref['pct_over_50']:.2f} %",
            sigma_diff(float(m[1]), ref["pct_over_50"]),
        ],
    ]
    lines += _md(["quantity", "measured", "paper", "Δ"], rows)
    summary["fig5b"] = {
        "n": n,
        "pct_under_25": [float(m[0]), float(sd[0])],
        "pct_over_50": [float(m[1]), float(sd[1])],
        "paper": ref,
        "max_ops": [int(s["max_ops"]) for s in stats],
    }
    plots.plot_endurance_vs_paper(
        stats[0]["histogram"],
        {"pct_under_25": m[0], "pct_over_50": m[1]},
        ref,
        out / "fig5b.png",
        f"Fig. 5b: {stats[0]['devices']:,} devices ({runs[0].name})",
    )
    return [*lines, "![Fig. 5b](fig5b.png)", ""]


def _table1(out: Path, proto: Protocol, paper: dict, summary: dict) -> list[str]:
    runs, missing = block_runs(out, "qnn-size")
    bnn, bmissing = bnn_runs(out)
    ref = paper["table1"]
    lines = [
        "## Table I: BNN and QNNs of different sizes",
        "",
        f"m* = {proto.m_star:g}, {proto.seeds_size} seed(s) per size, chip {proto.chip}. The paper's QNN "
        "numbers are compared with the maximum over epochs (as Fig. 5a); final values beside them. Devices: "
        "two per QNN weight (2T2R differential pair); one per binary weight in 1T1R, two in 2T2R.",
        "",
        *_missing_note(missing + bmissing),
    ]
    rows = []
    summary["table1"] = {"qnn": {}, "bnn": None}
    paper_sizes = list(ref["qnn"])
    for k, h in enumerate(proto.hidden_sizes):
        sel = select_runs(runs, hidden=int(h))
        n = len(sel)
        fm, fs = acc_stats(sel, "final")
        bm, bs = acc_stats(sel, "max")
        devices = 2 * mlp_weights(784, [h, h], 10)
        pref = ref["qnn"].get(str(h)) or ref["qnn"][paper_sizes[k]]
        for j, t in enumerate(TASKS):
            rows.append(
                [
                    f"QNN H {h} ({fmt_count(devices)} devices; paper {pref['devices_label']})",
                    LABEL[t],
                    str(n),
                    format_pm(bm[j], bs[j], n),
                    format_pm(fm[j], fs[j], n),
                    _paper_pm(pref["acc_pct"][t]),
                    sigma_diff(float(bm[j]), pref["acc_pct"][t]),
                ]
            )
        summary["table1"]["qnn"][str(h)] = {
            "n": n,
            "devices": devices,
            "max_mean_pct": bm.tolist(),
            "max_std_pct": bs.tolist(),
            "final_mean_pct": fm.tolist(),
            "final_std_pct": fs.tolist(),
            "paper": pref["acc_pct"],
        }
    nb = len(bnn)
    bw = mlp_weights(784, [proto.bnn_hidden, proto.bnn_hidden], 10)
    fm, fs = acc_stats(bnn, "final")
    bm, bs = acc_stats(bnn, "max")
    for j, t in enumerate(TASKS):
        rows.append(
            [
                f"BNN H {proto.bnn_hidden} ({fmt_count(bw)} 1T1R / {fmt_count(2 * bw)} 2T2R; paper "
                f"{ref['bnn']['devices_1t1r_label']} / {ref['bnn']['devices_2t2r_label']})",
                LABEL[t],
                str(nb),
                format_pm(bm[j], bs[j], nb),
                format_pm(fm[j], fs[j], nb),
                _paper_pm(ref["bnn"]["acc_pct"][t]),
                sigma_diff(float(bm[j]), ref["bnn"]["acc_pct"][t]),
            ]
        )
    summary["table1"]["bnn"] = {
        "n": nb,
        "hidden": proto.bnn_hidden,
        "weights": bw,
        "max_mean_pct": bm.tolist(),
        "final_mean_pct": fm.tolist(),
        "paper": ref["bnn"]["acc_pct"],
    }
    lines += _md(["network", "task", "runs", "measured max", "measured final", "paper", "Δ max"], rows)
    qnn_dev = 2 * mlp_weights(784, [proto.hidden, proto.hidden], 10)
    r1, r2 = bw / qnn_dev, 2 * bw / qnn_dev
    fr = ref["footprint_reduction"]
    lines += _md(
        ["footprint reduction (BNN devices / QNN H " + str(proto.hidden) + " devices)", "measured", "paper"],
        [["BNN in 1T1R", f"{r1:.1f}×", f"{fr['1t1r']}×"], ["BNN in 2T2R", f"{r2:.1f}×", f"{fr['2t2r']}×"]],
    )
    summary["table1"]["footprint_reduction"] = {"1t1r": r1, "2t2r": r2, "paper": fr}
    return lines


def _git_commit() -> str:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_report(
    out: Path,
    proto: Protocol,
    figures: list[str],
    blks: list[Block],
    *,
    table,
    table_src: str,
    command: str,
    overrides: dict,
) -> Path:
    """Write ``out/report.md``, the PNGs and ``out/summary.json`` from the runs in ``out``."""
    paper = load_paper()
    summary: dict[str, Any] = {"preset": proto.preset, "protocol": proto.as_dict(), "figures": figures}
    ov = {k: v for k, v in overrides.items() if v is not None}
    head = [
        f"# Paper reproduction: {proto.preset} preset",
        "",
        f"Paper: {paper['citation']}",
        "",
        f"- command: `{command}`",
        f"- hwloop commit {_git_commit()}, host {platform.node()} ({platform.machine()}, "
        f"{_cores()} cores), written {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        f"- protocol: {proto.epochs_per_task} + {proto.epochs_per_task} epochs, warm-up {proto.warmup}, chip "
        f"{proto.chip}, QNN H {proto.hidden} (Table I: {', '.join(map(str, proto.hidden_sizes))}), "
        f"batch {proto.batch_size}, train samples {proto.train_samples or 'all'}; "
        f"seeds: {proto.seeds_mstar} per m* (Fig. 2a), "
        f"{proto.seeds_size} per size (Table I), {proto.reps} repetitions (Fig. 5); BNN H {proto.bnn_hidden}, "
        f"lr {proto.bnn_lr:g}, meta {proto.bnn_meta:g}, batch {proto.bnn_batch_size}, {proto.bnn_seeds} seed(s)",
        "- every other training option at its default (`hwloop train --help`); BN per task, batch statistics",
        f"- estimated cost: {proto.estimate_min():.0f} single-worker minutes, assuming {FULL_RUN_MIN:g} min per "
        "full-size run (50 + 50 epochs, H 512)",
    ]
    if proto.preset != "paper":
        head.append(
            "- **not the paper's protocol** (fewer epochs, seeds or smaller networks, as listed): "
            "compare trends, not digits"
        )
    if ov:
        head.append(f"- overrides of the preset: {', '.join(f'{k}={v}' for k, v in ov.items())}")
    head += [
        "- *max* = maximum over all epochs of a run; *final* = after the last epoch. Δ = (measured − paper) "
        "/ paper's std (σ), or in percentage points (pp) where the paper gives no std.",
        "",
    ]
    lines = head
    sections = {
        "fig2a": lambda: _fig2a(out, proto, paper, summary),
        "fig2bc": lambda: _fig2bc(out, proto, paper, summary),
        "fig4b": lambda: _fig4b(out, proto, paper, summary, table, table_src),
        "fig5a": lambda: _fig5a(out, proto, paper, summary),
        "fig5b": lambda: _fig5b(out, proto, paper, summary),
        "table1": lambda: _table1(out, proto, paper, summary),
    }
    for f in figures:
        lines += sections[f]()
    (out / "report.md").write_text("\n".join(lines) + "\n")
    clean = _no_nan(json.loads(json.dumps(summary, default=json_default)))
    (out / "summary.json").write_text(json.dumps(clean, indent=1, allow_nan=False) + "\n")
    return out / "report.md"


def _cores() -> int:
    import os

    return os.cpu_count() or 1


def _no_nan(o: Any) -> Any:
    """NaN (nothing measured) becomes null, so that summary.json is strict JSON."""
    if isinstance(o, float):
        return None if not math.isfinite(o) else o
    if isinstance(o, dict):
        return {k: _no_nan(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_no_nan(v) for v in o]
    return o
