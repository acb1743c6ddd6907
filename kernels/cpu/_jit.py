"""The one place CPU kernels get their Numba options.

float64 only, fastmath off (tails and geometry rely on inf/nan semantics), and
the on-disk cache controlled by ``FASTCPA_NUMBA_CACHE`` (read at import).

Two process-level hazards are handled here, so every kernel gets the same
treatment:

* **No writable cache.** On a read-only install Numba finds nowhere to put
  its cache and refuses to decorate the kernel ("no locator available"). The
  kernel is then compiled without a cache, with one warning that says how to
  keep a cache (``NUMBA_CACHE_DIR``) or silence it (``FASTCPA_NUMBA_CACHE=0``).
* **Threading layers.** Numba runs ``parallel=True`` kernels on the first of
  TBB, OpenMP, workqueue that loads. None of the two that need no extra
  package is both fork- and thread-safe: GNU OpenMP kills a child process
  created by ``fork()`` after it ran (``multiprocessing`` workers die and
  ``Pool.map`` hangs), and workqueue aborts on concurrent calls from several
  threads. So parallel kernels are called through :class:`ParallelKernel`,
  which raises a clear error in such a forked child (naming spawn /
  forkserver) instead of letting the process die, and serialises concurrent
  calls when the layer is workqueue. TBB (``pip install tbb``) is safe in
  both respects and is preferred by Numba when present. Parallel kernels are
  therefore entry points called from Python, never from other jitted code.
"""

import glob
import hashlib
import os
import sys
import threading
import warnings

from numba import njit

from ..._config import NUMBA_CACHE

_cache_warned = False

_STAMP = "fastcpa-kernel-sources.sha256"


