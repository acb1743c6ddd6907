"""The one place CPU kernels get their Numba options.

float64 only, fastmath off (tails and geometry rely on inf/nan semantics), and
the on-disk cache controlled by ``FASTCPA_NUMBA_CACHE`` (read at import).
"""

from numba import njit

from ..._config import NUMBA_CACHE


def jit(fn=None, *, parallel=False):
    """``numba.njit`` with fastcpa's options; usable bare or with arguments."""
    opts = dict(cache=NUMBA_CACHE, fastmath=False, nogil=True, error_model="numpy", parallel=parallel)
    if fn is None:
        return lambda f: njit(**opts)(f)
    return njit(**opts)(fn)


_SCALARS = {}


def scalars(module):
    """The CPU-compiled copies of a scalar source module's functions (see ``kernels._scalar``)."""
    from .._scalar import compile_scalars

    return compile_scalars(module, jit, _SCALARS)
