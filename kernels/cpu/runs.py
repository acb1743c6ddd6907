"""Sums of consecutive rows: the adjoint of repeating rows (the M-step's grouped products).

``numpy.add.reduceat`` along the first axis, and a sparse 0/1 matrix product,
both took about 60 ms to fold 3,120 rows of 2,048 numbers into 2,064 sums on a
2-core machine, about half a GEMM of the same rows by a 1024 x 1024 matrix:
too slow for the work they save. These loops read each row once.

They are serial on purpose: called between the BLAS products of the M-step, a
``parallel=True`` kernel waited milliseconds a call for its threads (OpenBLAS's
were still spinning on the two cores), and the operator of ``[1, 256, 256, 256,
64]`` took 52 ms an application with them parallel, 7.6 ms serial.
"""

import numpy as np

from ._jit import jit


@jit
def sum_runs(X, off, out):
    """``out[g] = X[off[g]:off[g + 1]].sum(axis=0)``, in row order within each run.

    Parameters
    ----------
    X : ndarray, shape (n, c), float64, C-contiguous
    off : ndarray, shape (G + 1,), int64
        Run boundaries, ``0 = off[0] < off[1] < ... < off[G] = n``.
    out : ndarray, shape (G, c), float64
        Written in place.
    """
    c = X.shape[1]
    for g in range(out.shape[0]):
        a, b = off[g], off[g + 1]
        for j in range(c):
            out[g, j] = X[a, j]
        for r in range(a + 1, b):
            for j in range(c):
                out[g, j] += X[r, j]


# ----------------------------------------------------------------------------- products along runs of groups
# Groups of regions in sorted order (fastcpa.mstep._Levels) whose inputs x_g = q_g * a_p
# (a unit-slope mask times their parent's pre-activations) differ from the group before
# them in a few units only: a product M x_g is then the previous one plus a column of M
# per unit that changed. A run starts at an "anchor", whose product comes from a GEMM.
# Arrays: q's changes as CSR (ptr over groups, unit, dq), parent[g] the row of A of group g.


@jit
def _add_row(acc, X, g):
    """``acc += X[g]`` (a run's suffix sum, walking it backwards)."""
    for c in range(acc.shape[0]):
        for o in range(acc.shape[1]):
            acc[c, o] += X[g, c, o]


@jit
def _axpy(y, a, x):
    """``y += a x`` (one column of a product, for one changed unit)."""
    for o in range(y.shape[0]):
        y[o] += a * x[o]


@jit
def run_products(Y, start, end, ptr, unit, dq, parent, A, Mt):
    """Fill ``Y[g] = Y[g - 1] + sum_f dq[f] A[parent[g], :, unit[f]] (x) Mt[unit[f]]`` along each
    run ``start[r] < g < end[r]`` (``Y[start[r]]``, the anchor's product, given).

    Y : (G, m, n) ; A : (P, m, h) ; Mt : (h, n), all float64
    """
    m, n = Y.shape[1], Y.shape[2]
    for r in range(start.shape[0]):
        for g in range(start[r] + 1, end[r]):
            for c in range(m):
                for o in range(n):
                    Y[g, c, o] = Y[g - 1, c, o]
            p = parent[g]
            for f in range(ptr[g], ptr[g + 1]):
                i = unit[f]
                for c in range(m):
                    _axpy(Y[g, c], dq[f] * A[p, c, i], Mt[i])


@jit
def run_products_adjoint(X, start, end, ptr, unit, dq, Mt, Z):
    """The adjoint of :func:`run_products` past the anchors: for every change ``f`` at group
    ``g`` of run ``r``, ``Z[r, :, unit[f]] += dq[f] * (sum_{g' >= g in r} X[g']) @ Mt[unit[f]]``.

    X : (G, m, n) ; Mt : (h, n) ; Z : (R, m, h), updated in place
    """
    m, n = X.shape[1], X.shape[2]
    for r in range(start.shape[0]):
        suffix = np.zeros((m, n))
        for g in range(end[r] - 1, start[r], -1):
            _add_row(suffix, X, g)
            for f in range(ptr[g], ptr[g + 1]):
                i = unit[f]
                for c in range(m):
                    s = 0.0
                    for o in range(n):
                        s += suffix[c, o] * Mt[i, o]
                    Z[r, c, i] += dq[f] * s


@jit
def run_contract(X, start, end, ptr, unit, dq, parent, A, outT):
    """The changes' part of ``sum_g X_g^T (q_g * A_parent(g))``: for every change ``f`` at
    group ``g`` of run ``r``, ``outT[unit[f]] += dq[f] sum_c A[parent[g], c, unit[f]] *
    (sum_{g' >= g in r} X[g', c])``.

    X : (G, m, n) ; A : (P, m, h) ; outT : (h, n), updated in place
    """
    m, n = X.shape[1], X.shape[2]
    suffix = np.zeros((m, n))
    for r in range(start.shape[0]):
        suffix[:] = 0.0
        for g in range(end[r] - 1, start[r], -1):
            _add_row(suffix, X, g)
            p = parent[g]
            for f in range(ptr[g], ptr[g + 1]):
                i = unit[f]
                for c in range(m):
                    _axpy(outT[i], dq[f] * A[p, c, i], suffix[c])
