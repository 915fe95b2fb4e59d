"""SimChip: a simulated 1T1R HfOx array that replays conductance CDFs.

- SET draws the new conductance from the level's CDF by inverse-transform sampling (cycle-to-cycle).
  At a gate voltage between tabled levels the quantile functions are interpolated.
- RESET draws from LCS.
- FORM succeeds per attempt with ``form_p_attempt``; a fraction ``form_dead_fraction`` never forms.
  Unformed devices read about ``pristine_g_us``. A formed device sits in HCS at the forming condition.
- READ adds Gaussian read noise (relative plus absolute).
- Each device draws an endurance budget (lognormal around ``endurance_median_cycles``). When its
  cycles pass the budget it fails, stuck at HCS or LCS, and stays there.
- Optional relaxation: right after programming a device drifts by a random amount that settles with
  time constant ``relax_tau_s`` of chip time (the chip clock advances with operations and ``elapse``).
- Measured models replace the built-in ones: ``retention=`` (a ``RetentionModel`` fitted by
  ``hwloop retention``: per-level drift, spread and time constant) and ``endurance=`` (an
  ``EnduranceModel`` fitted by ``hwloop cycle``: the cycles-to-failure distribution and stuck-HCS share).

Everything is array code over flat indices; the same seed gives the same chip.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from hwloop.chip.base import Chip
from hwloop.chip.cdf import CdfTable
from hwloop.chip.models import EnduranceModel, RetentionModel
from hwloop.errors import ChipError

LEVEL_PRISTINE = -1
LEVEL_OFF_TABLE = -2


@dataclass(frozen=True)
class SimConfig:
    """Device non-idealities of the simulated chip. Presets: ``default()``, ``ideal()``."""

    form_p_attempt: float = 0.95
    form_dead_fraction: float = 0.002
    form_v_gate: float = 1.6
    pristine_g_us: float = 0.05
    read_noise_rel: float = 0.01
    read_noise_abs_us: float = 0.2
    endurance_median_cycles: float = 1e5
    endurance_log_sigma: float = 0.5
    stuck_hcs_fraction: float = 0.5
    relax_rel: float = 0.0
    relax_tau_s: float = 10.0
    set_time_s: float = 1e-6
    reset_time_s: float = 1e-7
    read_time_s: float = 1e-6

    @classmethod
    def default(cls) -> SimConfig:
        return cls()

    @classmethod
    def ideal(cls) -> SimConfig:
        """No read noise, perfect forming, no wear-out, no relaxation (CDF variability stays)."""
        return cls(
            form_p_attempt=1.0,
            form_dead_fraction=0.0,
            read_noise_rel=0.0,
            read_noise_abs_us=0.0,
            endurance_median_cycles=np.inf,
            endurance_log_sigma=0.0,
        )

    def with_(self, **kw: float) -> SimConfig:
        return replace(self, **kw)

    def as_dict(self) -> dict:
        return asdict(self)


class SimChip(Chip):
    """Simulated chip of any number of 128x128 tiles, deterministic for a seed."""

    def __init__(
        self,
        n_tiles: int = 1,
        table: CdfTable | None = None,
        config: SimConfig | None = None,
        seed: int | np.random.Generator = 0,
        retention: RetentionModel | None = None,
        endurance: EnduranceModel | None = None,
    ) -> None:
        if table is None:
            from hwloop.chip.default_table import default_table

            table = default_table()
        super().__init__(n_tiles, table)
        self.config = config or SimConfig.default()
        if retention is not None:
            retention.check(table.n_levels)
        if endurance is not None:
            endurance.validate()
            self.config = self.config.with_(stuck_hcs_fraction=endurance.stuck_hcs_fraction)
        self.retention = retention
        self.endurance = endurance
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        n = self.n_devices
        c = self.config
        self.g_us = np.full(n, c.pristine_g_us, dtype=np.float32)
        self.level = np.full(n, LEVEL_PRISTINE, dtype=np.int8)
        self.formed = np.zeros(n, dtype=bool)
        self.dead = self.rng.random(n) < c.form_dead_fraction
        self.failed = np.zeros(n, dtype=bool)
        if endurance is not None:
            self.budget = endurance.sample(self.rng, n)
        elif np.isfinite(c.endurance_median_cycles):
            self.budget = np.exp(
                np.log(c.endurance_median_cycles) + c.endurance_log_sigma * self.rng.standard_normal(n)
            ).astype(np.float32)
        else:
            self.budget = np.full(n, np.inf, dtype=np.float32)
        self.relax_us = np.zeros(n, dtype=np.float32)
        self.t_prog_s = np.zeros(n, dtype=np.float64)
        self.tau_s = np.full(n, c.relax_tau_s, dtype=np.float32)
        self.time_s = 0.0

    @property
    def relaxes(self) -> bool:
        return self.config.relax_rel > 0 or self.retention is not None

    # ---------------------------------------------------------------- masks
    def formed_mask(self) -> np.ndarray:
        return self.formed

    def failed_mask(self) -> np.ndarray:
        return self.failed

    def elapse(self, seconds: float) -> None:
        """Advance the chip clock (relaxation settles with it)."""
        self.time_s += float(seconds)

    # ---------------------------------------------------------------- operations
    def _form(self, idx: np.ndarray) -> np.ndarray:
        todo = idx[~self.formed[idx]]
        ok = (~self.dead[todo]) & (self.rng.random(todo.size) < self.config.form_p_attempt)
        new = todo[ok]
        self.formed[new] = True
        grid = self.table.hcs_grid_at(np.array([self.config.form_v_gate]))
        self.g_us[new] = self.table.sample_from_grids(np.broadcast_to(grid, (new.size, grid.shape[1])), self.rng)
        self.level[new] = LEVEL_OFF_TABLE
        self.time_s += idx.size * self.config.set_time_s
        return self.formed[idx].copy()

    def _program(self, idx: np.ndarray, g_new: np.ndarray, level: np.ndarray | int) -> None:
        """Write new conductances, applying wear-out and (optional) relaxation."""
        cycles = (self.set_count[idx].astype(np.float32) + self.reset_count[idx] + 1.0) * 0.5
        live = ~self.failed[idx]
        wearing = live & (cycles > self.budget[idx])
        if wearing.any():
            self._wear_out(idx[wearing])
            live &= ~wearing
        if not live.all():
            idx, g_new = idx[live], g_new[live]
            level = level[live] if np.ndim(level) else level
        self.g_us[idx] = g_new
        self.level[idx] = level
        if self.retention is not None:
            m = self.retention
            lv = np.broadcast_to(np.asarray(level, dtype=np.int64), idx.shape)
            lv = np.where(lv >= 0, lv, m.level_of(g_new)) if (lv < 0).any() else lv
            z = self.rng.standard_normal(idx.size)
            self.relax_us[idx] = (m.drift_us[lv] + m.sigma_us[lv] * z).astype(np.float32)
            self.tau_s[idx] = m.tau_s[lv]
            self.t_prog_s[idx] = self.time_s
        elif self.config.relax_rel > 0:
            g = np.maximum(g_new, 1.0)
            sigma = self.config.relax_rel * g * np.sqrt(50.0 / np.maximum(g, 10.0))
            self.relax_us[idx] = sigma * self.rng.standard_normal(idx.size, dtype=np.float32)
            self.t_prog_s[idx] = self.time_s

    def _wear_out(self, idx: np.ndarray) -> None:
        c = self.config
        stuck_hcs = self.rng.random(idx.size) < c.stuck_hcs_fraction
        lv = np.where(stuck_hcs, self.table.n_hcs, 0)
        self.g_us[idx] = self.table.sample(lv, self.rng)
        self.level[idx] = lv
        self.relax_us[idx] = 0.0
        self.failed[idx] = True

    def _set_level(self, idx: np.ndarray, level: np.ndarray) -> None:
        g = self.table.sample(level, self.rng).astype(np.float32)
        self._program(idx, g, level.astype(np.int8))
        self.time_s += idx.size * self.config.set_time_s

    def _set_vgate(self, idx: np.ndarray, v_gate: np.ndarray) -> None:
        uniq, inv = np.unique(v_gate, return_inverse=True)
        grids = self.table.hcs_grid_at(uniq)
        g = self._sample_rows(grids, inv.reshape(-1))
        self._program(idx, g.astype(np.float32), LEVEL_OFF_TABLE)
        self.time_s += idx.size * self.config.set_time_s

    def _sample_rows(self, grids: np.ndarray, row: np.ndarray) -> np.ndarray:
        n_pts = grids.shape[1]
        u = self.rng.random(row.size) * (n_pts - 1)
        i = np.minimum(u.astype(np.intp), n_pts - 2)
        frac = u - i
        g = grids[row, i]
        return g + frac * (grids[row, i + 1] - g)

    def _reset(self, idx: np.ndarray) -> None:
        g = self.table.sample(0, self.rng, size=idx.size).astype(np.float32)
        self._program(idx, g, 0)
        self.time_s += idx.size * self.config.reset_time_s

    def true_g_us(self, idx: np.ndarray) -> np.ndarray:
        """Conductance without read noise (includes relaxation so far). For tests and benchmarks."""
        g = self.g_us[idx]
        if self.relaxes:
            settle = 1.0 - np.exp(-(self.time_s - self.t_prog_s[idx]) / self.tau_s[idx])
            g = g + (self.relax_us[idx] * settle).astype(np.float32)
        return np.maximum(g, 0.0)

    def _read(self, idx: np.ndarray) -> np.ndarray:
        c = self.config
        g = self.true_g_us(idx)
        if c.read_noise_rel > 0 or c.read_noise_abs_us > 0:
            z = self.rng.standard_normal(idx.size, dtype=np.float32)
            g = g + z * (np.float32(c.read_noise_rel) * g + np.float32(c.read_noise_abs_us))
            np.maximum(g, 0.0, out=g)
        self.time_s += idx.size * c.read_time_s
        return g

    # ---------------------------------------------------------------- state
    def snapshot(self) -> dict[str, np.ndarray]:
        snap = super().snapshot()
        snap.update(
            g_us=self.g_us.copy(),
            level=self.level.copy(),
            formed=self.formed.copy(),
            dead=self.dead.copy(),
            failed=self.failed.copy(),
            budget=self.budget.copy(),
            relax_us=self.relax_us.copy(),
            t_prog_s=self.t_prog_s.copy(),
            tau_s=self.tau_s.copy(),
            time_s=np.array(self.time_s),
            rng_state=np.frombuffer(repr(self.rng.bit_generator.state).encode(), dtype=np.uint8),
        )
        return snap

    def restore(self, state: dict[str, np.ndarray]) -> None:
        super().restore(state)
        for key in ("g_us", "level", "formed", "dead", "failed", "budget", "relax_us", "t_prog_s"):
            getattr(self, key)[:] = np.asarray(state[key])
        if "tau_s" in state:
            self.tau_s[:] = np.asarray(state["tau_s"])
        self.time_s = float(np.asarray(state["time_s"]))
        if "rng_state" in state:
            import ast

            st = ast.literal_eval(bytes(np.asarray(state["rng_state"], dtype=np.uint8)).decode())
            if st.get("bit_generator") != type(self.rng.bit_generator).__name__:
                raise ChipError(f"snapshot random state is for {st.get('bit_generator')}, not this chip's generator")
            self.rng.bit_generator.state = st

    def describe(self) -> dict:
        return {**super().describe(), "synthetic": True}

    def info(self) -> dict:
        d = super().info()
        d["sim_config"] = self.config.as_dict()
        if self.retention is not None:
            d["retention_model"] = self.retention.source
        if self.endurance is not None:
            d["endurance_model"] = self.endurance.as_dict()
        return d
