"""Mass and moments of the standard bivariate normal over a convex polygon.

Plain Python over ``math`` (plus constant tuples), compiled by each target.
A polygon is the counter-clockwise cycle of homogeneous boundary points
``P[0:n]`` (``(x, y, 1)`` finite, ``(x, y, 0)`` an ideal point, a unit
direction at infinity; see ``kernels._geometry``), already whitened: the
Gaussian is N(0, I). Callers whiten with :func:`chol2`.

Per edge (a segment or a ray; arcs at infinity carry no boundary), with unit
tangent ``t`` (CCW direction) and inward normal ``n = (-t_y, t_x)``, the line
is ``n . u = c`` and a point on it is ``u = c n + s t`` with ``s`` in
``[s1, s2]``. The edge table ``E[k] = (t_x, t_y, c, s1, s2, L)`` (``L`` the
length, ``inf`` for rays) is all the formulas need.

Mass (docs/mathematics.md, section 6), from the polar form ``int dtheta/(2 pi) [exp(-r_in^2/2) -
exp(-r_out^2/2)]`` around the origin: each edge contributes

    B(h, s1, s2) = 1/(2 pi) int_{s1}^{s2} h exp(-(h^2+s^2)/2) / (h^2+s^2) ds
                 = T(h, s2/h) - T(h, s1/h)            (h = |c|, Owen's T)

with the sign of ``c`` (entry edges, ``c > 0``, add; exit edges subtract).

* Origin inside (every ``c <= 0``): the mass is a sum of positive
  origin-apex sector masses ``W = dpsi/(2 pi) - B`` (``dpsi`` the angle the
  edge subtends; arcs at infinity give ``dpsi/(2 pi)``), or, when it exceeds
  1/2, ``1 - sum B`` with positive ``B``: nothing cancels either way. For
  ``h < 1`` the sector mass is integrated directly (``-expm1`` form, two
  24-point Gauss-Legendre panels on ``|s| <= 9`` plus closed-form angles
  beyond, where the dropped Gaussian part is below ``e^-40`` relative).
* Origin outside: ``mass = sum_entry B - sum_exit B``, each ``B`` scaled by
  ``exp(-rho^2/2)`` (``rho`` the distance to the edge), all relative to the
  distance ``d`` of the polygon, so ``exp(-5000)`` masses are no harder. Each
  ``B`` is, by where its near end ``s1`` lies (whitened units):

  - the foot point on the edge: an Owen's T sum (two positive terms);
  - both ends within 45 degrees of the foot (``s2 <= h``): one rule over the
    band (:func:`owens_j_band`), no difference;
  - ``s1 < 1.87`` otherwise: a T difference, or graded Gauss-Legendre panels
    of the integral itself (:func:`_b_direct`) where the difference would lose
    more than 4 bits (known in advance for a short edge beyond 45 degrees);
  - ``1.87 <= s1 < _LAGUERRE_FROM``: the panels at once (beyond 1.87 the
    difference always loses more than 4 bits: ``T(h, a2) / B >= 1 +
    (Phi(s1) - 1/2) / Q(s1) > 16``);
  - beyond: Gauss-Laguerre in the exponent (:func:`_b_far`).
* The entry/exit sum cancels when the polygon is thin (or small) next to
  its distance; when it would lose more than 8 bits, the section rule
  (:func:`section_rule`) takes over: exact, tail-safe interval moments along
  one axis (towards the polygon) and Gauss-Legendre panels across, after
  clipping the polygon to the box where the density is within ``e^-45`` of
  its peak. Nothing in it subtracts. Given the polygon in a frame anchored
  on it (``kernels.cpu.truncated`` does this), a thin or tiny polygon keeps
  its relative accuracy: the lines' offsets are small and exact there, the
  section widths come without a difference, and the moments are gathered
  in that frame.

Moments by the divergence theorem: with ``J_e = int_e phi_2 ds =
phi(c) (Phi(s2) - Phi(s1))`` and the truncated mean ``mu_e`` of ``s`` on the
edge (``kernels._interval``),

    int u phi_2 = sum_e J_e n_e
    int (u - m) (u - m)^T phi_2 = M0 I + sum_e J_e (c_e n_e + mu_e t_e - m) n_e^T

(symmetrised). They amplify rounding by the size of the boundary terms next
to the covariance's smaller eigenvalue: much for thin polygons, and like
``d^4`` for far ones (the covariance is ``I`` minus nearly ``I``). Beyond
``_AMP_MAX`` the section rule serves.
"""

import math

import numpy as np

from ._geometry import crossing_point, foot_of_line, line_value
from ._interval import std_interval_log_mass, std_interval_moments, std_interval_offset_moments
from ._normal import mills_ratio
from ._owens_t import (
    _GL8_U, _GL8_V, _GL10_U, _GL10_V, _GL12_U, _GL12_V, _GL16_U, _GL16_V, _GL_U, _GL_V, owens_j_band,
    owens_t_scaled, owens_t_scaled_pair)

_INV_2PI = 0.15915494309189535
_INV_SQRT_2PI = 0.3989422804014327
LOG_2PI = 1.8378770664093453
_N_PANEL = 24
# Far-edge Gauss-Laguerre: 8 nodes from s1^2 = 60 on (16 below).
_DIRECT_FROM = 60.0
# B by a T difference (s1 < _LAGUERRE_FROM) only while T(h, a2) <= 16 B (at most 4 bits lost).
_CANCEL = 16.0
# Direct B: cut where the integrand has fallen by e^-40; panels rise by <= 16.
_B_CUT = 40.0
_B_RISE = 16.0
_MAX_PANELS = 64
# Sector masses with h < 1: panels on |s| <= _W_SPAN, closed-form angles beyond.
_W_SPAN = 9.0
# Cancellation of the mass (8 bits) or amplification of rounding in the moments
# beyond which the section rule serves. The edge formulas' covariance errs by
# about amp * eps in its thin direction: 1e5 let a triangle 7.7 sd out through
# at 1.1e-11 (amp 6e4), where rounding its inputs implies 1.6e-15 (the section
# rule: 8e-15). 1e4 costs ~1.25x on random polygons, 1e3 ~1.8x.
_KAPPA_MAX = 256.0
_AMP_MAX = 1e4
# Beyond this squared distance (whitened, d ~ 1e6) a polygon's Gaussian is
# taken as exponential off its nearest point (far_polygon): that errs by
# O(1/d) in log-mass at worst, far below the eps d^2 / 2 that rounding of the
# inputs alone puts there (the edge formulas and sections lose everything).
_FAR2 = 2.0**40
# Beyond sqrt(_HALF_PLANE2) sd a polygon holding its nearest edge's half-plane near the
# foot (|a| <= _HALF_A along it, b <= _HALF_B / c across) gets that half-plane's moments
# (see _half_plane_edge): the edge formulas' covariance loses eps d^2 there.
_HALF_PLANE2 = 2.0**20
_HALF_A = 10.0
_HALF_B = 45.0
# A vertex's cone is exponential along both edges only where the density falls
# by e^-8 within a unit step along each (far_polygon).
_FAR_RATE = 8.0
# Section rule: clip to the box |u_i| <= sqrt(d^2 + _BOX) (density below e^-45 outside).
_BOX = 90.0
# Section rule: lines with |n . a| below this bound y only; panels per piece at most.
_ALONG = 1e-12
_MAX_SECTION_PANELS = 4096.0
# 8-point Gauss-Laguerre rule (far edges, see _b_far).
_LAG_X = tuple(float(v) for v in np.polynomial.laguerre.laggauss(8)[0])
_LAG_W = tuple(float(v) for v in np.polynomial.laguerre.laggauss(8)[1])
_LAG16_X = tuple(float(v) for v in np.polynomial.laguerre.laggauss(16)[0])
_LAG16_W = tuple(float(v) for v in np.polynomial.laguerre.laggauss(16)[1])
# Far edges (near end s1 beyond it) by Gauss-Laguerre, nearer ones by Owen's T.
_LAGUERRE_FROM = 5.0
# From here on a T difference always loses more than 4 bits (Q(1.8627) = 1/32).
_ALWAYS_DIRECT = 1.87


