"""Algorithm 1 on the CPU as one compiled loop over the hidden weights (numba).

The eager torch step of ``MetaplasticAdam`` makes about forty passes over every hidden-weight tensor (one
kernel per operation, each reading and writing megabytes); torch's inductor does not vectorise the
rule's table gathers on this CPU. Here each weight is read once and its whole rule is done in registers:

    m      <- beta1 m + (1 - beta1) g                 v <- beta2 v + (1 - beta2) g^2        (Adam)
    denom  =  sqrt(v) / sqrt(1 - beta2^t) + eps       (torch's Adam; U = m / (1 - beta1^t) / denom)
    W_S    =  Q[k]  (k: the weight's nearest-level index after the last step), or the weight read from
              the chip (``ws``, ``--ws-source read``)
    d      =  W_H - W_S;  I = the nominal interval holding W_H (above Q[k] where W_H >= Q[k], else below)
    M      =  1 - tanh^2(2 m* |d| / I - m*)   where U d < 0 (the step moves W_H away from W_S), else 1
    W_H    <- W_H - lr / (1 - beta1^t) * m * M / denom,  then clamped to [Q_0, Q_n] (``clamp_mode`` 0)
    k      <- nearest-level index of W_H (``LevelSet``'s bin grid: a table lookup and one comparison)

and, where a programmed-level record ``rec`` is given, every weight whose new k differs from ``rec`` is
written to ``changed`` (ascending flat indices) and ``rec`` is updated: the list of devices to program
comes out of the same pass.

The tensor is walked in chunks of ``CHUNK`` weights, each in three loops that stay in the core's cache:
the table lookups by the old index (scalar), the arithmetic (vectorised by LLVM: the whole point; a
single loop with the gathers in it is not, and ran 3.5 times slower), the new index and the diff (scalar).
``Runner`` splits the chunks among threads (the kernel releases the GIL); numba's own ``prange`` was not
used because its gufunc wrapper loses the arrays' contiguity and with it the vectorisation. tanh is a
rational approximation (``tanh_f32``), because libm's is not vectorised.

Float32 throughout, as the torch step: ``tests/test_optim_equivalence.py`` checks this kernel, the eager
torch step and the plain numpy reference of Algorithm 1 against each other. Compiled once per machine
(``cache=True``: numba's cache beside this file, or its per-user cache where that is read-only).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

#: weights per chunk of the parallel loop (a chunk's arrays stay in the per-core caches)
CHUNK = 1 << 12

CLAMP_HARD, CLAMP_NONE, CLAMP_SOFT = 0, 1, 2
#: the kernel's code of each ``--clamp`` mode
CLAMP_CODES = {"hard": CLAMP_HARD, "none": CLAMP_NONE, "soft": CLAMP_SOFT}


@numba.njit(cache=True, nogil=True, fastmath=False, error_model="numpy", inline="always")
def tanh_f32(x: float) -> float:
    """tanh in float32 as a rational function that the compiler can vectorise (libm's tanhf cannot be: it
    cost 7 of the kernel's 8 ms). The 13/6 minimax approximation on [-7.905, 7.905] that Eigen's
    ``ptanh_float`` uses (beyond that tanh is +-1 in float32); absolute error <= 4e-7 (tested)."""
    c = np.float32(7.90531110763549805)
    x = min(max(x, -c), c)
    x2 = x * x
    p = np.float32(-2.76076847742355e-16)
    p = p * x2 + np.float32(2.00018790482477e-13)
    p = p * x2 + np.float32(-8.60467152213735e-11)
    p = p * x2 + np.float32(5.12229709037114e-08)
    p = p * x2 + np.float32(1.48572235717979e-05)
    p = p * x2 + np.float32(6.37261928875436e-04)
    p = p * x2 + np.float32(4.89352455891786e-03)
    d = np.float32(1.19825839466702e-06)
    d = d * x2 + np.float32(1.18534705686654e-04)
    d = d * x2 + np.float32(2.26843463243900e-03)
    d = d * x2 + np.float32(4.89352518554385e-03)
    return p * x / d


_JIT = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")


@numba.njit(inline="never", **_JIT)
def _lookup(
    k: np.ndarray, q: np.ndarray, slope_side: np.ndarray, q_k: np.ndarray, s_dn: np.ndarray, s_up: np.ndarray
) -> None:
    """Per weight of a chunk, by its level index k: Q[k] and 2 m* / I for the interval below and above
    Q[k] (``slope_side``). Scalar: LLVM does not vectorise table gathers on this CPU (its cost model finds
    them unprofitable), so they get a loop of their own. The index is unsigned: a signed one adds numpy's
    negative-index wrap-around to every load."""
    for j in range(k.size):
        kj = np.uint32(k[j])
        q_k[j] = q[kj]
        s_dn[j] = slope_side[2 * kj]
        s_up[j] = slope_side[2 * kj + 1]


def _make_update(soft: bool):
    """``_update`` with the soft clamp compiled in or out: a branch in the loop, even one that never
    changes, stops its vectorisation."""

    @numba.njit(inline="never", **_JIT)
    def update(
        w: np.ndarray,
        g: np.ndarray,
        m: np.ndarray,
        v: np.ndarray,
        q_k: np.ndarray,
        w_s: np.ndarray,
        s_dn: np.ndarray,
        s_up: np.ndarray,
        scal: np.ndarray,
        meta: bool,
        clamp_mode: int,
    ) -> int:
        """Adam, the attenuation (Eq. 2) and the clamp of one chunk, in place (vectorised). Returns the number
        of attenuated weights."""
        one, zero = np.float32(1.0), np.float32(0.0)
        beta1, beta2 = scal[0], scal[1]
        c1, c2 = one - beta1, one - beta2
        inv_sqrt_bc2, eps, step_size, m_star = scal[2], scal[3], scal[4], scal[5]
        lo, hi, i_top, i_bottom = scal[6], scal[7], scal[9], scal[10]
        n_away = 0
        for j in range(w.size):
            gj = g[j]
            mj = beta1 * m[j] + c1 * gj
            vj = beta2 * v[j] + c2 * gj * gj
            m[j] = mj
            v[j] = vj
            wj = w[j]
            # branch-free (a branch in the loop stops its vectorisation): at m* = 0, t = tanh(0) = 0 and M = 1
            d = wj - w_s[j]  # W_H - W_S
            # 2 m* / I, I the nominal interval holding W_H; both loaded, then one chosen: a conditional load
            # becomes a gather, and the loop ran 1.5 times slower
            s_u, s_d = s_up[j], s_dn[j]
            slope = s_u if wj >= q_k[j] else s_d
            t = tanh_f32(slope * abs(d) - m_star)
            away = meta and mj * d < zero  # the step moves W_H away from W_S: attenuate it
            f = one - t * t if away else one
            n_away += 1 if away else 0
            step = step_size * (mj * f) / (math.sqrt(vj) * inv_sqrt_bc2 + eps)
            if soft:  # S = 1 - tanh^2(m* |x|) on outward steps past an outer level (docs/training.md)
                above = wj > hi
                x = (wj - hi) / i_top if above else (lo - wj) / i_bottom
                t = tanh_f32(m_star * x)
                outward = x > zero and (step < zero if above else step > zero)
                step = step * (one - t * t) if outward else step
            wj = wj - step
            if clamp_mode == CLAMP_HARD:
                wj = min(max(wj, lo), hi)
            w[j] = wj
        return n_away

    return update


_update = _make_update(False)
_update_soft = _make_update(True)


@numba.njit(inline="never", **_JIT)
def _reindex(
    w: np.ndarray,
    k: np.ndarray,
    lut: np.ndarray,
    thr: np.ndarray,
    scal: np.ndarray,
    top: int,
    track: bool,
    rec: np.ndarray,
    changed: np.ndarray,
    offset: int,
) -> int:
    """New level index of a chunk (``LevelSet.index``: a bin lookup and one comparison); where tracked,
    the weights whose index differs from ``rec`` are listed in ``changed`` (flat index + ``offset``) and
    ``rec`` updated. Returns how many were listed."""
    lo, inv_h = scal[6], scal[8]
    n_changed = 0
    for j in range(w.size):
        wj = w[j]
        x = (wj - lo) * inv_h
        b = np.uint32(0)  # unsigned: no wrap-around test for negative indices on the two loads
        if x >= top:
            b = np.uint32(top)
        elif x > 0:  # NaN and below Q_0: bin 0 (index 0, as LevelSet.index)
            b = np.uint32(x)
        kn = lut[b] + (1 if wj > thr[b] else 0)
        k[j] = kn
        if track and kn != rec[j]:
            rec[j] = kn
            changed[n_changed] = j + offset
            n_changed += 1
    return n_changed


@numba.njit(**_JIT)
def rule(
    w: np.ndarray,
    g: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    k: np.ndarray,
    ws: np.ndarray,
    rec: np.ndarray,
    changed: np.ndarray,
    q: np.ndarray,
    width_side: np.ndarray,
    lut: np.ndarray,
    thr: np.ndarray,
    scal: np.ndarray,
    flags: np.ndarray,
    begin: int,
    end: int,
) -> tuple[int, int]:
    """One step of Algorithm 1 on weights ``begin:end`` of flat float32 ``w`` (hidden weights), ``g``
    (gradient), ``m``, ``v`` (Adam moments), int32 ``k`` (in: level index before the step, out: after).
    ``ws``: read weights (used where ``flags[1]``); ``rec``: programmed-level record and ``changed`` its
    output list, written from ``changed[begin]`` on (used where ``flags[2]``). ``scal`` (float32) =
    [beta1, beta2, 1/sqrt(1 - beta2^t), eps, lr / (1 - beta1^t), m*, Q_0, Q_n, 1/h, I_n, I_0]
    (I_n, I_0: the outer intervals);
    ``flags`` (int64) = [clamp mode, W_S from ``ws``, track changes, top bin of the grid].
    Returns (weights listed in ``changed``, attenuated weights). Chunk by chunk, so that the three loops
    of a chunk work in the core's cache."""
    clamp_mode, use_ws, track, top = flags[0], flags[1] != 0, flags[2] != 0, flags[3]
    meta = scal[5] > 0
    soft = clamp_mode == CLAMP_SOFT and meta
    # 2 m* / I per level and side, once per call: the same division the rule would do per weight
    slope_side = (np.float32(2.0) * scal[5]) / width_side
    q_k = np.empty(CHUNK, dtype=np.float32)  # per chunk: Q[k], 2 m* / I below and above Q[k]
    s_dn = np.empty(CHUNK, dtype=np.float32)
    s_up = np.empty(CHUNK, dtype=np.float32)
    n_changed = 0
    n_away = 0
    for start in range(begin, end, CHUNK):
        stop = min(start + CHUNK, end)
        size = stop - start
        _lookup(k[start:stop], q, slope_side, q_k[:size], s_dn[:size], s_up[:size])
        chunk = (w[start:stop], g[start:stop], m[start:stop], v[start:stop])
        w_s = ws[start:stop] if use_ws else q_k[:size]  # W_S: the read weight, or the nominal level
        tables = (q_k[:size], w_s, s_dn[:size], s_up[:size])
        if soft:
            n_away += _update_soft(*chunk, *tables, scal, meta, clamp_mode)
        else:
            n_away += _update(*chunk, *tables, scal, meta, clamp_mode)
        n_changed += _reindex(
            w[start:stop],
            k[start:stop],
            lut,
            thr,
            scal,
            top,
            track,
            rec[start:stop] if track else rec[:1],
            changed[begin + n_changed :],
            start,
        )
    return n_changed, n_away


class Runner:
    """Runs a chunked kernel (``rule``, or ``fused_bnn.adam_meta``) over a tensor on ``threads`` threads (the
    kernels release the GIL): each thread takes a contiguous run of whole chunks, the caller's thread the
    first. ``run`` joins the lists of changed weights in order, so the result does not depend on the thread
    count."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0

    def map(self, kernel, threads: int, n: int, args: tuple) -> tuple[list, list[int]]:
        """``kernel(*args, begin, end)`` over ``0:n`` split in runs of whole chunks; returns each run's
        result and the run bounds."""
        n_chunks = (n + CHUNK - 1) // CHUNK
        parts = max(1, min(int(threads), n_chunks // 2))  # under two chunks each, threading costs more
        bounds = [min(n, (n_chunks * i // parts) * CHUNK) for i in range(parts + 1)]
        if parts == 1:
            return [kernel(*args, 0, n)], [0, n]
        if self._pool is None or self._pool_size < parts - 1:
            if self._pool is not None:
                self._pool.shutdown()
            self._pool = ThreadPoolExecutor(max_workers=parts - 1, thread_name_prefix="hwloop-rule")
            self._pool_size = parts - 1
        futures = [self._pool.submit(kernel, *args, bounds[i], bounds[i + 1]) for i in range(1, parts)]
        return [kernel(*args, bounds[0], bounds[1])] + [f.result() for f in futures], bounds

    def run(self, threads: int, n: int, args: tuple, changed: np.ndarray) -> tuple[np.ndarray, int]:
        results, bounds = self.map(rule, threads, n, args)
        if len(results) == 1:
            return changed[: results[0][0]], results[0][1]
        lists = [changed[b : b + r[0]] for b, r in zip(bounds, results, strict=False)]
        return np.concatenate(lists), sum(r[1] for r in results)


__all__ = ["CHUNK", "CLAMP_CODES", "CLAMP_HARD", "CLAMP_NONE", "CLAMP_SOFT", "Runner", "rule", "tanh_f32"]
