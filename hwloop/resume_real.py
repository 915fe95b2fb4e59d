"""Resuming a run whose tiles live (partly) on real hardware.

A simulated tile is rolled back to the checkpoint with the rest of the run. A real tile cannot be: the
pulses it received after the checkpoint really happened. So on ``--resume``:

1. the run log keeps the real tiles' rows after the checkpoint (``RunLogWriter.reopen(keep_tiles=...)``,
   listed in ``/resumes``: real pulses, counted in endurance, not followed by training);
2. those rows are replayed onto the host's view of the chip: the chip's pulse counters and the nominal
   level of every device they programmed (``apply_kept_ops``);
3. every used device of the real tiles is read again, and the weights are refreshed from those reads;
4. the bench is refused when its chip does not match the checkpoint (``check_real_tiles_match``): a
   device that the checkpoint read in one state class (LCS or HCS) and that now reads in the other, or
   that now reads far below what it read (an unformed chip reads about 0 µS), is a mismatch; more than
   ``MISMATCH_LIMIT`` of the checked devices is a different (or unformed, or reset) chip.
"""

from __future__ import annotations

import numpy as np

from hwloop.chip.base import CELLS_PER_TILE, COLS, ROWS, Chip, Op
from hwloop.errors import RunLogError

#: fraction of mismatched devices above which the bench is taken for another chip
MISMATCH_LIMIT = 0.2
#: a device now reading below this fraction of its checkpoint read counts as a mismatch
DROP_FACTOR = 0.25


def real_tiles(backends: list[str]) -> list[int]:
    return [t for t, b in enumerate(backends) if b == "real"]


def _flat(rows: np.ndarray) -> np.ndarray:
    return (rows["tile"].astype(np.int64) * ROWS + rows["row"]) * COLS + rows["col"]


def _add_counts(chip: Chip, key: str, flat: np.ndarray) -> None:
    """Add one pulse per entry of ``flat`` (global device indices) to ``chip``'s counter ``key`` and, for a
    composite chip, to the part that hosts each device."""
    if flat.size == 0:
        return
    n = chip.n_devices
    add = np.bincount(flat, minlength=n)[:n]
    counter = getattr(chip, key)
    counter += add.astype(counter.dtype)
    parts = getattr(chip, "parts", None)
    if parts is None:
        return
    tile = flat // CELLS_PER_TILE
    owner, local_tile = chip.owner[tile], chip.local_tile[tile]  # type: ignore[attr-defined]
    for p, (_, part, _) in enumerate(parts):
        m = owner == p
        if m.any():
            local = local_tile[m] * CELLS_PER_TILE + flat[m] % CELLS_PER_TILE
            _add_counts(part, key, local)


def apply_kept_ops(chip: Chip | None, devices: np.ndarray, dev_level: np.ndarray, rows: np.ndarray) -> int:
    """Replay kept rows on the host: pulse counters, and ``dev_level`` (per used device, in the order of
    ``devices``) set to the level of each device's last SET/RESET. Returns the number of used devices
    whose nominal level changed."""
    if chip is None or rows.size == 0:
        return 0
    flat = _flat(rows)
    op = rows["op"].astype(np.int64)
    for code, key in ((Op.SET, "set_count"), (Op.RESET, "reset_count"), (Op.FORM, "form_count")):
        _add_counts(chip, key, flat[op == int(code)])
    prog = (op == int(Op.SET)) | (op == int(Op.RESET))
    pf, pl = flat[prog][::-1], rows["level"][prog][::-1]
    last_dev, first = np.unique(pf, return_index=True)  # first in the reversed order = last in time
    where = np.full(chip.n_devices, -1, dtype=np.int64)
    where[devices] = np.arange(devices.size)
    used = where[last_dev]
    ok = used >= 0
    new_level = pl[first][ok].astype(np.int8)
    changed = int(np.count_nonzero(dev_level[used[ok]] != new_level))
    dev_level[used[ok]] = new_level
    return changed


def touched_devices(rows: np.ndarray) -> np.ndarray:
    """Global indices of the devices the kept rows programmed or formed."""
    op = rows["op"].astype(np.int64)
    m = op != int(Op.READ)
    return np.unique(_flat(rows[m]))


def check_real_tiles_match(
    path: str, g_old_us: np.ndarray, g_new_us: np.ndarray, threshold_us: float, n_tiles_real: int
) -> None:
    """Raise ``RunLogError`` (one line) if the reads of the real tiles do not match the checkpoint's."""
    if g_old_us.size == 0:
        return
    old_hcs = g_old_us >= threshold_us
    new_hcs = g_new_us >= threshold_us
    bad = (old_hcs != new_hcs) | ~(g_new_us >= DROP_FACTOR * g_old_us)  # NaN reads count as mismatches
    frac = float(np.count_nonzero(bad)) / g_old_us.size
    if frac > MISMATCH_LIMIT:
        raise RunLogError(
            f"cannot resume {path}: the chip on the bench does not match the checkpoint ({100 * frac:.0f} % "
            f"of {g_old_us.size:,} devices on its {n_tiles_real} real tile(s) read differently, e.g. an "
            "unformed or another chip). Mount the chip this run was trained on, or start a new run"
        )


def lcs_hcs_threshold_us(medians_us: np.ndarray) -> float:
    """A conductance between LCS (level 0) and HCS1 (level 1): the geometric mean of their medians."""
    lo, hi = float(medians_us[0]), float(medians_us[1])
    return float(np.sqrt(max(lo, 1e-3) * max(hi, 1e-3)))


__all__ = ["apply_kept_ops", "check_real_tiles_match", "lcs_hcs_threshold_us", "real_tiles", "touched_devices"]