def _two_prod(a, b):
    """``(p, e)`` with ``p + e = a b`` exactly (Dekker's split; no FMA needed)."""
    p = a * b
    sa = 134217729.0 * a
    ah = sa - (sa - a)
    al = a - ah
    sb = 134217729.0 * b
    bh = sb - (sb - b)
    bl = b - bh
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _two_sum(a, b):
    """``(s, e)`` with ``s + e = a + b`` exactly (Knuth)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _two_prod_diff(a, b, c, d):
    """``a*b - c*d`` with the products split exactly (Dekker), so a nearly
    singular 2x2 determinant keeps its relative accuracy."""
    p, ep = _two_prod(a, b)
    q, eq = _two_prod(c, d)
    return (p - q) + (ep - eq)


def offset_at(o, a, x, b, y):
    """``o + a x + b y`` to within a few ulps of the result (exact products and
    sums): a line's offset at a point near it stays exact however small."""
    p1, e1 = _two_prod(a, x)
    p2, e2 = _two_prod(b, y)
    s1, t1 = _two_sum(p1, p2)
    s2, t2 = _two_sum(o, s1)
    return s2 + (t2 + (t1 + (e1 + e2)))


def chol2(s11, s12, s22):
    """Cholesky factor ``(l11, l21, l22)`` of a symmetric 2x2 matrix (lower,
    ``S = L L^T``); the Schur complement comes from an exactly split
    determinant. NaN when the matrix is not positive definite."""
    if not (s11 > 0.0):
        return math.nan, math.nan, math.nan
    det = _two_prod_diff(s11, s22, s12, s12)
    if not (det > 0.0):
        return math.nan, math.nan, math.nan
    l11 = math.sqrt(s11)
    return l11, s12 / l11, math.sqrt(det / s11)


# ----------------------------------------------------------------------------- clipping
def _put(P, k, x, y, w, nx, ny, off):
    P[k, 0] = x
    P[k, 1] = y
    P[k, 2] = w
    P[k, 3] = nx
    P[k, 4] = ny
    P[k, 5] = off


def _copy_row(Pin, j, Pout, k):
    for c in range(6):
        Pout[k, c] = Pin[j, c]


def clip_halfplane(Pin, nin, nx, ny, off, Pout):
    """Clip a homogeneous CCW polygon by ``nx*x + ny*y + off*w >= 0`` (one
    Sutherland-Hodgman step); returns the number of points written to Pout
    (at most ``nin + 2``).

    Rows are ``(x, y, w, lx, ly, loff)``: the point and the line
    ``lx*x + ly*y + loff >= 0`` carrying its outgoing edge (all zero for an
    arc at infinity). Exact sign tests: points on the line are kept. A new
    edge joining two ideal points (a whole line) gets its foot point as a
    finite vertex, so an edge between two ideal points is always an arc."""
    nout = 0
    new_from = -1
    for j in range(nin):
        q = j + 1
        if q == nin:
            q = 0
        fp = _side_value(Pin, nin, j, nx, ny, off)
        fq = _side_value(Pin, nin, q, nx, ny, off)
        if fp >= 0.0:
            if fp == 0.0 and fq < 0.0:  # the boundary leaves along the new line
                new_from = nout
                _put(Pout, nout, Pin[j, 0], Pin[j, 1], Pin[j, 2], nx, ny, off)
            else:
                _copy_row(Pin, j, Pout, nout)
            nout += 1
            if fp > 0.0 and fq < 0.0:  # exit: the new edge starts here
                x, y, w = _crossing(Pin, j, q, fp, fq, nx, ny)
                new_from = nout
                _put(Pout, nout, x, y, w, nx, ny, off)
                nout += 1
        elif fq > 0.0:  # entry: continue along the old edge
            x, y, w = _crossing(Pin, j, q, fp, fq, nx, ny)
            _put(Pout, nout, x, y, w, Pin[j, 3], Pin[j, 4], Pin[j, 5])
            nout += 1
    if new_from >= 0 and nout > 0:
        nxt = new_from + 1
        if nxt == nout:
            nxt = 0
        if Pout[new_from, 2] == 0.0 and Pout[nxt, 2] == 0.0:
            for t in range(nout, new_from + 1, -1):
                _copy_row(Pout, t - 1, Pout, t)
            fx, fy = foot_of_line(nx, ny, off)
            _put(Pout, new_from + 1, fx, fy, 1.0, nx, ny, off)
            nout += 1
    return nout


def _side_value(Pin, nin, j, nx, ny, off):
    """The line's value at point j. An ideal point parallel to the line (value
    0) lies on the side of the finite end of the line edge that runs to it
    (along that edge the value is constant), e.g. the ends of z1 >= 1 are
    outside z1 <= -1; with arcs on both sides it stays 0 (on the line)."""
    v = line_value(nx, ny, off, Pin[j, 0], Pin[j, 1], Pin[j, 2])
    if v != 0.0 or Pin[j, 2] != 0.0:
        return v
    i = j - 1 if j > 0 else nin - 1
    if (Pin[i, 3] != 0.0 or Pin[i, 4] != 0.0) and Pin[i, 2] != 0.0:  # a line edge from finite point i
        return line_value(nx, ny, off, Pin[i, 0], Pin[i, 1], 1.0)
    k = j + 1 if j + 1 < nin else 0
    if (Pin[j, 3] != 0.0 or Pin[j, 4] != 0.0) and Pin[k, 2] != 0.0:  # a line edge to finite point k
        return line_value(nx, ny, off, Pin[k, 0], Pin[k, 1], 1.0)
    return 0.0


def _crossing(Pin, j, q, fp, fq, nx, ny):
    """Where edge j -> q crosses the line; an arc at infinity (two ideal ends,
    up to 180 degrees apart) crosses it at the line's direction that lies
    counter-clockwise of j."""
    if Pin[j, 2] == 0.0 and Pin[q, 2] == 0.0:
        nrm = math.hypot(nx, ny)
        dx = -ny / nrm
        dy = nx / nrm
        if Pin[j, 0] * dy - Pin[j, 1] * dx < 0.0:
            dx = -dx
            dy = -dy
        return dx, dy, 0.0
    return crossing_point(Pin[j, 0], Pin[j, 1], Pin[j, 2], fp, Pin[q, 0], Pin[q, 1], Pin[q, 2], fq)


def whole_plane(P):
    """Write R^2 as three ideal points 120 degrees apart (joined by arcs) into
    P (rows as in :func:`clip_halfplane`); returns 3."""
    _put(P, 0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0)
    _put(P, 1, -0.8660254037844386, -0.5, 0.0, 0.0, 0.0, 0.0)
    _put(P, 2, 0.8660254037844386, -0.5, 0.0, 0.0, 0.0, 0.0)
    return 3


# ----------------------------------------------------------------------------- edges
def edge_table(P, n, E):
    """Fill ``E[k] = (t_x, t_y, c, s1, s2, L)`` for the edges of ``P[0:n]``
    (rows as in :func:`clip_halfplane`).

    The edge's line (``n = (-t_y, t_x)``, ``c``) comes from the row's line,
    not from the vertices, so a thin polygon keeps the relative accuracy of
    its width; ``s1``, ``s2`` are the ends' projections on ``t`` (the one
    nearer the foot projected, the other from it and the length, so neither a
    short edge nor one with a far end loses its near end). Returns
    ``(K, arc)``: the number of edges and the total angle of the arcs at
    infinity. Zero-length segments are skipped.
    """
    k = 0
    arc = 0.0
    for j in range(n):
        q = j + 1
        if q == n:
            q = 0
        lx = P[j, 3]
        ly = P[j, 4]
        # sqrt of the sum of squares, not hypot (4x slower here): whitened
        # coordinates are far from overflow and underflow
        r = math.sqrt(lx * lx + ly * ly)
        if not (r > 0.0):  # an arc at infinity between two ideal points
            arc += math.atan2(P[j, 0] * P[q, 1] - P[j, 1] * P[q, 0], P[j, 0] * P[q, 0] + P[j, 1] * P[q, 1])
            continue
        tx = ly / r
        ty = -lx / r
        if P[j, 2] != 0.0 and P[q, 2] != 0.0:
            ex = P[q, 0] - P[j, 0]
            ey = P[q, 1] - P[j, 1]
            L = math.sqrt(ex * ex + ey * ey)
            if not (L > 0.0):
                continue
            # anchor on the end nearer the line's foot: the other end follows
            # from the exact length (a far end alone would round the near one away)
            s1 = tx * P[j, 0] + ty * P[j, 1]
            s2 = tx * P[q, 0] + ty * P[q, 1]
            if abs(s1) <= abs(s2):
                s2 = s1 + L
            else:
                s1 = s2 - L
        elif P[j, 2] != 0.0:  # ray out
            s1 = tx * P[j, 0] + ty * P[j, 1]
            s2 = math.inf
            L = math.inf
        else:  # ray in
            s1 = -math.inf
            s2 = tx * P[q, 0] + ty * P[q, 1]
            L = math.inf
        E[k, 0] = tx
        E[k, 1] = ty
        E[k, 2] = -P[j, 5] / r
        E[k, 3] = s1
        E[k, 4] = s2
        E[k, 5] = L
        k += 1
    return k, arc


