"""Conductance CDF tables: one distribution per programming condition (8 HCS levels + LCS).

A table holds, for each level, either raw conductance samples or quantiles, plus the programming
condition (gate voltage, I_CC), the read voltage and its provenance. The format is documented in
``docs/cdf-format.md``. Internally every level is resampled onto a common quantile grid so that
inverse-transform sampling of millions of devices is one vectorized gather.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from hwloop.errors import CdfTableError

FORMAT_NAME = "hwloop-cdf"
FORMAT_VERSION = 1
G_UNIT = "uS"
#: Points of the internal quantile grid (probabilities 0..1, evenly spaced).
GRID_POINTS = 2049
#: G is clipped here from below: a conductance can't be negative.
G_FLOOR_US = 0.01


@dataclass
class Level:
    """One programming condition and the conductance distribution it produces.

    ``kind`` is ``"LCS"`` (RESET) or ``"HCS"`` (SET at ``v_gate``, which sets ``icc_ua``).
    Exactly one of ``samples_us`` (raw reads) or ``quantiles_us`` (with ``probabilities``) is given.
    """

    name: str
    kind: str
    v_gate: float
    icc_ua: float
    samples_us: np.ndarray | None = None
    quantiles_us: np.ndarray | None = None
    probabilities: np.ndarray | None = None

    def quantile_grid(self, n: int = GRID_POINTS) -> np.ndarray:
        """The level's quantile function on ``n`` evenly spaced probabilities in [0, 1]."""
        p = np.linspace(0.0, 1.0, n)
        if self.samples_us is not None:
            return np.quantile(np.asarray(self.samples_us, dtype=np.float64), p)
        assert self.quantiles_us is not None and self.probabilities is not None
        return np.interp(p, self.probabilities, self.quantiles_us)

    @property
    def median_us(self) -> float:
        return float(np.interp(0.5, np.linspace(0, 1, GRID_POINTS), self.quantile_grid()))

    @property
    def sigma_us(self) -> float:
        """Standard deviation of the level's distribution (from samples, or from the quantiles)."""
        if self.samples_us is not None:
            return float(np.std(self.samples_us))
        q = self.quantile_grid()
        return float(np.std(q))


