"""Summaries of a sweep: final accuracy per configuration, mean ± std over seeds (``summary.csv`` / ``summary.md``)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from hwloop.formatting import DASH, format_pm, md_table, mean_std
from hwloop.sweep.grid import format_value
from hwloop.sweep.manifest import SUMMARY_CSV, SUMMARY_MD, Manifest, PointRecord


def summarize(man: Manifest) -> list[dict[str, Any]]:
    """One row per configuration (the points that differ only by seed), in grid order.

    Row keys: the group axes (e.g. ``m_star``, ``hidden``), ``n_points``, ``n_finished``, ``seeds`` (finished),
    ``tasks``, and per task ``acc[task] = (mean %, sample std %)`` of the final test accuracy over the finished
    seeds (std with n-1; NaN for one seed), ``wall_s_mean``. Unfinished points are left out of the statistics.
    """
    gaxes = man.group_axes
    groups: dict[tuple, list[PointRecord]] = {}
    for p in man.points:
        groups.setdefault(tuple(p.params[a] for a in gaxes), []).append(p)
    rows = []
    for key, pts in groups.items():
        done = [p for p in pts if p.status == "finished" and p.final_acc]
        tasks: list[str] = []
        for p in done:
            tasks += [t for t in p.final_acc if t not in tasks]
        acc = {t: _pct_mean_std([p.final_acc[t] for p in done if t in p.final_acc]) for t in tasks}
        rows.append(
            {
                **dict(zip(gaxes, key, strict=True)),
                "n_points": len(pts),
                "n_finished": len(done),
                "seeds": [p.params["seed"] for p in done],
                "tasks": tasks,
                "acc": acc,
                "wall_s_mean": float(mean_std([p.wall_s for p in done])[0]) if done else math.nan,
            }
        )
    return rows


def _pct_mean_std(fractions: list[float]) -> tuple[float, float]:
    """(mean %, sample std %) of accuracies given as fractions; the std is NaN for fewer than two."""
    m, s = mean_std([100 * x for x in fractions]) if fractions else (math.nan, math.nan)
    return float(m), float(s)


def summary_tables(man: Manifest) -> tuple[str, str]:
    """(CSV text, markdown text) of :func:`summarize`."""
    rows = summarize(man)
    gaxes = man.group_axes
    tasks: list[str] = []
    for r in rows:
        tasks += [t for t in r["tasks"] if t not in tasks]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [*gaxes, "n_points", "n_finished", *[f"{t}_{s}" for t in tasks for s in ("mean_pct", "std_pct")], "wall_s_mean"]
    )
    for r in rows:
        vals = []
        for t in tasks:
            m, s = r["acc"].get(t, (math.nan, math.nan))
            vals += [_csv_num(m), _csv_num(s)]
        w.writerow(
            [*(format_value(r[a]) for a in gaxes), r["n_points"], r["n_finished"], *vals, _csv_num(r["wall_s_mean"])]
        )
    head = {"m_star": "m*", "hidden": "H", "lr": "lr"}
    base = man.base
    md = [
        "# Sweep summary",
        "",
        f"Final test accuracy, mean ± sample std over the finished seeds of each configuration "
        f"(tasks {base.get('tasks')}, chip {base.get('chip')}, {base.get('epochs_per_task')} epochs per task, "
        f"BN {base.get('bn_mode')}). Counts: {', '.join(f'{k} {v}' for k, v in man.counts().items())}.",
        "",
    ]
    table = []
    for r in rows:
        cells = [format_value(r[a]) for a in gaxes] + [f"{r['n_finished']}/{r['n_points']}"]
        cells += [format_pm(*r["acc"][t]) if t in r["acc"] else DASH for t in tasks]
        table.append(cells)
    md += md_table([*(head.get(a, a) for a in gaxes), "seeds", *tasks], table)
    return buf.getvalue(), "\n".join(md) + "\n"


def _csv_num(x: float) -> str:
    return "" if math.isnan(x) else f"{x:.4f}"


def write_summary(man: Manifest) -> tuple[Path, Path]:
    text_csv, text_md = summary_tables(man)
    p_csv, p_md = man.dir / SUMMARY_CSV, man.dir / SUMMARY_MD
    p_csv.write_text(text_csv)
    p_md.write_text(text_md)
    return p_csv, p_md
