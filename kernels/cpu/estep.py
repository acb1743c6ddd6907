"""Numba CPU kernels of the exact E-step: (sample, region) pairs reduced to per-region statistics.

For one GEMM chunk (``XA``, ``Xb`` as in ``pairs``) and each sample's exact
``log p(x_i)``, every pair's posterior weight ``w = exp(term - log p(x_i))``
and truncated moments ``m``, ``C`` are formed and folded straight into the
region's

    T0 += w        T1 += w m        T2 += w (C + m m^T)

while ``w`` and ``w m`` are written out (region-major, ``Wt[r, i]`` and
``Mt[r, s, i]``) for the two products that need the samples,
``Tx = Wt X`` and ``Txz = Mt X``: those are GEMMs, left to BLAS. So nothing
of size (samples x regions x S^2) is written.

Threads own regions, interleaved over the parallel loop so central and
outlying regions share the work; each region's sums run over the samples in
order, so the result does not depend on the thread count. For S = 1
(:func:`estep_block_1d`) threads own blocks of ``ROWS_1D`` rows instead, with
the GEMM fused in as in ``pairs.log_prob_block_1d``, each block summing into
its own row of the per-region sums, which the caller adds in order: again
independent of the thread count (on ``[1, 256, 256, 256, 64]``, N = 1000,
30% faster than the region-major chunks, which remain for S = 2 and
whole-space regions). The kernels read
the chunk's products region by region: pass them region-major
(:func:`region_major`), where a region's samples lie next to each other (in
the GEMM's own sample-major layout, the step from one sample to the next is
a power-of-two stride that maps every read to one cache set).

A pair whose term lies below ``floor[i]`` (``log p(x_i) - gap``) weighs less
than ``exp(-gap)`` and is left out, before its region's moments are computed
where a bound shows it: ``log kappa`` (``Phi <= 1``), and for S = 1 the
interval's Gaussian tail bound as in ``pairs.log_prob_block_1d``. The pair
arithmetic is ``pairs``' own (``_kappa_and_mean``, ``_rel_log_kappa``,
``_truncate``), on the same products and references, so the terms are those
``log p(x_i)`` was folded from.
"""

import math

import numpy as np
from numba import prange

from .pairs import (_REF_LK, SERIES_SCRATCH, _kappa_and_mean, _kappa_and_mean_2d, _log_mass_bound, _rel_log_kappa, _scratch,
                    _term_and_moments_2d, _truncate, _truncate_2d, interval_moments, polygon_cap)
from ._jit import jit

# regions interleaved over at most this many parallel blocks
_BLOCKS = 64


def region_major(XA, Xb):
    """Views of a chunk's products ``XA`` (n, R, S) and ``Xb`` (n, R) with the
    same indices and values, stored region-major (a copy: the bits are the
    GEMM's own)."""
    XAr = np.ascontiguousarray(np.moveaxis(XA, 0, -1))
    return np.moveaxis(XAr, -1, 0), np.ascontiguousarray(Xb.T).T


@jit
def _accumulate(w, m, C, i, r, T0, T1, T2, Wt, Mt):
    """Fold one pair (weight ``w``, truncated mean ``m``, covariance ``C``) into region r."""
    S = m.shape[0]
    T0[r] += w
    Wt[r, i] = w
    for s in range(S):
        ws = w * m[s]
        T1[r, s] += ws
        Mt[r, s, i] = ws
        for t in range(S):
            T2[r, s, t] += w * (C[s, t] + m[s] * m[t])