def _drop_stale_cache():
    """Delete cached kernels compiled from other kernel sources than these.

    Numba keys a cached kernel on its own module file only, but the kernels
    inline the scalar modules (``kernels/_normal.py``, ``_interval.py``, ...):
    after a change (or an upgrade) that touches only those, the cache would
    serve kernels built from the old mathematics. So the cache folders carry
    a hash of every kernel source, and a mismatch empties them first.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    sources = sorted(glob.glob(os.path.join(os.path.dirname(here), "*.py")) + glob.glob(os.path.join(here, "*.py")))
    digest = hashlib.sha256()
    for path in sources:
        with open(path, "rb") as f:
            digest.update(f.read())
    digest = digest.hexdigest()
    folders = [os.path.join(here, "__pycache__")]
    user = os.environ.get("NUMBA_CACHE_DIR")
    if user:  # Numba mirrors the source folder's path below it
        tail = os.path.join("kernels", "cpu")
        folders += [root for root, _, _ in os.walk(user) if root.endswith(tail)]
    for folder in folders:
        stamp = os.path.join(folder, _STAMP)
        try:
            with open(stamp) as f:
                if f.read().strip() == digest:
                    continue
        except OSError:
            pass
        try:
            for path in glob.glob(os.path.join(folder, "*.nb[ic]")):
                os.remove(path)
            os.makedirs(folder, exist_ok=True)  # (Numba would create it; stamped before it fills)
            with open(stamp, "w") as f:
                f.write(digest)
        except OSError:  # a read-only or concurrently cleaned cache: Numba copes with what is there
            pass


if NUMBA_CACHE:
    _drop_stale_cache()


def _njit(fn, opts):
    global _cache_warned
    try:
        return njit(**opts)(fn)
    except RuntimeError as err:
        if not opts["cache"] or "no locator available" not in str(err):
            raise
        if not _cache_warned:
            _cache_warned = True
            warnings.warn(
                "fastcpa: Numba has no writable place for its kernel cache here (a read-only install?), so kernels "
                "are compiled on every start without a cache. Set NUMBA_CACHE_DIR to a writable folder to keep a "
                "cache, or FASTCPA_NUMBA_CACHE=0 to turn the cache off and silence this warning.",
                RuntimeWarning, stacklevel=4)
        return njit(**{**opts, "cache": False})(fn)


def jit(fn=None, *, parallel=False):
    """``numba.njit`` with fastcpa's options; usable bare or with arguments.

    ``parallel=True`` kernels come back wrapped in :class:`ParallelKernel`.
    """
    opts = dict(cache=NUMBA_CACHE, fastmath=False, nogil=True, error_model="numpy", parallel=parallel)

    def build(f):
        d = _njit(f, opts)
        return ParallelKernel(d) if parallel else d

    if fn is None:
        return build
    return build(fn)


# ----------------------------------------------------------------------------- threading-layer safety
_FORKED_AFTER_GNU_OMP = False  # set in a child forked after GNU OpenMP ran in the parent
_layer = None  # the threading layer in use, once Numba has started it
_layer_lock = threading.Lock()
_workqueue_lock = threading.Lock()

FORK_MESSAGE = (
    "fastcpa cannot run its parallel kernels in this process: it was created by fork() (multiprocessing's 'fork' "
    "start method, the default on Linux before Python 3.14) from a process that had already run Numba's GNU "
    "OpenMP threading layer, which is not fork-safe (the call would kill this process). Start worker processes "
    "with 'spawn' or 'forkserver' instead, e.g. multiprocessing.get_context('spawn').Pool(...) or "
    "ProcessPoolExecutor(mp_context=multiprocessing.get_context('forkserver')); or install TBB "
    "(pip install tbb), whose threading layer is fork-safe; or set NUMBA_THREADING_LAYER=workqueue before "
    "importing fastcpa (fork-safe; concurrent calls from several threads then take turns).")


def threading_layer():
    """The Numba threading layer parallel kernels run on (starting Numba's thread pool if needed)."""
    global _layer
    if _layer is None:
        with _layer_lock:
            if _layer is None:
                import numba

                numba.get_num_threads()  # launches the pool: the layer is chosen here
                _layer = numba.threading_layer()
    return _layer


def _after_fork_in_child():
    """Mark the child unusable for parallel kernels if the parent had GNU OpenMP running."""
    global _FORKED_AFTER_GNU_OMP, _workqueue_lock, _layer_lock
    _workqueue_lock, _layer_lock = threading.Lock(), threading.Lock()  # a fork can copy a held lock
    par = sys.modules.get("numba.np.ufunc.parallel")
    if par is None or not getattr(par, "_is_initialized", False):
        return  # no pool ran before the fork: the child starts its own, safely
    try:
        layer = par.threading_layer()
    except ValueError:
        return
    if layer == "omp":
        omppool = sys.modules.get("numba.np.ufunc.omppool")
        if omppool is None or getattr(omppool, "openmp_vendor", "GNU") == "GNU":
            _FORKED_AFTER_GNU_OMP = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class ParallelKernel:
    """A ``parallel=True`` Numba dispatcher called through the checks in the module notes.

    Attribute access (``py_func``, ``signatures``, ...) goes to the dispatcher.
    """

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        for attr in ("__name__", "__qualname__", "__doc__", "__module__"):
            # (under NUMBA_DISABLE_JIT=1 the "dispatcher" is the Python function itself)
            setattr(self, attr, getattr(getattr(dispatcher, "py_func", dispatcher), attr, None))

    def __call__(self, *args, **kwargs):
        if _FORKED_AFTER_GNU_OMP:
            raise RuntimeError(FORK_MESSAGE)
        if threading_layer() == "workqueue":  # not thread-safe: one caller at a time
            with _workqueue_lock:
                return self.dispatcher(*args, **kwargs)
        return self.dispatcher(*args, **kwargs)

    def __getattr__(self, name):
        if name == "dispatcher":  # not set yet (e.g. mid-copy): avoid recursing
            raise AttributeError(name)
        return getattr(self.dispatcher, name)

    def __repr__(self):
        return f"ParallelKernel({self.dispatcher!r})"


_SCALARS = {}


def scalars(module):
    """The CPU-compiled copies of a scalar source module's functions (see ``kernels._scalar``)."""
    from .._scalar import compile_scalars

    return compile_scalars(module, jit, _SCALARS)
