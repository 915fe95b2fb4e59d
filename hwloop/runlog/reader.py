"""``RunLog``: the read-only SWMR reader of a run log (bounded opens; every format decoded here)."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from hwloop.chip.cdf import CdfTable, read_h5_group
from hwloop.errors import CdfTableError, RunLogError
from hwloop.h5check import (
    H5_ERRORS,
    first_line,
    open_reader,
)
from hwloop.runlog.schema import STATUS_NAMES, _check_format
from hwloop.runlog.snapcode import _snapshot_keys, decode_g_us, decode_residual


class RunLog:
    """Read-only view of a run log; works while the run is being written (SWMR)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # checks first, then an SWMR open with bounded metadata read attempts: a damaged file fails at once
        # instead of stalling in HDF5's SWMR retry loop
        self.f = open_reader(self.path)
        try:
            _check_format(self.f, self.path)
        except BaseException:
            self.f.close()
            raise

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.f.id.valid:
            self.f.close()

    def refresh(self) -> None:
        try:
            for name in ("ops", "epochs", "status", "heartbeat"):
                self.f[name].refresh()
            for k in _snapshot_keys(self.f["snapshots"]):
                self.f["snapshots"][k].refresh()
        except H5_ERRORS as exc:
            raise self._damaged("its tables", exc) from exc

    # ------------------------------------------------------------------ metadata
    @property
    def config(self) -> dict:
        try:
            return json.loads(self.f.attrs["config_json"])
        except (*H5_ERRORS, json.JSONDecodeError) as exc:
            raise RunLogError(f"{self.path}: the run configuration stored in the log is unreadable ({exc})") from exc

    @property
    def tasks(self) -> list[str]:
        return json.loads(self.f.attrs["tasks_json"])

    @property
    def n_tiles(self) -> int:
        return int(self.f.attrs["n_tiles"])

    @property
    def tile_backends(self) -> list[str]:
        return json.loads(self.f.attrs["tile_backends_json"])

    @property
    def attrs(self) -> dict:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in self.f.attrs.items()}

    def table(self) -> CdfTable:
        try:
            return read_h5_group(self.f["calibration"], f"{self.path}:/calibration")
        except (CdfTableError, KeyError) as exc:
            raise RunLogError(f"{self.path}: the calibration copied into the run log is unreadable ({exc})") from exc

    @property
    def status(self) -> str:
        """running, finished, interrupted, failed, or crashed (says running but its writer is gone)."""
        code = int(self.f["status"][0])
        name = STATUS_NAMES.get(code, "unknown")
        if name == "running" and not self._writer_alive():
            return "crashed"
        return name

    def _writer_alive(self) -> bool:
        if self.attrs.get("writer_host") != socket.gethostname():
            return time.time() - float(self.f["heartbeat"][0]) < 3600
        pid = int(self.f.attrs.get("writer_pid", -1))
        if pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    # ------------------------------------------------------------------ tables
    @property
    def ops(self) -> h5py.Dataset:
        return self.f["ops"]

    def iter_ops(self, chunk_rows: int = 1 << 20, fields: list[str] | None = None) -> Iterator[np.ndarray]:
        ds = self.f["ops"]
        n = ds.shape[0]
        for start in range(0, n, chunk_rows):
            try:
                block = ds[start : min(n, start + chunk_rows)]
            except H5_ERRORS as exc:
                raise self._damaged(f"/ops rows {start:,}..", exc) from exc
            yield block if fields is None else block[fields]

    def _damaged(self, what: str, exc: BaseException) -> RunLogError:
        return RunLogError(
            f"{self.path}: {what} cannot be read ({first_line(exc)}); the run log is damaged: "
            "copy it again from its source"
        )

    def epochs(self) -> np.ndarray:
        try:
            return self.f["epochs"][()]
        except H5_ERRORS as exc:
            raise self._damaged("/epochs", exc) from exc

    def accuracy(self, ep: np.ndarray | None = None, percent: bool = False) -> np.ndarray:
        """Test accuracy of every task after every epoch: ``(n_epochs, n_tasks)`` float64, NaN where a task
        was not evaluated; a fraction, or in percent with ``percent``. ``ep``: the epoch table if the caller
        has read it already (a live log may have grown since). The trainer stores fractions; a log whose
        column is already in percent (another tool's) is detected and scaled. The one reader of the column
        (``results``, the reports, the dashboard)."""
        ep = self.epochs() if ep is None else ep
        if not ep.size:
            return np.zeros((0, len(self.tasks)))
        a = np.asarray(ep["acc"].reshape(ep.shape[0], -1), dtype=np.float64)
        in_percent = bool(np.isfinite(a).any() and np.nanmax(a) > 1.0 + 1e-6)
        if percent:
            return a if in_percent else a * 100.0
        return a / 100.0 if in_percent else a

    def results(self, ep: np.ndarray | None = None) -> dict:
        """The results of the run, read from the epoch table: ``final_acc`` (task -> test accuracy of the
        last epoch, a fraction; tasks not evaluated yet are left out), ``acc_after_task`` (task -> the
        accuracies of the tasks so far at the end of its last epoch), ``epochs``, ``steps``, ``programs``
        and ``wall_s`` (summed over epochs). The one reader of these figures (trainer, sweep)."""
        ep, tasks = (self.epochs() if ep is None else ep), self.tasks
        if ep.size == 0:
            return {"final_acc": {}, "acc_after_task": {}, "epochs": 0, "steps": 0, "programs": 0, "wall_s": 0.0}
        acc = self.accuracy(ep)
        last = acc[-1]
        ept = int(self.config.get("epochs_per_task", 0)) or 1
        after: dict[str, dict[str, float]] = {}
        for r in np.flatnonzero(ep["epoch"] % ept == 0):  # the rows of task ends only
            t = int(ep["epoch"][r]) // ept - 1
            if 0 <= t < len(tasks):
                after[tasks[t]] = {tasks[j]: float(acc[r, j]) for j in range(t + 1)}
        return {
            "final_acc": {n: float(last[i]) for i, n in enumerate(tasks) if not np.isnan(last[i])},
            "acc_after_task": after,
            "epochs": int(ep["epoch"][-1]),
            "steps": int(ep["step"][-1]),
            "programs": int(ep["programs"].sum()),
            "wall_s": float(ep["wall_s"].sum()),
        }

    def snapshot_epochs(self) -> np.ndarray:
        try:
            return self.f["snapshots"]["epoch"][()]
        except H5_ERRORS as exc:
            raise self._damaged("/snapshots/epoch", exc) from exc

    def snapshot(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Snapshot row ``k``: read conductances (µS, float32) and nominal levels (int8), (n_tiles, 128, 128)."""
        sg = self.f["snapshots"]
        try:
            if "g_res" in sg:  # format 3
                gr, lv = sg["g_res"], sg["level"][k]
                key = int(sg["key"][k])
                n = int(sg["epoch"].shape[0])
                k_abs = k % n if k < 0 else k
                if key >= 0 and not (key < k_abs and int(sg["key"][key]) < 0):
                    raise RunLogError(
                        f"{self.path}: snapshot {k} names row {key} as its keyframe, which is not "
                        "one; the run log is damaged: copy it again from its source"
                    )
                return decode_residual(
                    gr[k], lv, gr.attrs["ref_us"], gr[key] if key >= 0 else None, float(gr.attrs["g_lsb_us"])
                ), lv
            if "g_code" in sg:
                return decode_g_us(sg["g_code"][k]), sg["level"][k]
            return sg["g_us"][k], sg["level"][k]  # format 1
        except H5_ERRORS as exc:
            raise self._damaged(f"snapshot {k}", exc) from exc
