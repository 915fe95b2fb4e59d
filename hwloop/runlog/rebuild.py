"""Rewriting a run log into a fresh file: the compaction at close (a SWMR writer never reuses freed chunk
space), and the rebuild of a file a crashed SWMR writer left open for writing (``--resume``)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import h5py

from hwloop.h5check import H5_ERRORS, open_swmr_bounded
from hwloop.runlog.schema import _h5_open_error
from hwloop.runlog.space import check_space


def _drop_stale_checkpoint(f: h5py.File) -> None:
    """Empty the checkpoint slot that does not hold the current checkpoint (only a half-written checkpoint
    needs it): the rebuild at close then leaves its space out."""
    cg = f["checkpoint"]
    slot = int(cg["index"][0])
    if slot >= 0:
        cg["blob_a" if slot else "blob_b"].resize((0,))


def _open_for_append(p: Path) -> h5py.File:
    """Open for writing; a file left by a crashed SWMR writer is first rebuilt from its readable content."""
    try:
        return h5py.File(p, "r+", libver="latest")
    except H5_ERRORS as first:
        try:
            src = open_swmr_bounded(p)
        except H5_ERRORS as exc:
            raise _h5_open_error(p, exc) from first
        src.close()
        _rebuild(p)
        return h5py.File(p, "r+", libver="latest")


def _rebuild(p: Path) -> None:
    """Copy every object of a run log into a fresh file and swap it in (drops unused space, clears the
    status flags a crashed SWMR writer leaves). Chunks are copied as they are, without recompression."""
    check_space(p, p.stat().st_size, "not enough space to rewrite")
    fd, tmp = tempfile.mkstemp(suffix=".h5.tmp", dir=p.parent)
    os.close(fd)
    try:
        with open_swmr_bounded(p) as src, h5py.File(tmp, "w", libver="latest") as dst:
            for k, v in src.attrs.items():
                dst.attrs[k] = v
            for name in src:
                src.copy(src[name], dst, name=name)
        shutil.copymode(p, tmp)
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
