"""Gaussian mass and moments over a small polygon by its moment series (docs/mathematics.md, section 6).

A region's polygon ``P`` and its posterior precision ``Lambda = L L^T`` do not
depend on the sample; only the posterior mean ``mu`` does. About the
polygon's area centroid ``c``, with ``u = L^T (z - c)`` and ``g = L^T (mu - c)``::

    Phi(mu) = N(mu, Lambda^-1)-mass of P = exp(-|g|^2 / 2) F(g) / (2 pi)
    F(g)    = int_P' exp(g . u) psi(u) du,       psi(u) = exp(-|u|^2 / 2)
            = sum_{a, b} M_ab g1^a g2^b / (a! b!),   M_ab = int_P' u1^a u2^b psi(u) du

(``P'`` the polygon in the ``u`` frame). The coefficients ``M_ab`` are the
polygon's Gaussian-weighted monomial moments: each region computes them once
(:func:`series_table`, by an exact radial integral and Gauss-Legendre along
the edges), and each (sample, region) pair evaluates a polynomial
(:func:`series_eval`) where the edge formulas spend special functions. The
truncated moments follow from F's derivatives: ``E[u] = grad F / F`` and
``E[u u^T] = hess F / F``.

Error bound (every quantity below is computed per pair; the rule serves only
where the sum is small). The frame is turned onto the polygon's principal axes
(:func:`series_table`); ``h = max |u|``, ``h1 = max |u1|``, ``h2 = max |u2|`` over
``P'`` and ``rho = |g1| h1 + |g2| h2 >= max |g . u|``.

* Truncation. ``|e^t - T_m(t)| <= |t|^{m+1} e^{max(t, 0)} / (m+1)!``
  (``T_m`` the degree-m Taylor polynomial), and ``int e^{max(g.u, 0)} psi <=
  int_{g.u > 0} e^{g.u} psi + int psi <= (1 + A) F``: the first part is at most F,
  and by Grunbaum's theorem any line through the centroid of a convex polygon
  leaves at least 4/9 of its area on each side, so ``F >= int_{g.u >= 0} psi >=
  (4/9) e^{-h^2/2} area >= int psi / A``, ``A = (9/4) e^{h^2/2}``. So F truncated
  at degree ``K + 1`` errs by at most ``(1 + A) rho^{K+2} / (K+2)!`` of itself;
  grad F (degree ``K + 1``) by ``h_j`` times the same, hess F (degree ``K``) by
  ``h_j h_k`` times it with ``K + 1`` (``|u_j| <= h_j`` on ``P'``). ``K`` is the
  smallest degree that puts the largest of these, the last, below ``2^-53``
  (``SERIES_TRUNC``), or below the larger bound a caller asks for (below 1:
  then ``rho < K + 2``, and the others are smaller).
* Rounding, a posteriori. The table holds beside each entry ``S_ab`` the sum
  ``|S|_ab`` of the absolute values of the terms it was summed from (nodes along
  the edges, triangles of the fan); each term carries at most ``(3N + 9 + n_t)``
  roundings and the sums ``n_t + n_v`` more, so ``|error of S_ab| <= teps |S|_ab``
  with ``teps = (3N + 9 + n_t + n_v) u``. Let ``B(g) = sum |S|_ab |g1|^a |g2|^b``
  (degrees up to ``K + 1``, positive terms; :func:`series_abs_sum`). A priori
  ``B <= e^rho |S|_00`` (:func:`series_abs_bound`): a node's terms are ``w J_n
  u1^a u2^b / (a! b!)`` with ``w > 0`` and ``0 < J_n <= J_0`` (``s^{n+1} <= s`` on
  ``[0, 1]``), so with ``g``'s powers those of degree ``n`` sum in absolute value to
  at most ``w J_0 (|u1 g1| + |u2 g2|)^n / n! <= w J_0 rho^n / n!``, and all of them
  to at most ``w J_0 e^rho``; summed over the nodes, ``e^rho |S|_00``. Callers take
  this bound and sum ``B`` itself only where it is too loose for their tolerance.
  The terms of F then sum in absolute value to at most ``B``, and F's
  evaluation errs by at most ``(3K + 8) u B``: it sums each power of ``g1`` apart,
  ``F = sum_a g1^a sum_b S_ab g2^b``, so term ``(a, b)`` meets ``b`` roundings in
  ``g2^b S_ab``, at most ``K + 1 - a`` additions in its row, ``a`` in ``g1^a``
  times the row and ``K + 1`` across the rows: ``b + 2K + 2 <= 3K + 3``.
  The table's rounding reaches F by at most ``teps B``.
  The derivatives (summed to a degree ``K_d <= K``, :func:`series_derivatives`:
  their truncation bound is then ``series_degree``'s for ``K_d``) come from the same
  rows, weighted by the derivatives of the powers: at most ``3 K_d + 5`` roundings a
  term, within F's count; since each node's ``|u_j| <= h_j`` and the radial factor falls with
  the degree, ``(a + 1) |S|_{a+1,b} <= h1 |S|_ab`` (and alike), so grad F and hess F
  err by ``h_j`` and ``h_j h_k`` times F's bound. Where the whitened polygon's own
  vertices are off by ``4 u h`` (their rounding), F moves by at most ``4 u h
  perimeter e^rho`` (``psi <= 1``, ``e^{g.u} <= e^rho`` on its edges).

:func:`series_error` returns these relative to the computed F (``u = 2^-53``; F
itself is then within them, and callers accept only sums far below 1/1000, so
dividing by ``0.999 F`` covers F's own error), and callers accept the rule where
it is small enough: the mass to ``1e-12`` relative, the covariance to ``1e-10`` in
its own metric (errors ``h_j h_k`` times a few of that sum, in the principal
frame; ``kernels.cpu.pairs._series_term``). Against the a priori form (every
``|S|_ab`` at its largest, ``h1^a h2^b area``, and F at its smallest, ``area /
A``: ``e^rho A`` where ``B / F`` is measured) the bound is one to two orders of
magnitude tighter for a mean a few whitened units from the polygon.
"""

