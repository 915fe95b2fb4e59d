"""CompositeChip: one chip interface over several backends, each hosting some of the tiles.

A bench holds far fewer cells than a network needs, so ``hwloop train --chip real`` places a few tiles on
the real chip and the rest on a simulated chip that replays the same chip's calibration. The composite
routes every operation by tile; the orchestrator sees one chip of ``n_tiles`` tiles.
"""

from __future__ import annotations

import numpy as np

from hwloop.chip.base import CELLS_PER_TILE, Chip, Op
from hwloop.chip.cdf import CdfTable
from hwloop.errors import ChipError


class CompositeChip(Chip):
    def __init__(self, parts: list[tuple[str, Chip, list[int]]], n_tiles: int, table: CdfTable) -> None:
        """``parts``: (label, chip, global tiles it hosts, in the chip's local tile order)."""
        super().__init__(n_tiles, table)
        self.parts = parts
        self.owner = np.full(n_tiles, -1, dtype=np.int64)
        self.local_tile = np.zeros(n_tiles, dtype=np.int64)
        for p, (label, chip, tiles) in enumerate(parts):
            if len(tiles) > chip.n_tiles:
                raise ChipError(f"{label} chip has {chip.n_tiles} tile(s) but {len(tiles)} were placed on it")
            for j, t in enumerate(tiles):
                if self.owner[t] != -1:
                    raise ChipError(f"tile {t} placed on two chips")
                self.owner[t] = p
                self.local_tile[t] = j
        if (self.owner < 0).any():
            raise ChipError(f"tiles {np.flatnonzero(self.owner < 0).tolist()} are placed on no chip")
        # parts that report their operations per acknowledged frame (RealChip) are heard directly, so their
        # rows reach this chip's listeners as they happen; the rest are reported when the call returns
        self._self_reporting = np.array([bool(getattr(c, "reports_per_frame", False)) for _, c, _ in parts])
        for p, (_, chip, tiles) in enumerate(parts):
            if self._self_reporting[p]:
                chip.add_listener(self._forwarder(np.asarray(tiles, dtype=np.int64)))

    def _forwarder(self, tiles: np.ndarray):  # type: ignore[no-untyped-def]
        def forward(op: Op, idx: np.ndarray, level: np.ndarray, g_us: np.ndarray) -> None:
            self._emit(op, tiles[idx // CELLS_PER_TILE] * CELLS_PER_TILE + idx % CELLS_PER_TILE, level, g_us)

        return forward

    def _emit_done(self, op: Op, idx: np.ndarray, level: np.ndarray | int, g_us: np.ndarray | float) -> None:
        if not self._self_reporting.any():
            self._emit(op, idx, level, g_us)
            return
        m = ~self._self_reporting[self.owner[idx // CELLS_PER_TILE]]
        if m.any():
            lv = np.broadcast_to(np.asarray(level), idx.shape)[m]
            g = np.broadcast_to(np.asarray(g_us, dtype=np.float32), idx.shape)[m]
            self._emit(op, idx[m], lv, g)

    def tile_labels(self) -> list[str]:
        return [self.parts[int(p)][0] for p in self.owner]

    def _route(self, idx: np.ndarray) -> list[tuple[Chip, np.ndarray, np.ndarray]]:
        tile = idx // CELLS_PER_TILE
        own = self.owner[tile]
        out = []
        for p, (_, chip, _) in enumerate(self.parts):
            m = own == p
            if m.any():
                local = self.local_tile[tile[m]] * CELLS_PER_TILE + idx[m] % CELLS_PER_TILE
                out.append((chip, m, local))
        return out

    def _global_mask(self, attr: str) -> np.ndarray:
        mask = np.zeros(self.n_devices, dtype=bool)
        for _, chip, tiles in self.parts:
            sub = getattr(chip, attr)().reshape(chip.n_tiles, CELLS_PER_TILE)
            for j, t in enumerate(tiles):
                mask[t * CELLS_PER_TILE : (t + 1) * CELLS_PER_TILE] = sub[j]
        return mask

    def formed_mask(self) -> np.ndarray:
        return self._global_mask("formed_mask")

    def failed_mask(self) -> np.ndarray:
        return self._global_mask("failed_mask")

    def _mark_failed(self, idx: np.ndarray) -> None:
        for chip, _, local in self._route(idx):
            chip.mark_failed(local)

    def _require_formed(self, i: np.ndarray) -> None:
        """Each part checks its own devices."""

    def check_v_gate(self, v_gate: object) -> None:
        for _, chip, _ in self.parts:
            chip.check_v_gate(v_gate)

    def _form(self, idx: np.ndarray) -> np.ndarray:
        ok = np.zeros(idx.size, dtype=bool)
        for chip, m, local in self._route(idx):
            ok[m] = chip.form_idx(local)
        return ok

    def _set_level(self, idx: np.ndarray, level: np.ndarray) -> None:
        for chip, m, local in self._route(idx):
            chip.set_idx(local, level=level[m])

    def _set_vgate(self, idx: np.ndarray, v_gate: np.ndarray) -> None:
        for chip, m, local in self._route(idx):
            chip.set_idx(local, v_gate=v_gate[m])

    def _reset(self, idx: np.ndarray) -> None:
        for chip, _, local in self._route(idx):
            chip.reset_idx(local)

    def _read(self, idx: np.ndarray) -> np.ndarray:
        g = np.empty(idx.size, dtype=np.float32)
        for chip, m, local in self._route(idx):
            g[m] = chip.read_idx(local)
        return g

    def snapshot(self) -> dict[str, np.ndarray]:
        snap = super().snapshot()
        for p, (_, chip, _) in enumerate(self.parts):
            for k, v in chip.snapshot().items():
                snap[f"part{p}/{k}"] = v
        return snap

    def restore(self, state: dict[str, np.ndarray]) -> None:
        super().restore(state)
        for p, (_, chip, _) in enumerate(self.parts):
            sub = {k.split("/", 1)[1]: v for k, v in state.items() if k.startswith(f"part{p}/")}
            if sub:
                chip.restore(sub)

    def close(self) -> None:
        for _, chip, _ in self.parts:
            chip.close()

    def describe(self) -> dict:
        """The first part's chip id that has one; synthetic only if every part is."""
        parts = [c.describe() for _, c, _ in self.parts]
        cid = next((d["chip_id"] for d in parts if d["chip_id"]), "")
        return {**super().describe(), "chip_id": cid, "synthetic": all(d["synthetic"] for d in parts)}

    def info(self) -> dict:
        d = super().info()
        d["parts"] = [{"label": label, "backend": type(c).__name__, "tiles": tiles} for label, c, tiles in self.parts]
        return d
