"""Opening run logs for analysis with a fast, clear failure on truncated or corrupt files.

HDF5 readers in SWMR mode retry metadata reads that fail their checksum (they assume a writer is
half-way through a flush), which makes a truncated file hang for a long time before it errors. So the
superblock's end-of-file address is checked against the file size first: a file shorter than the
address its superblock records has lost its tail. Then a file that no writer holds open is walked
once without SWMR (a single read attempt per object), which turns corrupt metadata into an error at once.
A file still marked open by a writer (live or crashed) is opened in SWMR mode with a bounded number of
metadata read attempts (``hwloop.h5check.open_swmr_bounded``), so damage there fails in bounded time too.
"""

from __future__ import annotations

from pathlib import Path

from hwloop.errors import RunLogError
from hwloop.h5check import H5_ERRORS, check_metadata, check_not_truncated  # noqa: F401 - re-exported
from hwloop.runlog import RunLog


def open_runlog(path: str | Path) -> RunLog:
    """``RunLog(path)`` (truncation and metadata checks, then an SWMR open bounded to a few metadata read
    attempts per object: ``hwloop.h5check.open_reader``); every HDF5 error becomes one ``RunLogError``."""
    p = Path(path)
    try:
        return RunLog(p)
    except RunLogError:
        raise
    except H5_ERRORS as exc:
        raise RunLogError(f"{p}: the run log is corrupt ({exc})") from exc
