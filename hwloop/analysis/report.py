"""``hwloop report``: a folder with PNG figures and a self-contained ``report.md`` for one or more runs.

Sections: runs, accuracy per task vs epoch (task boundaries marked), forgetting per run, repetitions
(mean ± standard deviation as the paper writes it), accuracy vs m* (Fig. 2a), Table I (devices, weight
levels, accuracy, footprint vs the paper's BNN), endurance (Fig. 5b), the calibration CDFs used.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from hwloop.analysis import plots
from hwloop.analysis.endurance import EnduranceOptions, endurance_summary
from hwloop.analysis.footprint import (
    BNN_HIDDEN,
    BNN_PAPER_ACC_PCT,
    architecture,
    fmt_count,
    footprint,
    paper_qnn_accuracy,
)
from hwloop.analysis.logfile import open_runlog
from hwloop.analysis.runs import RUN_ONLY_KEYS, RunInfo, collect_run_paths, load_run
from hwloop.errors import HwloopError, RunLogError
from hwloop.formatting import format_pct, format_pm, md_table, mean_std

#: a drop of an earlier task's accuracy of at least this many percentage points counts as forgetting
FORGET_PP = 10.0


@dataclass
class Group:
    """Runs with the same configuration except the seed (repetitions)."""

    key: str
    runs: list[RunInfo] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.runs[0].describe_config()


def _table_hash(info: RunInfo) -> str:
    if info.table is None:
        return ""
    return hashlib.sha1(np.ascontiguousarray(info.table.grid).tobytes()).hexdigest()[:10]


def build_report(
    args: list[str], out_dir: str | Path, with_endurance: bool = True, endurance_cycles: float = 1e5
) -> dict:
    """Write ``out_dir/report.md`` and its figures; returns a JSON-able summary."""
    out = Path(out_dir)
    runs, skipped_txt, sweeps = _load_runs(args)
    out.mkdir(parents=True, exist_ok=True)
    groups: OrderedDict[str, Group] = OrderedDict()
    for r in runs:
        groups.setdefault(r.config_key(), Group(key=r.config_key())).runs.append(r)
    summary: dict = {"runs": [], "groups": [], "figures": [], "skipped": skipped_txt}
    md = _header(runs, sweeps)
    md += _runs_section(runs, skipped_txt, summary)
    md += _accuracy_section(groups, out, summary)
    md += _forgetting_section(runs, summary)
    md += _repetitions_section(groups, summary)
    mstars = sorted({r.m_star for r in runs if math.isfinite(r.m_star)})
    if len(mstars) >= 2:
        md += _mstar_section(runs, mstars, out, summary)
    md += _table_one(groups, summary)
    if with_endurance:
        md += _endurance_section(runs, out, summary, endurance_cycles)
    md += _calibration_section(runs, out, summary)
    (out / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    summary["report"] = str(out / "report.md")
    safe = _json_safe(summary)
    assert isinstance(safe, dict)
    return safe


def _load_runs(args: list[str]) -> tuple[list[RunInfo], list[tuple[str, str]], list[dict]]:
    """(runs, skipped (path, why), sweep manifests) of the arguments; a file named explicitly must load."""
    paths, skipped, sweeps = collect_run_paths(args)
    explicit = {Path(a).resolve() for a in args if Path(a).is_file()}
    runs: list[RunInfo] = []
    skipped_txt = [(str(p), why) for p, why in skipped]
    for p in paths:
        try:
            runs.append(load_run(p))
        except HwloopError as exc:
            if p.resolve() in explicit:
                raise
            skipped_txt.append((str(p), str(exc)))
    if not runs:
        raise RunLogError("no run logs to report on: give run log files (.h5) or folders that contain them")
    return runs, skipped_txt, sweeps


def _header(runs: list[RunInfo], sweeps: list[dict]) -> list[str]:
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    md = [
        f"# hwloop report ({len(runs)} run{'s' if len(runs) > 1 else ''})",
        "",
        f"Written {now} by `hwloop report`. Accuracies are test accuracies in percent. A run log stores "
        "every device operation; the figures here are recomputed from the logs listed below.",
        "",
    ]
    for sw in sweeps:
        md += _sweep_lines(sw)
    return md


def _runs_section(runs: list[RunInfo], skipped_txt: list[tuple[str, str]], summary: dict) -> list[str]:
    """One row per run; unfinished runs and skipped files are named."""
    md = ["## Runs", ""]
    rows = []
    for r in runs:
        last_ep = int(r.epoch_numbers[-1]) if r.epochs.size else 0
        fin = r.final_acc()
        rows.append(
            [
                f"`{r.name}`",
                r.created_utc or "?",
                r.status,
                r.describe_config(),
                str(r.seed),
                str(last_ep),
                ", ".join(f"{t} {format_pct(a)}" for t, a in zip(r.tasks, fin, strict=False)),
            ]
        )
        summary["runs"].append(
            {
                "path": str(r.path),
                "status": r.status,
                "m_star": r.m_star,
                "epochs": last_ep,
                "final_acc_pct": fin.tolist(),
                "end_of_task_acc_pct": r.end_of_task_acc().tolist(),
                "forgetting": r.forgetting(),
            }
        )
    md += md_table(["run", "created (UTC)", "status", "configuration", "seed", "epochs logged", "final accuracy"], rows)
    md.append("")
    unfinished = [r for r in runs if r.status != "finished"]
    for r in unfinished:
        last_ep = int(r.epoch_numbers[-1]) if r.epochs.size else 0
        md.append(
            f"- `{r.name}` is **{r.status}**: this report uses what it logged up to its last flushed "
            f"step (last complete epoch: {last_ep})."
        )
    if unfinished:
        md.append("")
    if skipped_txt:
        md.append("Skipped files:")
        md += [f"- `{p}`: {why}" for p, why in skipped_txt]
        md.append("")
    return md


def _accuracy_section(groups: OrderedDict[str, Group], out: Path, summary: dict) -> list[str]:
    """One accuracy-per-task figure per group of repetitions."""
    md = [
        "## Accuracy per task",
        "",
        "Test accuracy of every task seen so far after each epoch. Dashed vertical lines mark the switch "
        "to the next task; a grey band marks warm-up epochs trained with m* = 0. With repetitions the line "
        "is the mean and the coloured band ± one standard deviation.",
        "",
    ]
    for gi, g in enumerate(groups.values()):
        r0 = g.runs[0]
        if not r0.epochs.size:
            md += [f"- group {gi + 1} ({g.label}): no epoch finished yet, nothing to plot.", ""]
            continue
        curves = [{"epoch": r.epoch_numbers, "acc_pct": r.acc_pct} for r in g.runs]
        fname = f"accuracy_{gi + 1}.png"
        n = len(g.runs)
        plots.plot_accuracy(
            curves,
            r0.tasks,
            r0.task_boundaries(),
            f"{g.label} ({n} run{'s' if n > 1 else ''})",
            out / fname,
            warmup_end=r0.warmup_end(),
        )
        summary["figures"].append(fname)
        md += [
            f"### Group {gi + 1}: {g.label}",
            "",
            f"![accuracy per task vs epoch]({fname})",
            "",
            f"Runs: {', '.join(f'`{r.name}`' for r in g.runs)}.",
            "",
        ]
    return md


def _forgetting_section(runs: list[RunInfo], summary: dict) -> list[str]:
    """Per run: did each earlier task drop by at least ``FORGET_PP`` points by the end of the run?"""
    md = [
        "## Forgetting",
        "",
        f"For every task trained before the last one: its accuracy at the end of its own training and at "
        f"the end of the run. A drop of {FORGET_PP:g} percentage points (pp) or more is called forgetting.",
        "",
    ]
    forgot, kept = [], []
    for r in runs:
        fg = r.forgetting()
        if not fg:
            md.append(f"- `{r.name}` (m* = {r.m_star:g}): only one task trained so far, nothing to forget.")
            continue
        for f in fg:
            verdict = "**forgot**" if f["drop_pp"] >= FORGET_PP else "**retained**"
            (forgot if f["drop_pp"] >= FORGET_PP else kept).append(r.name)
            md.append(
                f"- `{r.name}` (m* = {r.m_star:g}) {verdict} {f['task']}: "
                f"{f['end_of_task_pct']:.2f} % at the end of its training → {f['final_pct']:.2f} % at "
                f"epoch {f['final_epoch']} (drop {f['drop_pp']:+.2f} pp)."
            )
    md.append("")
    if forgot or kept:
        md.append(
            f"Runs that forgot: {', '.join(sorted(set(forgot))) or 'none'}. "
            f"Runs that retained every earlier task: "
            f"{', '.join(sorted(set(kept) - set(forgot))) or 'none'}."
        )
        md.append("")
    summary["forgot"] = sorted(set(forgot))
    summary["retained"] = sorted(set(kept) - set(forgot))
    return md


def _repetitions_section(groups: OrderedDict[str, Group], summary: dict) -> list[str]:
    """Mean ± std over the seeds of each group, per task."""
    md = [
        "## Repetitions",
        "",
        "Runs with the same configuration except the seed. Mean ± sample standard deviation (n − 1) over "
        "runs, written as in the paper.",
        "",
    ]
    rep_rows = []
    for gi, g in enumerate(groups.values()):
        n = len(g.runs)
        tasks = g.runs[0].tasks
        end_m, end_s = mean_std(np.stack([r.end_of_task_acc() for r in g.runs]))
        fin_m, fin_s = mean_std(np.stack([r.final_acc() for r in g.runs]))
        best_m, best_s = mean_std(np.stack([r.best_acc() for r in g.runs]))
        for i, t in enumerate(tasks):
            rep_rows.append(
                [
                    str(gi + 1),
                    str(n),
                    t,
                    format_pm(end_m[i], end_s[i], n),
                    format_pm(best_m[i], best_s[i], n),
                    format_pm(fin_m[i], fin_s[i], n),
                ]
            )
        summary["groups"].append(
            {
                "group": gi + 1,
                "config": g.label,
                "runs": [r.name for r in g.runs],
                "end_of_task_mean_pct": end_m.tolist(),
                "end_of_task_std_pct": end_s.tolist(),
                "final_mean_pct": fin_m.tolist(),
                "final_std_pct": fin_s.tolist(),
                "best_mean_pct": best_m.tolist(),
                "best_std_pct": best_s.tolist(),
            }
        )
    md += md_table(["group", "runs", "task", "end of its training", "best", "end of run"], rep_rows)
    md.append("")
    return md


def _calibration_section(runs: list[RunInfo], out: Path, summary: dict) -> list[str]:
    """The CDF tables the runs used (each distinct table once), with a figure and a table of levels."""
    md = [
        "## Calibration used",
        "",
        "Conductance CDF per programming condition (LCS after RESET, HCS levels after SET at their "
        "compliance current I_CC), as copied into each run log.",
        "",
    ]
    seen: dict[str, str] = {}
    for r in runs:
        h = _table_hash(r)
        if r.table is None:
            md.append(f"- `{r.name}`: calibration unreadable ({r.table_error}).")
            continue
        if h in seen:
            continue
        fname = f"calibration_{len(seen) + 1}.png"
        seen[h] = fname
        meta = r.table.metadata()
        title = f"{meta['source_path'] or 'calibration'}" + (" (SYNTHETIC table)" if meta["synthetic"] else "")
        plots.plot_cdfs(r.table, out / fname, title)
        summary["figures"].append(fname)
        users = [x.name for x in runs if _table_hash(x) == h]
        md += [
            f"![calibration CDFs]({fname})",
            "",
            f"Used by: {', '.join(f'`{u}`' for u in users)}. Source: `{meta['source_path'] or '?'}`. "
            f"Provenance: {meta['provenance'] or '?'}."
            + (" **This table is synthetic (not measured on a chip).**" if meta["synthetic"] else ""),
            "",
        ]
        md += md_table(
            ["level", "I_CC (µA)", "median G (µS)", "σ (µS)"],
            [
                [
                    d["name"],
                    f"{d['icc_ua']:.1f}" if d["kind"] == "HCS" else "–",
                    f"{d['median_us']:.2f}",
                    f"{d['sigma_us']:.2f}",
                ]
                for d in r.table.describe()
            ],
        )
        md.append("")
    return md


def _json_safe(obj: object) -> object:
    """NaN (a task not evaluated yet) becomes null, so --json output is strict JSON."""
    if isinstance(obj, float):
        return None if not math.isfinite(obj) else obj
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


def _sweep_lines(sw: dict) -> list[str]:
    """What a sweep manifest (docs/sweep.md) says: its grid and the points without a finished log."""
    c = sw["content"]
    if not isinstance(c, dict):
        return [f"Sweep description `{sw['path']}` is not a JSON object; ignored.", ""]
    out = [f"Sweep manifest `{sw['path']}` (format {c.get('format', '?')})."]
    grid = c.get("grid")
    if isinstance(grid, dict):
        out.append("Grid: " + "; ".join(f"{k} = {v}" for k, v in grid.items()) + ".")
    points = c.get("points")
    if isinstance(points, list):
        status: dict[str, int] = {}
        for pt in points:
            st = str(pt.get("status", "?")) if isinstance(pt, dict) else "?"
            status[st] = status.get(st, 0) + 1
        out.append(f"{len(points)} points: " + ", ".join(f"{n} {k}" for k, n in sorted(status.items())) + ".")
        todo = [str(pt.get("name", "?")) for pt in points if isinstance(pt, dict) and pt.get("status") != "finished"]
        if todo:
            out.append(
                "Not finished (the manifest may lag; each run log's own status below is the truth): "
                + ", ".join(todo[:30])
                + (" …" if len(todo) > 30 else "")
                + "."
            )
    return [*out, ""]


def _mstar_section(runs: list[RunInfo], mstars: list[float], out: Path, summary: dict) -> list[str]:
    """Fig. 2a per sweep group: runs with the same configuration except m* and the seed."""
    md = [
        "## Accuracy vs m* (Fig. 2a)",
        "",
        "Runs with the same configuration except m* and the seed, one figure per such group. Each point is "
        "the mean over the runs with that m* (error bar ± one standard deviation): solid, the accuracy of "
        "each task at the end of the run; dashed, at the end of that task's own training.",
        "",
    ]
    sweep_groups: OrderedDict[str, list[RunInfo]] = OrderedDict()
    for r in runs:
        sweep_groups.setdefault(r.config_key(ignore=(*RUN_ONLY_KEYS, "m_star")), []).append(r)
    plotted = [g for g in sweep_groups.values() if len({r.m_star for r in g}) >= 2]
    if not plotted:
        md += [
            f"The runs have m* = {', '.join(f'{m:g}' for m in mstars)} but no two runs differ in m* "
            "alone, so there is no m* sweep to draw.",
            "",
        ]
        return md
    summary["mstar_sweeps"] = []
    for k, group in enumerate(plotted):
        tasks = group[0].tasks
        label = " ".join(p for p in group[0].describe_config().split() if not p.startswith("m*="))
        pts: dict = {
            "config": label,
            "m_star": [],
            "n": [],
            "final_mean": [],
            "final_std": [],
            "end_mean": [],
            "end_std": [],
        }
        rows = []
        for m in sorted({r.m_star for r in group}):
            sel = [r for r in group if r.m_star == m]
            fm, fs = mean_std(np.stack([r.final_acc() for r in sel]))
            em, es = mean_std(np.stack([r.end_of_task_acc() for r in sel]))
            pts["m_star"].append(m)
            pts["n"].append(len(sel))
            for key, v in (("final_mean", fm), ("final_std", fs), ("end_mean", em), ("end_std", es)):
                pts[key].append(v.tolist())
            rows.append([f"{m:g}", str(len(sel))] + [format_pm(fm[i], fs[i], len(sel)) for i in range(len(tasks))])
        fname = "mstar_sweep.png" if len(plotted) == 1 else f"mstar_sweep_{k + 1}.png"
        plots.plot_mstar(pts, tasks, out / fname)
        summary["figures"].append(fname)
        summary["mstar_sweeps"].append(pts)
        md += [f"### {label}", "", f"![accuracy vs m*]({fname})", ""]
        md += md_table(["m*", "runs", *[f"{t} at end of run" for t in tasks]], rows)
        md.append("")
    summary["mstar_sweep"] = summary["mstar_sweeps"][0]
    return md


def _table_one(groups: OrderedDict[str, Group], summary: dict) -> list[str]:
    md = [
        "## Devices and memory footprint (Table I)",
        "",
        "Devices for the quantized weights (each weight = a differential pair of 1T1R cells, 2T2R), weight "
        "levels (2 × HCS levels + 1), accuracy (end of each task's training and end of run, mean ± std), "
        "and the footprint reduction versus the paper's binarized network of the same accuracy "
        f"({'×'.join(str(h) for h in BNN_HIDDEN)} hidden, 784 inputs, 10 outputs): the BNN needs one device "
        "per binary weight in 1T1R, two in 2T2R.",
        "",
    ]
    rows = []
    bnn = footprint(architecture({"hidden": list(BNN_HIDDEN)}, ["mnist"]))
    acc_txt = ", ".join(f"{k} {v:g} %" for k, v in BNN_PAPER_ACC_PCT.items())
    rows.append(
        [
            "BNN reference (paper [5], accuracy quoted from the paper)",
            "784-4096-4096-10",
            f"{fmt_count(bnn['bnn_devices_1t1r'])} (1T1R) / {fmt_count(bnn['bnn_devices_2t2r'])} (2T2R)",
            "2",
            acc_txt,
            "–",
            "1×",
            "1×",
        ]
    )
    table_rows = []
    for gi, g in enumerate(groups.values()):
        r0 = g.runs[0]
        fp = footprint(architecture(r0.config, r0.tasks))
        n = len(g.runs)
        end_m, end_s = mean_std(np.stack([r.end_of_task_acc() for r in g.runs]))
        fin_m, fin_s = mean_std(np.stack([r.final_acc() for r in g.runs]))
        acc = "; ".join(
            f"{t}: {format_pm(end_m[i], end_s[i], n)} → {format_pm(fin_m[i], fin_s[i], n)}"
            for i, t in enumerate(r0.tasks)
        )
        levels = str(2 * r0.table.n_hcs + 1) if r0.table is not None else "?"
        paper = paper_qnn_accuracy(architecture(r0.config, r0.tasks))
        paper_txt = "–" if paper is None else "; ".join(f"{k} {m:.2f} ± {sd:.2f} %" for k, (m, sd) in paper.items())
        red1 = "?" if fp["reduction_vs_1t1r"] is None else f"{fp['reduction_vs_1t1r']:.1f}×"
        red2 = "?" if fp["reduction_vs_2t2r"] is None else f"{fp['reduction_vs_2t2r']:.1f}×"
        rows.append(
            [
                f"QNN group {gi + 1} (m* = {r0.m_star:g}, {n} run{'s' if n > 1 else ''})",
                fp["architecture"],
                f"{fmt_count(fp['devices'])} ({fp['devices'] or '?'})",
                levels,
                acc,
                paper_txt,
                red1,
                red2,
            ]
        )
        table_rows.append(
            {
                "group": gi + 1,
                **fp,
                "weight_levels": levels,
                "paper_acc_pct": None if paper is None else {k: list(v) for k, v in paper.items()},
            }
        )
    md += md_table(
        [
            "network",
            "layers",
            "devices",
            "weight levels",
            "accuracy",
            "paper, same size (hardware, Table I)",
            "reduction vs BNN 1T1R",
            "reduction vs BNN 2T2R",
        ],
        rows,
    )
    md += [
        "",
        "The architecture comes from each run's configuration (`hidden`: two hidden layers of that "
        "width unless it is a list). The paper's 2 × 512 network has 1.3 M devices, hence its 15× and 30×.",
        "",
    ]
    summary["table_one"] = table_rows
    return md


def _endurance_section(runs: list[RunInfo], out: Path, summary: dict, endurance_cycles: float) -> list[str]:
    md = [
        "## Endurance (Fig. 5b)",
        "",
        "Programming operations per device = level changes = RESET rows per device in the op table (each "
        "reprogramming starts with exactly one RESET); FORM excluded. Percentages are of the devices the run "
        f"used. Projection: identical runs before 1 % of the devices pass {endurance_cycles:.0e} cycles.",
        "",
    ]
    rows, hists = [], []
    summary["endurance"] = []
    for r in runs:
        try:
            with open_runlog(r.path) as log:
                s = endurance_summary(log, EnduranceOptions(endurance_cycles=endurance_cycles))
        except HwloopError as exc:
            md.append(f"- `{r.name}`: endurance not available ({exc}).")
            continue
        if "note" in s:
            md.append(f"- `{r.name}`: {s['note']}.")
            continue
        hists.append((r.name, s))
        proj = s["projection"]["runs"]
        rows.append(
            [
                f"`{r.name}`",
                f"{s['devices']:,}",
                format_pct(s["pct_under_25"]),
                format_pct(s["pct_over_50"]),
                str(s["max_ops"]),
                str(s["percentiles"].get("p99", "–")),
                "?" if s["failed"] is None else str(s["failed"]),
                "no limit" if proj is None else f"{proj:,}",
            ]
        )
        summary["endurance"].append(
            {k: s[k] for k in ("run", "devices", "pct_under_25", "pct_over_50", "max_ops", "failed", "projection")}
        )
    if hists:
        plots.plot_endurance_overlay(hists, out / "endurance.png")
        summary["figures"].append("endurance.png")
        md += ["![programming operations per device](endurance.png)", ""]
        md += md_table(
            [
                "run",
                "devices",
                "< 25 ops",
                "> 50 ops",
                "max",
                "p99",
                "failed (worn out)",
                "runs before 1 % exceed endurance",
            ],
            rows,
        )
        md += [
            "",
            "The paper (Fig. 5b) reports 76.12 % of devices under 25 and 10.16 % over 50 operations for "
            "its full 50 + 50 epoch experiment. `failed` counts devices whose read-back disagreed with their "
            "nominal LCS/HCS state in the last two snapshots although reprogrammed in between "
            "(see docs/runlog-schema.md).",
            "",
        ]
    return md
