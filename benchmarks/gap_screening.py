"""Fashion-MNIST gap screening: one summary of the candidate sweep folders (issue 18, reduced protocol).

Each candidate is one ``hwloop sweep`` folder under ``--root`` (its name is the candidate's name); every
point is a seed. Everything is read from the run logs: per run, MNIST after MNIST, MNIST after
Fashion-MNIST, Fashion-MNIST final and max over epochs, device level changes (programs) and the
programs-per-device distribution (RESET rows per device in ``/ops``: mean, % under 25, % over 50, as
``hwloop endurance``; the initial programming counts one per device), and the % of hidden weights
beyond [Q_0, Q_n] at the end (from the last checkpoint). Per candidate: mean ± std (sample std, ddof 1)
over seeds, and the difference of the means from the ``--baseline`` candidate. Runs that are not finished
are listed and left out.

Prints ONE JSON line (the summary); ``--json FILE`` also writes it indented, ``--md FILE`` writes the
per-candidate and Pareto tables as markdown.

Usage: ``python benchmarks/gap_screening.py --root runs/gap [--baseline baseline] [--json F] [--md F]
[--add-log CANDIDATE=LOG ...]`` (``--add-log``: a finished run of that candidate's configuration made outside
its sweep folder, as another seed).
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from hwloop.analysis.endurance import count_ops, distribution_stats
from hwloop.runlog import RunLog
from hwloop.runlog.schema import _read_checkpoint
from hwloop.sweep import load_manifest
from hwloop.training.checkpoint import load_payload
from hwloop.training.config import TrainConfig

#: the options of the Fashion-MNIST gap study (issue 18)
GAP_OPTIONS = ("ws_source", "clamp", "bn_eval", "lr_decay", "batch_size", "lr")

#: what an --add-log run must share with its candidate's sweep points
SAME_KEYS = (*GAP_OPTIONS, "m_star", "hidden", "tasks", "epochs_per_task", "warmup", "chip", "train_samples", "init")

METRICS = (
    "mnist_after_mnist",
    "mnist_after_fmnist",
    "fmnist_final",
    "fmnist_max",
    "programs",
    "mean_programs_per_device",
    "pct_devices_under_25",
    "pct_devices_over_50",
    "pct_hidden_beyond_range",
    "wall_s",
)


def hidden_beyond_range_pct(log: RunLog) -> float:
    """% of the hidden weights of the last checkpoint (end of the run) strictly outside [Q_0, Q_n]."""
    _, blob = _read_checkpoint(log.f, log.path)
    model = load_payload(blob)["model"]
    q, _ = log.table().weight_levels(1.5)
    w = torch.cat([v.reshape(-1) for k, v in model.items() if k.endswith(".weight") and k.startswith("layers.")])
    return 100.0 * float(((w < float(q[0])) | (w > float(q[-1]))).double().mean())


def run_metrics(path: Path) -> dict:
    """The figures of one finished run log (accuracies in %)."""
    with RunLog(path) as log:
        res = log.results()
        ep = log.epochs()
        cfg = log.config
        acc = np.asarray(ep["acc"], dtype=np.float64)
        counts = count_ops(log)
        beyond = hidden_beyond_range_pct(log)
    dist = distribution_stats(counts.programs[counts.used])
    return {
        "seed": int(cfg["seed"]),
        "mnist_after_mnist": 100 * res["acc_after_task"]["mnist"]["mnist"],
        "mnist_after_fmnist": 100 * res["final_acc"]["mnist"],
        "fmnist_final": 100 * res["final_acc"]["fashion-mnist"],
        "fmnist_max": 100 * float(np.nanmax(acc[:, 1])),
        "programs": int(res["programs"]),
        "mean_programs_per_device": dist["mean_ops"],
        "pct_devices_under_25": dist["pct_under_25"],
        "pct_devices_over_50": dist["pct_over_50"],
        "pct_hidden_beyond_range": beyond,
        "wall_s": float(res["wall_s"]),
    }


def candidate(folder: Path, extra_logs: list[Path] = ()) -> dict:
    """One candidate: the finished points of its sweep folder, plus ``extra_logs`` (finished runs of the same
    configuration made outside it, e.g. a seed trained with ``hwloop train``)."""
    man = load_manifest(folder)
    runs, missing = [], []
    for p in man.points:
        if p.status == "finished":
            runs.append(run_metrics(folder / p.log))
        else:
            missing.append(f"{p.name} ({p.status})")
    for log in extra_logs:
        with RunLog(log) as rl:
            cfg = rl.config
        ref = man.points[0].config
        differ = [k for k in SAME_KEYS if k in ref and cfg.get(k) != ref[k]]
        if differ:
            raise SystemExit(f"--add-log {log}: not {folder.name}'s configuration ({', '.join(differ)} differ)")
        runs.append({**run_metrics(log), "log": str(log)})
    seeds = [r["seed"] for r in runs]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"{folder.name}: seed given twice ({sorted(seeds)}); an --add-log must be another seed")
    base = man.base
    defaults = asdict(TrainConfig())
    options = {k: v for k, v in base.items() if k in GAP_OPTIONS and v != defaults[k]}  # the non-default ones
    m_stars = sorted({float(p.config["m_star"]) for p in man.points})
    if m_stars != [defaults["m_star"]]:  # m* is a sweep axis, not in the base
        options["m_star"] = m_stars[0] if len(m_stars) == 1 else m_stars
    stats = {}
    for k in METRICS:
        vals = [r[k] for r in runs]
        if vals:
            stats[k] = {
                "mean": statistics.fmean(vals),
                "std": statistics.stdev(vals) if len(vals) > 1 else None,
                "n": len(vals),
            }
    return {"options": options, "runs": runs, "not_finished": missing, "stats": stats}


def pm(s: dict | None, digits: int = 2) -> str:
    if not s:
        return "–"
    std = "" if s["std"] is None else f" ± {s['std']:.{digits}f}"
    return f"{s['mean']:.{digits}f}{std}"


def delta(c: dict, b: dict, k: str) -> str:
    if k not in c["stats"] or k not in b["stats"]:
        return ""
    return f" ({c['stats'][k]['mean'] - b['stats'][k]['mean']:+.2f})"


def pareto(cands: dict) -> list[str]:
    """Candidates not dominated on (MNIST after F-MNIST, F-MNIST final), both higher is better."""
    pts = {n: (c["stats"]["mnist_after_fmnist"]["mean"], c["stats"]["fmnist_final"]["mean"]) for n, c in cands.items()}
    return [
        n
        for n, (a, f) in pts.items()
        if not any((a2 >= a and f2 >= f) and (a2 > a or f2 > f) for m, (a2, f2) in pts.items() if m != n)
    ]


def markdown(summary: dict) -> str:
    cands, bname = summary["candidates"], summary["baseline"]
    b = cands.get(bname)
    lines = [
        "| candidate | options | seeds | MNIST after MNIST | MNIST after F-MNIST | F-MNIST final | F-MNIST max "
        "| level changes in training (M) | programs / device | % devices < 25 | % > 50 | % W_H beyond ±Q_n |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, c in cands.items():
        s = c["stats"]
        if not s:
            continue
        ref = b if b and n != bname else None

        def d(k: str, c: dict = c, ref: dict | None = ref) -> str:
            return delta(c, ref, k) if ref else ""

        opts = ", ".join(f"{k}={v}" for k, v in c["options"].items()) or "defaults"
        progs = {k: (v / 1e6 if k in ("mean", "std") and v is not None else v) for k, v in s["programs"].items()}
        lines.append(
            f"| {n} | {opts} | {s['mnist_after_fmnist']['n']} | {pm(s['mnist_after_mnist'])}{d('mnist_after_mnist')} "
            f"| {pm(s['mnist_after_fmnist'])}{d('mnist_after_fmnist')} | {pm(s['fmnist_final'])}{d('fmnist_final')} "
            f"| {pm(s['fmnist_max'])}{d('fmnist_max')} | {pm(progs)} | {pm(s['mean_programs_per_device'])} "
            f"| {pm(s['pct_devices_under_25'])} | {pm(s['pct_devices_over_50'])} "
            f"| {pm(s['pct_hidden_beyond_range'], 3)} |"
        )
    lines += ["", "Pareto front (MNIST after F-MNIST vs F-MNIST final, means over seeds; higher is better):", ""]
    lines += ["| candidate | MNIST after F-MNIST | F-MNIST final | on the front |", "|---|---|---|---|"]
    front = set(summary["pareto_front"])
    ranked = sorted(
        ((n, c) for n, c in cands.items() if c["stats"]), key=lambda nc: -nc[1]["stats"]["fmnist_final"]["mean"]
    )
    for n, c in ranked:
        s = c["stats"]
        on = "yes" if n in front else ""
        lines.append(f"| {n} | {pm(s['mnist_after_fmnist'])} | {pm(s['fmnist_final'])} | {on} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, required=True, help="folder holding one sweep folder per candidate")
    ap.add_argument("--baseline", default="baseline")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--md", type=Path, default=None)
    ap.add_argument(
        "--add-log",
        action="append",
        default=[],
        metavar="CANDIDATE=LOG",
        help="a finished run of CANDIDATE's configuration made outside its folder (repeatable)",
    )
    a = ap.parse_args()
    extra: dict[str, list[Path]] = {}
    for item in a.add_log:
        name, sep, log = item.partition("=")
        if not sep or not Path(log).is_file():
            raise SystemExit(f"--add-log {item!r}: give CANDIDATE=LOG with an existing run log")
        extra.setdefault(name, []).append(Path(log))
    cands = {
        d.name: candidate(d, extra.get(d.name, [])) for d in sorted(a.root.iterdir()) if (d / "sweep.json").is_file()
    }
    done = {n: c for n, c in cands.items() if c["stats"]}
    summary = {
        "benchmark": "gap_screening",
        "root": str(a.root),
        "baseline": a.baseline,
        "candidates": cands,
        "pareto_front": pareto(done) if done else [],
    }
    print(json.dumps(summary))
    if a.json:
        a.json.write_text(json.dumps(summary, indent=1) + "\n")
    if a.md:
        a.md.write_text(markdown(summary))


if __name__ == "__main__":
    main()
