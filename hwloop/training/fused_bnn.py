"""The BNN baseline's ``Adam_meta`` step as one compiled pass over a weight tensor (numba).

The eager torch step of ``hwloop.training.bnn.AdamMeta`` makes about fifteen full-size passes with
temporaries; on the 20 M hidden weights of the 784-4096-4096-10 BNN it took 0.52 s per step here, twice
the forward and backward passes together. This kernel reads and writes every weight once:

    g  =  grad + weight_decay W_H
    m <-  beta1 m + (1 - beta1) g          v <- beta2 v + (1 - beta2) g^2
    M  =  1 - tanh^2(meta |W_H|)  where sign(W_H) m > 0 (the step would shrink |W_H|), else 1
    W_H <- W_H - lr sqrt(1 - beta2^t) / (1 - beta1^t) * (m M) / (sqrt(v) + eps)

Float32, vectorised (tanh is ``fused_cpu.tanh_f32``), split over threads by ``fused_cpu.Runner``.
``tests/test_bnn.py`` checks it against the eager step (which is checked against a transcription of their
code), to float tolerance.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from hwloop.training.fused_cpu import _JIT, CHUNK, tanh_f32


@numba.njit(inline="never", **_JIT)
def _update(w: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, s: np.ndarray, scal: np.ndarray) -> int:
    """The step on one chunk (whole arrays of their own: indexed at an offset into the full arrays, the loop
    was not vectorised and ran 15 times slower). Branch-free, for the same reason."""
    one, zero = np.float32(1.0), np.float32(0.0)
    beta1, beta2, eps, step_size, meta, wd = scal[0], scal[1], scal[2], scal[3], scal[4], scal[5]
    c1, c2 = one - beta1, one - beta2
    on = meta != zero
    n_att = 0
    for j in range(w.size):
        wj = w[j]
        gj = g[j] + wd * wj
        mj = beta1 * m[j] + c1 * gj
        vj = beta2 * v[j] + c2 * gj * gj
        m[j] = mj
        v[j] = vj
        t = tanh_f32(meta * abs(wj))
        sign_w = (one if wj > zero else zero) - (one if wj < zero else zero)
        cons = on and sign_w * mj > zero  # sign(W_H) m > 0: the step would shrink |W_H|
        f = one - t * t if cons else one
        n_att += 1 if cons else 0
        wn = wj - step_size * ((mj * f) / (math.sqrt(vj) + eps))
        w[j] = wn
        s[j] = (one if wn > zero else zero) - (one if wn < zero else zero)  # sign(W_H), as torch.sign
    return n_att


@numba.njit(**_JIT)
def adam_meta(
    w: np.ndarray,
    g: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    s: np.ndarray,
    scal: np.ndarray,
    begin: int,
    end: int,
) -> int:
    """One ``Adam_meta`` step on ``w[begin:end]`` (float32, flat) in place, with gradient ``g`` and Adam's
    moments ``m``, ``v``, chunk by chunk; ``s`` receives sign(W_H) after the step (the binary weights of
    the next forward pass, written in the same visit). ``scal`` (float32) = [beta1, beta2, eps, step size,
    meta (0: plain Adam), weight decay]. Returns the number of attenuated weights."""
    n_att = 0
    for start in range(begin, end, CHUNK):
        stop = min(start + CHUNK, end)
        n_att += _update(w[start:stop], g[start:stop], m[start:stop], v[start:stop], s[start:stop], scal)
    return n_att


__all__ = ["adam_meta"]
