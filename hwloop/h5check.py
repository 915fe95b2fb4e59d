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


# ---------------------------------------------------------------------------- bounded SWMR opens
#: metadata read attempts per object of an SWMR open. HDF5's default is 100, with a back-off that makes
#: one damaged object stall a reader for many minutes; 25 attempts bound it to about 0.05 s per damaged
#: object (measured: 25 -> 0.04 s, 28 -> 0.27 s, 30 -> 1.1 s, 40 -> over a minute) while still riding over
#: a live writer's flush in progress
SWMR_READ_ATTEMPTS = 25

_set_attempts = None  # ctypes H5Pset_metadata_read_attempts of the libhdf5 that h5py uses, once found


def _hdf5_set_read_attempts():  # type: ignore[no-untyped-def]
    """``H5Pset_metadata_read_attempts`` from the very libhdf5 h5py has loaded (h5py does not wrap it)."""
    global _set_attempts
    if _set_attempts is not None:
        return _set_attempts or None
    import ctypes

    fn = False
    try:
        with open("/proc/self/maps") as fh:
            libs = sorted({ln.split()[-1] for ln in fh if "libhdf5" in ln and "_hl" not in ln and ".so" in ln})
        for lib in libs:
            cfn = getattr(ctypes.CDLL(lib), "H5Pset_metadata_read_attempts", None)
            if cfn is not None:
                cfn.argtypes = [ctypes.c_int64, ctypes.c_uint]
                cfn.restype = ctypes.c_int
                fn = cfn
                break
    except OSError:
        fn = False
    _set_attempts = fn
    return fn or None


def open_swmr_bounded(path: Path, attempts: int = SWMR_READ_ATTEMPTS) -> h5py.File:
    """Open ``path`` read-only in SWMR mode with at most ``attempts`` metadata read attempts per object, so
    damaged metadata fails in bounded time instead of in HDF5's SWMR retry loop (which SIGTERM cannot
    stop, as it never returns to Python). Falls back to a plain SWMR open where libhdf5 cannot be reached."""
    fn = _hdf5_set_read_attempts()
    if fn is None:
        return h5py.File(path, "r", libver="latest", swmr=True)
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    # fclose degree left at HDF5's default, as h5py does: a second handle on a file this process already
    # has open (a writer watching its own log, a dashboard in the same process) must use the same degree
    if fn(fapl.id, max(1, int(attempts))) < 0:
        return h5py.File(path, "r", libver="latest", swmr=True)
    fid = h5py.h5f.open(str(path).encode(), h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ, fapl=fapl)
    return h5py.File(fid)


def open_reader(path: Path) -> h5py.File:
    """The one way hwloop opens a run log for reading: truncation and metadata checks, then an SWMR open
    bounded to ``SWMR_READ_ATTEMPTS`` metadata read attempts per object (for the whole time the file stays
    open). Raises ``RunLogError`` (one line) on any damage."""
    check_not_truncated(path)
    check_metadata(path)
    try:
        return open_swmr_bounded(path)
    except H5_ERRORS as exc:
        raise RunLogError(
            f"{path} is not a readable HDF5 run log ({first_line(exc)}); it may be damaged: copy it again "
            "from its source, or re-run the training"
        ) from exc


def first_line(exc: BaseException) -> str:
    s = str(exc).strip().splitlines()
    return s[0] if s else type(exc).__name__
