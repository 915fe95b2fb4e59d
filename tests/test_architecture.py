"""What the import-linter contracts (``lint-imports``, pyproject.toml) cannot see: the modules a process really
loads, parent packages' ``__init__`` included."""

from __future__ import annotations

import subprocess
import sys

from _child import repo_env

_CHECK = """
import sys
import hwloop.cli  # every command registered, every choice list read
from hwloop.reproduce.presets import PRESETS
heavy = sorted(m for m in ("torch", "matplotlib") if m in sys.modules)
print(",".join(heavy))
"""


def test_the_cli_starts_without_torch_or_matplotlib() -> None:
    r = subprocess.run([sys.executable, "-c", _CHECK], capture_output=True, text=True, env=repo_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"imported at start-up: {r.stdout.strip()}"


def test_reproduce_choices_come_from_the_presets() -> None:
    from hwloop.cli import cli
    from hwloop.reproduce.presets import FIGURES, PRESETS

    opts = {p.name: p for p in cli.commands["reproduce"].params}
    assert list(opts["preset"].type.choices) == list(PRESETS)
    assert all(f in opts["only"].help for f in FIGURES)
