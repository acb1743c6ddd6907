"""Numba CPU kernels: Gaussian mass and moments over intervals (and, later, polygons).

Thin batched loops over the scalar routines of ``kernels._interval``; all the
numerics live there, shared with the GPU target.
"""

from numba import prange

from .. import _interval
from ._jit import jit, scalars

interval_moments = scalars(_interval).interval_moments


@jit(parallel=True)
def interval_moments_batch(lo, hi, mu, sigma, log_mass, mean, var):
    """Elementwise ``(log_mass, mean, var)`` of N(mu, sigma^2) over ``[lo, hi]`` (1-D arrays)."""
    for i in prange(lo.shape[0]):
        log_mass[i], mean[i], var[i] = interval_moments(lo[i], hi[i], mu[i], sigma[i])