def _t_arg(s, h):
    """Owen's T argument ``a = s / h`` for ``s >= 0`` (``inf`` at ``h = 0``)."""
    if s == 0.0:
        return 0.0
    if h == 0.0:
        return math.inf
    return s / h


def _b_panel(h2, s1, a, w, U, V):
    """One Gauss-Legendre panel (nodes ``U``, weights ``V`` on [0, 1]) of the
    integrand of :func:`_b_direct` over ``y`` in ``[a, a + w]``."""
    acc = 0.0
    for i in range(len(U)):
        y = a + w * U[i]
        sy = s1 + y
        acc += V[i] * math.exp(-(s1 * y + 0.5 * y * y)) / (h2 + sy * sy)
    return w * acc


def _b_direct(h, s1, L):
    """``B exp((h^2 + s1^2)/2)`` for ``s1 >= 0`` by Gauss-Legendre panels in
    ``y = s - s1``: graded away from the integrand's poles (``y = -s1 +- i h``):
    each panel at most as long as its distance from them, and a rise of at most
    ``_B_RISE`` in the exponent ``s1 y + y^2/2``, cut at ``_B_CUT``.

    The rule per panel (8 to 24 nodes) follows its length ``q`` relative to
    the poles' distance and its rise; panels that start ``e^-16`` or ``e^-24``
    below the first carry that much less weight and take 12 or 8 nodes. Each
    tier was measured against 30-digit quadrature on random panels (worst
    relative error, after that weight, within 7e-16 plus the ``rise * eps`` the
    exponent's own rounding brings)."""
    if h == 0.0:
        return 0.0
    ycut = 2.0 * _B_CUT / (s1 + math.sqrt(s1 * s1 + 2.0 * _B_CUT))
    top = min(L, ycut)
    h2 = h * h
    a = 0.0
    total = 0.0
    for _ in range(_MAX_PANELS):
        if not (a < top):
            break
        g = a + s1
        dist = math.sqrt(g * g + h2)
        b = min(top, a + dist, a + 2.0 * _B_RISE / (g + math.sqrt(g * g + 2.0 * _B_RISE)))
        w = b - a
        q = w / dist
        rise = (g + 0.5 * w) * w
        start = (s1 + 0.5 * a) * a  # exponent at the panel's start
        if start >= 24.0 or (q <= 0.125 and rise <= 0.5):
            total += _b_panel(h2, s1, a, w, _GL8_U, _GL8_V)
        elif q <= 0.5 and rise <= 2.0:
            total += _b_panel(h2, s1, a, w, _GL10_U, _GL10_V)
        elif start >= 16.0 or rise <= 4.0:
            total += _b_panel(h2, s1, a, w, _GL12_U, _GL12_V)
        elif rise <= 8.0:
            total += _b_panel(h2, s1, a, w, _GL16_U, _GL16_V)
        else:
            total += _b_panel(h2, s1, a, w, _GL_U, _GL_V)
        a = b
    return h * _INV_2PI * total


def _b_laguerre_part(h, s1, u0):
    """``int_0^inf exp(-v) g(u0 + v) dv`` by Gauss-Laguerre, with ``g(u) = 1
    / ((h^2 + s^2) s)``, ``s = sqrt(s1^2 + 2u)``: 8 nodes for ``s1^2 >=
    _DIRECT_FROM``, 16 for ``s1 >= _LAGUERRE_FROM`` (g's singularities, at
    ``u <= -s1^2/2``, further away need fewer)."""
    total = 0.0
    if s1 * s1 >= _DIRECT_FROM:
        for i in range(8):
            s = math.sqrt(s1 * s1 + 2.0 * (u0 + _LAG_X[i]))
            total += _LAG_W[i] / ((h * h + s * s) * s)
    else:
        for i in range(16):
            s = math.sqrt(s1 * s1 + 2.0 * (u0 + _LAG16_X[i]))
            total += _LAG16_W[i] / ((h * h + s * s) * s)
    return total


def _b_far(h, s1, L):
    """``B exp((h^2 + s1^2)/2)`` for ``s1 >= _LAGUERRE_FROM``: in the
    exponent ``u = s1 y + y^2/2`` (``y = s - s1``) the integral is
    ``int_0^umax exp(-u) g(u) du`` with ``g`` smooth on the scale
    ``s1^2/2``, so 16 Gauss-Laguerre nodes (8 beyond ``s1^2 = 60``) give it
    to 5e-16 (measured against mpmath for s1 from 5 to 100, h from 0.01 to
    20, L from 1e-3 to inf). A finite edge subtracts the same integral from ``umax`` on (at most
    1.6x cancellation, ``umax >= 1``); shorter edges take 12 Gauss-Legendre
    nodes in y, over which the integrand varies by less than e."""
    if h == 0.0:
        return 0.0
    umax = s1 * L + 0.5 * L * L
    if umax >= 40.0:  # the rest is below e^-40 relative
        total = _b_laguerre_part(h, s1, 0.0)
    elif umax >= 1.0:
        total = _b_laguerre_part(h, s1, 0.0) - math.exp(-umax) * _b_laguerre_part(h, s1, umax)
    else:
        total = 0.0
        for i in range(12):
            y = L * _GL12_U[i]
            sy = s1 + y
            total += _GL12_V[i] * math.exp(-(s1 * y + 0.5 * y * y)) / (h * h + sy * sy)
        total *= L
    return h * _INV_2PI * total


def b_term(h, s1, s2, L):
    """``(Bhat, rho2)`` with ``B(h, s1, s2) = Bhat exp(-rho2/2)``; ``rho2`` is
    the squared distance from the origin to the edge (``h >= 0`` the line's)."""
    if s1 <= 0.0 and 0.0 <= s2:  # foot point on the edge: two positive terms
        return owens_t_scaled(h, _t_arg(s2, h)) + owens_t_scaled(h, _t_arg(-s1, h)), h * h
    if s2 < 0.0:  # mirror so that 0 < s1 < s2
        s1, s2 = -s2, -s1
    rho2 = h * h + s1 * s1
    if h == 0.0:
        return 0.0, rho2
    if s1 < _ALWAYS_DIRECT:
        a1 = _t_arg(s1, h)
        a2 = _t_arg(s2, h)
        if a2 <= 1.0:  # both ends within 45 degrees of the foot: one rule, no difference
            return owens_j_band(h, a1, L / h) * _INV_2PI, rho2
        # T(h, a2) / B >= 1 + s1 / L (the integrand falls along the edge): a
        # short edge beyond 45 degrees mostly loses more than 4 bits (9 in 10
        # on the benchmark's polygons); the panels are exact either way, so it
        # goes to them at once
        if not (a1 > 1.0 and L <= s1):
            t1, t2 = owens_t_scaled_pair(h, a1, a2)
            bh = t2 - t1
            if t2 <= _CANCEL * bh:
                return bh * math.exp(0.5 * s1 * s1), rho2
        return _b_direct(h, s1, L), rho2
    if s1 < _LAGUERRE_FROM:
        return _b_direct(h, s1, L), rho2
    return _b_far(h, s1, L), rho2


def _dpsi(h, s1, s2, L):
    """Angle the edge subtends at the origin (``h`` its line's distance)."""
    if L == math.inf:
        if s2 == math.inf:
            if s1 == -math.inf:
                return math.pi
            return math.atan2(h, s1)
        return math.atan2(h, -s2)
    return math.atan2(h * L, h * h + s1 * s2)


