"""The environment of a test's child ``python -m hwloop.cli`` process: this checkout first on PYTHONPATH, so
the child runs the code under test (not another installed copy)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def repo_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