import math

import numpy as np

#: The Hessian's largest truncation degree; the table holds degrees up to SERIES_N.
SERIES_K = 32
SERIES_N = SERIES_K + 2
SERIES_SIZE = (SERIES_N + 1) * (SERIES_N + 2) // 2
#: A region's table: its entries, then the sums of their terms' absolute values, each
#: by powers of ``g1``: entry ``(a, b)`` at ``series_row(a) + b`` (``a + b <= SERIES_N``).
SERIES_WIDTH = 2 * SERIES_SIZE
#: A region's scalars beside the table: centroid (2), R (4), R^-1 (4), h, h1, h2,
#: teps, ``4 u h perimeter`` (the whitened vertices' rounding), its
#: :func:`series_growth` and an upper bound on ``log M_00``.
SERIES_COLS = 17
#: The powers of ``g2`` follow those of ``g1`` at this offset in a pair's scratch vector
#: (``SERIES_SCRATCH`` long: then ``|g2|^k`` and the powers' derivatives).
SERIES_PW = SERIES_N + 1
SERIES_SCRATCH = 6 * SERIES_PW
#: Largest whitened radius (about the centroid) of a polygon the rule serves.
SERIES_H = 1.0
_U = 1.1102230246251565e-16
_LOG_2PI = 1.8378770664093453
#: Truncation bound of the full-accuracy series (relative to F): 2^-53.
SERIES_TRUNC = 2.0**-53
# Gauss-Legendre along each edge: the integrand is a polynomial of degree n <= N
# times J_n(|d(t)|^2), whose series in q = |d|^2 (terms (q/2)^j / j!) adds degree 2j.
# 2 n_t - 1 >= N + 2 j covers every term with (h^2/2)^j / j! above 1e-20 for
# h <= 0.155 (20 nodes), 0.47 (24) and 1.29 (32); GL's positive weights bound the
# rest by twice its size.
_GLE = [np.polynomial.legendre.leggauss(m) for m in (20, 24, 32)]
_T20 = tuple(float(v) for v in 0.5 * (_GLE[0][0] + 1.0))
_W20 = tuple(float(v) for v in 0.5 * _GLE[0][1])
_T24 = tuple(float(v) for v in 0.5 * (_GLE[1][0] + 1.0))
_W24 = tuple(float(v) for v in 0.5 * _GLE[1][1])
_T32 = tuple(float(v) for v in 0.5 * (_GLE[2][0] + 1.0))
_W32 = tuple(float(v) for v in 0.5 * _GLE[2][1])
del _GLE
_INV_FACT = tuple(1.0 / math.factorial(k) for k in range(SERIES_N + 1))
_INV_INT = tuple(1.0 / k if k else 0.0 for k in range(SERIES_K + 2))


