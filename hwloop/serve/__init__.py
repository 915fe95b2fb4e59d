"""``hwloop serve``: a read-only live dashboard over run logs and sweeps (docs/serve.md).

Layer: above analysis and sweeps (it reads logs through ``RunLog`` and the analysis helpers); only the
CLI imports it. ``rundata``, ``wear`` and ``roots`` need nothing beyond hwloop's own dependencies;
``app`` and ``server`` need the ``serve`` extra (Starlette, uvicorn, plotly).
"""

from __future__ import annotations

SERVE_EXTRA_HINT = "hwloop serve needs the serve extra: pip install -e '.[serve]' (Starlette, uvicorn, plotly)"


def check_extra() -> None:
    """Raise ``ConfigError`` with the install line if the web stack is missing."""
    import importlib

    from hwloop.errors import ConfigError

    missing = []
    for m in ("starlette", "uvicorn", "plotly"):
        try:
            importlib.import_module(m)
        except ImportError:
            missing.append(m)
    if missing:
        raise ConfigError(f"{SERVE_EXTRA_HINT}; missing: {', '.join(missing)}")
