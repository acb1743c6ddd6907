"""BLAS threads while the pair kernels run.

The S = 1 likelihood kernel calls BLAS from inside Numba's threads (one GEMM
block per thread), and the other pair kernels alternate GEMMs with Numba
loops. A multi-threaded BLAS would oversubscribe the cores in the first case;
in the second, OpenBLAS's idle workers keep spinning for a while after each
call and take the cores from the Numba threads (measured: ``log_prob`` twice
as slow on 2 cores). So BLAS runs single-threaded for the duration of a
kernel call (threadpoolctl; the previous setting comes back afterwards).

Calls may overlap across Python threads, so a per-call "save the current
setting, restore it afterwards" is wrong: a call entering while another holds
the limit saves 1 and later "restores" 1 for good. And OpenBLAS only lets a
thread undo its own change (a thread cannot raise a count another thread
lowered). So the user's setting is recorded once, when the first of the
overlapping calls enters, and every thread's outermost call puts back that
recorded setting itself when it leaves.
"""

import os
import threading

_controller = None
_lock = threading.Lock()
_active = 0  # threads inside blas_single_threaded
_user = None  # the BLAS settings found when the first of them entered
_local = threading.local()  # per thread: nesting depth


def _get_controller():
    global _controller
    if _controller is None:
        import scipy.linalg.cython_blas  # noqa: F401  (Numba's np.dot calls SciPy's BLAS: load it first)
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller


class _SingleThreadedBlas:
    def __enter__(self):
        global _active, _user
        depth = getattr(_local, "depth", 0)
        _local.depth = depth + 1
        if depth == 0:
            ctl = _get_controller()
            with _lock:
                if _active == 0:
                    _user = {lib.filepath: lib.num_threads for lib in ctl.select(user_api="blas").lib_controllers}
                _active += 1
            ctl.limit(limits=1, user_api="blas")
        return self

    def __exit__(self, *exc):
        global _active, _user
        depth = getattr(_local, "depth", 0)
        if depth == 0:  # reset by a fork while this call was open
            return False
        _local.depth = depth - 1
        if depth == 1:
            with _lock:
                user = _user
                _active -= 1
                if _active == 0:
                    _user = None
            _restore(user)
        return False


def _restore(user):
    for lib in _get_controller().select(user_api="blas").lib_controllers:
        n = user.get(lib.filepath)
        if n is not None and lib.num_threads != n:
            lib.set_num_threads(n)


def blas_single_threaded():
    """Context manager limiting every loaded BLAS to one thread.

    Safe to nest and to use from several threads at once: the setting found
    when the first of the overlapping calls entered comes back.
    """
    return _SingleThreadedBlas()


def _after_fork_in_child():
    # the child has only the forking thread: the calls other threads had open are gone
    global _lock, _active, _user, _local
    _lock = threading.Lock()
    user, _user, _active = _user, None, 0
    _local = threading.local()
    if user is not None:
        try:
            _restore(user)
        except Exception:  # best effort: the child keeps single-threaded BLAS
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# Products below this many multiply-adds run as one BLAS call: a split costs ~20 us.
_SPLIT_WORK = 1 << 22


def _split_parts(n, work):
    import numba

    return min(numba.get_num_threads(), n // 64) if work >= _SPLIT_WORK else 1


def matmul(A, B, out=None):
    """``A @ B`` for 2-D float64 arrays: a large product runs across Numba's
    threads, each part single-threaded BLAS (``kernels/cpu/gemm.py`` says why).

    Parameters
    ----------
    A : ndarray, shape (n, k)
    B : ndarray, shape (k, m)
    out : ndarray, shape (n, m), optional
        C-contiguous float64, written in place.

    Returns
    -------
    ndarray, shape (n, m)

    Examples
    --------
    >>> import numpy as np
    >>> from fastcpa._threads import matmul
    >>> A, B = np.arange(6.0).reshape(3, 2), np.ones((2, 2))
    >>> matmul(A, B).tolist()
    [[1.0, 1.0], [5.0, 5.0], [9.0, 9.0]]
    """
    import numpy as np

    n, k = A.shape
    m = B.shape[1]
    if out is None:
        out = np.empty((n, m))
    parts = _split_parts(n, n * k * m)
    ok = A.dtype == B.dtype == out.dtype == np.float64 and out.flags.c_contiguous and out.flags.writeable
    if parts < 2 or not ok:
        return np.matmul(A, B, out=out)
    from fastcpa.kernels.cpu.gemm import split_rows

    if not (B.flags.c_contiguous or B.flags.f_contiguous):
        B = np.ascontiguousarray(B)
    # a read-only A is copied (O(n k) beside the product's O(n k m)): one compiled kernel fewer
    A = np.ascontiguousarray(A) if A.flags.writeable else np.array(A, order="C")
    with blas_single_threaded():
        split_rows(A, B, out, parts)
    return out


def matmul_tn(A, B):
    """``A.T @ B`` for 2-D float64 arrays with many rows (n, h) and (n, m): a large
    product is split along the rows into partial sums across Numba's threads
    (:func:`matmul`), added in a fixed order.

    Examples
    --------
    >>> import numpy as np
    >>> from fastcpa._threads import matmul_tn
    >>> matmul_tn(np.ones((3, 2)), np.arange(3.0)[:, None]).tolist()
    [[3.0], [3.0]]
    """
    import numpy as np

    n, h = A.shape
    m = B.shape[1]
    # split by size alone: the partial sums' rounding then never follows the thread count
    if n * h * m < _SPLIT_WORK or n < 128 or not (A.dtype == B.dtype == np.float64):
        return A.T @ B
    from fastcpa.kernels.cpu.gemm import split_inner

    step = max(64, -(-n // 8))  # the partial sums follow n only, never the thread count
    partial = np.empty((-(-n // step), h, m))
    A = np.ascontiguousarray(A) if A.flags.writeable else np.array(A, order="C")
    B = np.ascontiguousarray(B) if B.flags.writeable else np.array(B, order="C")
    with blas_single_threaded():
        split_inner(A, B, partial, step)
    return partial.sum(axis=0)
