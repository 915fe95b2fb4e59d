"""Continual-learning figures of one run log (``hwloop continual``): the accuracy matrix, the average
final accuracy, the average forgetting and the programs per device.

Definitions (also in ``docs/analysis.md``), for a run over tasks 1..T of which the first T' have finished
(T' = T for a finished run):

- **accuracy matrix** A[i][j]: test accuracy of task i at the end of the last epoch of task j (j >= i;
  empty for j < i), from ``RunLog.results()["acc_after_task"]``.
- **average final accuracy**: mean over i = 1..T' of A[i][T'].
- **average forgetting**: mean over i = 1..T'-1 of (max over j = i..T'-1 of A[i][j]) - A[i][T'], the best
  task-end accuracy the task had before the last task minus its accuracy now (Chaudhry et al. 2018).
  Undefined (None) with one finished task.
- **programs per device**: device level changes (the epoch table's ``programs``, summed over the task's
  epochs) divided by the devices of the network (2 per weight, from the log's ``layer_tiles_json``); the
  initial programming (epoch 0) is not counted. ``hwloop endurance`` gives the distribution over devices.
  None for a log without devices (``--model bnn``).

Accuracies are fractions in the JSON and percentages in the printed table. Nothing is cached: every
figure is read from the log each time.
"""

from __future__ import annotations

import json
import math

import numpy as np

from hwloop.errors import RunLogError
from hwloop.runlog import RunLog


def _devices(log: RunLog) -> int | None:
    try:
        layers = json.loads(log.attrs.get("layer_tiles_json", "[]"))
        n = sum(int(d["devices"]) for d in layers)
    except (ValueError, KeyError, TypeError):
        return None
    return n or None


def continual_summary(log: RunLog) -> dict:
    """The figures above for an open run log (``RunLogError`` if no task has finished yet)."""
    tasks = log.tasks
    res = log.results()
    after = res["acc_after_task"]
    done = [t for t in tasks if t in after]
    if not done or done != tasks[: len(done)]:
        raise RunLogError(f"{log.path}: no task of the run has finished yet; run `hwloop continual` after the first")
    n = len(done)
    matrix: list[list[float | None]] = [
        [after[tasks[j]].get(tasks[i]) if j >= i else None for j in range(n)] for i in range(n)
    ]
    final = [matrix[i][n - 1] for i in range(n)]
    forgetting = [max(matrix[i][j] for j in range(i, n - 1)) - matrix[i][n - 1] for i in range(n - 1)]
    ep = log.epochs()
    ept = int(log.config.get("epochs_per_task", 0)) or 1
    per_task = [int(ep["programs"][(ep["epoch"] - 1) // ept == t].sum()) for t in range(len(tasks))]
    devices = _devices(log)
    curves = {
        name: [None if math.isnan(float(a)) else float(a) for a in ep["acc"][:, i]] for i, name in enumerate(tasks)
    }
    return {
        "log": str(log.path),
        "tasks": tasks,
        "tasks_finished": n,
        "epochs_per_task": ept,
        "status": log.status,
        "accuracy_matrix": matrix,
        "final_acc": final,
        "avg_final_acc": float(np.mean(final)),
        "forgetting": forgetting,
        "avg_forgetting": float(np.mean(forgetting)) if forgetting else None,
        "programs": res["programs"],
        "programs_per_task": per_task,
        "devices": devices,
        "programs_per_device": res["programs"] / devices if devices else None,
        "programs_per_device_per_task": [p / devices for p in per_task] if devices else None,
        "epochs": [int(e) for e in ep["epoch"]],
        "acc_per_epoch": curves,
    }


def read_continual(path: str) -> dict:
    with RunLog(path) as log:
        return continual_summary(log)


def compare_last_task(run: dict, baseline: dict) -> dict:
    """The last finished task of ``run`` against the same task in ``baseline`` (e.g. m* = 0) at the same point
    of the sequence: after the same tasks, so that a run still going is compared with the baseline as it
    was then, not with the baseline's end. Accuracies and their difference (run - baseline)."""
    n = run["tasks_finished"]
    name = run["tasks"][n - 1]
    if baseline["tasks"][:n] != run["tasks"][:n]:
        raise RunLogError(f"{baseline['log']}: its task sequence is not the run's; compare runs of the same tasks")
    if baseline["tasks_finished"] < n:
        raise RunLogError(f"{baseline['log']}: task {name} has not finished in the baseline run")
    b = baseline["accuracy_matrix"][n - 1][n - 1]
    a = run["final_acc"][n - 1]
    return {"task": name, "acc": a, "baseline_acc": b, "baseline_log": baseline["log"], "difference": a - b}


def format_continual(s: dict) -> list[str]:
    """The printed form: the matrix in %, then the averages and programs per device."""

    def pct(v: float | None) -> str:
        return f"{100 * v:9.2f}" if v is not None else f"{'-':>9}"

    n = s["tasks_finished"]
    names = s["tasks"][:n]
    w = max(len(t) for t in names) + 2
    lines = [f"{s['log']}: {n} of {len(s['tasks'])} tasks finished ({s['status']})", ""]
    lines.append("test accuracy (%) of task i (row) after training task j (column):")
    lines.append(" " * w + "".join(f"{'after ' + str(j + 1):>9}" for j in range(n)))
    for i, row in enumerate(s["accuracy_matrix"]):
        lines.append(f"{names[i]:<{w}}" + "".join(pct(v) for v in row))
    lines.append("")
    lines.append(f"average final accuracy  {100 * s['avg_final_acc']:.2f} %")
    if s["avg_forgetting"] is not None:
        worst = max(range(n - 1), key=lambda i: s["forgetting"][i])
        lines.append(
            f"average forgetting      {100 * s['avg_forgetting']:.2f} points "
            f"(most: {names[worst]}, {100 * s['forgetting'][worst]:.2f})"
        )
    else:
        lines.append("average forgetting      - (one task)")
    if s["programs_per_device"] is not None:
        per = ", ".join(f"{v:.2f}" for v in s["programs_per_device_per_task"][:n])
        lines.append(
            f"programs per device     {s['programs_per_device']:.2f} ({s['programs']:,} level changes on "
            f"{s['devices']:,} devices; per task {per})"
        )
    else:
        lines.append(f"programs per device     - (no devices in this log; {s['programs']:,} level changes)")
    if "last_task_vs" in s:
        c = s["last_task_vs"]
        lines.append(
            f"last task {c['task']}: {100 * c['acc']:.2f} % against {100 * c['baseline_acc']:.2f} % in "
            f"{c['baseline_log']} ({100 * c['difference']:+.2f} points)"
        )
    return lines


__all__ = ["compare_last_task", "continual_summary", "format_continual", "read_continual"]
