"""Fast, clear failure on truncated or corrupt HDF5 files, before an SWMR reader can hang on them.

HDF5 readers in SWMR mode retry metadata reads that fail their checksum (they assume a writer is
half-way through a flush), which makes a truncated file hang for a long time before it errors. So the
superblock's end-of-file address is checked against the file size first: a file shorter than the
address its superblock records has lost its tail. Then a file that no writer holds open is walked
once without SWMR (a single read attempt per object), which turns corrupt metadata into an error at once.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

import h5py

from hwloop.errors import RunLogError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: HDF5 errors h5py raises on damaged files
H5_ERRORS: tuple[type[BaseException], ...] = (OSError, RuntimeError, ValueError, KeyError, TypeError)


def superblock_eof(path: Path) -> int | None:
    """End-of-file address recorded in an HDF5 superblock (versions 2 and 3, at offset 0), else None."""
    with path.open("rb") as fh:
        head = fh.read(48)
    if len(head) < 12 or head[:8] != HDF5_SIGNATURE:
        return None
    version, size_offsets = head[8], head[9]
    if version not in (2, 3) or size_offsets not in (4, 8):
        return None
    at = 12 + 2 * size_offsets  # signature, version, sizes, flags; base address; extension address
    fmt = "<Q" if size_offsets == 8 else "<I"
    if len(head) < at + size_offsets:
        return None
    return int(struct.unpack(fmt, head[at : at + size_offsets])[0])


def check_not_truncated(path: Path, settle_s: float = 0.2) -> None:
    """Raise ``RunLogError`` if the file is not HDF5 at all, or is shorter than its superblock says."""
    if not path.exists():
        raise RunLogError(f"run log {path} does not exist")
    if not path.is_file():
        raise RunLogError(f"{path} is not a file (give a run log .h5, or a folder to `hwloop report`)")
    with path.open("rb") as fh:
        sig = fh.read(8)
    if sig != HDF5_SIGNATURE:
        raise RunLogError(f"{path} is not an HDF5 file (no HDF5 signature); give an hwloop run log")
    eof = superblock_eof(path)
    if eof is None:
        return
    size = path.stat().st_size
    if size < eof:
        time.sleep(settle_s)  # a live writer may be mid-flush: look again once
        size = path.stat().st_size
        eof = superblock_eof(path) or eof
        if size < eof:
            raise RunLogError(
                f"{path} is truncated: {size:,} bytes on disk but its HDF5 superblock records {eof:,}; "
                "copy the log again from its source (a crashed run's log is not truncated, only its tail "
                "after the last flush is lost)"
            )


def check_metadata(path: Path) -> None:
    """Walk every object header and attribute of a closed file without SWMR (one read attempt each), so
    corrupt metadata fails at once. A file still marked open by a writer (live, or crashed) is left to
    the SWMR reader."""
    try:
        f = h5py.File(path, "r", libver="latest")
    except H5_ERRORS as exc:
        msg = str(exc)
        if "already open for write" in msg or "consistency flags" in msg:
            return  # a live or crashed SWMR writer: only an SWMR reader may open it
        raise RunLogError(
            f"{path} is not a readable HDF5 run log ({exc}); check the path or copy the log again"
        ) from exc

    def visit(_name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):
            _ = obj.shape, obj.dtype
        dict(obj.attrs)  # type: ignore[attr-defined]

    try:
        with f:
            dict(f.attrs)
            f.visititems(visit)
    except H5_ERRORS as exc:
        raise RunLogError(f"{path}: the run log is corrupt ({exc}); it cannot be read") from exc