def _w_panel(h2, a, b):
    """``int_a^b -expm1(-(h^2+s^2)/2) / (h^2+s^2) ds`` (24-point Gauss-Legendre)."""
    w = b - a
    acc = 0.0
    for i in range(_N_PANEL):
        s = a + w * _GL_U[i]
        z = h2 + s * s
        if z > 0.0:
            acc += _GL_V[i] * (-math.expm1(-0.5 * z) / z)
        else:
            acc += _GL_V[i] * 0.5
    return w * acc


def w_term(h, s1, s2, L):
    """Origin-apex sector mass of an edge seen from an origin inside the
    polygon: ``dpsi/(2 pi) - B``, positive."""
    if h >= 1.0:
        bh, rho2 = b_term(h, s1, s2, L)
        return _dpsi(h, s1, s2, L) * _INV_2PI - bh * math.exp(-0.5 * rho2)
    if h == 0.0:
        return 0.0
    h2 = h * h
    total = 0.0
    # the part of the edge on |s| <= 9 (none when both ends lie beyond, on one side)
    lo = max(s1, -_W_SPAN)
    hi = min(s2, _W_SPAN)
    if lo < min(hi, 0.0):
        total += _w_panel(h2, lo, min(hi, 0.0))
    if max(lo, 0.0) < hi:
        total += _w_panel(h2, max(lo, 0.0), hi)
    total *= h * _INV_2PI
    # beyond |s| = 9 the Gaussian part is below e^-40 of the angle: closed form
    if s2 > _W_SPAN:
        a = max(s1, _W_SPAN)
        total += _dpsi(h, a, s2, s2 - a) * _INV_2PI
    if s1 < -_W_SPAN:
        b = min(s2, -_W_SPAN)
        total += _dpsi(h, s1, b, b - s1) * _INV_2PI
    return total


# ----------------------------------------------------------------------------- mass by edges
def _edge_distance2(h, s1, s2):
    if s1 <= 0.0 and 0.0 <= s2:
        return h * h
    m = min(abs(s1), abs(s2))
    return h * h + m * m


def fan_log_mass(E, K, arc):
    """``(log_mass, d2, kappa)`` from the edge table: ``d2`` the squared
    distance of the polygon from the origin, ``kappa`` the cancellation ratio
    of the entry/exit sum (1 when the origin is inside)."""
    inside = True
    for k in range(K):
        if E[k, 2] > 0.0:
            inside = False
    if inside:
        w = arc * _INV_2PI
        comp = 0.0
        for k in range(K):
            h = -E[k, 2]
            w += w_term(h, E[k, 3], E[k, 4], E[k, 5])
            bh, rho2 = b_term(h, E[k, 3], E[k, 4], E[k, 5])
            comp += bh * math.exp(-0.5 * rho2)
        if w > 0.5:
            return math.log1p(-comp), 0.0, 1.0
        return math.log(w), 0.0, 1.0
    d2 = math.inf
    for k in range(K):
        d2 = min(d2, _edge_distance2(E[k, 2], E[k, 3], E[k, 4]))
    pos = 0.0
    neg = 0.0
    for k in range(K):
        c = E[k, 2]
        bh, rho2 = b_term(abs(c), E[k, 3], E[k, 4], E[k, 5])
        v = bh * math.exp(-0.5 * (rho2 - d2))
        if c > 0.0:
            pos += v
        else:
            neg += v
    net = pos - neg
    if not (net > 0.0):
        return -math.inf, d2, math.inf
    return math.log(net) - 0.5 * d2, d2, (pos + neg) / net


def fan_moments(E, K, log_mass, d2):
    """Mean and covariance (whitened frame) by the divergence theorem, and the
    factor by which they amplify rounding (boundary terms over the smallest
    variance): large for thin polygons and, as ``d^4``, for far ones."""
    m0 = math.exp(log_mass + 0.5 * d2)  # mass relative to exp(-d2/2)
    m1x = 0.0
    m1y = 0.0
    g00 = 0.0
    g01 = 0.0
    g10 = 0.0
    g11 = 0.0
    jsum = 0.0
    for k in range(K):
        tx = E[k, 0]
        ty = E[k, 1]
        c = E[k, 2]
        lm, ms, _ = std_interval_moments(E[k, 3], E[k, 4], E[k, 5])
        j = math.exp(lm - 0.5 * (c * c - d2)) * _INV_SQRT_2PI
        if not (j > 0.0):
            continue
        nx = -ty
        ny = tx
        px = c * nx + ms * tx
        py = c * ny + ms * ty
        jsum += j
        m1x += j * nx
        m1y += j * ny
        g00 += j * px * nx
        g01 += j * px * ny
        g10 += j * py * nx
        g11 += j * py * ny
    mx = m1x / m0
    my = m1y / m0
    c00 = 1.0 + (g00 - mx * m1x) / m0
    c11 = 1.0 + (g11 - my * m1y) / m0
    c01 = 0.5 * ((g01 - mx * m1y) + (g10 - my * m1x)) / m0
    # rounding is amplified by the size of the boundary terms next to the
    # covariance's smaller eigenvalue (mapping back to z may make that
    # direction the largest: a nearly singular covariance)
    half = 0.5 * (c00 + c11)
    lam_min = half - math.sqrt(0.25 * (c00 - c11) ** 2 + c01 * c01)
    if not (lam_min > 0.0):
        return mx, my, c00, c01, c11, math.inf
    amp = jsum * (1.0 + d2 + mx * mx + my * my) / (m0 * lam_min)
    return mx, my, c00, c01, c11, amp


# ----------------------------------------------------------------------------- section rule
def _section(C, m, y):
    """``(lo, hi, jl, jh)``: the polygon's section at y along the x-axis, from
    its lines ``C[j] = (n . a, n . t, c, ...)`` (``n . u >= c``), and the
    lines that bound it (-1 where unbounded)."""
    lo = -math.inf
    hi = math.inf
    jl = -1
    jh = -1
    for j in range(m):
        na = C[j, 0]
        # a line (nearly) along the x-axis bounds y only: the breakpoints handle it
        if na > _ALONG:
            v = (C[j, 2] - C[j, 1] * y) / na
            if v > lo:
                lo = v
                jl = j
        elif na < -_ALONG:
            v = (C[j, 2] - C[j, 1] * y) / na
            if v < hi:
                hi = v
                jh = j
    return lo, hi, jl, jh


def _section_width(C, jl, jh, y, lo, hi, det):
    """``hi - lo`` without the difference: from the two bounding lines'
    offsets (small and exact in an anchored frame) and, where both are input
    lines (``C[j, 6] > 0``), the cross product of their original normals
    ``C[j, 3:5]`` split exactly (times ``det``, the whitening's determinant),
    so a thin section or wedge keeps its relative width:

        hi - lo = (c_h na_l - c_l na_h - y cross(n'_h, n'_l) / (r_h r_l)) / (na_h na_l)

    with ``n' = L^T n`` of norm ``r`` and ``cross(n'_h, n'_l) = det cross(n_h, n_l)``."""
    if jl < 0 or jh < 0 or not (C[jl, 6] > 0.0 and C[jh, 6] > 0.0):
        return hi - lo
    nal = C[jl, 0]
    nah = C[jh, 0]
    x = det * _two_prod_diff(C[jh, 3], C[jl, 4], C[jh, 4], C[jl, 3]) / (C[jh, 5] * C[jl, 5])
    w = ((C[jh, 2] * nal - C[jl, 2] * nah) - y * x) / (nah * nal)
    return max(w, 0.0)


def _near_end(lo, hi):
    """Distance from 0 to the interval ``[lo, hi]``."""
    if lo > 0.0:
        return lo
    if hi < 0.0:
        return -hi
    return 0.0


def nearest_point(E, K):
    """``(d2, px, py)``: squared distance from the origin to the polygon's
    boundary and the nearest boundary point."""
    d2 = math.inf
    px = 0.0
    py = 0.0
    for k in range(K):
        tx = E[k, 0]
        ty = E[k, 1]
        c = E[k, 2]
        s1 = E[k, 3]
        s2 = E[k, 4]
        s = 0.0
        if s1 > 0.0:
            s = s1
        elif s2 < 0.0:
            s = s2
        r2 = c * c + s * s
        if r2 < d2:
            d2 = r2
            px = -c * ty + s * tx  # c n + s t
            py = c * tx + s * ty
    return d2, px, py