def _radial_moments(q, J):
    """``J[n] = int_0^1 s^(n+1) exp(-q s^2 / 2) ds`` for ``n = 0..SERIES_N`` (``0 <= q <= 2``):
    the top two by their alternating series (terms falling at least by ``q / 2``),
    the rest by ``J[n-2] = (exp(-q/2) + q J[n]) / n`` (all terms positive)."""
    x = -0.5 * q
    for n in range(SERIES_N - 1, SERIES_N + 1):
        term = 1.0
        tot = 1.0 / (n + 2)
        for j in range(1, 24):
            term *= x / j
            tot += term / (n + 2 + 2 * j)
        J[n] = tot
    e = math.exp(x)
    for n in range(SERIES_N, 1, -1):
        J[n - 2] = (e + q * J[n]) / n


def _edge_moments(px, py, qx, qy, T, W, J, P1, P2, acc):
    """Add triangle (0, p, q)'s ``int u1^a u2^b psi`` to ``acc[i]`` and the sum of
    its terms' absolute values to ``acc[SERIES_SIZE + i]`` (``i = n (n+1) / 2 + b``,
    ``n = a + b``): ``u = s (p + t (q - p))``, ``du = (p x q) s ds dt``. (``P1``
    holds the powers of ``u1`` in reverse, ``P1[N - k] = u1^k``, so that the inner
    loop runs forward through both: the compiler vectorizes it.)"""
    area2 = px * qy - py * qx
    if not (area2 > 0.0):
        return
    ex = qx - px
    ey = qy - py
    N = SERIES_N
    for j in range(len(T)):
        dx = px + T[j] * ex
        dy = py + T[j] * ey
        _radial_moments(dx * dx + dy * dy, J)
        P1[N] = 1.0
        P2[0] = 1.0
        for k in range(1, N + 1):
            P1[N - k] = P1[N - k + 1] * dx
            P2[k] = P2[k - 1] * dy
        w = W[j] * area2
        i = 0
        for n in range(N + 1):
            wn = w * J[n]
            o = N - n
            for b in range(n + 1):
                t = wn * (P1[o + b] * P2[b])
                acc[i + b] += t
                acc[SERIES_SIZE + i + b] += abs(t)
            i += n + 1


def _centred(P, k, ox, oy, cx, cy):
    """Vertex k of ``P`` about the centroid ``(ox + cx, oy + cy)``, from its offset to
    the first vertex ``(ox, oy)`` (no rounding of the size of the polygon's position)."""
    return (P[k, 0] - ox) - cx, (P[k, 1] - oy) - cy


