"""Matrix products split across Numba's threads, each part a single-threaded BLAS call.

Why not OpenBLAS's own threads: after a multi-threaded call its idle workers
keep spinning for about 0.1 s (``OPENBLAS_THREAD_TIMEOUT``, 2^28 cycles by
default), and a parallel Numba kernel started in that time shares the cores
with them. In EM, where the M-step's products alternate with the likelihood
kernels, the first blocks of each likelihood pass ran at half speed (measured on
2 cores: 40-48 ms a block of 256 rows after an M-step, 19-24 ms otherwise). Numba's
workers go to sleep almost at once, so ``fit`` keeps BLAS single-threaded
throughout and its wide products run here (:func:`fastcpa._threads.matmul`).
"""

import numpy as np
from numba import prange

from ._jit import jit


@jit(parallel=True)
def split_rows(A, B, out, parts):
    """``out = A @ B`` with A's rows in ``parts`` blocks, one BLAS product each.

    Each row of the result is the same product of one row and ``B`` whatever the
    split, so the result does not depend on ``parts``.

    Parameters
    ----------
    A : ndarray, shape (n, k), C-contiguous
    B : ndarray, shape (k, m), C- or F-contiguous
    out : ndarray, shape (n, m), C-contiguous, written in place
    parts : int
    """
    n = A.shape[0]
    for t in prange(parts):
        a = t * n // parts
        b = (t + 1) * n // parts
        if b > a:
            np.dot(A[a:b], B, out[a:b])


@jit(parallel=True)
def split_inner(A, B, partial, step):
    """``partial[t] = A[rows_t]^T @ B[rows_t]`` over blocks of ``step`` rows, whose
    sum (in a fixed order) is ``A^T B``: the result depends on ``step``, not on
    the threads.

    Parameters
    ----------
    A : ndarray, shape (n, h), C-contiguous
    B : ndarray, shape (n, m), C-contiguous
    partial : ndarray, shape (ceil(n / step), h, m), written in place
    step : int
    """
    n = A.shape[0]
    for t in prange(partial.shape[0]):
        a = t * step
        b = min(n, a + step)
        np.dot(A[a:b].T, B[a:b], partial[t])