def _box_clip(P, n, gx, gy, R, B1, B2):
    """``P[0:n]`` clipped to the box of half-width R about ``(gx, gy)``, into B1; the point count."""
    for i in range(n):
        _copy_row(P, i, B1, i)
    k = clip_halfplane(B1, n, 1.0, 0.0, R - gx, B2)
    k = clip_halfplane(B2, k, -1.0, 0.0, R + gx, B1)
    k = clip_halfplane(B1, k, 0.0, 1.0, R - gy, B2)
    return clip_halfplane(B2, k, 0.0, -1.0, R + gy, B1)


def _distance2(P, n, gx, gy):
    """Squared distance from ``(gx, gy)`` to the bounded CCW polygon ``P[0:n]``
    (finite points): 0 where it holds the point."""
    inside = True
    best = math.inf
    for i in range(n):
        q = i + 1 if i + 1 < n else 0
        ax = P[i, 0] - gx
        ay = P[i, 1] - gy
        ex = P[q, 0] - P[i, 0]
        ey = P[q, 1] - P[i, 1]
        ee = ex * ex + ey * ey
        t = 0.0
        if ee > 0.0:
            t = min(1.0, max(0.0, -(ax * ex + ay * ey) / ee))
        dx = ax + t * ex
        dy = ay + t * ey
        best = min(best, dx * dx + dy * dy)
        if ey * ax - ex * ay < 0.0:  # the point lies right of this edge: outside
            inside = False
    return 0.0 if inside else best


def section_rule(P, n, d2, ax, ay, want_moments, B1, B2, V, Y, G, LM, nl):
    """Mass and moments by sections: exact interval moments along the x-axis
    ``(ax, ay)`` (a unit vector) and 24-point Gauss-Legendre panels across
    them, after clipping the polygon to the box where the density is within
    ``e^-45`` of its value at distance ``sqrt(d2)``.

    Serves where the edge formulas cancel (thin, small or far polygons):
    nothing here subtracts, the sections' moments are tail-safe and the
    panels' weights are positive. Sections come from the polygon's lines,
    the breakpoints between panels from its vertices. Panels are short
    enough that the log of the integrand changes by at most ~6 over one.

    The polygon may be given in an anchored frame: ``G = (gx, gy, det)``
    puts the Gaussian's centre at ``(gx, gy)`` (0 for the whitened frame
    itself). With the anchor on the polygon, its lines' offsets are small and
    exact, and ``LM[0:nl] = (n'_x, n'_y, n_x, n_y)`` (whitened and original
    normals of the input lines, ``n' = L^T n``, ``det = l11 l22``) gives each
    section's width without a difference (:func:`_section_width`): thin
    polygons keep their relative accuracy. The scatter is also gathered in a
    frame sheared along the longest edge, ``(y, x - k y)``, and the frame in
    which the coordinates are less correlated gives the covariance, mapped
    straight to the whitened frame: the spread across a thin polygon at an
    angle is not a difference. Scratch: ``B1``, ``B2`` (n + 8,
    6), ``V`` (n + 8, 7), ``Y`` (n + 8). Returns ``(log_mass, mx, my, c00,
    c01, c11)`` relative to the centre, in the whitened frame (moments NaN
    unless requested).
    """
    nan = math.nan
    gx = G[0]
    gy = G[1]
    det = G[2]
    k = _box_clip(P, n, gx, gy, math.sqrt(d2 + _BOX), B1, B2)
    # d2 came from the whitened polygon; an anchored copy can lie elsewhere by that
    # polygon's rounding (far out, 1e3 sd and more), and the weights below are scaled
    # by exp(d2 / 2): take the distance of the polygon integrated, where it differs
    dd2 = _distance2(B1, k, gx, gy) if k >= 3 else math.inf
    if not (dd2 <= d2 + _BOX):  # the nearest point is outside the box: within the nearest vertex's distance
        rmin = math.inf
        for i in range(n):
            if P[i, 2] != 0.0:
                rmin = min(rmin, math.hypot(P[i, 0] / P[i, 2] - gx, P[i, 1] / P[i, 2] - gy))
        if rmin == math.inf:
            return -math.inf, nan, nan, nan, nan, nan
        k = _box_clip(P, n, gx, gy, rmin * (1.0 + 1e-9) + 1.0, B1, B2)
        dd2 = _distance2(B1, k, gx, gy) if k >= 3 else math.inf
        if dd2 == math.inf:
            return -math.inf, nan, nan, nan, nan, nan
    if abs(dd2 - d2) > 1.0:
        d2 = dd2
        k = _box_clip(P, n, gx, gy, math.sqrt(d2 + _BOX), B1, B2)
    tx = ay  # y-axis t, with the x-axis its left normal
    ty = -ax
    ga = gx * ax + gy * ay  # the centre in the section frame
    gt = gx * tx + gy * ty
    m = 0
    for i in range(k):  # breakpoints y = t . v (the box made every point finite)
        Y[m] = tx * B1[i, 0] + ty * B1[i, 1]
        lx = B1[i, 3]
        ly = B1[i, 4]
        r = math.hypot(lx, ly)
        V[m, 0] = (lx * ax + ly * ay) / r  # line n . u >= c in (n . a, n . t, c)
        V[m, 1] = (lx * tx + ly * ty) / r
        V[m, 2] = -B1[i, 5] / r
        V[m, 3] = 0.0
        V[m, 4] = 0.0
        V[m, 5] = r
        V[m, 6] = 0.0
        for q in range(nl):  # an input line: its original normal
            if LM[q, 0] == lx and LM[q, 1] == ly:
                V[m, 3] = LM[q, 2]
                V[m, 4] = LM[q, 3]
                V[m, 6] = 1.0
                break
        m += 1
    if m < 3:
        return -math.inf, nan, nan, nan, nan, nan
    # A second frame for the scatter, sheared along the polygon's longest
    # edge (x - k y against y): in a thin polygon at an angle to the axes
    # (a sliver, a narrow wedge) x and y are nearly collinear, and the
    # spread across it, sxx - sxy^2 / syy, would be a difference of large
    # numbers (errors of eps relative in each sum, amplified by the
    # covariance's condition number: 4e-9 on a sliver of eigenvalue ratio
    # 1e7). Across the edge the residual's spread is gathered directly.
    k0 = 0.0
    best = 0.0
    for i in range(k):
        q = i + 1 if i + 1 < k else 0
        ey = tx * (B1[q, 0] - B1[i, 0]) + ty * (B1[q, 1] - B1[i, 1])
        ex = ax * (B1[q, 0] - B1[i, 0]) + ay * (B1[q, 1] - B1[i, 1])
        e2 = ex * ex + ey * ey
        if e2 > best and abs(ey) > abs(ex) * 1e-8:
            best = e2
            k0 = ex / ey
    for i in range(1, m):  # insertion sort of the breakpoints
        v = Y[i]
        j = i - 1
        while j >= 0 and Y[j] > v:
            Y[j + 1] = Y[j]
            j -= 1
        Y[j + 1] = v
    # Positions y (along t) and x (along a) are in the polygon's frame, exact
    # near the anchor; yc = y - gt and x - ga are relative to the centre (the
    # Gaussian's weights; their rounding moves a section as a whole). The
    # moments are accumulated in the polygon's frame, so a tiny polygon far
    # out keeps its spread.
    tot = 0.0  # running weight, mean and scatter (merged one node at a time)
    my = 0.0
    mx = 0.0
    syy = 0.0
    sxy = 0.0
    sxx = 0.0
    mr = 0.0  # the same for r = x - k0 y (the sheared frame)
    syr = 0.0
    srr = 0.0
    # weights are exp(exponent - shift): 0 while the sections keep the distance
    # sqrt(d2); where a section comes nearer (an anchored polygon whose lines were
    # rounded by more than its distance, far out), the sums are rescaled instead
    # of overflowing (each section's mass is at most 1, so the total stays <= 1)
    shift = 0.0
    for p in range(m - 1):
        ya = Y[p]
        yb = Y[p + 1]
        if not (yb > ya):
            continue
        span = yb - ya
        # within a piece both ends of the section are linear in y: sample them
        # inside (away from its vertices) and extrapolate (centre-relative)
        q1 = ya + 0.25 * span
        la, ha, _, _ = _section(V, m, q1)
        lb, hb, _, _ = _section(V, m, ya + 0.75 * span)
        la -= ga
        ha -= ga
        lb -= ga
        hb -= ga
        dl = (lb - la) / (0.5 * span)
        dh = (hb - ha) / (0.5 * span)
        slope = max(abs(dl), abs(dh))
        y = ya
        while y < yb:
            yc = y - gt
            # the section mass varies at a rate set by its nearer end (the far
            # end's contribution is smaller by the Gaussian ratio of the two)
            x0 = _near_end(la + dl * (y - q1), ha + dh * (y - q1))
            ell = min(yb - y, max(6.0 / (abs(yc) + x0 * slope + slope + 3.0), span / _MAX_SECTION_PANELS))
            x1 = _near_end(la + dl * (y + ell - q1), ha + dh * (y + ell - q1))
            if x1 > x0:  # the near end recedes: the rate is set at the panel's far side
                ell = min(yb - y, max(6.0 / (abs(yc) + x1 * slope + slope + 3.0), span / _MAX_SECTION_PANELS))
            y2 = y + ell
            if yb - y2 < 1e-12 * ell or not (y2 > y):  # (a step below half an ulp of y: to the end)
                y2 = yb
                ell = yb - y
            yc2 = y2 - gt
            ynear = 0.0 if (yc <= 0.0 and 0.0 <= yc2) else min(abs(yc), abs(yc2))
            # nearest the section comes to the centre over the panel (linear ends)
            lo0 = la + dl * (y - q1)
            lo1 = la + dl * (y2 - q1)
            hi0 = ha + dh * (y - q1)
            hi1 = ha + dh * (y2 - q1)
            if min(lo0, lo1) > 0.0:
                xnear = min(lo0, lo1)
            elif max(hi0, hi1) < 0.0:
                xnear = -max(hi0, hi1)
            else:
                xnear = 0.0
            if ynear * ynear + xnear * xnear - d2 < 2.0 * _BOX + 20.0:
                for i in range(_N_PANEL):
                    ys = y + ell * _GL_U[i]
                    lo, hi, jl, jh = _section(V, m, ys)
                    if not (hi > lo):
                        continue
                    wd = _section_width(V, jl, jh, ys, lo, hi, det)
                    if want_moments:  # the section's mean as lo + its offset (polygon frame)
                        lm, off, sv = std_interval_offset_moments(lo - ga, hi - ga, wd)
                        xs = lo + off
                    else:  # the mass alone, at a third of the cost
                        lm = std_interval_log_mass(lo - ga, hi - ga, wd)
                        xs = sv = 0.0
                    yy = ys - gt
                    ex = lm - 0.5 * (yy * yy - d2)
                    if ex > shift + 300.0:
                        f = math.exp(shift - ex)
                        tot *= f
                        syy *= f
                        sxy *= f
                        sxx *= f
                        syr *= f
                        srr *= f
                        shift = ex
                    w = _GL_V[i] * ell * _INV_SQRT_2PI * math.exp(ex - shift)
                    if not (w > 0.0):
                        continue
                    new = tot + w
                    dy = ys - my
                    dx = xs - mx
                    dr = (xs - k0 * ys) - mr
                    r = w / new
                    if want_moments:
                        c = tot * r
                        syy += c * dy * dy
                        sxy += c * dy * dx
                        sxx += c * dx * dx + w * sv
                        syr += c * dy * dr
                        srr += c * dr * dr + w * sv
                    my += r * dy
                    mx += r * dx
                    mr += r * dr
                    tot = new
            y = y2
    if not (tot > 0.0):
        return -math.inf, nan, nan, nan, nan, nan
    log_mass = math.log(tot) + (shift - 0.5 * d2)
    if not want_moments:
        return log_mass, nan, nan, nan, nan, nan
    # of the two frames, the one in which the coordinates are less correlated
    # (sxy^2 / (sxx syy) against syr^2 / (srr syy)) loses less to the
    # difference that the spread across the polygon is
    if syr * syr * sxx < sxy * sxy * srr:
        k = k0
        cyr = syr / tot
        crr = srr / tot
    else:
        k = 0.0
        cyr = sxy / tot
        crr = sxx / tot
    cyy = syy / tot
    my -= gt  # relative to the centre
    mx -= ga
    # back to the whitened frame: u = y t + x a = y g + r a with g = t + k a,
    # straight from the chosen frame (through the (y, x) entries the thin
    # direction would be rounded in a frame at an angle to it)
    ux = my * tx + mx * ax
    uy = my * ty + mx * ay
    gx = tx + k * ax
    gy = ty + k * ay
    c00 = gx * gx * cyy + 2.0 * gx * ax * cyr + ax * ax * crr
    c11 = gy * gy * cyy + 2.0 * gy * ay * cyr + ay * ay * crr
    c01 = gx * gy * cyy + (gx * ay + gy * ax) * cyr + ax * ay * crr
    return log_mass, ux, uy, c00, c01, c11


