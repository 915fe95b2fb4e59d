"""Endurance: how many programming operations each device went through (the paper's Fig. 5b).

Definitions (also in ``docs/runlog-schema.md``):

- A **programming operation** is one device level change. The trainer programs a change as one RESET,
  then one SET if the target is an HCS level, then one READ back; so the number of programming
  operations of a device is the number of RESET rows with its address in ``/ops``.
- **Raw pulses** are SET + RESET rows of the device. FORM rows are excluded from both counts.
- The **devices** of a run are those with at least one FORM, SET, RESET or READ row (a ``READ_ALL`` row
  carries no address). Devices that were formed but never reprogrammed count with 0 operations.

The op table is read once, in large slices of only the counted columns, and counted with one
``np.bincount`` per slice on the key ``device * 5 + op``: that gives FORM/SET/RESET/READ counts of every
device at once.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from hwloop.analysis.logfile import H5_ERRORS
from hwloop.chip.base import CELLS_PER_TILE, COLS, ROWS
from hwloop.chip.cdf import CdfTable
from hwloop.errors import HwloopError, RunLogError
from hwloop.runlog import OP_CODES, RunLog

N_OPS = 5
FORM, SET, RESET, READ, READ_ALL = (OP_CODES[k] for k in ("FORM", "SET", "RESET", "READ", "READ_ALL"))
#: rows per chunk read from /ops (about 70 MB of decompressed rows)
DEFAULT_CHUNK_ROWS = 1 << 22
#: the /ops columns the count needs (t_s, level and g_us are not read)
READ_FIELDS = ("step", "op", "tile", "row", "col")
UNDER_OPS = 25
OVER_OPS = 50
PERCENTILES = (50.0, 90.0, 99.0, 99.9)

FAILED_DEFINITION = (
    "a device is counted as failed (worn out) when, in both of the last two epoch-end snapshots, its read "
    "conductance is on the wrong side of the LCS/HCS threshold for its nominal level (level 0 = LCS, "
    "1..8 = HCS), and it was reprogrammed (at least one RESET) between those two snapshots, so a fresh "
    "programming attempt came out wrong again. The threshold is where the LCS and HCS1 distributions of "
    "the run's calibration misclassify equally. Persistent mismatches without reprogramming in between "
    "are reported as failed_suspect (a tail draw of the distribution looks the same). Devices stuck in the "
    "state class they should be in cannot be seen from the log."
)


@dataclass
class OpCounts:
    """Per-device and per-step operation counts from one pass over ``/ops``."""

    n_tiles: int
    rows: int
    per_device: np.ndarray  # (n_devices, 5) int64: FORM, SET, RESET, READ, (READ_ALL: unused per device)
    per_step: np.ndarray  # (last step + 1, 5) int64
    window_steps: tuple[int, float] | None = None
    window_resets: np.ndarray | None = None  # RESET rows per device with step in (lo, hi]
    read_all_rows: int = 0

    @property
    def programs(self) -> np.ndarray:
        """Programming operations (level changes = RESET rows) per device."""
        return self.per_device[:, RESET]

    @property
    def pulses(self) -> np.ndarray:
        """Raw SET + RESET pulses per device."""
        return self.per_device[:, SET] + self.per_device[:, RESET]

    @cached_property
    def used(self) -> np.ndarray:
        """Devices with at least one FORM, SET, RESET or READ row."""
        d = self.per_device
        return (d[:, FORM] + d[:, SET] + d[:, RESET] + d[:, READ]) > 0


@dataclass
class EnduranceOptions:
    endurance_cycles: float = 1e5
    budget_fraction: float = 0.01
    tile: int | None = None
    chunk_rows: int = DEFAULT_CHUNK_ROWS


def _corrupt(log: RunLog, exc: Exception) -> RunLogError:
    return RunLogError(f"{log.path}: the run log's op table is unreadable ({exc}); the file is truncated or corrupt")


def count_ops(
    log: RunLog,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    window_steps: tuple[int, float] | None = None,
    prefetch: bool = False,
) -> OpCounts:
    """Count operations per device and per step in one pass over ``/ops`` (a consistent prefix if live).

    ``window_steps=(lo, hi)`` also counts RESET rows per device whose step is in ``(lo, hi]``.
    ``prefetch`` reads the next slice in a thread while the current one is counted; on this project's
    2-core machine it was slower (h5py holds the GIL while it decompresses), so it is off by default.
    """
    n_tiles = log.n_tiles
    n_dev = n_tiles * CELLS_PER_TILE
    try:
        ds = log.ops
        ds.refresh()
        n = int(ds.shape[0])
    except H5_ERRORS as exc:
        raise _corrupt(log, exc) from exc
    dev = np.zeros(n_dev * N_OPS, dtype=np.int64)
    steps = np.zeros(0, dtype=np.int64)
    win = np.zeros(n_dev, dtype=np.int64) if window_steps is not None else None

    view = ds.fields(list(READ_FIELDS))  # only the columns counted: less to convert and copy

    def read(start: int) -> np.ndarray:
        return view[start : min(n, start + chunk_rows)]

    starts = range(0, n, chunk_rows)
    buf_rows = min(n, chunk_rows)
    key_buf = np.empty(buf_rows, dtype=np.intp)
    tmp_buf = np.empty(buf_rows, dtype=np.intp)
    step_buf = np.empty(buf_rows, dtype=np.intp)
    pool = ThreadPoolExecutor(max_workers=1) if prefetch and n > chunk_rows else None
    try:
        pending = pool.submit(read, 0) if pool is not None else None
        for start in starts:
            if pending is not None:
                blk = pending.result()
                nxt = start + chunk_rows
                pending = pool.submit(read, nxt) if (pool is not None and nxt < n) else None
            else:
                blk = read(start)
            m = blk.size
            if m and (int(blk["row"].max()) >= ROWS or int(blk["col"].max()) >= COLS):
                raise RunLogError(f"{log.path}: /ops holds a row or column outside 0..127; the log is corrupt")
            key, tmp, sk = key_buf[:m], tmp_buf[:m], step_buf[:m]
            op = blk["op"].view(np.uint8)
            # key = device * 5 + op, device = (tile * ROWS + row) * COLS + col; buffers are reused
            np.multiply(blk["tile"], CELLS_PER_TILE * N_OPS, out=key, dtype=np.intp)
            np.multiply(blk["row"], COLS * N_OPS, out=tmp, dtype=np.intp)
            key += tmp
            np.multiply(blk["col"], N_OPS, out=tmp, dtype=np.intp)
            key += tmp
            key += op
            b = np.bincount(key)
            if b.size > dev.size:
                raise RunLogError(
                    f"{log.path}: /ops holds an address outside the run's {n_tiles} tile(s); the log is corrupt"
                )
            dev[: b.size] += b
            st = blk["step"]
            np.multiply(st, N_OPS, out=sk, dtype=np.intp)
            sk += op
            bs = np.bincount(sk)
            if bs.size > steps.size:
                steps = np.concatenate([steps, np.zeros(bs.size - steps.size, dtype=np.int64)])
            steps[: bs.size] += bs
            if win is not None and window_steps is not None:
                lo, hi = window_steps
                # rows are in step order: the window is one contiguous run of rows
                a = int(np.searchsorted(st, lo, side="right"))
                z = int(np.searchsorted(st, hi, side="right")) if math.isfinite(hi) else m
                if z > a:
                    k = key[a:z]
                    k = k[op[a:z] == RESET]
                    win += np.bincount(k // N_OPS, minlength=n_dev)
    except H5_ERRORS as exc:
        raise _corrupt(log, exc) from exc
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    pad = -steps.size % N_OPS  # the last step may lack its READ_ALL (or READ) column
    per_step = np.concatenate([steps, np.zeros(pad, dtype=np.int64)]).reshape(-1, N_OPS)
    return OpCounts(
        n_tiles=n_tiles,
        rows=n,
        per_device=dev.reshape(n_dev, N_OPS),
        per_step=per_step,
        window_steps=window_steps,
        window_resets=win,
        read_all_rows=int(per_step[:, READ_ALL].sum()),
    )


# ---------------------------------------------------------------------- statistics
def _int_histogram(values: np.ndarray) -> np.ndarray:
    return np.bincount(values) if values.size else np.zeros(1, dtype=np.int64)


def _percentiles_from_hist(hist: np.ndarray, qs: tuple[float, ...]) -> dict[str, int]:
    """Smallest count v with at least q % of devices at or below v (exact for integer counts)."""
    total = int(hist.sum())
    if total == 0:
        return {f"p{q:g}": 0 for q in qs}
    cum = np.cumsum(hist)
    out = {}
    for q in qs:
        need = math.ceil(q / 100.0 * total - 1e-9)
        out[f"p{q:g}"] = int(np.searchsorted(cum, max(need, 1), side="left"))
    return out


def distribution_stats(values: np.ndarray) -> dict:
    """devices, pct_under_25, pct_over_50, max, mean, total and percentiles of integer counts."""
    values = np.asarray(values, dtype=np.int64)
    n = int(values.size)
    if n == 0:
        return {
            "devices": 0,
            "pct_under_25": None,
            "pct_over_50": None,
            "max_ops": 0,
            "mean_ops": None,
            "total_ops": 0,
            "percentiles": {},
        }
    hist = _int_histogram(values)
    return {
        "devices": n,
        "pct_under_25": 100.0 * float(hist[:UNDER_OPS].sum()) / n,
        "pct_over_50": 100.0 * float(hist[OVER_OPS + 1 :].sum()) / n,
        "max_ops": int(hist.size - 1),
        "mean_ops": float(values.mean()),
        "total_ops": int(values.sum()),
        "percentiles": _percentiles_from_hist(hist, PERCENTILES),
    }


def histogram(values: np.ndarray, max_bins: int = 100) -> dict:
    """Fig. 5b: percentage of devices per bin of operation counts (integer bins, width >= 1)."""
    values = np.asarray(values, dtype=np.int64)
    hist = _int_histogram(values)
    width = max(1, math.ceil(hist.size / max_bins))
    edges = np.arange(0, hist.size + width, width)
    counts = np.add.reduceat(hist, edges[:-1]) if hist.size else np.zeros(0, dtype=np.int64)
    pct = 100.0 * counts / max(1, values.size)
    return {"bin_edges": edges.tolist(), "pct_devices": pct.tolist(), "bin_width": int(width)}


def projected_runs(values: np.ndarray, endurance_cycles: float, fraction: float) -> dict:
    """How many identical runs before more than ``fraction`` of the devices exceed ``endurance_cycles``.

    The device at the upper (1 - fraction) quantile of the per-run count c reaches the budget after
    endurance / c runs; every device with more operations is in the allowed fraction.
    """
    values = np.sort(np.asarray(values, dtype=np.int64))
    out: dict = {"endurance_cycles": float(endurance_cycles), "fraction": float(fraction)}
    if values.size == 0:
        out.update(ops_at_quantile=None, runs=None)
        return out
    k = min(values.size - 1, max(0, math.ceil((1.0 - fraction) * values.size) - 1))
    q = int(values[k])
    out["ops_at_quantile"] = q
    out["runs"] = None if q == 0 else math.floor(endurance_cycles / q)
    if q == 0:
        out["runs_note"] = "null: the device at that quantile was never reprogrammed (no limit from this run)"
    return out


def class_threshold_us(table: CdfTable) -> float:
    """Conductance splitting LCS from HCS where both misclassify the same fraction (equal-error point)."""
    lo, hi = float(table.medians_us[0]), float(table.medians_us[1])
    g = np.linspace(lo, hi, 4097)
    err = (1.0 - table.cdf(0, g)) - table.cdf(1, g)  # falls from + to -
    i = int(np.argmax(err <= 0.0))
    return float(g[i])


def _snapshot_step(epochs: np.ndarray, epoch: int, last_step: float) -> float:
    if epoch <= 0:
        return 0.0
    hit = np.flatnonzero(epochs["epoch"] == epoch)
    return float(epochs["step"][hit[-1]]) if hit.size else last_step


def failure_window(log: RunLog) -> tuple[int, float] | None:
    """Steps (lo, hi] between the last two snapshots, or None with fewer than two snapshots."""
    se = log.snapshot_epochs()
    if se.size < 2:
        return None
    ep = log.epochs()
    lo = _snapshot_step(ep, int(se[-2]), math.inf)
    hi = _snapshot_step(ep, int(se[-1]), math.inf)
    return (int(lo) if math.isfinite(lo) else 0, hi)


def failed_devices(log: RunLog, counts: OpCounts) -> dict:
    """Worn-out devices as defined in ``FAILED_DEFINITION`` (needs two snapshots and the calibration)."""
    out: dict = {
        "failed": None,
        "failed_suspect": None,
        "failed_known": False,
        "failed_definition": FAILED_DEFINITION,
    }
    if not counts.used.any():
        out["failed_reason"] = "the log has no device operations (a --chip none run has no devices)"
        return out
    se = log.snapshot_epochs()
    if se.size < 2 or counts.window_resets is None:
        out["failed_reason"] = f"needs two epoch-end snapshots; the log has {se.size}"
        return out
    try:
        thr = class_threshold_us(log.table())
    except HwloopError as exc:
        out["failed_reason"] = f"the run's calibration is unreadable ({exc})"
        return out
    g1, l1 = log.snapshot(int(se.size) - 2)
    g2, l2 = log.snapshot(int(se.size) - 1)
    mm1 = (l1 >= 0) & ((g1 >= thr) != (l1 >= 1))
    mm2 = (l2 >= 0) & ((g2 >= thr) != (l2 >= 1))
    persistent = (mm1 & mm2).reshape(-1)
    reprog = counts.window_resets > 0
    failed = persistent & reprog
    out.update(
        failed=int(failed.sum()),
        failed_suspect=int((persistent & ~reprog).sum()),
        failed_known=True,
        failed_threshold_us=thr,
        failed_snapshot_epochs=[int(se[-2]), int(se[-1])],
        failed_reason="",
    )
    out["_failed_mask"] = failed
    return out


def inferred_worn(log: RunLog) -> dict:
    """Devices the trainer marked worn from their reads (level LEVEL_WORN in the last snapshot)."""
    from hwloop.characterise.wear import LEVEL_WORN

    se = log.snapshot_epochs()
    if se.size == 0:
        return {"worn_inferred": None}
    _, lv = log.snapshot(int(se.size) - 1)
    worn = np.flatnonzero(lv.reshape(-1) == LEVEL_WORN)
    return {
        "worn_inferred": int(worn.size),
        "worn_inferred_devices": worn[:1000].tolist(),
        "worn_inferred_epoch": int(se[-1]),
    }


def layer_tiles(log: RunLog) -> list[dict]:
    """Parsed ``layer_tiles_json`` root attribute, or [] when absent or malformed."""
    raw = log.attrs.get("layer_tiles_json")
    if raw is None:
        return []
    try:
        layers = json.loads(raw)
        return [
            {
                "layer": str(d["layer"]),
                "tiles": [int(d["tiles"][0]), int(d["tiles"][1])],
                **{k: v for k, v in d.items() if k not in ("layer", "tiles")},
            }
            for d in layers
        ]
    except (ValueError, KeyError, TypeError, IndexError):
        return []


def per_tile_stats(programs: np.ndarray, used: np.ndarray, n_tiles: int) -> list[dict]:
    p = programs.reshape(n_tiles, CELLS_PER_TILE)
    u = used.reshape(n_tiles, CELLS_PER_TILE)
    n = u.sum(axis=1)
    pu = np.where(u, p, 0)
    tot = pu.sum(axis=1)
    mx = np.where(u, p, -1).max(axis=1)
    under = (u & (p < UNDER_OPS)).sum(axis=1)
    over = (u & (p > OVER_OPS)).sum(axis=1)
    rows = []
    for t in np.flatnonzero(n):  # one row per tile in use (a loop over tiles, not devices)
        rows.append(
            {
                "tile": int(t),
                "devices": int(n[t]),
                "total_ops": int(tot[t]),
                "mean_ops": float(tot[t] / n[t]),
                "max_ops": int(mx[t]),
                "pct_under_25": 100.0 * float(under[t]) / float(n[t]),
                "pct_over_50": 100.0 * float(over[t]) / float(n[t]),
            }
        )
    return rows


def per_epoch(log: RunLog, counts: OpCounts) -> dict:
    """Programming operations and raw pulses per epoch (epoch 0 = set-up at step 0)."""
    ep = log.epochs()
    ps = counts.per_step
    n_steps = ps.shape[0]
    bounds = np.concatenate([[0], ep["step"].astype(np.int64)])  # last step of set-up, then of each epoch
    at = np.minimum(bounds + 1, n_steps)
    out: dict = {"epoch": [0, *[int(e) for e in ep["epoch"]]]}
    for name, per_step in (("programs", ps[:, RESET]), ("pulses", ps[:, RESET] + ps[:, SET])):
        cum = np.concatenate([[0], np.cumsum(per_step)])  # cum[k] = operations at steps < k
        upto = cum[at]
        out[name] = np.diff(upto, prepend=0).tolist()
        tail = int(cum[-1] - upto[-1])
        if tail:
            out.setdefault("in_progress", {})[name] = tail
    return out


def endurance_summary(log: RunLog, opts: EnduranceOptions | None = None, counts: OpCounts | None = None) -> dict:
    """Everything ``hwloop endurance`` reports, as a JSON-able dict (see docs/runlog-schema.md)."""
    opts = opts or EnduranceOptions()
    if opts.tile is not None and not 0 <= opts.tile < log.n_tiles:
        raise RunLogError(f"--tile {opts.tile} is outside the run's tiles 0..{log.n_tiles - 1}")
    try:
        window = failure_window(log)
        if counts is None:
            counts = count_ops(log, chunk_rows=opts.chunk_rows, window_steps=window)
        used = counts.used
        programs = counts.programs
        pulses = counts.pulses
        prog_used = programs[used]
        summary: dict = {
            "run": str(log.path),
            "status": log.status,
            "ops_rows": counts.rows,
            "devices_on_chip": int(used.size),
        }
        summary.update(distribution_stats(prog_used))
        if not prog_used.size:
            summary["note"] = f"no device operations in the log (chip {log.attrs.get('chip', '?')!r})"
        summary["count_definition"] = (
            "programming operations = device level changes = RESET rows per device in /ops (FORM excluded); "
            "pulses = SET + RESET rows per device; devices = addresses with any FORM/SET/RESET/READ row"
        )
        summary["pulses"] = distribution_stats(pulses[used])
        summary["totals"] = {
            "form": int(counts.per_device[:, FORM].sum()),
            "set": int(counts.per_device[:, SET].sum()),
            "reset": int(counts.per_device[:, RESET].sum()),
            "read": int(counts.per_device[:, READ].sum()),
            "read_all": counts.read_all_rows,
        }
        summary["histogram"] = histogram(prog_used)
        fail = failed_devices(log, counts)
        fail.pop("_failed_mask", None)
        summary.update(fail)
        summary.update(inferred_worn(log))
        summary["projection"] = projected_runs(prog_used, opts.endurance_cycles, opts.budget_fraction)
        summary["per_epoch"] = per_epoch(log, counts)
        summary["per_tile"] = per_tile_stats(programs, used, counts.n_tiles)
        layers = []
        for lt in layer_tiles(log):
            a, b = lt["tiles"]
            a, b = max(0, a), min(counts.n_tiles, b)
            sl = slice(a * CELLS_PER_TILE, b * CELLS_PER_TILE)
            st = distribution_stats(programs[sl][used[sl]])
            layers.append({"layer": lt["layer"], "tiles": [a, b], **st})
        summary["per_layer"] = layers
        if opts.tile is not None:
            t = opts.tile
            sl = slice(t * CELLS_PER_TILE, (t + 1) * CELLS_PER_TILE)
            summary["tile_detail"] = {
                "tile": t,
                **distribution_stats(programs[sl][used[sl]]),
                "ops": programs[sl].reshape(ROWS, COLS).tolist(),
            }
    except H5_ERRORS as exc:
        raise _corrupt(log, exc) from exc
    return summary


def tile_map(counts: OpCounts, tile: int) -> np.ndarray:
    """Programming operations of every device of one tile, (ROWS, COLS)."""
    sl = slice(tile * CELLS_PER_TILE, (tile + 1) * CELLS_PER_TILE)
    return counts.programs[sl].reshape(ROWS, COLS)


def busiest_tile(counts: OpCounts) -> int:
    return int(np.argmax(counts.programs.reshape(counts.n_tiles, CELLS_PER_TILE).sum(axis=1)))