def series_table(P, nv, l11, l21, l22, S, J, P1, P2, acc, out):
    """Region table of the moment series for the bounded convex polygon ``P[0:nv]``
    (z coordinates, counter-clockwise) under the precision factor ``L^T = [[l11, l21],
    [0, l22]]``.

    The frame is ``u = Q L^T (z - c)``: about the area centroid ``c``, whitened,
    and turned (``Q``) onto the whitened polygon's principal axes, so that a thin
    polygon's narrow extent ``h2`` bounds what its covariance's thin direction
    sees. Fills ``S[series_row(a) + b] = M_ab / (a! b!)`` and, ``SERIES_SIZE``
    further, ``|S|_ab``, the sum of the absolute values of its terms (module
    docstring; ``a + b <= SERIES_N``), and ``out[0:11]``: ``c`` (2), the map ``R = Q L^T``
    (4, row major), its inverse (4), then ``h``; returns ``(h1, h2, h, teps, pe)``:
    the largest ``|u1|``, ``|u2|`` and ``|u|`` over the polygon (``h = inf`` where
    the rule does not serve: fewer than three points, no area, or ``h >
    SERIES_H``), the entries' rounding factor ``teps`` and ``pe = 4 u h
    perimeter``, the whitened vertices' rounding (module docstring). ``J``,
    ``P1``, ``P2``: scratch of ``SERIES_N + 1``; ``acc``: of ``SERIES_WIDTH``."""
    inf = math.inf
    if nv < 3:
        return 0.0, 0.0, inf, 0.0, 0.0
    ox = P[0, 0]
    oy = P[0, 1]
    a2 = 0.0
    cx = 0.0
    cy = 0.0
    for k in range(1, nv - 1):  # the fan from the first vertex, relative to it
        ax = P[k, 0] - ox
        ay = P[k, 1] - oy
        bx = P[k + 1, 0] - ox
        by = P[k + 1, 1] - oy
        cr = ax * by - ay * bx
        a2 += cr
        cx += cr * (ax + bx)
        cy += cr * (ay + by)
    if not (a2 > 0.0):
        return 0.0, 0.0, inf, 0.0, 0.0
    cx /= 3.0 * a2
    cy /= 3.0 * a2
    # the whitened polygon's second moments of area about its centroid (fan from it)
    ixx = 0.0
    ixy = 0.0
    iyy = 0.0
    per = 0.0
    area2 = 0.0
    for k in range(nv):
        dx, dy = _centred(P, k, ox, oy, cx, cy)
        ex, ey = _centred(P, k + 1 if k + 1 < nv else 0, ox, oy, cx, cy)
        px = l11 * dx + l21 * dy
        py = l22 * dy
        qx = l11 * ex + l21 * ey
        qy = l22 * ey
        cr = px * qy - py * qx
        area2 += cr
        ixx += cr * (px * px + px * qx + qx * qx)
        iyy += cr * (py * py + py * qy + qy * qy)
        ixy += cr * (2.0 * px * py + px * qy + qx * py + 2.0 * qx * qy)
        per += math.hypot(qx - px, qy - py)
    th = 0.5 * math.atan2(ixy, ixx - iyy)  # ixy carries twice the product moment's weight
    cs = math.cos(th)
    sn = math.sin(th)
    r11 = cs * l11
    r12 = cs * l21 + sn * l22
    r21 = -sn * l11
    r22 = cs * l22 - sn * l21
    h1 = 0.0
    h2 = 0.0
    h = 0.0
    for k in range(nv):
        dx, dy = _centred(P, k, ox, oy, cx, cy)
        u1 = r11 * dx + r12 * dy
        u2 = r21 * dx + r22 * dy
        h1 = max(h1, abs(u1))
        h2 = max(h2, abs(u2))
        h = max(h, math.hypot(u1, u2))
    out[0] = ox + cx
    out[1] = oy + cy
    out[2] = r11
    out[3] = r12
    out[4] = r21
    out[5] = r22
    # R^-1 = L^-T Q^T
    out[6] = cs / l11 - sn * l21 / (l11 * l22)
    out[7] = -sn / l11 - cs * l21 / (l11 * l22)
    out[8] = sn / l22
    out[9] = cs / l22
    out[10] = h
    if not (h <= SERIES_H and area2 > 0.0):
        return h1, h2, inf, 0.0, 0.0
    for i in range(SERIES_WIDTH):
        S[i] = 0.0
    nt = 20 if h <= 0.155 else (24 if h <= 0.47 else 32)
    for k in range(nv):
        dx, dy = _centred(P, k, ox, oy, cx, cy)
        ex, ey = _centred(P, k + 1 if k + 1 < nv else 0, ox, oy, cx, cy)
        px = r11 * dx + r12 * dy
        py = r21 * dx + r22 * dy
        qx = r11 * ex + r12 * ey
        qy = r21 * ex + r22 * ey
        for i in range(SERIES_WIDTH):
            acc[i] = 0.0
        if nt == 20:
            _edge_moments(px, py, qx, qy, _T20, _W20, J, P1, P2, acc)
        elif nt == 24:
            _edge_moments(px, py, qx, qy, _T24, _W24, J, P1, P2, acc)
        else:
            _edge_moments(px, py, qx, qy, _T32, _W32, J, P1, P2, acc)
        for i in range(SERIES_WIDTH):
            S[i] += acc[i]
    for i in range(SERIES_WIDTH):  # summed by degree: laid out by powers of g1
        acc[i] = S[i]
    i = 0
    for n in range(SERIES_N + 1):
        for b in range(n + 1):
            f = _INV_FACT[n - b] * _INV_FACT[b]
            k = series_row(n - b) + b
            S[k] = acc[i] * f
            S[SERIES_SIZE + k] = acc[SERIES_SIZE + i] * f
            i += 1
    return h1, h2, h, (3 * SERIES_N + 9 + nt + nv) * _U, 4.0 * _U * h * per


