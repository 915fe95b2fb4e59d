"""Analysis of run logs: endurance (programming operations per device), accuracy curves, the paper's
figures and tables, and comparisons across runs. Everything here only reads run logs."""

from __future__ import annotations

from hwloop.analysis.endurance import EnduranceOptions, OpCounts, count_ops, endurance_summary
from hwloop.analysis.runs import RunInfo, collect_run_paths, load_run

__all__ = [
    "EnduranceOptions",
    "OpCounts",
    "RunInfo",
    "collect_run_paths",
    "count_ops",
    "endurance_summary",
    "load_run",
]
