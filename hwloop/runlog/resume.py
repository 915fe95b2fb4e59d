"""What a ``--resume`` checks and keeps before it writes: refuse a log whose writer still lives (the backup to
the lock), and keep the operations real tiles did after the checkpoint (``RunLogWriter.reopen`` uses both)."""

from __future__ import annotations

import time
from pathlib import Path

import h5py
import numpy as np

from hwloop.errors import RunLogError
from hwloop.h5check import H5_ERRORS, open_swmr_bounded
from hwloop.runlock import writer_seems_live
from hwloop.runlog.schema import OP_READ_ALL, RESUMES_DTYPE, STATUS_CODES, CheckpointInfo


def _refuse_live_writer(p: Path) -> None:
    """The backup to the lock (another host, or a writer without the lock): a fresh heartbeat from a writer
    that is still alive refuses the resume."""
    try:
        with open_swmr_bounded(p) as f:
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
            status = int(f["status"][0]) if "status" in f else -1
            hb = float(f["heartbeat"][0]) if "heartbeat" in f else None
    except H5_ERRORS:
        return  # unreadable: the open for append that follows reports it
    if status != STATUS_CODES["running"]:
        return
    who = writer_seems_live(attrs, hb)
    if who is not None:
        raise RunLogError(
            f"{p} is being written by {who}: a live run cannot be resumed or appended to. Wait for it to "
            "end, or stop it first, then resume"
        )


def keep_post_checkpoint_ops(f: h5py.File, info: CheckpointInfo, keep_tiles: list[int]) -> int:
    """Move the rows after the checkpoint that belong to ``keep_tiles`` (real hardware: those pulses really
    happened) to just after the checkpoint's rows, drop the rest (simulated tiles roll back, READ_ALL rows
    belong to snapshots that are rolled back), and record the kept range in ``/resumes``. Returns the
    number of rows kept. Done in blocks: no Python loop per row."""
    ds = f["ops"]
    n = int(ds.shape[0])
    if not keep_tiles or n <= info.ops_rows:
        return 0
    keep = np.zeros(max(int(f.attrs["n_tiles"]), max(keep_tiles) + 1), dtype=bool)
    keep[np.asarray(keep_tiles, dtype=np.int64)] = True
    kept = 0
    block = 1 << 20
    write_at = info.ops_rows
    for start in range(info.ops_rows, n, block):  # the write position never overtakes the read position
        rows = ds[start : min(n, start + block)]
        m = keep[rows["tile"].astype(np.int64)] & (rows["op"] != OP_READ_ALL)
        sel = rows[m]
        if sel.size:
            ds[write_at : write_at + sel.size] = sel
            write_at += sel.size
            kept += int(sel.size)
    if kept:
        if "resumes" not in f:
            r = f.create_dataset("resumes", shape=(0,), maxshape=(None,), dtype=RESUMES_DTYPE, chunks=(64,))
            r.attrs["description"] = (
                "/ops rows [ops_start, ops_stop) happened on real tiles after the checkpoint a --resume went "
                "back to: real pulses, counted in endurance, but not followed by training"
            )
        r = f["resumes"]
        k = r.shape[0]
        if not (k and int(r[k - 1]["ops_start"]) == info.ops_rows):  # a resume of the same checkpoint again
            r.resize((k + 1,))  # (after a refused one) widens its entry instead of adding a second
        else:
            k -= 1
        step = int(ds[info.ops_rows - 1]["step"]) if info.ops_rows else 0
        r[k] = np.array((info.ops_rows, info.ops_rows + kept, info.epoch, step, time.time()), dtype=RESUMES_DTYPE)
    return kept


#: free space (beyond the reserve) a resume needs before it touches the log: a few epochs of rows
RESUME_SPACE_BYTES = 4 << 20
