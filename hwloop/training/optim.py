"""Algorithm 1 of the paper as one optimizer: Adam, then the metaplastic attenuation of hidden weights.

For every hidden weight W_H (parameters flagged ``metaplastic``):
    U      = Adam's step (bias-corrected m / (sqrt(v) + eps))
    W_S    = nearest level of Q                                     (Eq. 1)
    if U * (W_H - W_S) < 0:   W_H <- W_H - lr * U * M(W_H)          (the step moves W_H away from W_S)
    else:                     W_H <- W_H - lr * U
    M(W_H) = 1 - tanh^2(2 m* / I * |W_H - W_S| - m*)                (Eq. 2), I the interval holding W_H
Hidden weights are then clamped to [Q_0, Q_n] (the paper's levels span [-1.5, 1.5]).
Other parameters (batch-norm) get plain Adam. ``m_star`` can be changed between steps (warm-up uses 0).

Two options of the Fashion-MNIST gap study (docs/training.md, "Options of Algorithm 1"):
  ``ws_source="read"``: W_S is the weight the layer used in its forward pass (``set_read_weights``: the
      weights read from the chip), in the sign test and in |W_H - W_S|; I stays the nominal interval
      holding W_H (the side of Q[level index] that W_H is on).
  ``clamp_mode``: ``"hard"`` clamps to [Q_0, Q_n] (default); ``"none"`` does not clamp; ``"soft"`` does not
      clamp, but an outward step of a W_H past an outer level is also scaled by
      S = 1 - tanh^2(m* |W_H - Q_outer| / I_outer), I_outer the interval next to that outer level.
  Quantisation of a W_H beyond [Q_0, Q_n] gives the outer level (``LevelSet.index`` saturates).

On the CPU the hidden weights go through ``hwloop.training.fused_cpu``: the whole rule, Adam's moments, the
new level index and the diff against the programmed levels in one pass (numba), ``kernel="auto"``. Elsewhere
(and with ``kernel="torch"``) the step runs in torch, in place, on whatever device the parameters live on.
W_S and I come from small lookup tables indexed by the level index (``LevelSet.tables``), never from
full-size temporaries: every intermediate lives in per-parameter work buffers allocated once, because on
CPU a fresh multi-megabyte tensor costs more (page faults) than the arithmetic done in it. The plain
numpy reading of Algorithm 1 lives in ``tests/test_optim_equivalence.py`` and is checked against this one.

``fused_rule`` is the same per-parameter rule as plain tensor expressions, for ``torch.compile`` to fuse
into one pass over the weights instead of about forty kernels. ``compile="auto"`` uses it only for
parameters off the CPU (on a GPU forty launches per tensor cost more than the arithmetic): on this
project's CPU the inductor kernel measured slower than the eager in-place step (one thread, the paper's
668,672 hidden weights: 9.6 ms of CPU time per step against 5.6 ms, ``benchmarks/metaplastic_step.py``),
because its table gathers are not vectorised. ``compile="always"`` forces it, ``"never"`` turns it off,
and so does ``HWLOOP_COMPILE=0``. It is compiled lazily at the first step (``step_s_compiled_first`` in
that benchmark: 11-13 s on this loaded 2-core machine, cold cache) and cached per process; where no
compiler or backend works it falls back, with one warning, to the eager step. Both paths are checked
against the reference in ``tests/test_optim_equivalence.py``.

After each step the nearest-level index of every hidden weight is kept in ``state[p]["level_index"]``
(int32 tensor, on the parameter's device): the orchestrator programs the chip from it, and the next step
reuses it as W_S.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterable

import numpy as np
import torch

from hwloop.training import fused_cpu
from hwloop.training.adamstate import adam_step
from hwloop.training.config import CLAMP_MODES, WS_SOURCES
from hwloop.training.levels import LevelSet


def metaplastic_factor(w_h: np.ndarray, w_s: np.ndarray, width: np.ndarray, m_star: float) -> np.ndarray:
    """M of Eq. 2."""
    return 1.0 - np.tanh((2.0 * m_star) / width * np.abs(w_h - w_s) - m_star) ** 2


def fused_rule(
    w: torch.Tensor,
    g: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    idx: torch.Tensor,
    away: torch.Tensor,
    tab_q: torch.Tensor,
    tab_width_side: torch.Tensor,
    tab_thr: torch.Tensor,
    tab_lut: torch.Tensor,
    sc: torch.Tensor,
    lo: float,
    hi: float,
    inv_h: float,
    top: int,
) -> None:
    """Algorithm 1 for one hidden-weight tensor, written as plain tensor expressions for ``torch.compile``
    (which fuses it into one loop). In place: Adam moments ``m``, ``v``, weights ``w``, level index ``idx``
    (in: W_S of the weights before the step; out: nearest level after it), ``away`` (out: attenuated).
    ``sc`` = [beta1, beta2, 1 - beta1^t, 1 - beta2^t, eps, lr, m*] (a tensor, so a new step or m* does not
    recompile). ``lo``/``hi`` clamp; ``inv_h``/``top`` and ``tab_lut``/``tab_thr``: ``LevelSet``'s bin grid."""
    beta1, beta2, bc1, bc2, eps, lr, m_star = sc[0], sc[1], sc[2], sc[3], sc[4], sc[5], sc[6]
    m.mul_(beta1).add_(g * (1 - beta1))
    v.mul_(beta2).add_(g * g * (1 - beta2))
    u = (m / bc1) / ((v / bc2).sqrt() + eps)  # U, Adam's bias-corrected step
    d = w - tab_q[idx]  # W_H - W_S
    width = tab_width_side[idx * 2 + (d >= 0).to(idx.dtype)]  # I, the interval holding W_H
    t = torch.tanh(2 * m_star / width * d.abs() - m_star)
    moving_away = u * d < 0
    away.copy_(moving_away)
    u = torch.where(moving_away, u * (1 - t * t), u)  # U * M (Eq. 2) where the step moves W_H away
    w.sub_(lr * u)
    w.clamp_(lo, hi)
    b = ((w - lo) * inv_h).clamp(0, top).to(idx.dtype)  # LevelSet.index, fused
    idx.copy_(tab_lut[b] + (w > tab_thr[b]).to(idx.dtype))


