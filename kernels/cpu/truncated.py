"""Numba CPU kernels: Gaussian mass and moments over intervals and convex polygons.

Thin batched loops over the scalar routines of ``kernels._interval`` and
``kernels._polygon``; all the numerics live there, shared with the GPU target.
"""

import math

import numpy as np
from numba import prange

from .. import _interval, _polygon
from ._jit import jit, scalars

interval_moments = scalars(_interval).interval_moments
_pg = scalars(_polygon)
chol2 = _pg.chol2
whole_plane = _pg.whole_plane
clip_halfplane = _pg.clip_halfplane
std_polygon_log_mass = _pg.std_polygon_log_mass
std_polygon_moments = _pg.std_polygon_moments
edge_table = _pg.edge_table
nearest_point = _pg.nearest_point
offset_at = _pg.offset_at


@jit(parallel=True)
def interval_moments_batch(lo, hi, mu, sigma, log_mass, mean, var):
    """Elementwise ``(log_mass, mean, var)`` of N(mu, sigma^2) over ``[lo, hi]`` (1-D arrays)."""
    for i in prange(lo.shape[0]):
        log_mass[i], mean[i], var[i] = interval_moments(lo[i], hi[i], mu[i], sigma[i])


@jit
def _whitened_polygon(normals, offsets, i, l11, l21, l22, m1, m2, P, Q):
    """Clip the plane by polygon i's half-planes mapped to u = L^-1 (z - mean); returns (points array, n)."""
    n = whole_plane(P)
    clipped = False
    for k in range(normals.shape[1]):
        a = normals[i, k, 0]
        b = normals[i, k, 1]
        if a == 0.0 and b == 0.0:  # 0 . z + o >= 0: vacuous, or empty for o < 0
            if offsets[i, k] < 0.0:
                return P, 0
            continue
        nx = l11 * a + l21 * b  # L^T n
        ny = l22 * b
        off = offsets[i, k] + a * m1 + b * m2
        n = clip_halfplane(P, n, nx, ny, off, Q)
        P, Q = Q, P
        clipped = True
        if n == 0:
            break
    if clipped:
        # a clipped non-empty polygon keeps a finite point on its boundary; only
        # ideal points left (e.g. between two parallel half-planes) means empty
        finite = False
        for j in range(n):
            if P[j, 2] != 0.0:
                finite = True
        if not finite:
            return P, 0
    return P, n


@jit
def _anchored_polygon(normals, offsets, i, l11, l21, l22, m1, m2, ux, uy, P, Q, LM):
    """Polygon i in the whitened frame moved to the anchor ``u = (ux, uy)``
    (``z_a = mean + L u``, a float point): each line's offset ``o + n . z_a``
    comes from exact products, so the lines near the anchor keep small and
    exact offsets (a thin polygon keeps its width; the anchor's own rounding
    only moves the whole polygon, which costs nothing). Fills ``LM`` with the
    lines' whitened and original normals; returns ``(points, n, nl)``."""
    za1 = m1 + l11 * ux
    za2 = m2 + (l21 * ux + l22 * uy)
    n = whole_plane(P)
    nl = 0
    for k in range(normals.shape[1]):
        a = normals[i, k, 0]
        b = normals[i, k, 1]
        if a == 0.0 and b == 0.0:
            continue  # vacuous (an empty polygon never gets here)
        nx = l11 * a + l21 * b  # L^T n, as in _whitened_polygon
        ny = l22 * b
        n = clip_halfplane(P, n, nx, ny, offset_at(offsets[i, k], a, za1, b, za2), Q)
        P, Q = Q, P
        LM[nl, 0] = nx
        LM[nl, 1] = ny
        LM[nl, 2] = a
        LM[nl, 3] = b
        nl += 1
        if n == 0:
            break
    return P, n, nl


@jit(parallel=True)
def polygon_moments_batch(normals, offsets, mean, cov, want_moments, log_mass, out_mean, out_cov):
    """Per polygon i = {z : normals[i] @ z + offsets[i] >= 0}: log-mass (and,
    with ``want_moments``, the conditional mean and covariance) of
    N(mean[i], cov[i]); NaN for a covariance that is not positive definite."""
    npoly, K = offsets.shape
    cap = 2 * K + 4  # each clip adds at most two points
    for i in prange(npoly):
        P = np.empty((cap, 6))
        Q = np.empty((cap, 6))
        E = np.empty((cap, 6))
        B1 = np.empty((cap + 8, 6))
        B2 = np.empty((cap + 8, 6))
        V = np.empty((cap + 8, 7))
        Y = np.empty(cap + 8)
        P2 = np.empty((cap, 6))
        Q2 = np.empty((cap, 6))
        LM = np.empty((K, 4))
        G = np.empty(3)
        fan = np.full(4, -1.0)
        l11, l21, l22 = chol2(cov[i, 0, 0], cov[i, 0, 1], cov[i, 1, 1])
        m1 = mean[i, 0]
        m2 = mean[i, 1]
        if not (l22 == l22):
            log_mass[i] = math.nan
            out_mean[i, 0] = out_mean[i, 1] = math.nan
            out_cov[i, 0, 0] = out_cov[i, 0, 1] = out_cov[i, 1, 0] = out_cov[i, 1, 1] = math.nan
            continue
        W, n = _whitened_polygon(normals, offsets, i, l11, l21, l22, m1, m2, P, Q)
        # the section rule (where the edge formulas cancel) gets the polygon
        # anchored at its point nearest the mean (see _anchored_polygon)
        A, nA, nl = W, n, 0
        G[0] = 0.0
        G[1] = 0.0
        G[2] = 1.0
        ke = edge_table(W, n, E)[0] if n > 0 else 0
        if ke > 0:
            _, px, py = nearest_point(E, ke)
            A, nA, nl = _anchored_polygon(normals, offsets, i, l11, l21, l22, m1, m2, px, py, P2, Q2, LM)
            if nA > 0:
                G[0] = -px
                G[1] = -py
                G[2] = l11 * l22
            else:  # lost to rounding at the anchor: the whitened frame itself
                A, nA, nl = W, n, 0
        if not want_moments:
            log_mass[i] = std_polygon_log_mass(W, n, E, B1, B2, V, Y, -math.inf, A, nA, G, LM, nl, fan)
            continue
        fan[0] = -1.0  # (no log-mass of this polygon before: the moments form their own)
        lm, ux, uy, c00, c01, c11 = std_polygon_moments(W, n, E, B1, B2, V, Y, True, A, nA, G, LM, nl, 1.0, fan)
        log_mass[i] = lm
        # back to z = mean + L u
        out_mean[i, 0] = m1 + l11 * ux
        out_mean[i, 1] = m2 + l21 * ux + l22 * uy
        a00 = l11 * l11 * c00
        a01 = l11 * (l21 * c00 + l22 * c01)
        a11 = l21 * l21 * c00 + 2.0 * l21 * l22 * c01 + l22 * l22 * c11
        out_cov[i, 0, 0] = a00
        out_cov[i, 0, 1] = a01
        out_cov[i, 1, 0] = a01
        out_cov[i, 1, 1] = a11
