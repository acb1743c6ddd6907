"""Input checks shared by the public API: dtype policy and shape checks.

Everything that feeds a probability is float64. Real numeric input (ints,
float32, ...) is upcast; anything else is rejected with a message that names
the problem and the fix.
"""

import numpy as np


def as_float64(x, name, *, ndim=None, allow_nonfinite=False):
    """Return ``x`` as a C-contiguous float64 array after checking it.

    Parameters
    ----------
    x : array_like
        Input (NumPy array, list, scalar...). Real integer and floating dtypes
        are upcast to float64; bool, complex and object arrays are rejected.
    name : str
        Name used in error messages.
    ndim : int, optional
        Required number of dimensions.
    allow_nonfinite : bool, default False
        Whether NaN/inf entries are acceptable.

    Returns
    -------
    numpy.ndarray
        float64, C-contiguous.

    Raises
    ------
    TypeError
        For non-numeric, boolean or complex input.
    ValueError
        For a wrong number of dimensions or non-finite entries.
    """
    if type(x).__module__.split(".")[0] == "cupy":
        raise TypeError(f"{name} is a CuPy array; this operation runs on the CPU only for now: pass cupy.asnumpy({name}).")
    arr = np.asarray(x)
    if arr.dtype == object or arr.dtype.kind not in "iuf":
        raise TypeError(
            f"{name} must be a real numeric array (got dtype {arr.dtype}); convert it with np.asarray({name}, dtype=float)."
        )
    arr = np.asarray(arr, dtype=np.float64, order="C")  # (ascontiguousarray would make 0-d arrays 1-d)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {arr.shape}.")
    if not allow_nonfinite and not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f"{name} contains NaN or inf (first at index {tuple(int(i) for i in bad)}); remove or impute those entries.")
    return arr


def as_points(Z, dim, name="Z"):
    """Check a batch of points: shape (N, dim) (a 1-D array is read as N points when dim == 1)."""
    arr = as_float64(Z, name)
    if arr.ndim == 1 and dim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{name} must have shape (N, {dim}), got {arr.shape}.")
    return arr


def check_backend(backend, what):
    """Validate a ``backend`` argument; only CPU kernels exist for ``what`` so far."""
    if backend not in ("auto", "cpu", "gpu"):
        raise ValueError(f"backend must be 'auto', 'cpu' or 'gpu', got {backend!r}.")
    if backend == "gpu":
        raise NotImplementedError(f"{what} has no GPU kernels yet; use backend='cpu' (or 'auto').")
