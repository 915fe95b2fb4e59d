"""JSON of hwloop objects: numpy (or torch) scalars and arrays and paths, for ``json.dump(default=...)``; and
the reading of hwloop's JSON record files (a sweep's ``sweep.json``, a reproduce folder's record)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hwloop.errors import ConfigError


def json_default(o: Any) -> Any:
    """``default=`` hook: arrays and numpy/torch scalars via ``tolist()``, paths as strings; else ``TypeError``."""
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json_record(path: Path, format_name: str, what: str, advice: str = "") -> dict:
    """The content of a JSON record file that names its format (``{"format": format_name, ...}``).

    Raises ``ConfigError`` if it cannot be read or parsed, or is not such a record (``what``, e.g. "an
    hwloop sweep manifest"); ``advice`` (e.g. "use another --out") ends both messages."""
    tail = f"; {advice}" if advice else ""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is unreadable ({exc}){tail}") from exc
    fmt = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
    if not isinstance(raw, dict) or fmt != format_name:
        raise ConfigError(f"{path} is not {what} (format {fmt!r}){tail}")
    return raw