# ----------------------------------------------------------------------------- small polygons
def small_polygon_moments(P, n, U, V):
    """``(log_mass, mx, my, c00, c01, c11)`` of N(0, I) over the bounded
    polygon ``P[0:n]`` (every point finite), by a product Gauss-Legendre rule
    (nodes ``U``, weights ``V`` on [0, 1]) on the fan of triangles from its
    first vertex ``p``: in triangle ``(p, p + a, p + b)``, ``w = s (a + t (b -
    a))`` with ``dA = |a x b| s ds dt``, and the density relative to its value
    at ``p`` is ``exp(-(p . w + |w|^2 / 2))``.

    Serves small polygons, where that exponent varies little over the
    polygon and so is a low-degree polynomial to machine precision: the
    weights are positive, nothing cancels, and the scatter is gathered about
    ``p`` one node at a time (so a polygon far from the origin keeps its
    spread). The caller bounds the variation (``nu = |p| diam + diam^2 /
    2``) and picks the rule (``kernels.cpu.pairs._small_rule``)."""
    nan = math.nan
    if n < 3:
        return -math.inf, nan, nan, nan, nan, nan
    px = P[0, 0]
    py = P[0, 1]
    tot = 0.0
    mx = 0.0
    my = 0.0
    sxx = 0.0
    sxy = 0.0
    syy = 0.0
    for k in range(1, n - 1):
        ax = P[k, 0] - px
        ay = P[k, 1] - py
        bx = P[k + 1, 0] - px
        by = P[k + 1, 1] - py
        area = ax * by - ay * bx  # twice the triangle's area (CCW: positive)
        if not (area > 0.0):
            continue
        dx = bx - ax
        dy = by - ay
        for j in range(len(U)):
            cx = ax + U[j] * dx
            cy = ay + U[j] * dy
            pc = px * cx + py * cy
            cc = cx * cx + cy * cy
            for i in range(len(U)):
                sv = U[i]
                w = V[i] * V[j] * sv * area * math.exp(-sv * (pc + 0.5 * sv * cc))
                new = tot + w
                r = w / new
                ex = sv * cx - mx
                ey = sv * cy - my
                c = tot * r
                sxx += c * ex * ex
                sxy += c * ex * ey
                syy += c * ey * ey
                mx += r * ex
                my += r * ey
                tot = new
    if not (tot > 0.0):
        return -math.inf, nan, nan, nan, nan, nan
    log_mass = math.log(tot) - 0.5 * (px * px + py * py) - LOG_2PI
    return log_mass, px + mx, py + my, sxx / tot, sxy / tot, syy / tot


