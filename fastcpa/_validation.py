"""Input checks shared by the public API: dtype policy, shape and range checks.

Everything that feeds a probability is float64. Real numeric input (ints,
float32, torch tensors, ...) is upcast; anything else is rejected with a
message that names the argument, the problem and the fix.
"""

import math
import numbers
import operator

import numpy as np

# The smallest and largest positive normal float64.
_TINY = float(np.finfo(np.float64).tiny)
_HUGE = float(np.finfo(np.float64).max)
#: Range of a standard deviation whose square (a variance) and its reciprocal
#: (a precision) are normal float64 numbers: [1.5e-154, 1.3e154].
SCALE_RANGE = (math.sqrt(_TINY), math.sqrt(_HUGE))


def as_float64(x, name, *, ndim=None, allow_nonfinite=False, copy=False):
    """Return ``x`` as a C-contiguous float64 array after checking it.

    Parameters
    ----------
    x : array_like
        Input (NumPy array, list, scalar, torch tensor...). Real integer and
        floating dtypes are upcast to float64; bool, complex and object arrays
        are rejected. A torch tensor is detached and copied to the CPU (a
        tensor that requires grad is fine: only its values are used).
    name : str
        Name used in error messages.
    ndim : int, optional
        Required number of dimensions.
    allow_nonfinite : bool, default False
        Whether NaN/inf entries are acceptable.
    copy : bool, default False
        Always return a new array (never a view of the caller's memory): for
        values the caller keeps and could edit later while they are cached.

    Returns
    -------
    numpy.ndarray
        float64, C-contiguous.

    Raises
    ------
    TypeError
        For non-numeric, boolean or complex input, or a CuPy array.
    ValueError
        For a wrong number of dimensions, non-finite entries or a masked
        array with masked entries.
    """
    module = type(x).__module__.split(".")[0]
    if module == "cupy":
        raise TypeError(f"{name} is a CuPy array; this operation runs on the CPU only for now: pass cupy.asnumpy({name}).")
    if module == "torch" and hasattr(x, "detach"):
        # torch refuses .numpy() on tensors that require grad or live on a GPU
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ma.MaskedArray):
        # np.asarray would drop the mask and read whatever sits under it
        if np.ma.getmaskarray(x).any():
            raise ValueError(
                f"{name} is a masked array with masked entries; missing data is not supported by this call: "
                f"pass the filled array explicitly ({name}.filled(value)), or drop the masked rows.")
        x = np.ma.getdata(x)
    arr = np.array(x, copy=True) if copy else np.asarray(x)
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


def check_chunk(value, name):
    """Validate a chunk-size argument (``sample_chunk``, ``region_chunk``): an integer >= 1.

    Python and NumPy integers are accepted; floats (even 2.0) and bools are
    not, since a silently truncated or reinterpreted size is a bug.

    Returns
    -------
    int
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= 1 (a number of rows or regions per chunk), got {value!r} "
                        f"of type {type(value).__name__}; pass e.g. {name}=1024.")
    value = operator.index(value)
    if value < 1:
        raise ValueError(f"{name} must be an integer >= 1 (a number of rows or regions per chunk), got {value}; "
                         f"pass e.g. {name}=1024.")
    return value


def check_count(value, name, *, minimum=0):
    """Validate a count argument (number of samples, draws, iterations): an integer >= ``minimum``.

    Returns
    -------
    int
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r} of type {type(value).__name__}.")
    value = operator.index(value)
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}.")
    return value


def check_real(value, name, *, low=None, low_inclusive=True, allow_inf=False):
    """Validate a real scalar (a tolerance, a pruning gap, a ridge...): not NaN, optionally bounded below.

    Parameters
    ----------
    value : real scalar
    name : str
    low : float, optional
        Lower bound.
    low_inclusive : bool, default True
        Whether ``value == low`` is allowed.
    allow_inf : bool, default False
        Whether ``+inf`` is allowed (``-inf`` never is).

    Returns
    -------
    float
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {value!r} of type {type(value).__name__}.")
    value = float(value)
    if math.isnan(value) or value == -math.inf or (value == math.inf and not allow_inf):
        allowed = "a finite number or inf" if allow_inf else "a finite number"
        raise ValueError(f"{name} must be {allowed}, got {value}.")
    if low is not None and (value < low or (value == low and not low_inclusive)):
        op = ">=" if low_inclusive else ">"
        raise ValueError(f"{name} must be {op} {low}, got {value}.")
    return value


def check_gap(value, name="gap"):
    """Validate a pruning gap in nats: a positive number; ``inf`` turns pruning off.

    Returns
    -------
    float
    """
    try:
        return check_real(value, name, low=0.0, low_inclusive=False, allow_inf=True)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{err} The pruning gap is in nats and must be > 0 (default 40; {name}=inf keeps every "
                        "pair, no pruning).") from None


def check_scale(value, name):
    """Check positive standard deviations whose squares are normal float64 numbers.

    The likelihood works with variances ``value**2`` and precisions
    ``1 / value**2``; outside ``SCALE_RANGE`` = [1.5e-154, 1.3e154] one of
    them under- or overflows and the result would be silently wrong. (Kept in
    one place so the range is easy to widen once the arithmetic avoids
    squaring.)

    Parameters
    ----------
    value : numpy.ndarray
        float64 values, already checked finite (scalar or array).
    name : str
    """
    v = np.asarray(value)
    if np.any(v <= 0):
        raise ValueError(f"{name} must be > 0 (the likelihood is unbounded at zero noise), got "
                         f"{float(v.min()) if v.ndim else float(v)!r}.")
    lo, hi = SCALE_RANGE
    bad = (v < lo) | (v > hi)
    if np.any(bad):
        got = float(v[bad].flat[0]) if v.ndim else float(v)
        raise ValueError(
            f"{name} = {got!r} is outside the supported range [{lo:.3g}, {hi:.3g}]: {name}**2 must be a normal "
            f"float64 (its square and reciprocal square must neither underflow nor overflow). Rescale the data "
            f"(and {name}) by a power of two into that range.")


def check_region_index(r, n_regions, name="r"):
    """Validate one region index: an integer in ``[0, n_regions)`` (negative indices are not supported).

    Returns
    -------
    int
    """
    if isinstance(r, (bool, np.bool_)) or not isinstance(r, numbers.Integral):
        raise TypeError(f"region index {name} must be an integer, got {r!r} of type {type(r).__name__}.")
    r = operator.index(r)
    if not 0 <= r < n_regions:
        raise IndexError(f"region index {name} = {r} is out of range: the partition has {n_regions} regions, "
                         f"indexed 0 to {n_regions - 1} (negative indices are not supported).")
    return r


def check_region_indices(regions, n_regions, name="regions"):
    """Validate an array of region indices (integers in ``[0, n_regions)``).

    Returns
    -------
    numpy.ndarray of int64
    """
    arr = np.asarray(regions)
    if arr.dtype.kind not in "iu" and not (arr.size == 0 and arr.dtype.kind == "f"):
        hint = " (for a boolean mask pass np.flatnonzero(mask))" if arr.dtype.kind == "b" else ""
        raise TypeError(f"{name} must be integer region indices, got dtype {arr.dtype}{hint}.")
    arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr >= n_regions)
    if bad.any():
        raise IndexError(f"{name} contains {int(arr[bad].flat[0])}, out of range: the partition has {n_regions} "
                         f"regions, indexed 0 to {n_regions - 1} (negative indices are not supported).")
    return arr
