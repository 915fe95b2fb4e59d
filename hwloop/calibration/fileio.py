"""The calibration file (HDF5): writer and reader. The format is documented in ``docs/calibration-format.md``.

The root keeps the layout of a CDF table (``CdfTable.write_h5_group``: ``levels/<name>/samples_us`` and the
root attributes), with ``format = "hwloop-calibration"``, so a calibration file loads as a CDF table
(``hwloop.chip.cdf.load_table``, ``--cdf FILE``). Everything else lives in other groups:
``selection``, ``weights``, ``sweep``, ``forming`` and ``run``.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

from hwloop import __version__
from hwloop.calibration.procedure import CalibrationResult
from hwloop.calibration.select import CRITERION, CRITERION_TEXT
from hwloop.calibration.stats import QUANTILE_PROBABILITIES, remove_read_noise
from hwloop.chip.cdf import CdfTable, Level, read_h5_group
from hwloop.errors import CalibrationError, CdfTableError

FORMAT_NAME = "hwloop-calibration"
FORMAT_VERSION = 1
W_MAX = 1.5
#: V_WL of the RESET recorded for LCS when the chip's table gives none (RESET V_SL 2.6 V, V_WL 4.8 V, 100 ns).
V_GATE_RESET_DEFAULT = 4.8


def level_names(n_hcs: int) -> list[str]:
    return ["LCS", *[f"HCS{k + 1}" for k in range(n_hcs)]]


def build_table(
    res: CalibrationResult,
    *,
    chip_id: str,
    provenance: str,
    synthetic: bool,
    read_voltage_v: float = 0.1,
    v_gate_reset: float = V_GATE_RESET_DEFAULT,
) -> CdfTable:
    """The selected levels as a CDF table of device samples (read noise taken out when it was measured).

    LCS pools all RESET reads; HCS_k holds the reads of the k-th chosen sweep condition.
    """
    levels = [
        Level(
            name="LCS",
            kind="LCS",
            v_gate=float(v_gate_reset),
            icc_ua=0.0,
            samples_us=device_samples(res, -1)[0],
        )
    ]
    for k, j in enumerate(res.selection.index):
        levels.append(
            Level(
                name=f"HCS{k + 1}",
                kind="HCS",
                v_gate=float(res.v_gate[j]),
                icc_ua=float(res.icc_ua[j]),
                samples_us=device_samples(res, int(j))[0],
            )
        )
    try:
        return CdfTable(
            levels=levels,
            read_voltage_v=read_voltage_v,
            provenance=provenance,
            synthetic=synthetic,
            chip_id=chip_id,
            extra={"calibration_format_version": FORMAT_VERSION, "criterion": CRITERION},
        )
    except CdfTableError as exc:
        raise CalibrationError(f"the selected levels do not form a valid CDF table: {exc}") from exc


def device_samples(res: CalibrationResult, sweep_index: int) -> tuple[np.ndarray, float]:
    """(device conductances, read-noise sigma) of a sweep condition, or of the pooled LCS for index -1.

    With two reads per device the read noise is removed (``stats.remove_read_noise``); with one read the
    raw reads are returned and the read noise is unknown (NaN).
    """
    if sweep_index < 0:
        r1, r2 = res.lcs_samples_us, res.lcs_reread_us
    else:
        r1 = res.samples_us[sweep_index]
        r2 = None if res.reread_us is None else res.reread_us[sweep_index]
    if r2 is None:
        return np.asarray(r1, dtype=np.float64).reshape(-1).copy(), float("nan")
    return remove_read_noise(r1, r2)


def pair_levels(n_hcs: int) -> np.ndarray:
    """Device levels (positive cell, negative cell) of weight levels k = -n..n: k>0 (HCS_k, LCS),
    k<0 (LCS, HCS_|k|), 0 (LCS, LCS) — a matched pair."""
    k = np.arange(-n_hcs, n_hcs + 1)
    return np.stack([np.where(k > 0, k, 0), np.where(k < 0, -k, 0)], axis=1).astype(np.int8)


def write_calibration(
    res: CalibrationResult,
    path: str | Path,
    *,
    chip_id: str,
    bench: str = "",
    synthetic: bool = False,
    source_table: str = "",
    oplog_path: str = "",
    read_voltage_v: float = 0.1,
    v_gate_reset: float = V_GATE_RESET_DEFAULT,
    created_utc: str | None = None,
    reselected_from: str = "",
) -> CdfTable:
    """Write the calibration file atomically (a temporary file renamed into place). Returns its CDF table."""
    p = Path(path)
    created = created_utc or datetime.now(timezone.utc).isoformat(timespec="seconds")
    cfg = res.config
    backend = res.chip_info.get("backend", "")
    provenance = (
        f"Measured by hwloop calibrate {__version__} on {backend} chip {chip_id!r} at {created}"
        + (f", bench {bench}" if bench else "")
        + f": {cfg.n_conditions} SET gate voltages {cfg.v_gate_start:g}-{cfg.v_gate_stop:g} V, "
        f"{cfg.n_devices} devices each (single shot), LCS from the RESET reads; levels chosen by {CRITERION}."
        + (f" SIMULATED chip replaying {source_table}." if synthetic and source_table else "")
    )
    table = build_table(
        res,
        chip_id=chip_id,
        provenance=provenance,
        synthetic=synthetic,
        read_voltage_v=read_voltage_v,
        v_gate_reset=v_gate_reset,
    )
    q, scale_us = table.weight_levels(W_MAX)
    idx = res.selection.index
    names = level_names(cfg.n_hcs)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            table.write_h5_group(f)
            a = f.attrs
            a["format"] = FORMAT_NAME
            a["format_version"] = FORMAT_VERSION
            a["created_utc"] = created
            a["bench"] = bench
            a["backend"] = backend
            a["hwloop_version"] = __version__
            a["source_table"] = source_table
            a["n_hcs"] = cfg.n_hcs
            # per level: stats, quantiles and where in the sweep it came from
            lv_stats = [(res.lcs_stats, 0, -1)] + [(res.stats, j, int(j)) for j in idx]
            gz = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
            for name, (st, row, sweep_i) in zip(names, lv_stats, strict=True):
                g = f["levels"][name]
                reads = res.lcs_samples_us.reshape(-1) if sweep_i < 0 else res.samples_us[sweep_i]
                dev, read_noise_us = device_samples(res, sweep_i)
                g.attrs["median_us"] = float(st["median_us"][row])
                g.attrs["sigma_us"] = float(st["sigma_us"][row])
                g.attrs["sigma_device_us"] = float(np.std(dev))
                g.attrs["read_noise_us"] = read_noise_us
                g.attrs["sweep_index"] = sweep_i
                g.attrs["n_samples"] = int(g["samples_us"].shape[0])
                g.create_dataset("reads_us", data=np.asarray(reads, dtype=np.float64), **gz)
                g.create_dataset("reads_quantiles_us", data=st["quantiles_us"][row])
                g.create_dataset("probabilities", data=QUANTILE_PROBABILITIES)
            s = f.create_group("selection")
            s.attrs["criterion"] = CRITERION
            s.attrs["criterion_text"] = CRITERION_TEXT
            s.attrs["min_separation"] = res.selection.min_separation
            s.attrs["worst_pair"] = f"{names[res.selection.worst_pair]}-{names[res.selection.worst_pair + 1]}"
            s.attrs["max_overlap"] = float(np.max(res.overlap))
            s.attrs["max_overlap_empirical"] = float(np.max(res.overlap_empirical))
            s.create_dataset("sweep_index", data=idx.astype(np.int32))
            s.create_dataset(
                "pair_names",
                data=np.array(
                    [f"{a}-{b}" for a, b in itertools.pairwise(names)],
                    dtype=h5py.string_dtype(),
                ),
            )
            s.create_dataset("separation", data=res.selection.separation)
            s.create_dataset("overlap", data=res.overlap)
            s.create_dataset("overlap_empirical", data=res.overlap_empirical)
            w = f.create_group("weights")
            w.attrs["w_max"] = W_MAX
            w.attrs["scale_us_per_weight"] = scale_us
            w.attrs["convention"] = (
                "weight = (G_pos - G_neg) / scale; level k>0 is (HCS_k, LCS), k<0 is "
                "(LCS, HCS_|k|), 0 is a matched pair (LCS, LCS); Q_k = (median HCS_k - "
                "median LCS) / scale"
            )
            w.create_dataset("q", data=q)
            w.create_dataset("k", data=np.arange(-cfg.n_hcs, cfg.n_hcs + 1, dtype=np.int8))
            w.create_dataset("pair_levels", data=pair_levels(cfg.n_hcs))
            sw = f.create_group("sweep")
            sw.attrs["n_conditions"] = cfg.n_conditions
            sw.attrs["n_devices"] = cfg.n_devices
            sw.attrs["v_step"] = cfg.v_step
            sw.attrs["icc_source"] = "nominal: the chip's I_CC(V_gate) characteristic, not measured"
            sw.create_dataset("v_gate", data=res.v_gate)
            sw.create_dataset("icc_ua", data=res.icc_ua)
            for key in ("median_us", "sigma_us", "s_down_us", "s_up_us"):
                sw.create_dataset(key, data=res.stats[key])
            sw.create_dataset("quantiles_us", data=res.stats["quantiles_us"])
            sw.create_dataset("probabilities", data=QUANTILE_PROBABILITIES)
            sw.create_dataset("samples_us", data=res.samples_us.astype(np.float32), **gz)
            sw.create_dataset("lcs_samples_us", data=res.lcs_samples_us.astype(np.float32), **gz)
            if res.reread_us is not None and res.lcs_reread_us is not None:
                sw.create_dataset("reread_us", data=res.reread_us.astype(np.float32), **gz)
                sw.create_dataset("lcs_reread_us", data=res.lcs_reread_us.astype(np.float32), **gz)
            sw.create_dataset("cells", data=res.cells.astype(np.uint32), **gz)
            fo = f.create_group("forming")
            fo.attrs["yield"] = res.forming_yield
            fo.attrs["retries"] = cfg.form_retries
            fo.attrs["n_region"] = int(res.region_cells.size)
            fo.attrs["n_formed"] = int(res.formed.sum())
            fo.attrs["n_usable"] = int(res.usable.size)
            fo.create_dataset("region_cells", data=res.region_cells.astype(np.uint32), **gz)
            fo.create_dataset("attempts", data=res.form_attempts, **gz)
            fo.create_dataset("formed", data=res.formed, **gz)
            r = f.create_group("run")
            r.attrs["config_json"] = json.dumps(cfg.as_dict())
            r.attrs["chip_info_json"] = json.dumps(res.chip_info)
            r.attrs["wall_s_json"] = json.dumps(res.wall_s)
            r.attrs["op_counts_json"] = json.dumps(res.op_counts)
            r.attrs["op_calls_json"] = json.dumps(res.op_calls)
            r.attrs["oplog_file"] = oplog_path
            r.attrs["reselected_from"] = reselected_from
        os.replace(tmp, p)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CalibrationError(f"cannot write the calibration file {p} ({exc}); give another --out path") from exc
    except BaseException:  # Ctrl-C or a bug: leave no temporary file behind
        tmp.unlink(missing_ok=True)
        raise
    return table


@dataclass
class CalibrationFile:
    """A calibration file read back: its CDF table plus the calibration's own material."""

    path: Path
    table: CdfTable
    attrs: dict
    q: np.ndarray
    scale_us_per_weight: float
    selection: dict
    forming: dict
    run: dict
    sweep: dict
    level_stats: list[dict]
    reads_us: list[np.ndarray]  # per level (table order): the raw first reads, the measured CDF

    def describe(self) -> dict:
        """The JSON summary of ``hwloop calibrate show --json``."""
        levels = []
        for k, (lv, d) in enumerate(zip(self.table.describe(), self.level_stats, strict=True)):
            sep = self.selection["separation"]
            levels.append(
                {
                    "index": k,
                    "name": lv["name"],
                    "kind": lv["kind"],
                    "v_gate": lv["v_gate"],
                    "icc_ua": lv["icc_ua"],
                    "median_us": d["median_us"],
                    "sigma_us": d["sigma_us"],
                    "sigma_device_us": d.get("sigma_device_us"),
                    "read_noise_us": _finite_or_none(d.get("read_noise_us")),
                    "n_samples": d["n_samples"],
                    "sweep_index": d["sweep_index"],
                    "separation_to_next": float(sep[k]) if k < len(sep) else None,
                    "overlap_to_next": float(self.selection["overlap"][k]) if k < len(sep) else None,
                }
            )
        return {
            "path": str(self.path),
            "format": self.attrs.get("format"),
            "format_version": self.attrs.get("format_version"),
            "chip_id": self.attrs.get("chip_id"),
            "created_utc": self.attrs.get("created_utc"),
            "bench": self.attrs.get("bench"),
            "backend": self.attrs.get("backend"),
            "synthetic": bool(self.attrs.get("synthetic")),
            "levels": levels,
            "q": self.q.tolist(),
            "scale_us_per_weight": self.scale_us_per_weight,
            "selection": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.selection.items()},
            "forming": self.forming,
            "sweep": {
                "n_conditions": self.sweep["n_conditions"],
                "n_devices": self.sweep["n_devices"],
                "v_gate_start": float(self.sweep["v_gate"][0]),
                "v_gate_stop": float(self.sweep["v_gate"][-1]),
                "v_step": self.sweep["v_step"],
            },
            "run": self.run,
        }