def series_row(a):
    """Where the table's entries ``(a, b)``, ``b = 0 .. SERIES_N - a``, begin."""
    return a * (SERIES_N + 1) - (a * (a - 1)) // 2


def series_growth(h):
    """``1 + A = 1 + (9/4) e^{h^2 / 2}`` of the truncation bound (module docstring), for
    a polygon of whitened radius ``h``: :func:`series_degree` takes it."""
    return 1.0 + 2.25 * math.exp(0.5 * h * h)


def series_degree(rho, growth, trunc):
    """The smallest Hessian degree K whose truncation bound (module docstring) is
    below ``trunc`` (relative; ``SERIES_TRUNC`` = 2^-53 for full accuracy), or -1
    beyond ``SERIES_K``; ``growth``: the polygon's :func:`series_growth`."""
    # relative to F, F's and (over h) the gradient's bounds are (1 + A) rho^{K+2} / (K+2)!,
    # the Hessian's (over h^2) (1 + A) rho^{K+1} / (K+1)!: the largest (rho < K + 2 once it
    # is below 1)
    t = growth
    for K in range(SERIES_K + 1):
        t *= rho * _INV_INT[K + 1]  # (a product off the chain of t: no division on it)
        if t <= trunc:
            return K
    return -1


def series_error(F, B, erho, K, teps, pe, trunc):
    """Relative error bound of the computed ``F`` (and, times ``h_j`` and ``h_j h_k``,
    of its derivatives) for Hessian degree ``K`` chosen for the truncation bound
    ``trunc`` (:func:`series_degree`): truncation plus the rounding of the
    evaluation, of the table (``teps``) and of the polygon (``pe``), from ``B``
    (:func:`series_abs_sum`, or its bound :func:`series_abs_bound`; module
    docstring) and ``erho = e^rho``. Meaningful where far below 1/1000; ``inf``
    where F is not positive."""
    if not (F > 0.0):
        return math.inf
    return trunc + ((3 * K + 8) * _U * B + teps * B + pe * erho) / (0.999 * F)


def series_abs_bound(S, off, erho):
    """A bound on :func:`series_abs_sum` at any ``g`` and degree, from the table at
    ``S[off:]`` alone: ``B <= e^rho |S|_00`` (module docstring), with ``erho =
    e^rho``; the factor 1.001 covers the rounding of the table's terms."""
    return 1.001 * erho * S[off + SERIES_SIZE]


