"""The HDF5 run log: one file per run, written in SWMR mode so it can be read while the run goes on.

Schema (documented in ``docs/runlog-schema.md``):

- root attributes: ``format`` ("hwloop-runlog"), ``format_version``, ``hwloop_version``, ``created_utc``,
  ``config_json`` (the full configuration), ``seed``, ``tasks_json``, ``chip``, ``tile_backends_json``,
  ``n_tiles``, ``writer_pid``, ``writer_host``, ``op_enum_json``.
- ``/ops``: append-only compound table, one row per device operation (see ``OPS_DTYPE``). A whole-array
  read is one ``READ_ALL`` row; its conductances are the matching row of ``/snapshots``.
- ``/epochs``: one row per finished epoch (``epoch_dtype``).
- ``/snapshots/{epoch,g_res,key,level}``: dense conductances and nominal device levels of every device,
  once before training (epoch 0) and after each epoch; chunked per tile, shuffled and gzip-compressed off
  the training thread. ``g_res`` (format 3) is a uint16 zigzag code of the residual from the nominal
  level's reference conductance (``ref_us``, the calibration medians) at 0.1 µS; a row whose ``key`` is
  not -1 holds the difference from the residuals of keyframe row ``key`` (one keyframe every
  ``SNAPSHOT_KEY_EVERY`` rows). Format 2 stored ``g_code`` (uint16, 0.01 µS steps from -20 µS), format 1
  ``g_us`` as float32; ``RunLog.snapshot`` is the one decoder of all three.
- ``/checkpoint/{blob_a,blob_b,index}``: two alternating checkpoint slots for ``--resume``.
- ``/status``, ``/heartbeat``: run status code and the time of the last flush.
- ``/resumes`` (optional): ``/ops`` ranges kept by a ``--resume`` on real tiles (pulses after the
  checkpoint that really happened, not followed by training).

One writer at a time: it holds ``fcntl.flock`` on the sidecar ``<log>.lock`` (``hwloop.runlock``), so a
live run cannot be resumed or appended to. Readers open with a bounded number of SWMR metadata read
attempts (``hwloop.h5check.open_reader``); a write refused for lack of space is one ``RunLogError``.
- ``/calibration``: the CDF table (or calibration) the run used, copied in.

A killed writer loses at most the rows buffered since the last ``flush``: the orchestrator group-commits,
flushing at most every ``--flush-s`` seconds (default 1 s), at the end of every epoch, before a checkpoint
and on any stop, so a killed run loses at most the last second of operations.

The package, one job a module: ``schema`` (format constants and checks), ``snapcode`` (snapshot coding),
``space`` (disk space), ``layout`` (the datasets of a new log), ``writer`` (``RunLogWriter``: create, reopen,
op buffer and group commit, epochs, close), ``background`` (snapshots and checkpoints written off the
training thread, a mixin of the writer), ``resume`` (what a ``--resume`` checks and keeps), ``rebuild``
(compaction; a crashed writer's file made writable again) and ``reader`` (``RunLog``). Everything is
importable from ``hwloop.runlog``.
"""

from __future__ import annotations

from hwloop.runlog.reader import (
    RunLog,
)
from hwloop.runlog.rebuild import _drop_stale_checkpoint, _open_for_append, _rebuild  # noqa: F401
from hwloop.runlog.resume import RESUME_SPACE_BYTES, _refuse_live_writer, keep_post_checkpoint_ops  # noqa: F401
from hwloop.runlog.schema import (  # noqa: F401
    FORMAT_NAME,
    FORMAT_VERSION,
    G_CODE_MAX,
    G_CODE_NAN,
    G_LSB_US,
    G_OFFSET_US,
    G_RES_LSB_US,
    G_RES_NAN,
    G_RES_Q_MAX,
    OP_CODES,
    OP_ENUM,
    OP_READ_ALL,
    OPS_CHUNK,
    OPS_DTYPE,
    OPS_G_STEPS_PER_US,
    READ_VERSIONS,
    RESUMES_DTYPE,
    SNAPSHOT_GZIP_LEVEL,
    SNAPSHOT_KEY_EVERY,
    SNAPSHOT_KEY_LEVEL_CHANGE,
    STATUS_CODES,
    STATUS_NAMES,
    CheckpointInfo,
    _check_format,
    _check_format_inner,
    _h5_open_error,
    _read_checkpoint,
    epoch_dtype,
    frame_checkpoint,
    unframe_checkpoint,
)
from hwloop.runlog.snapcode import (  # noqa: F401
    _compress_residual,
    _compress_snapshot,
    _level_ref,
    _snapshot_keys,
    _unzigzag,
    _zigzag,
    decode_g_us,
    decode_residual,
    encode_g_us,
    encode_residual,
    residual_q,
)
from hwloop.runlog.space import (  # noqa: F401
    SPACE_RESERVE_BYTES,
    DiskSpaceError,
    _disk_guard,
    check_space,
    disk_error,
    is_disk_full,
)
from hwloop.runlog.writer import RunLogWriter

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "G_CODE_MAX",
    "G_CODE_NAN",
    "G_LSB_US",
    "G_OFFSET_US",
    "G_RES_LSB_US",
    "G_RES_NAN",
    "G_RES_Q_MAX",
    "OPS_CHUNK",
    "OPS_DTYPE",
    "OPS_G_STEPS_PER_US",
    "OP_CODES",
    "OP_ENUM",
    "OP_READ_ALL",
    "READ_VERSIONS",
    "RESUMES_DTYPE",
    "SNAPSHOT_GZIP_LEVEL",
    "SNAPSHOT_KEY_EVERY",
    "SNAPSHOT_KEY_LEVEL_CHANGE",
    "SPACE_RESERVE_BYTES",
    "STATUS_CODES",
    "STATUS_NAMES",
    "CheckpointInfo",
    "DiskSpaceError",
    "RunLog",
    "RunLogWriter",
    "check_space",
    "decode_g_us",
    "decode_residual",
    "disk_error",
    "encode_g_us",
    "encode_residual",
    "epoch_dtype",
    "frame_checkpoint",
    "is_disk_full",
    "keep_post_checkpoint_ops",
    "residual_q",
    "unframe_checkpoint",
]