def _finite_or_none(x: object) -> float | None:
    """JSON has no NaN: an unknown figure (e.g. read noise from a single read) becomes None."""
    return float(x) if isinstance(x, (int, float)) and np.isfinite(x) else None


def _attrs(obj: h5py.HLObject) -> dict:
    out = {}
    for k, v in obj.attrs.items():
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


def load_calibration(path: str | Path, *, with_samples: bool = False) -> CalibrationFile:
    """Read a calibration file; ``CalibrationError`` for a missing, corrupt or foreign file."""
    p = Path(path)
    if not p.exists():
        raise CalibrationError(f"calibration file {p} does not exist")
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise CalibrationError(f"{p} is not a readable HDF5 file ({exc}); it may be corrupt or truncated") from exc
    with f:
        fmt = f.attrs.get("format")
        fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
        if fmt != FORMAT_NAME:
            raise CalibrationError(
                f"{p} is not an hwloop calibration file (format attribute {fmt!r}, expected {FORMAT_NAME!r})"
            )
        ver = int(f.attrs.get("format_version", -1))
        if ver != FORMAT_VERSION:
            raise CalibrationError(
                f"{p}: calibration format version {ver} is not supported (this hwloop reads {FORMAT_VERSION})"
            )
        missing = [g for g in ("levels", "selection", "weights", "sweep", "forming", "run") if g not in f]
        if missing:
            raise CalibrationError(f"{p}: calibration file is incomplete (missing group(s) {', '.join(missing)})")
        try:
            table = read_h5_group(f, str(p))
            sel = f["selection"]
            selection = {
                **_attrs(sel),
                **{k: sel[k][()] for k in ("sweep_index", "separation", "overlap", "overlap_empirical")},
            }
            selection["pair_names"] = [s.decode() if isinstance(s, bytes) else str(s) for s in sel["pair_names"][()]]
            sw = f["sweep"]
            keys = ["v_gate", "icc_ua", "median_us", "sigma_us", "quantiles_us", "probabilities"]
            if with_samples:
                keys += ["samples_us", "lcs_samples_us"]
            sweep = {**_attrs(sw), **{k: sw[k][()] for k in keys}}
            level_stats = [_attrs(f["levels"][lv.name]) for lv in table.levels]
            reads_us = [f["levels"][lv.name]["reads_us"][()] for lv in table.levels]
            run = {k: (json.loads(v) if k.endswith("_json") else v) for k, v in _attrs(f["run"]).items()}
            run = {k.removesuffix("_json"): v for k, v in run.items()}
            return CalibrationFile(
                path=p,
                table=table,
                attrs=_attrs(f),
                q=f["weights"]["q"][()],
                scale_us_per_weight=float(f["weights"].attrs["scale_us_per_weight"]),
                selection=selection,
                forming=_attrs(f["forming"]),
                run=run,
                sweep=sweep,
                level_stats=level_stats,
                reads_us=reads_us,
            )
        except CdfTableError as exc:
            raise CalibrationError(f"{p}: the calibration's levels are not a valid CDF table: {exc}") from exc
        except (KeyError, ValueError, TypeError, OSError) as exc:
            raise CalibrationError(f"{p}: calibration file is damaged ({exc}); re-run hwloop calibrate") from exc


