"""Bench time and programming energy of a plan, before it runs (``hwloop estimate``).

A plan is a list of *array calls* (one chip operation over many devices, as the ``Chip`` interface does
them). Its sources:

- an op log (``hwloop calibrate``/``retention``/``cycle``) or a run log (``hwloop train``): every row is
  one device operation; consecutive rows with the same time stamp and operation are one array call;
- a calibration sweep (``CalibrationConfig``): forming (every ramp step for the devices not formed yet,
  an upper bound: all devices through ``form_steps`` steps) and per gate voltage RESET, READ, SET, READ;
- a training configuration: the first programming of every used device, one full read per epoch, and
  ``programs_per_step`` device programs (RESET + SET for an HCS target + READ) in each step.

Time of one array call of n entries on a bench (``RealChip`` sends one BATCH frame per
``max_batch_ops`` entries, ``docs/fpga-protocol.md``; a FORM row is one device taken through
``form_steps`` steps of the bench's forming ramp, each a FORM pulse and a verify READ)::

    frames * (t_frame_s + (request_bytes + answer_bytes) * 10 / baud) + n * (width_ns + settle_ns) * 1e-9

request = 8 + 1 + 10 * conditions + 2 + 5 * entries per frame, answer = 8 + 2 + 2 * reads. ``t_frame_s``
(host turnaround and USB latency per frame) is not in the bench file; ``--frame-overhead-ms`` sets it
(default 3 ms, measured on the virtual bench; an FTDI adapter's latency timer can add up to 16 ms).

Energy per pulse: SET V_BL * I_CC(V_WL) * width (the transistor limits the current to I_CC); RESET
V_SL^2 * G * width with G the mean HCS read of the plan (the table's mean HCS median if it has no reads);
READ V_read^2 * G * width; FORM V_BL(mean of the ramp) * I_CC(form V_WL) * width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from hwloop.chip.base import Op
from hwloop.chip.cdf import CdfTable
from hwloop.errors import ConfigError, RunLogError
from hwloop.instruments.bench import BenchConfig
from hwloop.instruments.fpga_protocol import COND_DTYPE, OP_ENTRY_BYTES, OVERHEAD

BOARD_MAX_BATCH = 8192


@dataclass
class Plan:
    """Array calls: op code, entries, distinct conditions; plus conductances for the energy."""

    op: np.ndarray  # int per call
    n: np.ndarray  # entries per call
    n_cond: np.ndarray  # distinct conditions per call
    set_icc_ua_sum: float = 0.0  # sum over SET pulses of I_CC (µA); NaN: use the table's levels
    hcs_g_us: float = float("nan")  # mean HCS conductance seen (µS)
    read_g_us: float = float("nan")  # mean read conductance (µS)
    source: str = ""
    note: str = ""

    def counts(self) -> dict[str, int]:
        return {o.name: int(self.n[self.op == int(o)].sum()) for o in Op}


@dataclass
class Timing:
    frame_overhead_s: float = 3e-3
    settle_ns: float = 200.0
    form_steps: float = float("nan")  # mean ramp steps a device needs to form; NaN: half the bench's ramp


def _group_calls(t_s: np.ndarray, op: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if t_s.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    brk = np.ones(t_s.size, dtype=bool)
    brk[1:] = (t_s[1:] != t_s[:-1]) | (op[1:] != op[:-1])
    starts = np.flatnonzero(brk)
    n = np.diff(np.append(starts, t_s.size))
    return starts, op[starts].astype(np.int64), n


def plan_from_log(path: str | Path, table: CdfTable) -> Plan:
    """Array calls of an op log or a run log (``/ops`` with ``t_s`` and ``op``)."""
    p = Path(path)
    try:
        with h5py.File(p, "r") as f:
            fmt = str(f.attrs.get("format", ""))
            if "ops" not in f:
                raise RunLogError(f"{p} has no /ops table (format {fmt!r}); give an op log or a run log")
            ops = f["ops"][()]
    except OSError as exc:
        raise RunLogError(f"{p} is not a readable op log or run log ({exc})") from exc
    names = ops.dtype.names or ()
    if "t_s" not in names or "op" not in names:
        raise RunLogError(f"{p}: /ops lacks t_s or op; it is not an hwloop log")
    op = ops["op"].astype(np.int64)
    if op.size and (op.min() < 0 or op.max() > 4):
        raise RunLogError(f"{p}: /ops holds unknown operation codes; the log is corrupt")
    starts, cop, n = _group_calls(ops["t_s"], op)
    keep = cop <= int(Op.READ)  # READ_ALL rows of a run log stand for a whole-array read
    n_cond = np.ones(starts.size, dtype=np.int64)
    is_set = op == int(Op.SET)
    if "v_gate" in names:
        v = ops["v_gate"][is_set].astype(np.float64)
        icc = table.icc_at(np.nan_to_num(v, nan=float(np.nanmedian(table.v_gate[1:])))).sum()
    else:
        lv = ops["level"][is_set].astype(np.int64)
        lv = np.where((lv >= 1) & (lv <= table.n_hcs), lv, table.n_hcs)
        icc = float(table.icc_ua[lv].sum())
        for k in np.flatnonzero(cop == int(Op.SET)):  # SET calls carry one condition per level used
            a = starts[k]
            n_cond[k] = max(1, np.unique(ops["level"][a : a + n[k]]).size)
    reads = ops["g_us"][op == int(Op.READ)].astype(np.float64)
    reads = reads[np.isfinite(reads)]
    split = 0.5 * float(table.medians_us[0] + table.medians_us[1])
    hcs = reads[reads >= split]
    read_all = int((cop == 4).sum())
    note = f"{read_all} whole-array reads counted as reads of the logged devices" if read_all else ""
    if read_all:  # the run log's READ_ALL: one row stands for a read of every used device
        used = np.unique((ops["tile"].astype(np.int64) * 128 + ops["row"]) * 128 + ops["col"]).size
        n = n.copy()
        n[cop == 4] = used
        cop = np.where(cop == 4, int(Op.READ), cop)
        keep = np.ones_like(keep)
    return Plan(
        cop[keep],
        n[keep],
        n_cond[keep],
        float(icc),
        float(hcs.mean()) if hcs.size else math.nan,
        float(reads.mean()) if reads.size else math.nan,
        source=str(p),
        note=note,
    )


def plan_calibration(cfg: object, n_form_steps: int) -> tuple[Plan, np.ndarray]:
    """A calibration sweep (``hwloop.calibration.procedure.CalibrationConfig``)."""
    nd = int(cfg.n_devices)  # type: ignore[attr-defined]
    region = len(cfg.tiles) * (cfg.rows[1] - cfg.rows[0]) * (cfg.cols[1] - cfg.cols[0])  # type: ignore[attr-defined]
    reads = int(cfg.reads_per_device)  # type: ignore[attr-defined]
    ops: list[int] = []
    ns: list[int] = []
    for _ in range(n_form_steps * (1 + int(cfg.form_retries))):  # type: ignore[attr-defined]
        ops += [int(Op.FORM), int(Op.READ)]
        ns += [region, region]
    for _ in range(int(cfg.n_conditions)):  # type: ignore[attr-defined]
        seq = [Op.RESET] + [Op.READ] * reads + [Op.SET] + [Op.READ] * reads
        ops += [int(o) for o in seq]
        ns += [nd] * len(seq)
    v = np.linspace(cfg.v_gate_start, cfg.v_gate_stop, cfg.n_conditions)  # type: ignore[attr-defined]
    return Plan(
        np.array(ops),
        np.array(ns),
        np.ones(len(ops), np.int64),
        set_icc_ua_sum=math.nan,
        source="calibration sweep",
        note="forming counted as every ramp step for every device of the region (an upper bound)",
        hcs_g_us=math.nan,
        read_g_us=math.nan,
    ), v


def plan_training(n_devices_used: int, steps: int, epochs: int, programs_per_step: float) -> Plan:
    """A training run: first programming, per-step programs, one full read per epoch (plus epoch 0)."""
    ops = [int(Op.RESET), int(Op.SET), int(Op.READ)]
    ns = [n_devices_used, n_devices_used // 2, n_devices_used]
    pp = round(programs_per_step)
    if pp > 0:
        ops += [int(Op.RESET), int(Op.SET), int(Op.READ)] * steps
        ns += [pp, max(pp // 2, 1), pp] * steps
    ops += [int(Op.READ)] * (epochs + 1)
    ns += [n_devices_used] * (epochs + 1)
    keep = np.array(ns) > 0
    return Plan(
        np.array(ops)[keep],
        np.array(ns)[keep],
        np.ones(int(keep.sum()), np.int64),
        math.nan,
        source="training configuration",
        note=f"{pp} device programs per step assumed (half of them to an HCS level)",
    )


def _frames(n: np.ndarray, max_batch: int) -> np.ndarray:
    return np.maximum(1, -(-n // max_batch))


def estimate(
    plan: Plan, bench: BenchConfig, table: CdfTable, timing: Timing | None = None, set_v_gates: np.ndarray | None = None
) -> dict:
    """Predicted bench time (s) and programming energy (J) of ``plan`` on ``bench``."""
    tm = timing or Timing()
    if not (
        math.isfinite(tm.frame_overhead_s)
        and tm.frame_overhead_s >= 0
        and math.isfinite(tm.settle_ns)
        and tm.settle_ns >= 0
    ):
        raise ConfigError("--frame-overhead-ms and --settle-ns must be finite and >= 0")
    widths = {
        int(Op.FORM): bench.form.width_ns,
        int(Op.SET): bench.set.width_ns,
        int(Op.RESET): bench.reset.width_ns,
        int(Op.READ): bench.read.width_ns,
    }
    max_batch = min(bench.fpga.max_batch_ops, BOARD_MAX_BATCH)
    ramp = len(bench.form_conditions())
    fs = tm.form_steps if math.isfinite(tm.form_steps) else ramp / 2.0
    if not 0 < fs <= ramp:
        raise ConfigError(f"--form-steps must be within (0, {ramp}] (the bench's forming ramp has {ramp} steps)")
    # a FORM row is one device through the ramp: fs FORM pulses, each followed by a verify READ, in one
    # FORM and one READ batch per ramp step
    op, n, n_cond = plan.op.astype(np.int64), plan.n.astype(np.int64), plan.n_cond.astype(np.int64)
    is_form = op == int(Op.FORM)
    n_form = np.ceil(n[is_form] * fs).astype(np.int64)
    op = np.concatenate([op[~is_form], np.full(n_form.size, int(Op.FORM)), np.full(n_form.size, int(Op.READ))])
    n_cond = np.concatenate([n_cond[~is_form], np.ones(2 * n_form.size, np.int64)])
    min_frames = np.concatenate([np.ones(int((~is_form).sum()), np.int64), np.full(2 * n_form.size, ramp)])
    n = np.concatenate([n[~is_form], n_form, n_form])
    fr = np.maximum(_frames(n, max_batch), min_frames)
    plan = Plan(op, n, n_cond, plan.set_icc_ua_sum, plan.hcs_g_us, plan.read_g_us, plan.source, plan.note)
    is_read = plan.op == int(Op.READ)
    req = fr * (OVERHEAD + 1 + 2) + plan.n_cond * COND_DTYPE.itemsize * fr + n * OP_ENTRY_BYTES
    ans = fr * (OVERHEAD + 2) + np.where(is_read, 2 * n, 0)
    wire_s = (req + ans) * 10.0 / bench.fpga.baud
    width = np.array([widths.get(int(o), 0) for o in plan.op], dtype=np.float64)
    exec_s = n * (width + tm.settle_ns) * 1e-9
    t_calls = fr * tm.frame_overhead_s + wire_s + exec_s
    by_op = {o.name: float(t_calls[plan.op == int(o)].sum()) for o in (Op.FORM, Op.SET, Op.RESET, Op.READ)}
    counts = plan.counts()
    # energy
    hcs_g = plan.hcs_g_us if math.isfinite(plan.hcs_g_us) else float(table.medians_us[1:].mean())
    read_g = plan.read_g_us if math.isfinite(plan.read_g_us) else float(table.medians_us.mean())
    if math.isfinite(plan.set_icc_ua_sum):
        icc_sum_a = plan.set_icc_ua_sum * 1e-6
    elif set_v_gates is not None and counts["SET"]:
        icc_sum_a = float(table.icc_at(np.asarray(set_v_gates)).mean()) * 1e-6 * counts["SET"]
    else:
        icc_sum_a = float(table.icc_ua[1:].mean()) * 1e-6 * counts["SET"]
    s, r, rd, fo = bench.set, bench.reset, bench.read, bench.form
    v_form = 0.5 * (fo.v_bl_start + fo.v_bl_stop)
    icc_form_a = float(table.icc_at(np.array([fo.v_wl]))[0]) * 1e-6
    e = {
        "SET": (s.v_bl - s.v_sl) * icc_sum_a * s.width_ns * 1e-9,
        "RESET": (r.v_sl - r.v_bl) ** 2 * hcs_g * 1e-6 * r.width_ns * 1e-9 * counts["RESET"],
        "READ": (rd.v_bl - rd.v_sl) ** 2 * read_g * 1e-6 * rd.width_ns * 1e-9 * counts["READ"],
        "FORM": v_form * icc_form_a * fo.width_ns * 1e-9 * counts["FORM"],
    }
    total_e = sum(e.values())
    pulses = counts["SET"] + counts["RESET"]
    return {
        "source": plan.source,
        "bench": bench.name,
        "array_calls": int(plan.op.size),
        "frames": int(fr.sum()),
        "ops": counts,
        "time_s": float(t_calls.sum()),
        "time_by_op_s": by_op,
        "time_parts_s": {
            "frame_overhead": float((fr * tm.frame_overhead_s).sum()),
            "link": float(wire_s.sum()),
            "pulses_and_reads": float(exec_s.sum()),
        },
        "energy_j": total_e,
        "energy_by_op_j": e,
        "energy_per_pulse_j": total_e / pulses if pulses else None,
        "assumptions": {
            "frame_overhead_ms": tm.frame_overhead_s * 1e3,
            "form_steps": fs,
            "form_ramp_steps": ramp,
            "settle_ns": tm.settle_ns,
            "baud": bench.fpga.baud,
            "max_batch_ops": max_batch,
            "hcs_g_us": hcs_g,
            "read_g_us": read_g,
            "note": plan.note,
        },
    }