@jit(parallel=True)
def estep_chunk(XA, Xb, xx, Xs, REF, Ab, bb, Sigma, logdet_lam, Aw, gz, an, s2, lo, hi, whole, const, top, lsum,
                floor, T0, T1, T2, Wt, Mt):
    """Add one chunk's pairs to the statistics (S = 1 intervals, or whole-space regions;
    the library's S = 1 statistics run :func:`estep_block_1d`, which a test compares with this).

    ``top + lsum`` and ``floor`` are the chunk's samples' exact
    log-likelihood (the running maximum and the log of the scaled sum, kept
    apart: a weight is ``exp((term - top) - lsum)``, where ``term - top`` is
    exact for the terms that matter) and cut-off, relative to the rows'
    references ``REF`` (set by the likelihood pass over the same chunks, see
    ``pairs``); ``T0``, ``T1``, ``T2`` the chunk's regions' rows of the
    statistics, added to in place; ``Wt`` (R, n) and ``Mt`` (R, S, n) receive
    the weights and weighted means (zero for the pairs left out).
    """
    n, R = Xb.shape
    S = Ab.shape[1]
    nb = min(R, _BLOCKS)
    for blk in prange(nb):
        y = np.empty(S)
        mu = np.empty(S)
        m = np.empty(S)
        C = np.empty((S, S))
        for r in range(blk, R, nb):
            hl = 0.5 / Sigma[r, 0, 0]
            for i in range(n):
                Wt[r, i] = 0.0
                for s in range(S):
                    Mt[r, s, i] = 0.0
                lk, err = _kappa_and_mean(XA, Xb, xx, Ab, bb, Sigma, logdet_lam, const, an, i, r, y, mu)
                lk += err - REF[i, _REF_LK]  # a bound, relative to the reference
                if lk < floor[i] or (not whole[r] and lk + _log_mass_bound(lo[r], hi[r], mu[0], hl) < floor[i]):
                    continue
                lk = _rel_log_kappa(Aw, gz, r, mu, s2, logdet_lam, i, REF)
                term = lk + _truncate(mu, Sigma, r, lo, hi, whole, m, C)
                if term >= floor[i]:
                    _accumulate(math.exp((term - top[i]) - lsum[i]), m, C, i, r, T0, T1, T2, Wt, Mt)


@jit(parallel=True)
def gather_statistics(TERM, MOM, top, lsum, floor, T0, T1, T2, Wt, Mt):
    """Add a block of rows' kept pairs to the statistics: what the likelihood pass
    kept of them (``pairs.log_prob_chunk`` and its S = 1 and S = 2 kernels with
    buffers: ``TERM`` (n, R) each pair's term relative to its row's reference,
    ``-inf`` where not kept, ``MOM`` (n, R, S + S^2) its mean and covariance),
    weighed by the rows' log-likelihood ``top + lsum`` and cut at ``floor`` as
    :func:`estep_chunk` does. ``T0``, ``T1``, ``T2`` (the R regions' rows),
    ``Wt`` (R, n) and ``Mt`` (R, S, n) as there, but pass them as transposed views
    of sample-major arrays (n, R) and (n, R, S), as the buffers are: every read
    and write then runs along a row.
    Threads own contiguous blocks of regions, each region summing its rows in
    order (independent of the thread count)."""
    n, R = TERM.shape
    S = T1.shape[1]
    nb = min(R, _BLOCKS)
    width = (R + nb - 1) // nb
    for blk in prange(nb):
        m = np.empty(S)
        C = np.empty((S, S))
        r0 = blk * width
        r1 = min(R, r0 + width)
        for i in range(n):
            for r in range(r0, r1):
                Wt[r, i] = 0.0
                for s in range(S):
                    Mt[r, s, i] = 0.0
                t = TERM[i, r]
                if t >= floor[i]:
                    for s in range(S):
                        m[s] = MOM[i, r, s]
                        for u in range(S):
                            C[s, u] = MOM[i, r, S + S * s + u]
                    _accumulate(math.exp((t - top[i]) - lsum[i]), m, C, i, r, T0, T1, T2, Wt, Mt)


#: Rows per block of :func:`estep_block_1d` (fixed: the sums do not depend on the thread count).
ROWS_1D = 16