def series_eval(S, off, g1, g2, K, pw):
    """The series of F at ``g`` to degree ``K + 1``, from the region table at
    ``S[off:off + SERIES_WIDTH]``. Each power of ``g1`` sums its row apart (the
    rounding bound of the module docstring). Leaves ``g1^k`` and ``g2^k`` (``k <= K +
    2``) in ``pw[k]`` and ``pw[SERIES_PW + k]`` for :func:`series_abs_sum` and
    :func:`series_derivatives`. (The tables come flat and the powers in one vector:
    a view per pair would cost a reference count that threads share.)"""
    p2 = SERIES_PW
    pw[0] = 1.0
    pw[p2] = 1.0
    for k in range(1, K + 3):
        pw[k] = pw[k - 1] * g1
        pw[p2 + k] = pw[p2 + k - 1] * g2
    F = 0.0
    for a in range(K + 2):
        base = off + series_row(a)
        f = 0.0
        for b in range(K + 2 - a):
            f += S[base + b] * pw[p2 + b]
        F += f * pw[a]
    return F


def series_abs_sum(S, off, K, pw):
    """``B = sum |S|_ab |g1|^a |g2|^b`` over the terms :func:`series_eval` summed to
    degree ``K + 1`` (whose powers of ``g`` it reads from ``pw``): the bound on their
    absolute values that :func:`series_error` takes. Where :func:`series_abs_bound`
    already suffices, callers skip it."""
    p2 = SERIES_PW
    a2 = 2 * SERIES_PW
    for k in range(K + 2):
        pw[a2 + k] = abs(pw[p2 + k])
    B = 0.0
    for a in range(K + 2):
        base = off + SERIES_SIZE + series_row(a)
        fb = 0.0
        for b in range(K + 2 - a):
            fb += S[base + b] * pw[a2 + b]
        B += fb * abs(pw[a])
    return B


def series_derivatives(S, off, K, pw):
    """``(F1, F2, F11, F12, F22)``: the series of grad F (degree ``K + 1``) and hess F
    (degree ``K``) from the region table at ``S[off:]`` and the powers of ``g`` that
    :func:`series_eval` left in ``pw`` (to a degree of at least ``K + 2``). Each row
    ``a`` of the table gives ``q_m = sum_b S_ab d^m(g2^b) / dg2^m`` (``m = 0, 1, 2``,
    ``a + b <= K + 2``), weighted by ``g1^a`` or its derivatives: three products a
    term where the five sums by degree took ten, and the same terms (those of degree
    up to ``K + 1`` in grad F, ``K`` in hess F)."""
    p2 = SERIES_PW
    d1 = 3 * SERIES_PW  # k g2^(k-1)
    d2 = 4 * SERIES_PW  # k (k-1) g2^(k-2)
    e1 = 5 * SERIES_PW  # k g1^(k-1)
    pw[d1] = 0.0
    pw[d2] = 0.0
    pw[d2 + 1] = 0.0
    pw[e1] = 0.0
    for k in range(1, K + 3):
        pw[d1 + k] = k * pw[p2 + k - 1]
        pw[e1 + k] = k * pw[k - 1]
        if k >= 2:
            pw[d2 + k] = (k * (k - 1)) * pw[p2 + k - 2]
    F1 = 0.0
    F2 = 0.0
    F11 = 0.0
    F12 = 0.0
    F22 = 0.0
    for a in range(K + 3):
        base = off + series_row(a)
        q0 = 0.0
        q1 = 0.0
        q2 = 0.0
        for b in range(K + 3 - a):
            t = S[base + b]
            q0 += t * pw[p2 + b]
            q1 += t * pw[d1 + b]
            q2 += t * pw[d2 + b]
        if a <= K + 1:
            F2 += pw[a] * q1
        if a <= K:
            F22 += pw[a] * q2
        if a >= 1:
            F1 += pw[e1 + a] * q0
            F12 += pw[e1 + a] * q1
            if a >= 2:
                F11 += ((a * (a - 1)) * pw[a - 2]) * q0
    return F1, F2, F11, F12, F22