# ----------------------------------------------------------------------------- far polygons
def _merged_edge(E, K, k):
    """``(s1, s2, w)`` of edge k with the consecutive edges on its line joined
    to it (clipping a line through the plane's ideal points puts a vertex on
    it): the half-plane's own line, split at its foot, would otherwise give
    the half of it a half-normal along the line."""
    tx = E[k, 0]
    ty = E[k, 1]
    c = E[k, 2]
    s1 = E[k, 3]
    s2 = E[k, 4]
    j = k
    for _ in range(K - 1):  # forwards: edges starting where this run ends, on its line
        j = j + 1 if j < K - 1 else 0
        if j == k or not (E[j, 0] == tx and E[j, 1] == ty and E[j, 2] == c and E[j, 3] == s2):
            break
        s2 = E[j, 4]
    j = k
    for _ in range(K - 1):  # backwards
        j = j - 1 if j > 0 else K - 1
        if j == k or not (E[j, 0] == tx and E[j, 1] == ty and E[j, 2] == c and E[j, 4] == s1):
            break
        s1 = E[j, 3]
    w = E[k, 5] if s1 == E[k, 3] and s2 == E[k, 4] else s2 - s1
    return s1, s2, w


def _far_edge(E, K, k):
    """:func:`far_polygon` where the nearest point is on edge k (or the edge
    nearer the tangent at a blunt vertex): the one-sided tail ``[c, inf)``
    across it (its exact moments: mean ``c + 1/c - ...``, variance ``1/c^2 -
    6/c^4 + ...``) times the standard normal over the edge (joined with its
    collinear neighbours, :func:`_merged_edge`)."""
    tx = E[k, 0]
    ty = E[k, 1]
    nx = -ty
    ny = tx
    s1, s2, w = _merged_edge(E, K, k)
    lm, ms, vs = std_interval_moments(s1, s2, w)
    ln, mn, vn = std_interval_moments(E[k, 2], math.inf, math.inf)
    mx = mn * nx + ms * tx
    my = mn * ny + ms * ty
    return (ln + lm, mx, my, vs * tx * tx + vn * nx * nx, vs * tx * ty + vn * nx * ny, vs * ty * ty + vn * ny * ny)


def _half_plane_edge(P, n, E, K, d2):
    """The edge whose foot is the polygon's nearest point, where the polygon holds the
    rectangle ``|a| <= _HALF_A``, ``0 <= b <= _HALF_B / c`` about that foot (``a`` along the
    edge, ``b`` inwards, ``c`` the edge's distance): outside it the edge's half-plane holds
    less than ``e^-45`` of its mass (``2 Q(10)`` along, ``e^-45`` across), so the polygon's moments are the half-plane's to that
    (:func:`_far_edge`: one-dimensional and exact). ``-1`` otherwise. (The edge formulas
    take the moments about the origin, ``d`` away, and lose ``eps d^2`` in the covariance.)"""
    for k in range(K):
        c = E[k, 2]
        if not (c > 0.0 and E[k, 3] <= 0.0 <= E[k, 4] and c * c <= d2 * (1.0 + 1e-12)):
            continue
        tx = E[k, 0]
        ty = E[k, 1]
        nx = -ty
        ny = tx
        B = _HALF_B / c
        for j in range(n):
            lx = P[j, 3]
            ly = P[j, 4]
            r = math.sqrt(lx * lx + ly * ly)
            if not (r > 0.0):
                continue
            # the edge's own line (and its pieces): the rectangle lies on it
            if abs(lx / r - nx) <= 1e-12 and abs(ly / r - ny) <= 1e-12 and abs(P[j, 5] / r + c) <= 1e-12 * c:
                continue
            for sa in (-_HALF_A, _HALF_A):
                for b in (0.0, B):
                    ux = (c + b) * nx + sa * tx
                    uy = (c + b) * ny + sa * ty
                    if not (lx * ux + ly * uy + P[j, 5] > 0.0):
                        return -1
        return k
    return -1


def _far_feature(E, K):
    """Where a far polygon's mass sits (:func:`far_polygon`): ``(k, d2, vx,
    vy, e1x, e1y, e2x, e2y, al, be, cross, k1, k2)``. ``k >= 0``: the nearest point
    is the foot of edge k, or a blunt vertex along whose edge k (the one
    nearer the tangent) the density is Gaussian, not exponential: that edge's
    own formula serves (the other entries unused). ``k = -1``: the vertex
    ``v`` (squared distance ``d2``), with edges leaving along ``e1``, ``e2``
    at rates ``al = v . e1``, ``be = v . e2`` (both beyond ``_FAR_RATE``),
    on edges ``k1`` and ``k2``."""
    best = 0
    d2 = math.inf
    foot = False
    for k in range(K):
        c = E[k, 2]
        if not (c > 0.0):  # the nearest point lies on an edge facing the origin
            continue
        s = 0.0
        if E[k, 3] > 0.0:
            s = E[k, 3]
        elif E[k, 4] < 0.0:
            s = E[k, 4]
        r2 = c * c + s * s
        # ties (s^2 below the rounding of c^2) go to an edge holding its foot
        if r2 < d2 or (r2 == d2 and s == 0.0 and not foot):
            d2 = r2
            best = k
            foot = s == 0.0
    if foot:
        return best, d2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, best, -1
    tx = E[best, 0]
    ty = E[best, 1]
    c = E[best, 2]
    nx = -ty
    ny = tx
    s1 = E[best, 3]
    s2 = E[best, 4]
    # a vertex: the start of this edge (s1 > 0) or its end (s2 < 0)
    if s1 > 0.0:
        vx = c * nx + s1 * tx
        vy = c * ny + s1 * ty
        j = best - 1 if best > 0 else K - 1  # the edge arriving there, reversed
        e1x, e1y, e2x, e2y = tx, ty, -E[j, 0], -E[j, 1]
    else:
        vx = c * nx + s2 * tx
        vy = c * ny + s2 * ty
        j = best + 1 if best < K - 1 else 0  # the edge leaving there
        e1x, e1y, e2x, e2y = E[j, 0], E[j, 1], -tx, -ty
    al = vx * e1x + vy * e1y
    be = vx * e2x + vy * e2y
    cross = abs(e1x * e2y - e1y * e2x)
    if not (al > _FAR_RATE and be > _FAR_RATE and cross > 0.0):  # blunt: the edge nearer the tangent
        k = best if s1 > 0.0 and al <= be or s2 < 0.0 and be <= al else j
        return k, d2, vx, vy, e1x, e1y, e2x, e2y, al, be, cross, k, -1
    return -1, d2, vx, vy, e1x, e1y, e2x, e2y, al, be, cross, best, j


def far_polygon(E, K):
    """``(log_mass, mx, my, c00, c01, c11)`` of a polygon beyond ``_FAR2``
    (squared whitened distance): there ``|u|^2 / 2 = d^2 / 2 + p . w + |w|^2 /
    2`` about the nearest point ``p`` (``w`` the offset from it, of size
    ``1/d``): dropping ``|w|^2 / 2`` errs by ``O(1/d^2)``, and the other edges
    cut in only within ``O(1/d)`` of the nearest point's neighbourhood, both
    far below the ``eps d^2 / 2`` that the inputs' rounding puts into the
    log-mass. So the density is exponential off the nearest point:

    * on an edge (foot inside it, line at distance ``c = d``): ``v ~ Exp(c)``
      across the edge and the standard normal along it, truncated to the
      edge: mass ``exp(-c^2/2) / (c sqrt(2 pi)) (Phi(s2) - Phi(s1))``;
    * at a vertex ``p`` with edges leaving along ``e1``, ``e2``: ``w = a e1 +
      b e2`` with ``a ~ Exp(p . e1)``, ``b ~ Exp(p . e2)`` independent: mass
      ``exp(-d^2/2) |e1 x e2| / (2 pi (p . e1)(p . e2))``.

    (The section rule and the edge formulas cannot serve there: their terms
    carry ``eps d^2`` of rounding in the exponent.)"""
    k, d2, vx, vy, e1x, e1y, e2x, e2y, al, be, cross, _, _ = _far_feature(E, K)
    if k >= 0:
        return _far_edge(E, K, k)
    lm = -0.5 * d2 - LOG_2PI + math.log(cross) - math.log(al) - math.log(be)
    mx = vx + e1x / al + e2x / be
    my = vy + e1y / al + e2y / be
    a2 = 1.0 / (al * al)
    b2 = 1.0 / (be * be)
    return lm, mx, my, a2 * e1x * e1x + b2 * e2x * e2x, a2 * e1x * e1y + b2 * e2x * e2y, a2 * e1y * e1y + b2 * e2y * e2y


