"""JSON output of hwloop objects: numpy (or torch) scalars and arrays and paths, for ``json.dump(default=...)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def json_default(o: Any) -> Any:
    """``default=`` hook: arrays and numpy/torch scalars via ``tolist()``, paths as strings; else ``TypeError``."""
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