def reselect(
    path: str | Path,
    out: str | Path,
    *,
    v_min: float | None = None,
    v_max: float | None = None,
) -> CdfTable:
    """Choose the levels again from the full sweep stored in a calibration file, optionally only among the
    gate voltages in [v_min, v_max], and write a new calibration file (no chip needed)."""
    from hwloop.calibration.procedure import CalibrationConfig, analyse

    p = Path(path)
    cal = load_calibration(p)
    try:
        with h5py.File(p, "r") as f:
            sw, fo = f["sweep"], f["forming"]
            v = sw["v_gate"][()]
            hcs = sw["samples_us"][()].astype(np.float64)
            lcs = sw["lcs_samples_us"][()].astype(np.float64)
            hcs2 = sw["reread_us"][()].astype(np.float64) if "reread_us" in sw else None
            lcs2 = sw["lcs_reread_us"][()].astype(np.float64) if "lcs_reread_us" in sw else None
            icc, cells = sw["icc_ua"][()], sw["cells"][()].astype(np.int64)
            region, attempts, formed = fo["region_cells"][()], fo["attempts"][()], fo["formed"][()]
    except (KeyError, OSError, ValueError) as exc:
        raise CalibrationError(f"{p}: the stored sweep is incomplete ({exc}); re-run hwloop calibrate") from exc
    cfg_d = dict(cal.run.get("config", {}))
    for key in ("tiles", "rows", "cols"):
        if key in cfg_d:
            cfg_d[key] = tuple(cfg_d[key])
    cfg = CalibrationConfig(**cfg_d)
    lo = -np.inf if v_min is None else v_min
    hi = np.inf if v_max is None else v_max
    allowed = (v >= lo - 1e-9) & (v <= hi + 1e-9)
    if allowed.sum() < cfg.n_hcs:
        raise CalibrationError(
            f"only {int(allowed.sum())} sweep conditions lie in {lo:g}..{hi:g} V; {cfg.n_hcs} are needed"
        )
    st, lst, sel, ov, ov_emp = analyse(v, hcs, lcs, cfg.n_hcs, allowed=allowed)
    res = CalibrationResult(
        config=cfg,
        v_gate=v,
        icc_ua=icc,
        samples_us=hcs,
        lcs_samples_us=lcs,
        reread_us=hcs2,
        lcs_reread_us=lcs2,
        cells=cells,
        stats=st,
        lcs_stats=lst,
        selection=sel,
        overlap=ov,
        overlap_empirical=ov_emp,
        region_cells=region,
        form_attempts=attempts,
        formed=formed,
        usable=region[formed.astype(bool)].astype(np.int64),
        op_counts=dict(cal.run.get("op_counts", {})),
        op_calls=dict(cal.run.get("op_calls", {})),
        wall_s=dict(cal.run.get("wall_s", {})),
        chip_info=dict(cal.run.get("chip_info", {})),
    )
    a = cal.attrs
    return write_calibration(
        res,
        out,
        chip_id=str(a.get("chip_id", "")),
        bench=str(a.get("bench", "")),
        synthetic=bool(a.get("synthetic", False)),
        source_table=str(a.get("source_table", "")),
        oplog_path=str(cal.run.get("oplog_file", "")),
        read_voltage_v=float(a.get("read_voltage_v", 0.1)),
        v_gate_reset=float(cal.table.levels[0].v_gate),
        created_utc=str(a.get("created_utc", "")) or None,
        reselected_from=str(p),
    )