@jit(parallel=True)
def estep_block_1d(Xw, G, xx, ab, bb, logdet_lam, const, sig, hl, lo, hi, whole, Aw, gz, an, s2, REF, top, lsum,
                   floor, T0b, T1b, T2b, Wt, Mt):
    """:func:`estep_chunk` for S = 1 intervals with the GEMM fused in, as
    ``pairs.log_prob_block_1d`` forms the likelihood: each block of
    ``ROWS_1D`` rows takes its products with every region, ``Xw[rows] @ G``
    (``G = [A~ | b~]``, D x 2R), and its pairs' weights and moments, the same
    arithmetic as :func:`estep_chunk` (the cheap ``log kappa`` in
    ``_kappa_and_mean``'s order, its rounding bound and the tail bound to
    leave pairs out, then ``_rel_log_kappa`` and the interval's moments).

    Row block ``b`` adds its sums into ``T0b[b]`` (R,), ``T1b[b]``,
    ``T2b[b]`` (R,): the caller adds the blocks in order, so the result does
    not depend on the thread count. ``Wt`` (R, n), ``Mt`` (R, 1, n) as in
    :func:`estep_chunk`."""
    n = Xw.shape[0]
    R = ab.shape[0]
    for bk in prange((n + ROWS_1D - 1) // ROWS_1D):
        i0 = bk * ROWS_1D
        i1 = min(n, i0 + ROWS_1D)
        P = np.dot(Xw[i0:i1], G)
        mu = np.empty(1)
        for i in range(i0, i1):
            li = i - i0
            xi = xx[i]
            sx = math.sqrt(xi)
            lref = REF[i, _REF_LK]
            fl = floor[i]
            for r in range(R):
                Wt[r, i] = 0.0
                Mt[r, 0, i] = 0.0
                y = P[li, r] - ab[r]
                mu0 = sig[r] * y
                xb = P[li, R + r]
                t = const - 0.5 * (logdet_lam[r] + (xi - 2.0 * xb + bb[r] - y * mu0))
                e = an[r, 1] * (xi + 2.0 * abs(xb) + bb[r] + abs(y * mu0)
                                + 2.0 * abs(mu0) * an[r, 0] * (sx + math.sqrt(bb[r])))
                lk = t + e - lref
                if lk < fl or (not whole[r] and lk + _log_mass_bound(lo[r], hi[r], mu0, hl[r]) < fl):
                    continue
                mu[0] = mu0
                rel = _rel_log_kappa(Aw, gz, r, mu, s2, logdet_lam, i, REF)
                if whole[r]:
                    lm, m, v = 0.0, mu0, sig[r]
                else:
                    lm, m, v = interval_moments(lo[r], hi[r], mu0, math.sqrt(sig[r]))
                term = rel + lm
                if term >= fl:
                    w = math.exp((term - top[i]) - lsum[i])
                    T0b[bk, r] += w
                    wm = w * m
                    T1b[bk, r] += wm
                    T2b[bk, r] += w * (v + m * m)
                    Wt[r, i] = w
                    Mt[r, 0, i] = wm


@jit(parallel=True)
def estep_chunk_2d(XA, Xb, xx, Xs, REF, Ab, bb, Sigma, logdet_lam, Aw, gz, an, s2, whole, ptr, PW, LN, fptr, FN, FO,
                   FU, Lt, K, Rt, SC, SM, const, top, lsum, floor, T0, T1, T2, Wt, Mt):
    """:func:`estep_chunk` for S = 2: each pair's term as ``log_prob`` forms
    it (cut short by the polygon's tail bound below the floor), then, for the
    pairs that are kept, the polygon moments on the accurate path
    (``_term_and_moments_2d``)."""
    n, R = Xb.shape
    cap = polygon_cap(ptr)
    nb = min(R, _BLOCKS)
    for blk in prange(nb):
        y = np.empty(2)
        mu = np.empty(2)
        m = np.empty(2)
        C = np.empty((2, 2))
        sc = _scratch(cap)
        zs = np.empty(3)
        ser = np.empty(8)
        pw = np.empty(SERIES_SCRATCH)
        for r in range(blk, R, nb):
            for i in range(n):
                Wt[r, i] = 0.0
                Mt[r, 0, i] = 0.0
                Mt[r, 1, i] = 0.0
                lk, err = _kappa_and_mean_2d(XA, Xb, xx, Ab, bb, Lt, K, Rt, logdet_lam, const, an, i, r, y, mu)
                if lk + err - REF[i, _REF_LK] < floor[i]:
                    continue
                lk = _rel_log_kappa(Aw, gz, r, mu, s2, logdet_lam, i, REF)
                if whole[r]:
                    _truncate_2d(ptr, PW, LN, fptr, FN, FO, FU, Lt, whole, Sigma, r, mu, True, sc, m, C)
                else:  # the term, and the moments where it is at or above the floor
                    lk = _term_and_moments_2d(ptr, PW, LN, fptr, FN, FO, FU, Lt, Aw, gz, s2, logdet_lam, REF, i, r,
                                              mu, lk, floor[i], top[i] + lsum[i], sc, zs, SC, SM, ser, pw, m, C)
                    if lk < floor[i]:
                        continue
                _accumulate(math.exp((lk - top[i]) - lsum[i]), m, C, i, r, T0, T1, T2, Wt, Mt)
