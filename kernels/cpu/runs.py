"""Sums of consecutive rows: the adjoint of repeating rows (the M-step's grouped products).

``numpy.add.reduceat`` along the first axis, and a sparse 0/1 matrix product,
both took about 60 ms to fold 3,120 rows of 2,048 numbers into 2,064 sums on a
2-core machine, about half a GEMM of the same rows by a 1024 x 1024 matrix:
too slow for the work they save. A run per thread reads each row once.
"""

from numba import prange

from ._jit import jit


@jit(parallel=True)
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
    for g in prange(out.shape[0]):
        a, b = off[g], off[g + 1]
        for j in range(c):
            out[g, j] = X[a, j]
        for r in range(a + 1, b):
            for j in range(c):
                out[g, j] += X[r, j]
