"""``hwloop reproduce``: every figure and table of the paper, planned on the sweep engine, beside the paper's.

``session.reproduce`` checks the request (preset, figures, calibration), runs or continues the blocks of
runs (``planner``), then writes ``DIR/report.md`` (``report``). See docs/reproduce.md.

The package itself re-exports only ``presets``, which is free of torch: the CLI reads its ``--preset`` and
``--only`` choices from it at start-up, so ``hwloop --help`` stays fast. Import the session, the planner
and the report from their modules.
"""

from __future__ import annotations

from hwloop.reproduce.presets import FIGURES, PRESETS, Protocol, parse_only, protocol

__all__ = ["FIGURES", "PRESETS", "Protocol", "parse_only", "protocol"]