def far_log_mass_at(E, K):
    """``(log_mass + d^2 / 2, px, py, k1, k2)`` of a polygon beyond ``_FAR2``
    (:func:`far_polygon`): its log-mass relative to the density at its
    nearest point ``p``, and ``p``. A caller that knows the exponent in
    another frame evaluates it at ``p`` there: ``-d^2/2`` taken in the
    whitened frame carries ``d`` times the rounding of the frame's offset
    (the Gaussian's mean, far from the polygon and possibly far from the
    origin), while the relative part only needs ``p`` and the edges'
    directions to relative accuracy. At a blunt vertex ``|s| <= _FAR_RATE``
    along the edge that serves, so adding ``s^2 / 2`` back is exact to a few
    ulps of 32. ``k1``, ``k2``: the edges (rows of ``E``) through ``p`` that
    fix it, ``k2 = -1`` where one does (a foot, or a blunt vertex, where the
    exponent's slope along the edge is at most ``_FAR_RATE``)."""
    k, d2, vx, vy, e1x, e1y, e2x, e2y, al, be, cross, k1, k2 = _far_feature(E, K)
    if k < 0:
        return -LOG_2PI + math.log(cross) - math.log(al) - math.log(be), vx, vy, k1, k2
    tx = E[k, 0]
    ty = E[k, 1]
    c = E[k, 2]
    s1, s2, w = _merged_edge(E, K, k)
    s = 0.0
    if s1 > 0.0:
        s = s1
    elif s2 < 0.0:
        s = s2
    # Q(c) = phi(c) R(c): log Q(c) + c^2 / 2 = log R(c) - log sqrt(2 pi)
    rel = math.log(mills_ratio(c)) - 0.5 * LOG_2PI + (std_interval_log_mass(s1, s2, w) + 0.5 * s * s)
    return rel, c * -ty + s * tx, c * tx + s * ty, k, -1


def far_distance2(E, K):
    """Squared distance of a polygon from the origin when the origin lies
    outside it (0 otherwise), as :func:`std_polygon_log_mass` compares it with
    ``_FAR2``."""
    d2 = math.inf
    outside = False
    for k in range(K):
        if E[k, 2] > 0.0:
            outside = True
        d2 = min(d2, _edge_distance2(E[k, 2], E[k, 3], E[k, 4]))
    return d2 if outside else 0.0


# ----------------------------------------------------------------------------- entry points
def _section_axis(E, K, d2):
    """The x-axis of the section rule: towards the nearest point when the
    origin is outside, else the first axis."""
    if d2 > 0.0:
        _, px, py = nearest_point(E, K)
        r = math.hypot(px, py)
        if r > 0.0:
            return px / r, py / r
    return 1.0, 0.0


def std_polygon_log_mass(P, n, E, B1, B2, V, Y, floor, A, nA, G, LM, nl, fan):
    """``log P(u in polygon)`` for u ~ N(0, I), polygon ``P[0:n]`` (module
    docstring). Scratch: ``E`` (n, 6), ``B1``, ``B2`` (n + 8, 6), ``V``
    (n + 8, 7), ``Y`` (n + 8).

    ``A[0:nA], G, LM[0:nl]``: the polygon for the section rule, where it is
    needed (:func:`section_rule`): ``P`` itself with ``G = (0, 0, 1)`` and
    ``nl = 0``, or the same polygon in a frame anchored on it. ``nA < 0``
    asks for NaN instead where the section rule would serve (the caller then
    anchors the polygon and calls again).

    ``floor`` (``-inf`` for the exact value always): where the upper bound
    ``log Q(d)`` (the polygon lies beyond the tangent line at its nearest
    point, at distance ``d``) is below it, that bound is returned instead;
    a caller summing terms passes the level below which a term cannot change
    its sum.

    ``fan`` (4 floats) records ``(K, log_mass, d2, kappa)`` of
    :func:`fan_log_mass` where it ran, with the edge table left in ``E``
    (``fan[0] = -1`` otherwise): :func:`std_polygon_moments` of the same
    polygon then starts from them."""
    fan[0] = -1.0
    if n == 0:
        return -math.inf
    K, arc = edge_table(P, n, E)
    if K == 0:
        return 0.0 if arc > 0.0 else -math.inf
    if floor > -math.inf:
        bound = log_tail_bound(E, K)
        if bound < floor:
            return bound
    lm, d2, kappa = fan_log_mass(E, K, arc)
    fan[0] = K
    fan[1] = lm
    fan[2] = d2
    fan[3] = kappa
    if d2 > _FAR2:
        return far_polygon(E, K)[0]
    if kappa > _KAPPA_MAX:
        if nA < 0:  # the caller builds the anchored polygon only when it is needed
            return math.nan
        ax, ay = _section_axis(E, K, d2)
        lm = section_rule(A, nA, d2, ax, ay, False, B1, B2, V, Y, G, LM, nl)[0]
    return lm


def log_tail_bound(E, K):
    """An upper bound on the log-mass from the edge table: ``log Q(d) <=
    -d^2/2 - log(d sqrt(2 pi))`` at the polygon's distance ``d`` from the
    origin (0 when the origin is inside or on the boundary)."""
    d2 = math.inf
    for k in range(K):
        if E[k, 2] > 0.0:
            d2 = min(d2, _edge_distance2(E[k, 2], E[k, 3], E[k, 4]))
    if d2 == math.inf or not (d2 > 1.0):
        return 0.0
    return -0.5 * d2 - 0.5 * math.log(d2) - LOG_2PI * 0.5


def std_polygon_moments(P, n, E, B1, B2, V, Y, careful, A, nA, G, LM, nl, slack, fan):
    """``(log_mass, mx, my, c00, c01, c11)`` of N(0, I) restricted to the
    polygon ``P[0:n]``: log-mass, mean and covariance (same scratch and
    section-rule polygon ``A, nA, G, LM, nl`` as :func:`std_polygon_log_mass`). With ``careful=False`` the edge formulas
    are returned as they are, without the section-rule fallback: for terms
    whose weight is negligible anyway (``-inf`` mass where they cancel
    completely). ``slack >= 1`` multiplies the cancellation and amplification
    the edge formulas may have before the section rule serves (their
    moments' error, about ``eps`` times either, grows by as much): for a
    caller that weighs the moments by ``1 / slack`` or less. ``fan``: where
    ``fan[0] >= 0``, what :func:`std_polygon_log_mass` recorded of this very
    polygon, its edge table still in ``E`` (the same numbers, not computed
    again: about half the work of the moments)."""
    nan = math.nan
    if n == 0:
        return -math.inf, nan, nan, nan, nan, nan
    if fan[0] >= 0.0:
        K = int(fan[0])
        lm = fan[1]
        d2 = fan[2]
        kappa = fan[3]
    else:
        K, arc = edge_table(P, n, E)
        if K == 0:
            if arc > 0.0:
                return 0.0, 0.0, 0.0, 1.0, 0.0, 1.0
            return -math.inf, nan, nan, nan, nan, nan
        lm, d2, kappa = fan_log_mass(E, K, arc)
    if d2 > _FAR2:
        return far_polygon(E, K)
    if d2 > _HALF_PLANE2:
        k = _half_plane_edge(P, n, E, K, d2)
        if k >= 0:  # the polygon is its nearest edge's half-plane where the density is
            return _far_edge(E, K, k)
    if (kappa <= _KAPPA_MAX * slack or not careful) and lm > -math.inf:
        mx, my, c00, c01, c11, amp = fan_moments(E, K, lm, d2)
        if amp <= _AMP_MAX * slack or not careful:
            return lm, mx, my, c00, c01, c11
    if not careful:
        return lm, nan, nan, nan, nan, nan
    if nA < 0:  # the caller builds the anchored polygon only when it is needed
        return nan, nan, nan, nan, nan, nan
    ax, ay = _section_axis(E, K, d2)
    lms, mx, my, c00, c01, c11 = section_rule(A, nA, d2, ax, ay, True, B1, B2, V, Y, G, LM, nl)
    if nl == 0 and kappa <= 4.0 and lm > -math.inf:
        # only the moments amplified rounding, and the edge formulas' mass lost
        # at most 2 bits: it is the more accurate where the sections' lines
        # carry the whitening's rounding (no anchored frame)
        lms = lm
    return lms, mx, my, c00, c01, c11
