"""The calibration procedure, written against the ``Chip`` interface only (SimChip and RealChip alike).

1. Check every sweep gate voltage against the chip's safety limits (``chip.check_v_gate``) before any
   operation is sent.
2. Form the pristine devices of the region, retrying the ones that did not form (``form_retries``).
3. For each of the ``n_conditions`` gate voltages: take ``n_devices`` formed devices (a random,
   seeded assignment; devices are reused across conditions only when the region is too small for
   distinct ones), RESET them and READ (LCS samples), SET them once at the gate voltage (single shot,
   no verify) and READ (HCS samples). Each READ is done twice (``reads_per_device``): the difference of
   the two reads measures the read noise, which is taken out of the levels stored for the simulator
   (it adds its own read noise when it replays them; see ``stats.remove_read_noise``).
4. Extract median, sigma and quantiles per condition; pool all RESET reads into the LCS level.
5. Select ``n_hcs`` levels by dynamic programming (``hwloop.calibration.select``).

Every operation passes through the chip's listeners, so the op log sees all of them.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from hwloop.calibration.select import Selection, select_levels
from hwloop.calibration.stats import empirical_overlap, extract, gaussian_overlap
from hwloop.chip.base import COLS, ROWS, Chip, Op
from hwloop.errors import CalibrationError, HwloopError

#: Fewest devices per condition that give a usable CDF (the median's standard error is ~1.25 sigma/sqrt(N)).
MIN_DEVICES = 32


@dataclass(frozen=True)
class CalibrationConfig:
    """What to measure. Presets: ``default()`` (the lab procedure), ``quick()`` (smoke tests)."""

    v_gate_start: float = 1.4
    v_gate_stop: float = 2.2
    n_conditions: int = 29  # 0.8 V / 28 = 28.6 mV steps
    n_devices: int = 512  # devices programmed per condition (single shot)
    n_hcs: int = 8
    form_retries: int = 3  # extra FORM attempts for devices that did not form
    reads_per_device: int = 2  # 2: a second read estimates read noise, which the stored levels leave out
    tiles: tuple[int, ...] = (0,)
    rows: tuple[int, int] = (0, ROWS)  # [start, stop)
    cols: tuple[int, int] = (0, COLS)
    seed: int = 0

    @classmethod
    def default(cls) -> CalibrationConfig:
        return cls()

    @classmethod
    def quick(cls) -> CalibrationConfig:
        return cls(n_conditions=17, n_devices=128)

    def with_(self, **kw: object) -> CalibrationConfig:
        return replace(self, **kw)

    @property
    def v_gate(self) -> np.ndarray:
        return np.linspace(self.v_gate_start, self.v_gate_stop, self.n_conditions)

    @property
    def v_step(self) -> float:
        return (self.v_gate_stop - self.v_gate_start) / max(self.n_conditions - 1, 1)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["tiles"], d["rows"], d["cols"] = list(self.tiles), list(self.rows), list(self.cols)
        return d

    def validate(self) -> None:
        if not (np.isfinite(self.v_gate_start) and np.isfinite(self.v_gate_stop)):
            raise CalibrationError("the gate-voltage sweep range must be finite numbers of volts")
        if self.v_gate_stop <= self.v_gate_start:
            raise CalibrationError(
                f"gate-voltage sweep stop {self.v_gate_stop} V must be above start {self.v_gate_start} V"
            )
        if self.n_conditions < self.n_hcs:
            raise CalibrationError(
                f"{self.n_conditions} sweep conditions cannot give {self.n_hcs} HCS levels; "
                f"sweep at least {self.n_hcs} points (16 or more recommended)"
            )
        if self.n_devices < MIN_DEVICES:
            raise CalibrationError(
                f"{self.n_devices} devices per condition is too few for a CDF; use at least {MIN_DEVICES}"
            )
        if self.reads_per_device not in (1, 2):
            raise CalibrationError("reads per device must be 1 or 2")
        if self.form_retries < 0:
            raise CalibrationError("form retries must be 0 or more")
        r0, r1 = self.rows
        c0, c1 = self.cols
        if not (0 <= r0 < r1 <= ROWS and 0 <= c0 < c1 <= COLS):
            raise CalibrationError(f"region rows {r0}:{r1}, cols {c0}:{c1} is not inside a {ROWS}x{COLS} tile")
        if not self.tiles or min(self.tiles) < 0:
            raise CalibrationError("give at least one tile index (0 or more)")


@dataclass
class CalibrationResult:
    """Everything a calibration measured and chose; written by ``hwloop.calibration.fileio``."""

    config: CalibrationConfig
    v_gate: np.ndarray  # (M,)
    icc_ua: np.ndarray  # (M,) nominal I_CC of each condition
    samples_us: np.ndarray  # (M, N) HCS reads after SET at v_gate[m] (first read)
    lcs_samples_us: np.ndarray  # (M, N) reads after RESET, before each SET (first read)
    reread_us: np.ndarray | None  # (M, N) second read of the HCS devices (None if reads_per_device == 1)
    lcs_reread_us: np.ndarray | None  # (M, N) second read of the LCS devices
    cells: np.ndarray  # (M, N) flat device indices used per condition
    stats: dict[str, np.ndarray]  # per condition: median_us, sigma_us, quantiles_us, s_down_us, s_up_us
    lcs_stats: dict[str, np.ndarray]  # the pooled LCS (one row)
    selection: Selection
    overlap: np.ndarray  # (n_hcs,) Gaussian-equivalent overlap of each adjacent pair
    overlap_empirical: np.ndarray  # (n_hcs,) empirical equal-error rate of each adjacent pair
    region_cells: np.ndarray  # flat indices of the region
    form_attempts: np.ndarray  # per region device: FORM pulses sent here (0: was already formed)
    formed: np.ndarray  # per region device: formed after forming
    usable: np.ndarray  # flat indices of the devices used (formed, not failed)
    op_counts: dict[str, int]
    op_calls: dict[str, int]
    wall_s: dict[str, float]
    chip_info: dict = field(default_factory=dict)

    @property
    def forming_yield(self) -> float:
        return float(self.formed.mean()) if self.formed.size else 0.0

    @property
    def level_index(self) -> np.ndarray:
        return self.selection.index


class _Counter:
    def __init__(self) -> None:
        self.counts = {op.name: 0 for op in Op}
        self.calls = {op.name: 0 for op in Op}

    def __call__(self, op: Op, idx: np.ndarray, level: np.ndarray, g_us: np.ndarray) -> None:
        self.counts[op.name] += int(idx.size)
        self.calls[op.name] += 1


def region_cells(chip: Chip, config: CalibrationConfig) -> np.ndarray:
    """Flat indices of the configured region (tiles x rows x cols) of ``chip``."""
    bad = [t for t in config.tiles if t >= chip.n_tiles]
    if bad:
        raise CalibrationError(
            f"tile(s) {bad} do not exist: the chip has {chip.n_tiles} tile(s) (0..{chip.n_tiles - 1})"
        )
    t = np.asarray(config.tiles, dtype=np.int64)[:, None, None]
    r = np.arange(*config.rows, dtype=np.int64)[None, :, None]
    c = np.arange(*config.cols, dtype=np.int64)[None, None, :]
    return chip.flat(t, r, c).reshape(-1)


def calibrate(
    chip: Chip,
    config: CalibrationConfig | None = None,
    *,
    progress: Callable[[int], None] | None = None,
    on_phase: Callable[[str, int, float], None] | None = None,
) -> CalibrationResult:
    """Run the calibration on ``chip`` (see module docstring). ``progress(n)`` advances a bar by ``n`` steps
    (1 for forming, 1 per condition);
    ``on_phase(phase, condition, v_gate)`` is called before each block of operations (op-log context)."""
    cfg = config or CalibrationConfig.default()
    cfg.validate()
    v = cfg.v_gate
    chip.check_v_gate(v)  # SafetyLimitError before anything reaches the bench
    cells = region_cells(chip, cfg)
    counter = _Counter()
    chip.add_listener(counter)
    t0 = time.perf_counter()
    try:
        # ---------------------------------------------------------------- forming, with retries
        formed0 = np.asarray(chip.formed_mask())[cells].copy()
        attempts = np.zeros(cells.size, dtype=np.uint8)
        todo = ~formed0
        for attempt in range(1 + cfg.form_retries):
            if not todo.any():
                break
            if on_phase:
                on_phase("forming", attempt + 1, float("nan"))
            ok = np.asarray(chip.form_idx(cells[todo]), dtype=bool)
            attempts[todo] += 1
            now = np.zeros(cells.size, dtype=bool)
            now[todo] = ok
            todo &= ~now
        formed = np.asarray(chip.formed_mask())[cells].copy()
        usable = cells[formed & ~np.asarray(chip.failed_mask())[cells]]
        t_form = time.perf_counter()
        if progress:
            progress(1)
        if usable.size < cfg.n_devices:
            raise CalibrationError(
                f"only {usable.size} usable (formed, not failed) devices in the region "
                f"({cells.size} devices, forming yield {formed.mean():.1%}) but {cfg.n_devices} are needed "
                "per condition; lower --devices or enlarge the region (--tiles/--rows)"
            )

        # ---------------------------------------------------------------- sweep
        rng = np.random.default_rng(cfg.seed)
        order = rng.permutation(usable)
        m_cond, n = v.size, cfg.n_devices
        use = order[(np.arange(m_cond)[:, None] * n + np.arange(n)[None, :]) % order.size]
        hcs = np.empty((m_cond, n), dtype=np.float64)
        lcs = np.empty((m_cond, n), dtype=np.float64)
        twice = cfg.reads_per_device == 2
        hcs2 = np.empty((m_cond, n), dtype=np.float64) if twice else None
        lcs2 = np.empty((m_cond, n), dtype=np.float64) if twice else None
        for m in range(m_cond):
            if on_phase:
                on_phase("sweep", m, float(v[m]))
            idx = use[m]
            chip.reset_idx(idx)
            lcs[m] = chip.read_idx(idx)
            if lcs2 is not None:
                lcs2[m] = chip.read_idx(idx)
            chip.set_idx(idx, v_gate=np.full(n, v[m]))
            hcs[m] = chip.read_idx(idx)
            if hcs2 is not None:
                hcs2[m] = chip.read_idx(idx)
            if progress:
                progress(1)
        t_sweep = time.perf_counter()
    finally:
        chip.remove_listener(counter)

    st, lst, sel, ov, ov_emp = analyse(v, hcs, lcs, cfg.n_hcs)
    t_end = time.perf_counter()
    icc = _nominal_icc(chip, v)
    return CalibrationResult(
        config=cfg,
        v_gate=v,
        icc_ua=icc,
        samples_us=hcs,
        lcs_samples_us=lcs,
        reread_us=hcs2,
        lcs_reread_us=lcs2,
        cells=use,
        stats=st,
        lcs_stats=lst,
        selection=sel,
        overlap=ov,
        overlap_empirical=ov_emp,
        region_cells=cells,
        form_attempts=attempts,
        formed=formed,
        usable=usable,
        op_counts=dict(counter.counts),
        op_calls=dict(counter.calls),
        wall_s={
            "forming": t_form - t0,
            "sweep": t_sweep - t_form,
            "analysis": t_end - t_sweep,
            "total": t_end - t0,
        },
        chip_info=_chip_info(chip),
    )


def analyse(
    v_gate: np.ndarray,
    hcs_us: np.ndarray,
    lcs_us: np.ndarray,
    n_hcs: int,
    allowed: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], Selection, np.ndarray, np.ndarray]:
    """Extraction and selection from the sweep's first reads: (per-condition stats, pooled LCS stats,
    selection, Gaussian-equivalent overlaps, empirical overlaps of the chosen chain)."""
    st = extract(hcs_us)
    lst = extract(np.asarray(lcs_us).reshape(1, -1))
    sel = select_levels(
        v_gate,
        st["median_us"],
        st["s_down_us"],
        st["s_up_us"],
        float(lst["median_us"][0]),
        float(lst["s_up_us"][0]),
        n_hcs=n_hcs,
        allowed=allowed,
    )
    chain = [np.asarray(lcs_us).reshape(-1), *[hcs_us[i] for i in sel.index]]
    ov_emp = np.array([empirical_overlap(a, b) for a, b in itertools.pairwise(chain)])
    return st, lst, sel, gaussian_overlap(sel.separation), ov_emp


def _nominal_icc(chip: Chip, v_gate: np.ndarray) -> np.ndarray:
    """I_CC set by each gate voltage: the chip's transistor characteristic (its table), not a measurement."""
    try:
        return np.asarray(chip.table.icc_at(v_gate), dtype=np.float64)
    except (AttributeError, ValueError, HwloopError):
        return np.full(v_gate.shape, np.nan)


def _chip_info(chip: Chip) -> dict:
    info: dict = {"backend": type(chip).__name__, "tiles": chip.n_tiles}
    cid = getattr(chip, "chip_id", None)
    if isinstance(cid, str) and cid:
        info["chip_id"] = cid
    bench = getattr(chip, "bench", None)
    if bench is not None:
        info["bench_name"] = str(getattr(bench, "name", ""))
        info["bench_file"] = str(getattr(bench, "source_path", "") or "")
    board = getattr(chip, "board_info", None)
    if board is not None:
        info["board"] = str(getattr(board, "ident", ""))
    smu = getattr(chip, "smu_idn", None)
    if isinstance(smu, str) and smu:
        info["smu"] = smu
    return info
