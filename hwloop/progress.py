"""Progress bars: tqdm when asked for, else :class:`NoBar`, which takes the same calls and prints nothing."""

from __future__ import annotations

from typing import Any


class NoBar:
    """Stands in for a ``tqdm`` bar when progress is off."""

    def update(self, n: int = 1) -> None: ...
    def set_postfix_str(self, s: str, refresh: bool = True) -> None: ...
    def write(self, s: str, file: Any = None) -> None: ...
    def close(self) -> None: ...


def progress_bar(enabled: bool, **tqdm_kwargs: Any) -> Any:
    """A ``tqdm(**tqdm_kwargs)`` bar, or a :class:`NoBar` if not ``enabled`` (tqdm is then not imported)."""
    if not enabled:
        return NoBar()
    from tqdm import tqdm

    return tqdm(**tqdm_kwargs)