_COMPILED: dict[str, Callable | None] = {}
#: the numba step's threads, one pool per process (a new optimizer per task must not leave idle pools)
_RUNNER = fused_cpu.Runner()


def _compiled_rule() -> Callable | None:
    """``torch.compile(fused_rule)``, built once per process (None where compilation is unavailable)."""
    if "rule" not in _COMPILED:
        try:
            _COMPILED["rule"] = torch.compile(fused_rule, dynamic=False)
        except Exception as exc:  # no backend: the eager step is exact too
            warnings.warn(f"torch.compile unavailable ({exc}); using the eager metaplastic step", stacklevel=3)
            _COMPILED["rule"] = None
    return _COMPILED["rule"]


def _work(state: dict, p: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-parameter work buffers (allocated on first use, reused every step)."""
    wk = state.get("work")
    if wk is None:

        def f() -> torch.Tensor:
            return torch.empty_like(p, memory_format=torch.contiguous_format)

        def i() -> torch.Tensor:
            return torch.empty(p.shape, dtype=torch.int32, device=p.device)

        def b() -> torch.Tensor:
            return torch.empty(p.shape, dtype=torch.bool, device=p.device)

        wk = {"u": f(), "d": f(), "f": f(), "a": f(), "i": i(), "b1": b(), "b2": b()}
        state["work"] = wk
    return wk


class MetaplasticAdam(torch.optim.Optimizer):
    def __init__(
        self,
        params: Iterable,
        levels: LevelSet,
        lr: float = 5e-4,
        m_star: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        clamp: bool = True,
        compile: str = "auto",
        kernel: str = "auto",
        ws_source: str = "nominal",
        clamp_mode: str = "hard",
    ) -> None:
        if not lr > 0:
            raise ValueError("learning rate must be positive")
        if ws_source not in WS_SOURCES:
            raise ValueError(f"ws_source must be one of {WS_SOURCES}")
        if clamp_mode not in CLAMP_MODES:
            raise ValueError(f"clamp_mode must be one of {CLAMP_MODES}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))
        self.levels = levels
        self.m_star = float(m_star)
        #: W_S of the rule: the nominal level ("nominal") or the weight read from the chip ("read")
        self.ws_source = ws_source
        #: "hard" (clamp to [Q_0, Q_n]), "none" or "soft"; ``clamp=False`` is the older spelling of "none"
        self.clamp_mode = clamp_mode if clamp else "none"
        self.clamp = self.clamp_mode == "hard"
        self._w_read: dict[torch.Tensor, torch.Tensor] = {}  # hidden weight -> weights its layer read
        self._away: list[torch.Tensor] = []  # attenuated masks of the last step
        if compile not in ("auto", "always", "never"):
            raise ValueError("compile must be auto, always or never")
        if kernel not in ("auto", "numba", "torch"):
            raise ValueError("kernel must be auto, numba or torch")
        metas = [p for g in self.param_groups for p in g["params"] if getattr(p, "metaplastic", False)]
        off_cpu = any(p.device.type != "cpu" for p in metas)
        enabled = os.environ.get("HWLOOP_COMPILE", "1") != "0"
        #: CPU hidden weights go through the one-pass numba kernel (``hwloop.training.fused_cpu``)
        self.numba = kernel == "numba" or (kernel == "auto" and enabled and not off_cpu)
        if self.numba and off_cpu:
            raise ValueError("kernel='numba' needs the hidden weights on the CPU")
        default_rule = self.clamp_mode == "hard" and ws_source == "nominal"  # the only rule fused_rule has
        #: whether the fused, compiled torch rule is in use (turned off for good if compiling fails)
        self.compiled = (
            not self.numba and default_rule and enabled and (compile == "always" or (compile == "auto" and off_cpu))
        )
        self._n_away = 0  # attenuated weights counted by the numba kernel in the last step

    def set_read_weights(self, pairs: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """``ws_source="read"``: for each (hidden weight, weights read) pair, the tensor (same shape and
        device) that the layer's forward pass uses. It is read at every step, so give a live view (the
        layer's ``w_used``), not a copy."""
        for p, w in pairs:
            if w.shape != p.shape or w.device != p.device:
                raise ValueError(
                    f"read weights {tuple(w.shape)} on {w.device} do not fit {tuple(p.shape)} on {p.device}"
                )
            self._w_read[p] = w

    @property
    def attenuated(self) -> int:
        """Weights attenuated in the last step (diagnostic, counted when read; it synchronises the device)."""
        return self._n_away + int(sum(int(torch.count_nonzero(a)) for a in self._away))

    def track_levels(self, p: torch.Tensor, record: torch.Tensor) -> None:
        """After every step, diff hidden weight ``p``'s level index against ``record`` (int32, one per weight,
        on ``p``'s device; the levels last programmed): ``changed_levels(p)`` then lists the weights whose
        level changed, and ``record`` holds the new levels. The record is the caller's (not saved)."""
        if record.dtype != torch.int32 or record.numel() != p.numel() or record.device != p.device:
            raise ValueError("the level record must be int32, one entry per weight, on the weight's device")
        self.state[p]["record"] = record.view(-1)
        self.state[p]["changed"] = torch.zeros(0, dtype=torch.int64, device=p.device)

    def changed_levels(self, p: torch.Tensor) -> torch.Tensor:
        """Flat indices (int64, ascending, on ``p``'s device) of the weights of ``p`` whose level changed in
        the last step against the record of ``track_levels``; their new levels are in the record."""
        return self.state[p]["changed"]

    def level_index(self, p: torch.Tensor) -> torch.Tensor:
        """Nearest-level index (int32 tensor on ``p``'s device) of hidden weight ``p`` after the last step."""
        st = self.state.get(p, {})
        idx = st.get("level_index")
        if idx is None:
            idx = self.levels.index(p.detach())
        return idx

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        self._away = []
        self._n_away = 0
        lv, m_star = self.levels, self.m_star
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr = group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                t = adam_step(state, p)
                meta = getattr(p, "metaplastic", False)
                if meta and self.numba:
                    self._numba_step(p, state, group, lr, t, m_star)
                    continue  # the whole rule, moments and level diff included, in one pass
                if meta and self.compiled and self._fused_step(p, state, group, lr, t, m_star):
                    self._diff_record(state)
                    continue  # the whole rule, moments included, in one compiled pass
                m, v, g = state["exp_avg"], state["exp_avg_sq"], p.grad
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                if not meta:
                    denom = (v / (1 - beta2**t)).sqrt_().add_(group["eps"])
                    p.add_((m / (1 - beta1**t)).div_(denom), alpha=-lr)
                    continue
                wk = _work(state, p)
                w, d, f = p.data, wk["d"], wk["f"]
                # U = (m / bc1) / denom with denom = sqrt(v) / sqrt(bc2) + eps (torch's Adam); U itself is never
                # formed: its sign is the sign of m, and the step is -lr / bc1 * (m * factor) / denom
                denom = torch.sqrt(v, out=wk["u"]).div_(math.sqrt(1 - beta2**t)).add_(group["eps"])
                num = m
                idx = state.get("level_index")
                if m_star > 0:
                    if idx is None:
                        idx = lv.index(w)
                    tab = lv.tables(w.device)
                    # W_S (nearest level) and d = W_H - W_S
                    torch.index_select(tab["q"], 0, idx.view(-1), out=d.view(-1))
                    torch.sub(w, d, out=d)
                    # I: the interval holding W_H (above W_S where d >= 0, else below): width_side[2 idx + side]
                    code = torch.add(idx, idx, out=wk["i"]).add_(torch.ge(d, 0, out=wk["b2"]))
                    torch.index_select(tab["width_side"], 0, code.view(-1), out=f.view(-1))
                    if self.ws_source == "read":  # W_S = the weight read from the chip; I stays nominal
                        torch.sub(w, self._read_weight(p), out=d)
                    # away = 1 where U * d < 0 (the step moves W_H away from W_S), else 0; sign(U) = sign(m)
                    away = torch.mul(m, d, out=wk["a"]).sign_().clamp_(max=0).neg_()
                    # M = 1 - tanh^2(y) = 4 s (1 - s) with s = sigmoid(2 y), 2 y = 4 m* |d| / I - 2 m*
                    torch.div(d.abs_(), f, out=f).mul_(4.0 * m_star).sub_(2.0 * m_star).sigmoid_()
                    f.addcmul_(f, f, value=-1.0).mul_(4.0)
                    # U <- U * M where away, U elsewhere: U * (1 - away * (1 - M)); (masked_fill_ and where
                    # cost 25 times more on CPU than these three passes)
                    f.sub_(1.0).mul_(away).add_(1.0)
                    if self.clamp_mode == "soft":
                        self._soft_clamp_factor(w, m, f, wk, m_star)
                    num = torch.mul(m, f, out=wk["d"])
                    self._away.append(away)
                w.addcdiv_(num, denom, value=-lr / (1 - beta1**t))
                if self.clamp:
                    w.clamp_(lv.lo, lv.hi)
                # the new index overwrites the old one in place (W_S is not needed any more)
                state["level_index"] = lv.index(w, out=idx, work_f=f, work_i=wk["i"], work_b=wk["b1"])
                self._diff_record(state)
        return loss

    def _diff_record(self, state: dict) -> None:
        """The torch paths' level diff against the ``track_levels`` record (the numba kernel does it inline)."""
        rec = state.get("record")
        if rec is None:
            return
        idx = state["level_index"].view(-1)
        nz = torch.ne(idx, rec).nonzero().view(-1)
        if nz.numel():
            rec.index_copy_(0, nz, idx.index_select(0, nz))
        state["changed"] = nz

    def _numba_step(self, p: torch.Tensor, state: dict, group: dict, lr: float, t: int, m_star: float) -> None:
        """Algorithm 1 on ``p`` in one pass of ``fused_cpu.rule`` (CPU tensors, shared with numpy)."""
        lv = self.levels
        idx = state.get("level_index")
        if idx is None:
            idx = state["level_index"] = lv.index(p.data)
        wk = state.get("work")
        if wk is None:
            wk = state["work"] = {
                "changed": np.empty(p.numel(), dtype=np.int64),
                "scal": np.empty(11, dtype=np.float32),
                "flags": np.empty(4, dtype=np.int64),
                "none_f": np.zeros(1, dtype=np.float32),
                "none_i": np.zeros(1, dtype=np.int32),
            }
        beta1, beta2 = group["betas"]
        wk["scal"][:] = (
            beta1,
            beta2,
            1.0 / math.sqrt(1 - beta2**t),
            group["eps"],
            lr / (1 - beta1**t),
            m_star,
            lv.lo,
            lv.hi,
            lv.lut_inv_h,
            lv.width_np[-1],
            lv.width_np[0],
        )
        rec = state.get("record")
        read = self.ws_source == "read" and m_star > 0
        wk["flags"][:] = (fused_cpu.CLAMP_CODES[self.clamp_mode], read, rec is not None, lv.lut_np.size - 1)
        args = (
            p.data.view(-1).numpy(),
            p.grad.reshape(-1).numpy(),
            state["exp_avg"].view(-1).numpy(),
            state["exp_avg_sq"].view(-1).numpy(),
            idx.view(-1).numpy(),
            self._read_weight(p).reshape(-1).numpy() if read else wk["none_f"],
            rec.numpy() if rec is not None else wk["none_i"],
            wk["changed"],
            lv.q_np,
            lv.width_side_np,
            lv.lut_np,
            lv.thr_np,
            wk["scal"],
            wk["flags"],
        )
        changed, n_away = _RUNNER.run(torch.get_num_threads(), p.numel(), args, wk["changed"])
        self._n_away += n_away
        if rec is not None:
            state["changed"] = torch.from_numpy(changed)

    def _read_weight(self, p: torch.Tensor) -> torch.Tensor:
        w = self._w_read.get(p)
        if w is None:
            raise ValueError("ws_source='read' needs the read weights of every hidden weight (set_read_weights)")
        return w

    def _soft_clamp_factor(self, w: torch.Tensor, m: torch.Tensor, f: torch.Tensor, wk: dict, m_star: float) -> None:
        """``clamp_mode="soft"``: multiply the step factor ``f`` by S = 1 - tanh^2(m* |x|) where the step
        moves W_H outward past an outer level; x = (W_H - Q_n) / I_n above Q_n, (W_H - Q_0) / I_0 below Q_0,
        0 inside (S = 1 there). Outward: U * x < 0, read from m * x (U has the sign of m)."""
        lv = self.levels
        if "s" not in wk:
            wk["s"], wk["o"] = torch.empty_like(f), torch.empty_like(f)
        x, o = wk["s"], wk["o"]
        torch.sub(w, lv.hi, out=x).clamp_(min=0).div_(float(lv.width_up[-1]))
        x.add_(torch.sub(w, lv.lo, out=o).clamp_(max=0).div_(float(lv.width_down[0])))
        outward = torch.mul(m, x, out=o).sign_().clamp_(max=0).neg_()  # 1 where outward, else 0
        x.abs_().mul_(m_star).tanh_().square_()  # tanh^2(m* |x|)
        f.mul_(x.mul_(outward).neg_().add_(1.0))  # f * (1 - outward * tanh^2) = f * S where outward

    def _fused_step(self, p: torch.Tensor, state: dict, group: dict, lr: float, t: int, m_star: float) -> bool:
        """The compiled rule on ``p`` (False, and the eager path from then on, where it cannot compile)."""
        rule = _compiled_rule() if self.levels.lut_fine else None
        if rule is None:
            self.compiled = False
            return False
        lv = self.levels
        wk = _work(state, p)
        tab = lv.tables(p.device)
        idx = state.get("level_index")
        if idx is None:
            idx = lv.index(p.data)
        beta1, beta2 = group["betas"]
        sc = wk.get("sc")
        if sc is None:
            sc = wk["sc"] = torch.empty(7, dtype=torch.float32, device=p.device)
        sc.copy_(torch.tensor([beta1, beta2, 1 - beta1**t, 1 - beta2**t, group["eps"], lr, m_star]))
        try:
            rule(
                p.data,
                p.grad,
                state["exp_avg"],
                state["exp_avg_sq"],
                idx,
                wk["b1"],
                tab["q"],
                tab["width_side"],
                tab["thr"],
                tab["lut"],
                sc,
                lv.lo,
                lv.hi,
                lv.lut_inv_h,
                lv.lut_np.size - 1,
            )
        except Exception as exc:  # a compiler missing at first use: fall back, once
            warnings.warn(
                f"torch.compile failed ({type(exc).__name__}: {exc}); using the eager metaplastic step", stacklevel=3
            )
            _COMPILED["rule"] = None
            self.compiled = False
            return False
        state["level_index"] = idx
        if m_star > 0:
            self._away.append(wk["b1"])
        return True

    def load_state_dict(self, state_dict: dict) -> None:
        """Torch's, keeping the level records of ``track_levels`` (the caller's, not part of the state)."""
        records = {p: st["record"] for p, st in self.state.items() if "record" in st}
        super().load_state_dict(state_dict)
        for p, rec in records.items():
            self.track_levels(p, rec)

    def state_dict(self) -> dict:
        sd = super().state_dict()
        # the level index is derived from the weights and the work buffers are scratch: both are rebuilt
        # after loading (new dicts: torch's state_dict shares the live per-parameter state dicts)
        sd["state"] = {
            k: {n: v for n, v in st.items() if n not in ("level_index", "work", "record", "changed")}
            for k, st in sd["state"].items()
        }
        return sd


def m_star_for_epoch(epoch_in_run: int, warmup: int, m_star: float) -> float:
    """m* in force for a 1-based global epoch: 0 during the first ``warmup`` epochs of the run."""
    return 0.0 if epoch_in_run <= warmup else m_star


__all__ = ["MetaplasticAdam", "m_star_for_epoch", "metaplastic_factor"]
