"""Parameter sweeps: the Cartesian product of a grid of training options, one run log per point.

A sweep folder holds (format documented in ``docs/sweep.md``):

- ``sweep.json``: the manifest (grid, base configuration, every point's configuration, status, error,
  log path, results and wall time). Written atomically by the sweep driver after every change.
- ``<point>.h5``: one run log per point, named from the point, e.g. ``m3-h512-s0.h5``.
- ``summary.csv`` / ``summary.md``: mean ± std of the final accuracies per configuration (grouped over seeds).
- ``sweep.lock``: held (``flock``) while a driver runs on the folder, so two drivers never share it.

Points run on an executor: local worker processes (``workers``), or Ray tasks (``ray_address``), one task
per point. Every point is resumable: a finished run log is skipped; a crashed, interrupted or failed one
is continued from its last checkpoint (``train(cfg, resume=log)``); one without a checkpoint is deleted
and started again.

For other tools (``hwloop report``): :func:`load_manifest` reads a sweep folder into a :class:`Manifest`;
:func:`summarize` groups its finished points over seeds.

The package, one job per module (each imports only those above it in this list):

- :mod:`~hwloop.sweep.grid`: axes, parsing of axis values, point names
- :mod:`~hwloop.sweep.manifest`: ``sweep.json`` (:class:`Manifest`, :class:`PointRecord`, :func:`load_manifest`)
- :mod:`~hwloop.sweep.plan`: a new folder's manifest, or an existing one merged with a request (:func:`plan`)
- :mod:`~hwloop.sweep.point`: one point in a worker (:func:`run_point`, :func:`results_from_log`, :func:`log_state`)
- :mod:`~hwloop.sweep.executors`: :class:`LocalExecutor` (worker processes) and :class:`RayExecutor`
- :mod:`~hwloop.sweep.summary`: :func:`summarize`, ``summary.csv`` / ``summary.md``
- :mod:`~hwloop.sweep.driver`: :func:`run_sweep`

Importing the package does not import torch (only a worker running a point does).
"""

from __future__ import annotations

from hwloop.formatting import format_pm
from hwloop.sweep.driver import SweepResult, run_sweep
from hwloop.sweep.executors import RAY_LOG_MODES, Job, LocalExecutor, Outcome, RayExecutor, cpu_cores
from hwloop.sweep.grid import AXES, AXIS_PREFIX, REQUIRED_AXES, format_value, parse_list, parse_seeds, point_name
from hwloop.sweep.manifest import (
    FORMAT_NAME,
    FORMAT_VERSION,
    FREE_BASE,
    LOCK_NAME,
    MANIFEST_NAME,
    NOT_BASE,
    STATUSES,
    SUMMARY_CSV,
    SUMMARY_MD,
    Manifest,
    PointRecord,
    load_manifest,
)
from hwloop.sweep.plan import build_points, default_base, plan
from hwloop.sweep.point import STALE_HEARTBEAT_S, WAIT_LIVE_WRITER_S, log_state, results_from_log, run_point
from hwloop.sweep.summary import summarize, summary_tables, write_summary

__all__ = [
    "AXES",
    "AXIS_PREFIX",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "FREE_BASE",
    "LOCK_NAME",
    "MANIFEST_NAME",
    "NOT_BASE",
    "RAY_LOG_MODES",
    "REQUIRED_AXES",
    "STALE_HEARTBEAT_S",
    "STATUSES",
    "SUMMARY_CSV",
    "SUMMARY_MD",
    "WAIT_LIVE_WRITER_S",
    "Job",
    "LocalExecutor",
    "Manifest",
    "Outcome",
    "PointRecord",
    "RayExecutor",
    "SweepResult",
    "build_points",
    "cpu_cores",
    "default_base",
    "format_pm",
    "format_value",
    "load_manifest",
    "log_state",
    "parse_list",
    "parse_seeds",
    "plan",
    "point_name",
    "results_from_log",
    "run_point",
    "run_sweep",
    "summarize",
    "summary_tables",
    "write_summary",
]
