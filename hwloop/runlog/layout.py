"""The layout of a new run log: its root attributes and empty datasets (``docs/runlog-schema.md``), written
by ``RunLogWriter.create`` before the first flush; the file is then switched to SWMR."""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import datetime, timezone

import h5py
import numpy as np

from hwloop import __version__
from hwloop.chip.base import COLS, ROWS
from hwloop.chip.cdf import CdfTable
from hwloop.runlog.schema import (
    FORMAT_NAME,
    FORMAT_VERSION,
    G_RES_LSB_US,
    G_RES_NAN,
    G_RES_Q_MAX,
    OP_CODES,
    OPS_CHUNK,
    OPS_DTYPE,
    SNAPSHOT_GZIP_LEVEL,
    STATUS_CODES,
    epoch_dtype,
)


def write_layout(
    f: h5py.File,
    *,
    config: dict,
    table: CdfTable,
    tasks: list[str],
    n_tiles: int,
    tile_backends: list[str],
    chip: str,
    seed: int,
    layer_tiles: list[dict] | None,
) -> None:
    """Write the root attributes and create every dataset of an empty run log in ``f``, then start SWMR."""
    f.attrs["format"] = FORMAT_NAME
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["hwloop_version"] = __version__
    f.attrs["created_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    f.attrs["config_json"] = json.dumps(config, sort_keys=True)
    f.attrs["seed"] = int(seed)
    f.attrs["tasks_json"] = json.dumps(tasks)
    f.attrs["chip"] = chip
    f.attrs["n_tiles"] = int(n_tiles)
    f.attrs["tile_backends_json"] = json.dumps(tile_backends)
    f.attrs["op_enum_json"] = json.dumps(OP_CODES)
    f.attrs["layer_tiles_json"] = json.dumps(layer_tiles or [])
    f.attrs["writer_pid"] = os.getpid()
    f.attrs["writer_host"] = socket.gethostname()
    table.write_h5_group(f.create_group("calibration"))
    f["calibration"].attrs["source_path"] = table.source_path
    ops = f.create_dataset(
        "ops",
        shape=(0,),
        maxshape=(None,),
        dtype=OPS_DTYPE,
        chunks=(OPS_CHUNK,),
        compression="gzip",
        compression_opts=1,
        shuffle=True,
    )
    ops.attrs["op_enum_json"] = json.dumps(OP_CODES)
    ops.attrs["description"] = (
        "one row per device operation; READ_ALL = whole-array read whose values are the matching "
        "row (in order) of /snapshots"
    )
    f.create_dataset("epochs", shape=(0,), maxshape=(None,), dtype=epoch_dtype(len(tasks)), chunks=(256,))
    sg = f.create_group("snapshots")
    sg.create_dataset("epoch", shape=(0,), maxshape=(None,), dtype="<i4", chunks=(256,))
    gc = sg.create_dataset(
        "g_res",
        shape=(0, n_tiles, ROWS, COLS),
        maxshape=(None, n_tiles, ROWS, COLS),
        dtype="<u2",
        chunks=(1, 1, ROWS, COLS),
        compression="gzip",
        compression_opts=SNAPSHOT_GZIP_LEVEL,
        shuffle=True,
    )
    gc.attrs["g_lsb_us"] = G_RES_LSB_US
    gc.attrs["ref_us"] = np.asarray(table.medians_us, dtype=np.float32)  # by device level 0 (LCS), 1..
    gc.attrs["nan_code"] = G_RES_NAN
    gc.attrs["q_max"] = G_RES_Q_MAX
    gc.attrs["description"] = (
        "read conductance as a residual code: q = (code >> 1) ^ -(code & 1) (zigzag); if key[row] >= 0 add "
        "the q of row key[row]; g_us = ref_us[level] + g_lsb_us * q (ref 0 for level < 0); nan_code = NaN; "
        "|q| saturates at q_max"
    )
    sg.create_dataset("key", shape=(0,), maxshape=(None,), dtype="<i4", chunks=(256,))
    sg.create_dataset(
        "level",
        shape=(0, n_tiles, ROWS, COLS),
        maxshape=(None, n_tiles, ROWS, COLS),
        dtype="i1",
        chunks=(1, 1, ROWS, COLS),
        compression="gzip",
        compression_opts=SNAPSHOT_GZIP_LEVEL,
    )
    cg = f.create_group("checkpoint")
    for slot in ("blob_a", "blob_b"):
        # uncompressed on purpose: rewriting compressed chunks in a SWMR file allocates new space each
        # time and never reuses the old; fixed-size chunks are overwritten in place
        cg.create_dataset(slot, shape=(0,), maxshape=(None,), dtype="u1", chunks=(1 << 20,))
    cg.create_dataset("index", data=np.full(6, -1, dtype="<i8"))
    cg["index"].attrs["fields"] = "slot(0=a,1=b), nbytes, epoch, ops_rows, epochs_rows, snapshots_rows"
    cg.attrs["encoding"] = (
        "HWLOOPCK, CRC-32 (u4 LE), torch.save payload (integer arrays deflated inside); "
        "slots grow only, the first nbytes are valid"
    )
    f.create_dataset("status", data=np.array([STATUS_CODES["running"]], dtype="i1"))
    f.create_dataset("heartbeat", data=np.array([time.time()], dtype="<f8"))
    f.swmr_mode = True