@dataclass
class CdfTable:
    """A validated set of levels: index 0 is LCS, 1..n are the HCS levels in increasing conductance."""

    levels: list[Level]
    read_voltage_v: float = 0.1
    provenance: str = ""
    synthetic: bool = False
    chip_id: str = ""
    source_path: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.levels = _ordered_and_validated(self.levels)
        self._grid = np.stack([lv.quantile_grid() for lv in self.levels]).astype(np.float64)
        self._grid = np.maximum(self._grid, G_FLOOR_US)
        self._p = np.linspace(0.0, 1.0, GRID_POINTS)

    # ---------------------------------------------------------------- queries
    @property
    def n_levels(self) -> int:
        """Device levels including LCS (9 for the paper's chip)."""
        return len(self.levels)

    @property
    def n_hcs(self) -> int:
        return len(self.levels) - 1

    @property
    def grid(self) -> np.ndarray:
        """Quantile grid, shape (n_levels, GRID_POINTS), in µS."""
        return self._grid

    @property
    def v_gate(self) -> np.ndarray:
        return np.array([lv.v_gate for lv in self.levels])

    @property
    def icc_ua(self) -> np.ndarray:
        return np.array([lv.icc_ua for lv in self.levels])

    @property
    def medians_us(self) -> np.ndarray:
        return self._grid[:, (GRID_POINTS - 1) // 2].copy()

    @property
    def sigmas_us(self) -> np.ndarray:
        return np.array([lv.sigma_us for lv in self.levels])

    def weight_levels(self, w_max: float = 1.5) -> tuple[np.ndarray, float]:
        """The 2*n_hcs+1 weight levels Q (ascending, in [-w_max, w_max]) and the scale in µS per weight unit.

        A weight is the difference of a pair of cells: level k>0 is (HCS_k, LCS), k<0 is (LCS, HCS_|k|)
        and 0 is two matched LCS cells. With medians G_k, Q_k = (G_k - G_LCS) / scale, and the scale maps
        the top level to ``w_max``. The levels inherit the unequal spacing of the HCS medians.
        """
        med = self.medians_us
        scale_us = float(med[-1] - med[0]) / w_max
        pos = (med[1:] - med[0]) / scale_us
        return np.concatenate([-pos[::-1], [0.0], pos]), scale_us

    def cdf(self, level: int, g_us: np.ndarray) -> np.ndarray:
        """The level's CDF (piecewise linear between grid quantiles) at ``g_us``."""
        q = self._grid[level]
        # np.interp needs strictly increasing x: flat runs of q are collapsed by taking the last p
        qu, idx = np.unique(q[::-1], return_index=True)
        pu = self._p[::-1][idx]
        return np.interp(g_us, qu, pu, left=0.0, right=1.0)

    def hcs_grid_at(self, v_gate: np.ndarray) -> np.ndarray:
        """Quantile grids for arbitrary SET gate voltages, interpolated between tabled HCS levels.

        The quantile functions are blended linearly in gate voltage (a displacement interpolation), so
        a condition halfway between two tabled ones gives a distribution halfway between them.
        Outside the tabled range the nearest tabled level is used. Returns (len(v_gate), GRID_POINTS).
        """
        v_tab = self.v_gate[1:]
        v = np.clip(np.asarray(v_gate, dtype=np.float64), v_tab[0], v_tab[-1])
        if len(v_tab) == 1:  # one HCS level: every gate voltage gets it (never the LCS row)
            return np.broadcast_to(self._grid[1], (*v.shape, GRID_POINTS)).copy()
        hi = np.clip(np.searchsorted(v_tab, v, side="right"), 1, len(v_tab) - 1)
        lo = hi - 1
        span = v_tab[hi] - v_tab[lo]
        w = np.where(span > 0, (v - v_tab[lo]) / np.where(span > 0, span, 1.0), 0.0)[..., None]
        return (1.0 - w) * self._grid[1 + lo] + w * self._grid[1 + hi]

    def icc_at(self, v_gate: np.ndarray) -> np.ndarray:
        """I_CC (µA) for SET gate voltages, interpolated log-linearly between tabled levels."""
        v_tab = self.v_gate[1:]
        return np.exp(np.interp(v_gate, v_tab, np.log(np.maximum(self.icc_ua[1:], 1e-6))))

    # ---------------------------------------------------------------- sampling
    def sample(self, level: np.ndarray | int, rng: np.random.Generator, size: int | None = None) -> np.ndarray:
        """Inverse-transform sampling: one conductance (µS) per entry of ``level``."""
        lv = np.asarray(level, dtype=np.intp)
        if size is not None and lv.ndim == 0:
            lv = np.full(size, int(lv), dtype=np.intp)
        u = rng.random(lv.shape) * (GRID_POINTS - 1)
        i = np.minimum(u.astype(np.intp), GRID_POINTS - 2)
        frac = u - i
        g = self._grid[lv, i]
        return g + frac * (self._grid[lv, i + 1] - g)

    def sample_from_grids(self, grids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Inverse-transform sampling, one draw per row of ``grids`` (shape (n, GRID_POINTS))."""
        n = grids.shape[0]
        u = rng.random(n) * (GRID_POINTS - 1)
        i = np.minimum(u.astype(np.intp), GRID_POINTS - 2)
        frac = u - i
        rows = np.arange(n)
        g = grids[rows, i]
        return g + frac * (grids[rows, i + 1] - g)

    # ---------------------------------------------------------------- description
    def describe(self) -> list[dict]:
        """One dict per level: name, kind, v_gate, icc_ua, median_us, sigma_us."""
        med = self.medians_us
        return [
            {
                "index": k,
                "name": lv.name,
                "kind": lv.kind,
                "v_gate": float(lv.v_gate),
                "icc_ua": float(lv.icc_ua),
                "median_us": float(med[k]),
                "sigma_us": float(lv.sigma_us),
            }
            for k, lv in enumerate(self.levels)
        ]

    def metadata(self) -> dict:
        return {
            "read_voltage_v": self.read_voltage_v,
            "provenance": self.provenance,
            "synthetic": self.synthetic,
            "chip_id": self.chip_id,
            "source_path": self.source_path,
        }

    # ---------------------------------------------------------------- I/O
    def write_h5_group(self, grp: h5py.Group) -> None:
        """Write the table into an open HDF5 group (root of a file, or a group of a calibration/run log)."""
        grp.attrs["format"] = FORMAT_NAME
        grp.attrs["format_version"] = FORMAT_VERSION
        grp.attrs["g_unit"] = G_UNIT
        grp.attrs["read_voltage_v"] = float(self.read_voltage_v)
        grp.attrs["provenance"] = self.provenance
        grp.attrs["synthetic"] = bool(self.synthetic)
        grp.attrs["chip_id"] = self.chip_id
        grp.attrs["extra_json"] = json.dumps(self.extra)
        lg = grp.require_group("levels")
        for k, lv in enumerate(self.levels):
            g = lg.create_group(lv.name)
            g.attrs["index"] = k
            g.attrs["kind"] = lv.kind
            g.attrs["v_gate"] = float(lv.v_gate)
            g.attrs["icc_ua"] = float(lv.icc_ua)
            if lv.samples_us is not None:
                g.create_dataset("samples_us", data=np.asarray(lv.samples_us, dtype=np.float64), compression="gzip")
            else:
                g.create_dataset("quantiles_us", data=np.asarray(lv.quantiles_us, dtype=np.float64))
                g.create_dataset("probabilities", data=np.asarray(lv.probabilities, dtype=np.float64))

    def save_h5(self, path: str | Path) -> None:
        with h5py.File(path, "w") as f:
            self.write_h5_group(f)

    def save_csv(self, path: str | Path) -> None:
        """Wide CSV: metadata in ``#`` lines, one column of raw samples (or quantiles) per level."""
        lines = [
            f"# {FORMAT_NAME} {FORMAT_VERSION}",
            f"# g_unit: {G_UNIT}",
            f"# read_voltage_v: {self.read_voltage_v}",
            f"# provenance: {self.provenance}",
            f"# synthetic: {str(self.synthetic).lower()}",
            f"# chip_id: {self.chip_id}",
        ]
        cols: list[np.ndarray] = []
        for lv in self.levels:
            form = "samples" if lv.samples_us is not None else "quantiles"
            lines.append(f"# level: name={lv.name} kind={lv.kind} v_gate={lv.v_gate} icc_ua={lv.icc_ua} form={form}")
            cols.append(np.asarray(lv.samples_us if lv.samples_us is not None else lv.quantiles_us))
        probs = [lv.probabilities for lv in self.levels if lv.probabilities is not None]
        header = [lv.name for lv in self.levels]
        if probs:
            header = ["probability", *header]
            cols = [np.asarray(probs[0]), *cols]
        n = max(len(c) for c in cols)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        for i in range(n):
            w.writerow([repr(float(c[i])) if i < len(c) else "" for c in cols])
        Path(path).write_text("\n".join(lines) + "\n" + buf.getvalue())


# -------------------------------------------------------------------- validation
def _ordered_and_validated(levels: list[Level]) -> list[Level]:
    if not levels:
        raise CdfTableError("CDF table has no levels: give LCS and at least one HCS level")
    lcs = [lv for lv in levels if lv.kind == "LCS"]
    hcs = [lv for lv in levels if lv.kind == "HCS"]
    other = [lv.kind for lv in levels if lv.kind not in ("LCS", "HCS")]
    if other:
        raise CdfTableError(f"CDF table: unknown level kind(s) {sorted(set(other))}; use 'LCS' or 'HCS'")
    if len(lcs) != 1:
        raise CdfTableError(f"CDF table needs exactly one LCS level, found {len(lcs)}")
    if not hcs:
        raise CdfTableError("CDF table has no HCS level")
    for lv in levels:
        data = lv.samples_us if lv.samples_us is not None else lv.quantiles_us
        if data is None or np.asarray(data).size == 0:
            raise CdfTableError(f"CDF table: level {lv.name!r} is empty (no samples or quantiles)")
        arr = np.asarray(data, dtype=np.float64)
        if not np.all(np.isfinite(arr)):
            raise CdfTableError(f"CDF table: level {lv.name!r} has non-finite conductances")
        if np.any(arr < 0):
            raise CdfTableError(
                f"CDF table: level {lv.name!r} has a negative conductance ({arr.min():.4g} µS); "
                "conductances are >= 0 µS: check the sign or the units of the file"
            )
        if lv.samples_us is None:
            p = np.asarray(lv.probabilities, dtype=np.float64) if lv.probabilities is not None else None
            if p is None or p.shape != arr.shape:
                raise CdfTableError(f"CDF table: level {lv.name!r} quantiles need matching probabilities")
            if p[0] != 0.0 or p[-1] != 1.0 or np.any(np.diff(p) <= 0) or np.any(np.diff(arr) < 0):
                raise CdfTableError(
                    f"CDF table: level {lv.name!r} quantiles must rise with probabilities running 0 to 1"
                )
        if np.nanmedian(arr) > 5000:
            raise CdfTableError(
                f"CDF table: level {lv.name!r} median {np.nanmedian(arr):.3g} is not plausible in µS; "
                "conductances must be in microsiemens (g_unit 'uS')"
            )
        if np.nanmedian(arr) < 1e-4:
            raise CdfTableError(
                f"CDF table: level {lv.name!r} median {np.nanmedian(arr):.3g} looks like siemens, not µS; "
                "conductances must be in microsiemens (g_unit 'uS')"
            )
    no_v = [lv.name for lv in hcs if not np.isfinite(lv.v_gate)]
    if no_v:
        raise CdfTableError(f"CDF table: HCS level(s) {no_v} have no finite gate voltage (v_gate, volts)")
    hcs = sorted(hcs, key=lambda lv: lv.v_gate)
    med = [np.median(lv.quantile_grid()) for lv in hcs]
    v = [lv.v_gate for lv in hcs]
    if len(set(v)) != len(v):
        raise CdfTableError("CDF table: two HCS levels have the same gate voltage")
    if np.any(np.diff(med) <= 0):
        pairs = ", ".join(f"{lv.name}@{lv.v_gate:g}V={m:.3g}µS" for lv, m in zip(hcs, med, strict=True))
        raise CdfTableError(f"CDF table: HCS medians must rise with gate voltage (non-monotone levels: {pairs})")
    lcs_med = np.median(lcs[0].quantile_grid())
    if lcs_med >= med[0]:
        raise CdfTableError(
            f"CDF table: LCS median {lcs_med:.3g} µS is not below the lowest HCS median {med[0]:.3g} µS"
        )
    return [lcs[0], *hcs]


# -------------------------------------------------------------------- loading
def load_table(path: str | Path) -> CdfTable:
    """Load a CDF table from HDF5 (a table or calibration file) or CSV (wide or long form)."""
    p = Path(path)
    if not p.exists():
        raise CdfTableError(f"CDF table {p} does not exist: give an existing .h5 or .csv file")
    if p.suffix.lower() in (".csv", ".txt"):
        return load_csv(p)
    return load_h5(p)


def load_h5(path: str | Path) -> CdfTable:
    p = Path(path)
    try:
        with h5py.File(p, "r") as f:
            grp = f["cdf"] if "cdf" in f and "levels" not in f else f
            table = read_h5_group(grp, str(p))
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise CdfTableError(f"{p} is not a readable HDF5 CDF table ({exc}); check the file or re-export it") from exc
    return table


def read_h5_group(grp: h5py.Group, where: str = "") -> CdfTable:
    fmt = grp.attrs.get("format", None)
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt not in (FORMAT_NAME, "hwloop-calibration"):
        raise CdfTableError(f"{where}: not an hwloop CDF table (format attribute {fmt!r})")
    ver = int(grp.attrs.get("format_version", -1))
    if fmt == FORMAT_NAME and ver != FORMAT_VERSION:
        raise CdfTableError(
            f"{where}: CDF table format version {ver} is not supported (this hwloop reads {FORMAT_VERSION})"
        )
    unit = _s(grp.attrs.get("g_unit", ""))
    if unit != G_UNIT:
        raise CdfTableError(f"{where}: conductance unit {unit!r} is not supported; tables must be in 'uS'")
    if "levels" not in grp:
        raise CdfTableError(f"{where}: CDF table has no 'levels' group")
    levels: list[Level] = []
    for name, g in grp["levels"].items():
        lv = Level(
            name=name,
            kind=_s(g.attrs.get("kind", "")),
            v_gate=float(g.attrs.get("v_gate", np.nan)),
            icc_ua=float(g.attrs.get("icc_ua", np.nan)),
        )
        if "samples_us" in g:
            lv.samples_us = g["samples_us"][()]
        elif "quantiles_us" in g:
            lv.quantiles_us = g["quantiles_us"][()]
            lv.probabilities = g["probabilities"][()] if "probabilities" in g else None
        levels.append(lv)
    extra = json.loads(_s(grp.attrs.get("extra_json", "{}")) or "{}")
    for key in ("rows", "cols"):  # array geometry of the chip the table was measured on, when recorded
        if key in grp.attrs:
            extra[key] = int(grp.attrs[key])
    return CdfTable(
        levels=levels,
        read_voltage_v=float(grp.attrs.get("read_voltage_v", 0.1)),
        provenance=_s(grp.attrs.get("provenance", "")),
        synthetic=bool(grp.attrs.get("synthetic", False)),
        chip_id=_s(grp.attrs.get("chip_id", "")),
        source_path=where,
        extra=extra,
    )


def _s(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def load_csv(path: str | Path) -> CdfTable:
    """Read a CSV table: wide form (one column per level) or long form (columns ``level,g_us``)."""
    p = Path(path)
    try:
        return _load_csv(p)
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise CdfTableError(f"{p}: not a readable CSV CDF table ({exc}); see docs/cdf-format.md") from exc


def _load_csv(p: Path) -> CdfTable:
    meta: dict[str, str] = {}
    level_meta: dict[str, dict[str, str]] = {}
    rows: list[list[str]] = []
    for raw in p.read_text().splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            body = line[1:].strip()
            if body.startswith(FORMAT_NAME):
                meta["format_version"] = body.split()[-1]
            elif body.startswith("level:"):
                kv = dict(tok.split("=", 1) for tok in body[len("level:") :].split() if "=" in tok)
                if "name" in kv:
                    level_meta[kv["name"]] = kv
            elif ":" in body:
                k, v = body.split(":", 1)
                meta[k.strip()] = v.strip()
            continue
        rows.append(next(csv.reader([line])))
    if "format_version" in meta and meta["format_version"] != str(FORMAT_VERSION):
        raise CdfTableError(f"{p}: CDF table format version {meta['format_version']} is not supported")
    unit = meta.get("g_unit", G_UNIT)
    if unit not in (G_UNIT, "µS"):
        raise CdfTableError(f"{p}: conductance unit {unit!r} is not supported; give conductances in uS")
    if not rows:
        raise CdfTableError(f"{p}: CSV table has no data rows")
    header = [h.strip() for h in rows[0]]
    body = rows[1:]
    columns: dict[str, list[float]] = {}
    probs: list[float] | None = None
    try:
        if [h.lower() for h in header] in (["level", "g_us"],):
            for r in body:
                columns.setdefault(r[0].strip(), []).append(float(r[1]))
        elif [h.lower() for h in header][:2] == ["level", "g"] or "g_s" in [h.lower() for h in header]:
            raise CdfTableError(f"{p}: column {header[1]!r} has no µS unit; name it 'g_us' with values in µS")
        else:
            if header[0].lower() == "probability":
                probs = [float(r[0]) for r in body if r and r[0] != ""]
                header, body = header[1:], [r[1:] for r in body]
            for j, name in enumerate(header):
                columns[name] = [float(r[j]) for r in body if j < len(r) and r[j].strip() != ""]
    except ValueError as exc:
        raise CdfTableError(f"{p}: a cell is not a number ({exc}); conductances must be numbers in µS") from exc
    levels = []
    for name, vals in columns.items():
        lm = level_meta.get(name, {})
        kind = lm.get("kind", "LCS" if name.upper().startswith("LCS") else "HCS")
        arr = np.asarray(vals, dtype=np.float64)
        lv = Level(name=name, kind=kind, v_gate=float(lm.get("v_gate", "nan")), icc_ua=float(lm.get("icc_ua", "nan")))
        form = lm.get("form", "quantiles" if probs is not None else "samples")
        if form == "quantiles":
            if probs is None:
                raise CdfTableError(
                    f"{p}: level {name!r} is given as quantiles but the table has no probability column"
                )
            lv.quantiles_us, lv.probabilities = arr, np.asarray(probs[: len(arr)])
        else:
            lv.samples_us = arr
        if lv.kind == "HCS" and not np.isfinite(lv.v_gate):
            raise CdfTableError(
                f"{p}: HCS level {name!r} has no gate voltage; "
                f"add '# level: name={name} kind=HCS v_gate=... icc_ua=...'"
            )
        levels.append(lv)
    return CdfTable(
        levels=levels,
        read_voltage_v=float(meta.get("read_voltage_v", 0.1)),
        provenance=meta.get("provenance", f"CSV file {p.name}"),
        synthetic=meta.get("synthetic", "false").lower() == "true",
        chip_id=meta.get("chip_id", ""),
        source_path=str(p),
    )
