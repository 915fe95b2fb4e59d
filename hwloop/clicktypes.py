"""Click parameter types shared by the commands.

``FiniteFloat`` is the type of every float option (CLI and emulator commands): it refuses ``nan``, ``inf``
and ``-inf`` (which ``float()`` and ``click.FloatRange`` accept, and which would otherwise reach a run and
waste device endurance) and takes the same range arguments as ``click.FloatRange``. The CLI turns its refusal into one
line and exit code 2.
"""

from __future__ import annotations

import math
from typing import Any

import click


class FiniteFloat(click.FloatRange):
    """A float that must be finite, optionally within a range (``min``, ``max``, ``min_open``...)."""

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rv = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(rv, param, ctx)

    def __repr__(self) -> str:
        return (
            f"FiniteFloat({self._describe_range()})"
            if self.min is not None or self.max is not None
            else "FiniteFloat()"
        )


#: a finite float with no range
FINITE_FLOAT = FiniteFloat()
