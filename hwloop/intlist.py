"""Integer lists on the command line: one grammar, one meaning, for tiles, real tiles and seeds.

A list is comma-separated items; an item is one number ``N`` (that index) or an inclusive range ``A-B``:
``5`` is index 5 alone, ``0,3,7`` three indices, ``10-14`` five (10 to 14), ``0-1,4`` three. A trailing comma
is allowed (``7,``, the old way of writing one seed), and so are brackets (``[0,5]``). Every number names an
index, never a count: "the first N" is written ``0-(N-1)``, e.g. ``--seeds 0-4`` for five seeds. Order is kept as
written; an index given twice is refused. No third-party import, so the CLI can use it at start-up.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from hwloop.errors import ConfigError

#: the grammar in one line, for ``--help`` texts and error messages
INT_LIST_HELP = "an index (5), a list (0,3,7) or an inclusive range (10-14), mixed as in 0-1,4"

_ITEM = re.compile(r"(\d+)(?:\s*-\s*(\d+))?")


def parse_int_list(spec: str | int | Sequence[int], option: str, *, upper: int | None = None) -> list[int]:
    """``spec`` (see the module docstring) as a list of indices; ``ConfigError`` naming ``option`` if it is not one.

    ``upper``: if given, every index must lie in ``0..upper-1``. An ``int`` is that one index; a sequence of
    ints is taken as it is (and checked the same way).
    """
    if isinstance(spec, bool):
        raise ConfigError(f"{option} {spec!r}: give {INT_LIST_HELP}")
    if isinstance(spec, int):
        out = [spec]
    elif isinstance(spec, str):
        out = _parse_text(spec, option)
    else:
        out = [int(v) for v in spec]
    if not out:
        raise ConfigError(f"{option} {spec!r} names no index: give {INT_LIST_HELP}")
    neg = [v for v in out if v < 0]
    if neg:
        raise ConfigError(f"{option} {spec!r}: indices start at 0 (got {neg[0]})")
    dup = sorted({v for v in out if out.count(v) > 1})
    if dup:
        raise ConfigError(f"{option} {spec!r}: index {', '.join(map(str, dup))} given twice")
    if upper is not None:
        bad = [v for v in out if not v < upper]
        if bad:
            raise ConfigError(f"{option} {spec!r}: index {bad[0]} is out of range 0..{upper - 1}")
    return out


def _parse_text(spec: str, option: str) -> list[int]:
    body = spec.strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    parts = [p.strip() for p in body.split(",")]
    if parts and parts[-1] == "":
        parts.pop()  # "7," is the list holding 7
    out: list[int] = []
    for part in parts:
        m = _ITEM.fullmatch(part)
        if not m:
            raise ConfigError(f"{option} {spec!r}: {part!r} is not an index or a range; give {INT_LIST_HELP}")
        a, b = int(m.group(1)), int(m.group(2) if m.group(2) is not None else m.group(1))
        if b < a:
            raise ConfigError(f"{option} {spec!r}: the range {part} runs backwards (write {b}-{a})")
        out += range(a, b + 1)
    return out
