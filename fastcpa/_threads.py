"""BLAS threads while the pair kernels run.

The S = 1 likelihood kernel calls BLAS from inside Numba's threads (one GEMM
block per thread), and the other pair kernels alternate GEMMs with Numba
loops. A multi-threaded BLAS would oversubscribe the cores in the first case;
in the second, OpenBLAS's idle workers keep spinning for a while after each
call and take the cores from the Numba threads (measured: ``log_prob`` twice
as slow on 2 cores). So BLAS runs single-threaded for the duration of a
kernel call (threadpoolctl; the previous setting comes back afterwards).
"""

_controller = None


def blas_single_threaded():
    """Context manager limiting every loaded BLAS to one thread."""
    global _controller
    if _controller is None:
        import scipy.linalg.cython_blas  # noqa: F401  (Numba's np.dot calls SciPy's BLAS: load it first)
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")
