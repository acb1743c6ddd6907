"""Numba CPU kernel for the affine maps of the regions, layer by layer.

Inside a region with activation pattern ``q`` (``q_k = 1`` for an on unit,
the unit's slope ``eta_k`` when off) the next layer's pre-activation is
``W diag(q) U_parent + c``, where ``U_parent`` (rows: d/dz_1 ... d/dz_S,
offset) is the parent region's map of this layer. Regions next to each other
in the enumeration order differ in a few bits of ``q`` (about 2.6 on average
for the benchmark nets), so instead of one dense product per region (a GEMM
of ``R x (S+1) x width x out`` multiply-adds) the kernel updates the previous
region's map by one rank-one term per flipped unit.

Rounding: an update adds at most a few ulps of the terms it adds. A row is
recomputed in full (a plain product, so exact zeros stay exactly zero) at the
start of every block of at most ``restart`` rows, and whenever the size of
one of its rows' terms, ``mag_a = sum_k |q_k U_ak| max_d |W_dk|``, has fallen
below 1/8 of its largest value since the last full product. So every entry
of row ``a`` stays within about ``8 * restart`` ulps of ``mag_a``, the same
kind of bound as a dense product's, even where a region's map cancels: a dead
ReLU region gets a slope of exactly zero.
"""

import numpy as np
from numba import prange

from ._jit import jit

# A row is recomputed when a term size falls below this fraction of its peak.
_MAG_DROP = 0.125


@jit
def _full_product(U, q, Wt, c, wnorm, acc, mag):
    """``acc = (q * U) @ Wt`` plus ``c`` on the offset row; ``mag`` its term sizes."""
    S1 = U.shape[0]
    w, m = Wt.shape
    acc[:, :] = 0.0
    mag[:] = 0.0
    for k in range(w):
        for a in range(S1):
            t = q[k] * U[a, k]
            if t != 0.0:
                mag[a] += abs(t) * wnorm[k]
                for d in range(m):
                    acc[a, d] += t * Wt[k, d]
    for d in range(m):
        acc[S1 - 1, d] += c[d]


@jit(parallel=True)
def scaled_maps_product(U_prev, parent, code, eta, Wt, c, block_ptr, A, b):
    """``A[r], b[r]`` = the rows of ``(q_r * U_prev[parent[r]]) @ Wt`` (+ ``c`` on the offset).

    Parameters
    ----------
    U_prev : (P, S+1, w) float64
        Parents' maps of this layer: S slope rows, then the offset row.
    parent : (n,) int64
    code : (n, w) bool
        On/off state of the layer's units in each row's region.
    eta : (w,) float64
        Off-slope per unit (``q = 1`` when on, ``eta`` when off).
    Wt : (w, out) float64
        The next layer's weights, transposed.
    c : (out,) float64
        The next layer's bias.
    block_ptr : (B+1,) int64
        Row blocks; all rows of a block share one parent. The first row of a
        block is a full product, the others (mostly) rank-one updates of the
        row before (see the module docstring).
    A : (n, S, out) float64, written
        Slope rows (may be a strided view, e.g. of an (n, out, S) array).
    b : (n, out) float64, written
        Offset rows.
    """
    S1 = U_prev.shape[1]
    S = S1 - 1
    w, m = Wt.shape
    wnorm = np.zeros(w)
    for k in range(w):
        for d in range(m):
            wnorm[k] = max(wnorm[k], abs(Wt[k, d]))
    for blk in prange(block_ptr.shape[0] - 1):
        r0 = block_ptr[blk]
        r1 = block_ptr[blk + 1]
        U = U_prev[parent[r0]]
        acc = np.empty((S1, m))
        mag = np.empty(S1)
        peak = np.empty(S1)
        q = np.empty(w)
        for k in range(w):
            q[k] = 1.0 if code[r0, k] else eta[k]
        _full_product(U, q, Wt, c, wnorm, acc, mag)
        peak[:] = mag
        for r in range(r0, r1):
            if r > r0:
                # new term sizes first: they decide between updates and a full product
                for k in range(w):
                    qk = 1.0 if code[r, k] else eta[k]
                    if qk != q[k]:
                        for a in range(S1):
                            mag[a] += (abs(qk) - abs(q[k])) * abs(U[a, k]) * wnorm[k]
                full = False
                for a in range(S1):
                    if mag[a] < _MAG_DROP * peak[a]:
                        full = True
                if full:
                    for k in range(w):
                        q[k] = 1.0 if code[r, k] else eta[k]
                    _full_product(U, q, Wt, c, wnorm, acc, mag)
                    peak[:] = mag
                else:
                    for k in range(w):
                        qk = 1.0 if code[r, k] else eta[k]
                        dq = qk - q[k]
                        if dq != 0.0:
                            q[k] = qk
                            for a in range(S1):
                                t = dq * U[a, k]
                                for d in range(m):
                                    acc[a, d] += t * Wt[k, d]
                    for a in range(S1):
                        peak[a] = max(peak[a], mag[a])
            for a in range(S):
                for d in range(m):
                    A[r, a, d] = acc[a, d]
            for d in range(m):
                b[r, d] = acc[S, d]
