"""Independent high-precision oracles for Gaussian integrals (tests only).

Nothing here imports fastcpa: these are slow, arbitrary-precision reference
implementations built on mpmath, used to check the compiled kernels.

* :func:`interval_moments_mp` -- log-mass, mean and variance of a 1-D normal
  truncated to an interval (closed forms, precision raised until two
  evaluations at different precisions agree).
* :func:`polygon_moments_mp` -- log-mass, mean and covariance of a 2-D normal
  truncated to a convex polygon (whitening, exact polygon geometry, outer
  adaptive Gauss-Legendre quadrature with a closed-form inner integral).
* :func:`polygon_from_vertices` -- half-plane description of a CCW polygon.
* :func:`log_prob_quad` -- converged latent quadrature of log p(x) and the
  posterior mean of a CPA model, S = 1 and 2, with its own error estimate
  (kinks found by :func:`line_kinks` from the forward pass alone).
* :func:`log_prob_mp_1d` -- S = 1 log p(x), posterior mean and variance at 30+
  digits (exact kinks, closed form per piece, two precisions must agree).
* :func:`linear_log_prob_mp` -- the affine generator's closed form.

Every function works inside ``mp.workdps``/``mp.workprec`` contexts, so the
global mpmath precision seen by other tests is left unchanged.
"""

from mpmath import mp
from mpmath.calculus.quadrature import GaussLegendre

__all__ = ["interval_moments_mp", "polygon_moments_mp", "polygon_from_vertices", "cpa_forward", "line_kinks",
           "log_prob_quad", "log_prob_mp_1d", "linear_log_prob_mp"]


# ---------------------------------------------------------------------------
# scalar helpers (all evaluated at the current mp precision)
# ---------------------------------------------------------------------------


def _mpf(x):
    """Convert a float / int / str / mpf (or numpy scalar) to mpf exactly."""
    if isinstance(x, str):
        return mp.mpf(x)
    try:
        return mp.mpf(x)
    except TypeError:
        return mp.mpf(float(x))


_CONST = {}


def _consts():
    """``(sqrt(2), 1/sqrt(2 pi))`` at the current precision (cached)."""
    c = _CONST.get(mp.prec)
    if c is None:
        c = _CONST[mp.prec] = (mp.sqrt(2), 1 / mp.sqrt(2 * mp.pi))
    return c


def _Q(x):
    """Upper tail ``P(N(0,1) >= x)`` with full relative accuracy for large x."""
    if abs(x) > 10**6 and not mp.isinf(x):
        if x < 0:
            return 1 - _Q(-x)
        # mpmath's erfc overflows for huge arguments: asymptotic Mills series,
        # terms (2n-1)!!/x^(2n) shrink by >= 1e12 per step here
        s, term, n, x2 = mp.one, mp.one, 0, x * x
        while abs(term) > mp.eps:
            n += 1
            term *= -(2 * n - 1) / x2
            s += term
        return _phi(x) / x * s
    return mp.erfc(x / _consts()[0]) / 2


def _phi(x):
    """Standard normal density; 0 at +-inf."""
    if mp.isinf(x):
        return mp.zero
    return mp.exp(-x * x / 2) * _consts()[1]


def _std_interval_raw(a, b):
    """``(int_a^b u^k phi(u) du for k = 0, 1, 2)`` by closed forms.

    The mass uses upper tails of the side away from 0 (no ``1 - tiny``); any
    remaining cancellation (thin intervals) is left to the caller, who either
    re-evaluates at a higher precision or avoids thin intervals.
    """
    if a >= 0:
        m0 = _Q(a) - _Q(b)
    elif b <= 0:
        m0 = _Q(-b) - _Q(-a)
    else:
        m0 = 1 - _Q(-a) - _Q(b)
    pa, pb = _phi(a), _phi(b)
    m1 = pa - pb
    m2 = m0 + (a * pa if pa else pa) - (b * pb if pb else pb)
    return m0, m1, m2


# ---------------------------------------------------------------------------
# 1-D: truncated normal on an interval
# ---------------------------------------------------------------------------


def _interval_at(lo, hi, mu, sigma):
    """One evaluation of (log_mass, mean, var) at the current precision."""
    lo, hi, mu, sigma = _mpf(lo), _mpf(hi), _mpf(mu), _mpf(sigma)
    a = (lo - mu) / sigma if not mp.isinf(lo) else lo
    b = (hi - mu) / sigma if not mp.isinf(hi) else hi
    m0, m1, m2 = _std_interval_raw(a, b)
    if not m0 > 0:
        return None
    ms = m1 / m0
    vs = m2 / m0 - ms * ms
    return mp.log(m0), mu + sigma * ms, sigma * sigma * vs


def interval_moments_mp(lo, hi, mu=0, sigma=1, dps=50):
    """Moments of ``z ~ N(mu, sigma^2)`` truncated to ``[lo, hi]``.

    Parameters
    ----------
    lo, hi : float, int, str or mpf
        Interval ends, ``lo < hi``; ``-inf`` / ``+inf`` allowed.
    mu : float or mpf, optional
        Mean of the normal.
    sigma : float or mpf, optional
        Standard deviation, ``> 0``.
    dps : int, optional
        Decimal digits wanted in the results.

    Returns
    -------
    log_mass, mean, var : mpf
        ``log P(lo <= z <= hi)``, ``E[z | lo <= z <= hi]`` and
        ``Var[z | lo <= z <= hi]``.

    Raises
    ------
    ValueError
        If ``lo >= hi``, ``sigma <= 0`` or an input is NaN.

    Notes
    -----
    Closed forms on the standardised interval ``[a, b]``: the mass is a
    difference of upper tails ``Q = erfc(x / sqrt 2) / 2`` taken on the side
    away from the mean (relative accuracy far in the tails, e.g. masses like
    ``exp(-5e5)``), ``E = (phi(a) - phi(b)) / P`` and
    ``Var = 1 + (a phi(a) - b phi(b)) / P - E^2``. Cancellation (thin
    intervals: mass, mean and especially the variance lose up to
    ``~log10(a^2/width^2)`` digits; far tails lose ``~4 log10 a`` digits in the
    variance) is handled by evaluating at ``dps + 40`` and ``dps + 65`` digits
    and doubling the working precision until the two agree to ``dps + 3``
    digits (relative; the mean relative to ``|mean| + sd``). The returned values
    are those of the higher precision, so they are good to well beyond ``dps``
    digits. Typical cost: ~1 ms; thin far intervals (width 1e-10 at 40 sd)
    ~3 ms.
    """
    with mp.workdps(dps + 10):
        lo_, hi_, sig_ = _mpf(lo), _mpf(hi), _mpf(sigma)
        if mp.isnan(lo_) or mp.isnan(hi_) or mp.isnan(_mpf(mu)) or mp.isnan(sig_):
            raise ValueError("interval_moments_mp: NaN input")
        if not lo_ < hi_:
            raise ValueError(f"interval_moments_mp: need lo < hi, got lo={lo}, hi={hi}")
        if not sig_ > 0:
            raise ValueError(f"interval_moments_mp: need sigma > 0, got {sigma}")
    wp = dps + 40
    tol = mp.mpf(10) ** (-(dps + 3))
    while wp <= 20 * dps + 2000:
        with mp.workdps(wp):
            r1 = _interval_at(lo, hi, mu, sigma)
        with mp.workdps(wp + 25):
            r2 = _interval_at(lo, hi, mu, sigma)
            if r1 is not None and r2 is not None:
                l1, e1, v1 = r1
                l2, e2, v2 = r2
                sd = mp.sqrt(abs(v2))
                ok = (
                    v2 > 0
                    and abs(l1 - l2) <= tol * max(1, abs(l2))
                    and abs(e1 - e2) <= tol * (abs(e2) + sd)
                    and abs(v1 - v2) <= tol * v2
                )
                if ok:
                    return l2, e2, v2
        wp *= 2
    raise ArithmeticError(
        f"interval_moments_mp: no agreement up to {wp // 2} digits for "
        f"lo={lo}, hi={hi}, mu={mu}, sigma={sigma}"
    )


# ---------------------------------------------------------------------------
# 2-D: truncated normal on a convex polygon
# ---------------------------------------------------------------------------


def _section_moments(l, r):
    """``int_l^r u^k phi(u) du`` (k = 0, 1, 2) with no catastrophic cancellation.

    Thin finite sections (``h (1 + |c|) < 0.02``, half-width ``h``, centre ``c``)
    use the Hermite expansion ``phi(c + s) = phi(c) sum_n He_n(c) (-s)^n / n!``
    integrated term by term; otherwise the closed forms of
    :func:`_std_interval_raw` lose at most a few bits.
    """
    if not r > l:
        return mp.zero, mp.zero, mp.zero
    if mp.isinf(l) or mp.isinf(r):
        if mp.isinf(l) and mp.isinf(r):
            return mp.one, mp.zero, mp.one
        return _std_interval_raw(l, r)
    h = (r - l) / 2
    c = (r + l) / 2
    if h * (1 + abs(c)) >= mp.mpf("0.02"):
        return _std_interval_raw(l, r)
    # a_n = He_n(c) (-1)^n / n!  via  e_{n+1} = (c e_n - e_{n-1}) / (n + 1)
    eps = mp.eps
    e_prev, e_cur = mp.zero, mp.one  # e_{-1}, e_0
    a = [mp.one]  # a_0
    s0 = s1 = s2 = mp.zero
    h2 = h * h
    hp = 2 * h  # 2 h^{n+1} at n = 0
    n = 0
    while True:
        # make sure a_{n+1}, a_{n+2} exist (needed at this even n? only a_{n-1}, a_{n-2})
        an = a[n]
        an1 = a[n - 1] if n >= 1 else mp.zero
        an2 = a[n - 2] if n >= 2 else mp.zero
        w = hp / (n + 1)  # int_{-h}^{h} s^n ds for even n
        t0 = an * w
        t1 = (c * an + an1) * w
        t2 = (c * c * an + 2 * c * an1 + an2) * w
        s0 += t0
        s1 += t1
        s2 += t2
        if n >= 4 and abs(t0) <= eps * abs(s0) and abs(t1) <= eps * (abs(s1) + h * abs(s0)) \
                and abs(t2) <= eps * abs(s2):
            break
        if n > 400:
            break
        # advance two orders
        for _ in range(2):
            k = len(a) - 1  # current highest index
            e_next = (c * e_cur - e_prev) / (k + 1)
            e_prev, e_cur = e_cur, e_next
            a.append(e_next if (k + 1) % 2 == 0 else -e_next)
        n += 2
        hp *= h2
    pc = _phi(c)
    return s0 * pc, s1 * pc, s2 * pc


class _Geometry:
    """Half-planes ``a_i . u + c_i >= 0`` (unit a_i) in rotated whitened space.

    ``u = (d + t, v)``: the nearest point of P to the origin is ``(d, 0)``, so
    ``t >= 0`` on P when ``d > 0``.
    """

    def __init__(self, A, C, tol):
        self.tol = tol
        self.vert_lo = mp.ninf  # bounds on t from (near-)vertical lines
        self.vert_hi = mp.inf
        self.lower = []  # (p, q): v >= p + q t
        self.upper = []  # (p, q): v <= p + q t
        self.A, self.C = A, C

    def setup(self, d):
        self.d = d
        for (al, be), c in zip(self.A, self.C):
            if abs(be) <= self.tol:
                # al * (d + t) + c >= 0
                if al > 0:
                    self.vert_lo = max(self.vert_lo, -c / al - d)
                else:
                    self.vert_hi = min(self.vert_hi, -c / al - d)
            elif be > 0:
                self.lower.append((-(c + al * d) / be, -al / be))
            else:
                self.upper.append((-(c + al * d) / be, -al / be))

    def section(self, t):
        l = max((p + q * t for p, q in self.lower), default=mp.ninf)
        r = min((p + q * t for p, q in self.upper), default=mp.inf)
        return l, r

    def in_t_range(self, t):
        return self.vert_lo <= t <= self.vert_hi


def _solve2(a1, c1, a2, c2):
    """Intersection of the lines ``a1.u + c1 = 0`` and ``a2.u + c2 = 0``."""
    det = a1[0] * a2[1] - a1[1] * a2[0]
    x = (-c1 * a2[1] + c2 * a1[1]) / det
    y = (-a1[0] * c2 + a2[0] * c1) / det
    return x, y


def _prepare(normals, offsets, mu, Sigma):
    """Convert inputs to mpf lists and validate shapes."""
    mu = [_mpf(x) for x in (list(mu) if not isinstance(mu, mp.matrix) else mu)]
    if isinstance(Sigma, mp.matrix):
        S = [[Sigma[i, j] for j in range(2)] for i in range(2)]
    else:
        S = [[_mpf(x) for x in row] for row in Sigma]
    if len(mu) != 2 or len(S) != 2 or any(len(row) != 2 for row in S):
        raise ValueError("polygon_moments_mp: mu must have 2 entries and Sigma be 2x2")
    if isinstance(normals, mp.matrix):
        N = [[normals[i, j] for j in range(2)] for i in range(normals.rows)]
    else:
        N = [[_mpf(x) for x in row] for row in normals]
    if isinstance(offsets, mp.matrix):
        O = [offsets[i] for i in range(len(offsets))]
    else:
        O = [_mpf(x) for x in offsets]
    if len(N) != len(O) or any(len(row) != 2 for row in N):
        raise ValueError("polygon_moments_mp: normals must be (m, 2) and offsets (m,)")
    return N, O, mu, S


def _polygon_at(N, O, mu, S, wp, dps):
    """One evaluation at ``wp`` working digits; returns (log_mass, mean, cov, quad_ok)."""
    with mp.workdps(wp):
        N = [[+x for x in row] for row in N]
        O = [+x for x in O]
        mu = [+x for x in mu]
        if S[0][1] != S[1][0]:
            raise ValueError("polygon_moments_mp: Sigma must be symmetric")
        # Cholesky Sigma = L L^T (lower)
        if not S[0][0] > 0:
            raise ValueError("polygon_moments_mp: Sigma must be positive definite")
        L00 = mp.sqrt(S[0][0])
        L10 = S[1][0] / L00
        r = S[1][1] - L10 * L10
        if not r > 0:
            raise ValueError("polygon_moments_mp: Sigma must be positive definite")
        L11 = mp.sqrt(r)
        tol = mp.mpf(10) ** (-(wp - 15))

        # half-planes in whitened space: (L^T n) . u + (n . mu + o) >= 0, normalised
        A, C = [], []
        for (n0, n1), o in zip(N, O):
            a0 = L00 * n0 + L10 * n1
            a1 = L11 * n1
            c = n0 * mu[0] + n1 * mu[1] + o
            na = mp.sqrt(a0 * a0 + a1 * a1)
            scale = abs(n0) * (L00 + abs(L10)) + abs(n1) * (abs(L10) + L11)
            if na <= tol * scale or na == 0:
                if c >= -tol * (abs(n0 * mu[0]) + abs(n1 * mu[1]) + abs(o)):
                    continue  # 0 . z + o >= 0 with o >= 0: no constraint
                raise ValueError("polygon_moments_mp: polygon is empty "
                                 "(a zero normal with a negative offset)")
            A.append((a0 / na, a1 / na))
            C.append(c / na)
        m = len(A)

        def feasible(p, slack=tol):
            return all(a[0] * p[0] + a[1] * p[1] + c >= -slack * (1 + abs(c) + abs(p[0]) + abs(p[1]))
                       for a, c in zip(A, C))

        # vertices (pairwise intersections that satisfy every half-plane)
        verts = []
        for i in range(m):
            for j in range(i + 1, m):
                det = A[i][0] * A[j][1] - A[i][1] * A[j][0]
                if abs(det) <= tol:
                    continue
                p = _solve2(A[i], C[i], A[j], C[j])
                if feasible(p):
                    verts.append(p)

        # nearest point of P to the origin
        if all(c >= 0 for c in C):
            near, d = (mp.zero, mp.zero), mp.zero
        else:
            cands = [(-c * a[0], -c * a[1]) for a, c in zip(A, C)] + verts
            cands = [p for p in cands if feasible(p)]
            if not cands:
                raise ValueError("polygon_moments_mp: polygon is empty")
            near = min(cands, key=lambda p: p[0] ** 2 + p[1] ** 2)
            d = mp.sqrt(near[0] ** 2 + near[1] ** 2)
        # rotation R (R e = (1, 0)) with R near = (d, 0); when d = 0 it is free:
        # pick the one (identity, or one edge made vertical or horizontal) with
        # the least steep non-vertical edges, so sections change slowly with t
        if d > 0:
            e0, e1 = near[0] / d, near[1] / d
        else:
            def steepness(e):
                worst = mp.zero
                for a in A:
                    al, be = e[0] * a[0] + e[1] * a[1], -e[1] * a[0] + e[0] * a[1]
                    if abs(be) > tol:
                        worst = max(worst, abs(al / be))
                return worst
            cands = [(mp.one, mp.zero)] + [(a[0], a[1]) for a in A] + [(a[1], -a[0]) for a in A]
            e0, e1 = min(cands, key=steepness)
        rot = lambda p: (e0 * p[0] + e1 * p[1], -e1 * p[0] + e0 * p[1])  # noqa: E731
        Ar = [rot(a) for a in A]
        vr = [rot(p) for p in verts]
        geo = _Geometry(Ar, C, tol)
        geo.setup(d)

        # breakpoints in t = u1 - d: vertices and vertical edges inside the range
        pts = [p[0] - d for p in vr]
        pts += [x for x in (geo.vert_lo, geo.vert_hi) if not mp.isinf(x)]
        pts = sorted(set(x for x in pts if geo.vert_lo - tol <= x <= geo.vert_hi + tol))

        def nonempty(t):
            if not geo.in_t_range(t):
                return False
            l, r = geo.section(t)
            return r - l > tol * (1 + abs(l) + abs(r)) if not (mp.isinf(l) or mp.isinf(r)) else r > l

        if not pts:
            if not nonempty(mp.zero):
                raise ValueError("polygon_moments_mp: polygon is empty")
            pts = [mp.zero]
            go_lo = go_hi = True
        else:
            go_lo = nonempty(pts[0] - 1)
            go_hi = nonempty(pts[-1] + 1)
        # merge breakpoints closer than tol
        merged = [pts[0]]
        for x in pts[1:]:
            if x - merged[-1] > tol * (1 + abs(x)):
                merged.append(x)
        pts = merged
        if len(pts) == 1 and not (go_lo or go_hi):
            raise ValueError("polygon_moments_mp: polygon has zero area (a segment or a point)")
        # interior test at one point strictly inside the t-range
        if len(pts) >= 2:
            tm = (pts[0] + pts[1]) / 2
        else:
            tm = pts[0] + 1 if go_hi else pts[0] - 1
        if not nonempty(tm):
            raise ValueError("polygon_moments_mp: polygon has zero area or is empty")
        # steep section ends v = p + q t (|q| > 3) sweep the bulk of phi(v) within
        # a short t-range: break where they cross v = 0, +-1, +-2.5, +-5, +-10, +-20.
        # Every crossing inside P's t-range is needed: a piece holding a sharp
        # step of M_k(t) (width ~1/|q|) between its Gauss nodes looks converged
        # (both orders see ~0). The range is fixed before the loop (comparing
        # with pts[-1] while appending used to drop every crossing beyond the
        # last one added, e.g. those of v = -1, ..., -20 on a falling upper end).
        t_first, t_last = pts[0], pts[-1]
        steep = []
        for p, q in geo.lower + geo.upper:
            if abs(q) > 3:
                for c in (0, 1, -1, 2.5, -2.5, 5, -5, 10, -10, 20, -20):
                    x = (c - p) / q
                    if (go_lo or t_first < x) and (go_hi or x < t_last):
                        steep.append(x)
        pts = sorted(set(pts + steep))

        # integrand: weight phi(d + t)/phi(d) times the inner moments
        def f(t):
            l, r = geo.section(t)
            m0, m1, m2 = _section_moments(l, r)
            w = mp.exp(-t * (d + t / 2))
            m0, m1, m2 = w * m0, w * m1, w * m2
            return (m0, t * m0, t * t * m0, m1, t * m1, m2)

        # truncate infinite ends where the weight exp(-(d t + t^2/2)) < e^-lam_max
        # (relative to the integrand near t = 0; checked against I00 below)
        lam_max = (wp + 10) * mp.log(10)
        for _ in range(10):
            t_hi = -d + mp.sqrt(d * d + 2 * lam_max)
            t_lo = -d - mp.sqrt(d * d + 2 * lam_max)
            lo_end = t_lo if go_lo else max(pts[0], t_lo)
            hi_end = t_hi if go_hi else min(pts[-1], t_hi)
            clipped = lo_end > pts[0] or go_lo or hi_end < pts[-1] or go_hi
            seg = [lo_end] + [x for x in pts if lo_end < x < hi_end] + [hi_end]
            # extra breakpoints where the weight has dropped by e^-1, e^-4, e^-16, e^-64
            for lam in (1, 4, 16, 64):
                for x in (-d + mp.sqrt(d * d + 2 * lam), -d - mp.sqrt(d * d + 2 * lam)):
                    if lo_end < x < hi_end:
                        seg.append(x)
            seg = sorted(set(seg))
            I, ok = _vector_gauss_legendre(f, seg, dps)
            if not I[0] > 0:
                raise ValueError("polygon_moments_mp: polygon has zero mass (zero area?)")
            if not clipped:
                break
            # beyond the cut the integrands are below (1 + T^2)^2 e^-lam_max
            T = max(abs(seg[0]), abs(seg[-1]))
            tail = mp.exp(-lam_max) * (1 + T * T) ** 2
            if tail <= mp.mpf(10) ** (-(dps + 10)) * I[0]:
                break
            lam_max = (dps + 20) * mp.log(10) - mp.log(I[0]) + 4 * mp.log(2 + 2 * T) + 10
        else:
            raise ArithmeticError("polygon_moments_mp: could not bound the truncated tails")
        I00, I10, I20, I01, I11, I02 = I
        if not I00 > 0:
            raise ValueError("polygon_moments_mp: polygon has zero mass (zero area?)")
        log_mass = mp.log(I00) - d * d / 2 - mp.log(2 * mp.pi) / 2
        Et, Ev = I10 / I00, I01 / I00
        ctt = I20 / I00 - Et * Et
        ctv = I11 / I00 - Et * Ev
        cvv = I02 / I00 - Ev * Ev
        mean_r = (d + Et, Ev)
        # back to z: z = mu + L R^T u_r, with R^T = [[e0, -e1], [e1, e0]]
        B = mp.matrix([[L00, 0], [L10, L11]]) * mp.matrix([[e0, -e1], [e1, e0]])
        mean = mp.matrix([mu[0], mu[1]]) + B * mp.matrix([mean_r[0], mean_r[1]])
        cov = B * mp.matrix([[ctt, ctv], [ctv, cvv]]) * B.T
        cov[0, 1] = cov[1, 0] = (cov[0, 1] + cov[1, 0]) / 2
        return log_mass, mean, cov, ok


_GL = {}


def _vector_gauss_legendre(f, pts, dps, max_degree=6, max_depth=12):
    """Adaptive Gauss-Legendre quadrature of a 6-vector integrand.

    The integrand is entire on each segment between consecutive ``pts`` (the
    section ends are linear there), so Gauss-Legendre converges geometrically.
    A first pass with 24 nodes per segment gives scales ``S_k = sum |I_k|``;
    each segment is then refined (12, 24, 48, 96 nodes) until consecutive
    orders differ by at most ``10^-((dps+8)/1.6) max(S_k, S_0)`` in every
    component, so that the higher order, which is kept, is good to about
    ``10^-(dps+8)`` (digits roughly double per order); a segment is bisected
    when 96 nodes do not suffice.
    Returns the summed vector and whether every piece converged.
    """
    rule = _GL.get("rule")
    if rule is None:
        rule = _GL["rule"] = GaussLegendre(mp)
    prec = mp.prec

    def at(a, b, degree):
        S = [mp.zero] * 6
        for x, w in rule.get_nodes(a, b, degree, prec):
            v = f(x)
            for k in range(6):
                S[k] += w * v[k]
        return S

    segs = [(a, b) for a, b in zip(pts[:-1], pts[1:]) if b > a]
    first = [(at(a, b, 3), at(a, b, 4)) for a, b in segs]
    scale = [sum(abs(r[1][k]) for r in first) for k in range(6)]
    ref = [max(scale[k], scale[0]) for k in range(6)]
    # "digits double per order" (as in mpmath's error estimate): a difference
    # below 10^-((dps+8)/1.6) leaves the higher order below 10^-(dps+8)
    tol_sq = [mp.mpf(10) ** (-(dps + 8) / mp.mpf(1.6)) * r for r in ref]
    state = {"ok": True, "pieces": 0}

    def close(u, v, frac):
        return all(abs(x - y) <= frac * t for x, y, t in zip(u, v, tol_sq))

    def refine(a, b, prev, cur, depth):
        state["pieces"] += 1
        frac = mp.mpf(2) ** (-depth)  # error budget shrinks with the piece
        degree = 4
        while not close(cur, prev, frac):
            if degree >= max_degree:
                if depth >= max_depth or state["pieces"] > 400:
                    state["ok"] = False
                    return cur
                m = (a + b) / 2
                left = refine(a, m, at(a, m, 3), at(a, m, 4), depth + 1)
                right = refine(m, b, at(m, b, 3), at(m, b, 4), depth + 1)
                return [x + y for x, y in zip(left, right)]
            degree += 1
            prev, cur = cur, at(a, b, degree)
        return cur

    total = [mp.zero] * 6
    for (a, b), (prev, cur) in zip(segs, first):
        total = [t + c for t, c in zip(total, refine(a, b, prev, cur, 0))]
    return total, state["ok"]


def polygon_moments_mp(normals, offsets, mu, Sigma, dps=40, check=False):
    """Moments of ``z ~ N(mu, Sigma)`` in R^2 truncated to a convex polygon.

    The polygon is ``P = {z : normals[i] . z + offsets[i] >= 0 for all i}``.

    Parameters
    ----------
    normals : array_like, shape (m, 2)
        Half-plane normals (floats, strings or mpf; need not be unit). ``m = 0``
        (an empty list or a ``(0, 2)`` array) means the whole plane.
    offsets : array_like, shape (m,)
        Half-plane offsets.
    mu : array_like, shape (2,)
        Mean.
    Sigma : array_like, shape (2, 2)
        Symmetric positive-definite covariance (may be nearly singular, e.g.
        eigenvalues 1 and 1e-8; pass mpf/strings for exact entries).
    dps : int, optional
        Decimal digits wanted; the work is done at ``dps + 30``.
    check : bool, optional
        If true, also evaluate at ``dps + 55`` digits and raise
        ``ArithmeticError`` unless the two agree to ``dps`` digits (doubles the
        cost).

    Returns
    -------
    log_mass : mpf
        ``log P(z in P)``.
    mean : mpmath.matrix, shape (2, 1)
        ``E[z | z in P]`` (``mean[i]``).
    cov : mpmath.matrix, shape (2, 2)
        ``Cov[z | z in P]`` (``cov[i, j]``), exactly symmetric.

    Raises
    ------
    ValueError
        If P is empty or has zero area, if Sigma is not symmetric positive
        definite, or on malformed shapes.
    ArithmeticError
        If the quadrature does not converge (or ``check`` fails).

    Notes
    -----
    Method: whiten (``z = mu + L u``, Cholesky in mpmath); map the half-planes
    to unit-normal half-planes in ``u``; find P's vertices exactly (pairwise
    intersections satisfying every half-plane) and the nearest point ``p`` of
    P to the origin (the origin, a foot of perpendicular or a vertex); rotate
    so ``p = (d, 0)``, whence P lies in ``u1 >= d``. With ``u1 = d + t`` the
    mass is ``phi(d) int exp(-d t - t^2/2) M0(t) dt`` where ``M_k(t) =
    int u2^k phi(u2)`` over the section ``[l(t), r(t)]`` of P (closed forms,
    or a Hermite series for thin sections so nothing cancels); ``phi(d)`` is
    kept in the logarithm, so masses like ``exp(-5000)`` are no harder than
    O(1) ones. The six integrals of ``t^j M_k`` (``j + k <= 2``) are done
    together by adaptive Gauss-Legendre quadrature (the integrand is entire
    between breakpoints), split at the vertices' ``t``, where the weight has
    dropped by ``e^-1, e^-4, e^-16, e^-64``, and where steep section ends
    cross ``v = 0, +-1, ..., +-20``; infinite (or very long) ranges are cut
    where the weight is below ``10^-(dps+40)`` and the cut is checked against
    the mass. When ``d = 0`` the rotation is free and is chosen to make the
    edges as little steep as possible. Moments are formed about ``(d, 0)`` (so
    far-out variances do not cancel) and mapped back through ``L R^T`` and
    ``mu``.

    Accuracy: at ``dps=40`` the tests see errors of 1e-55 or less (log_mass
    absolute, i.e. relative in the mass; the mean relative to
    ``|mean| + sd``; the covariance relative to the largest variance), against
    closed forms far in the tails (mass ~1e-394, 60 sd out), wedge angles,
    and a brute-force 2-D quadrature; the promise is ``dps`` digits.
    Typical time at ``dps=40`` (after the first call, which builds the
    quadrature nodes, ~0.3 s): 0.01-0.4 s for up to 8 edges; up to ~1 s for
    far or thin polygons under nearly singular Sigma. ``check=True`` doubles
    it.
    """
    if dps < 10:
        raise ValueError("polygon_moments_mp: dps must be >= 10")
    wp = dps + 30
    with mp.workdps(wp + 40):
        N, O, mu_, S = _prepare(normals, offsets, mu, Sigma)
    res = _polygon_at(N, O, mu_, S, wp, dps)
    if not res[3]:
        res = _polygon_at(N, O, mu_, S, wp + 30, dps + 10)
        if not res[3]:
            raise ArithmeticError("polygon_moments_mp: quadrature did not converge")
    log_mass, mean, cov, _ = res
    if check:
        l2, m2, c2, ok2 = _polygon_at(N, O, mu_, S, wp + 25, dps + 10)
        with mp.workdps(wp):
            tol = mp.mpf(10) ** (-dps)
            sd = mp.sqrt(max(cov[0, 0], cov[1, 1]))
            bad = (abs(l2 - log_mass) > tol * max(1, abs(l2))
                   or any(abs(m2[i] - mean[i]) > tol * (abs(m2[i]) + sd) for i in range(2))
                   or any(abs(c2[i, j] - cov[i, j]) > tol * sd * sd
                          for i in range(2) for j in range(2)))
        if bad or not ok2:
            raise ArithmeticError("polygon_moments_mp: self-check failed (precision loss)")
    return log_mass, mean, cov


def polygon_from_vertices(vertices, dps=40):
    """Half-plane form of a bounded convex polygon given by CCW vertices.

    Parameters
    ----------
    vertices : array_like, shape (k, 2)
        Vertices in counterclockwise order, ``k >= 3`` (floats, strings, mpf).
    dps : int, optional
        Working precision; with float vertices the result is exact (the
        normals are differences of floats, the offsets are computed at
        ``dps + 40`` digits).

    Returns
    -------
    normals : list of [mpf, mpf]
        ``normals[i] = (-(v[i+1]-v[i])_y, (v[i+1]-v[i])_x)``, pointing inwards.
    offsets : list of mpf
        ``offsets[i] = -normals[i] . v[i]``, so that the interior has
        ``normals[i] . z + offsets[i] > 0``.

    Raises
    ------
    ValueError
        If fewer than 3 vertices are given or the signed area is not positive
        (clockwise or degenerate input).
    """
    with mp.workdps(dps + 40):
        V = [(_mpf(v[0]), _mpf(v[1])) for v in vertices]
        k = len(V)
        if k < 3:
            raise ValueError("polygon_from_vertices: need at least 3 vertices")
        area2 = mp.fsum(V[i][0] * V[(i + 1) % k][1] - V[(i + 1) % k][0] * V[i][1] for i in range(k))
        if not area2 > 0:
            raise ValueError("polygon_from_vertices: vertices must be counterclockwise "
                             "with positive area")
        normals, offsets = [], []
        for i in range(k):
            x0, y0 = V[i]
            x1, y1 = V[(i + 1) % k]
            n = [-(y1 - y0), x1 - x0]
            normals.append(n)
            offsets.append(-(n[0] * x0 + n[1] * y0))
        return normals, offsets


# ---------------------------------------------------------------------------
# CPA generative models: forward pass, kinks, latent quadrature (no fastcpa)
# ---------------------------------------------------------------------------
#
# The model: z ~ N(0, sigma_z^2 I_S), x = g(z) + N(0, diag sigma_x^2), g an MLP
# with two-slope activations act(u) = u (u >= 0), eta u (u < 0). Nothing below
# uses fastcpa: the kinks of g along a line are found by propagating the
# breakpoints layer by layer through a plain forward pass, and the joint
# density is integrated piece by piece from the forward pass alone.

import math as _math

import numpy as _np

_EPS = 2.0**-52
# Drop levels (nats below a piece's peak) that bound the Gauss-Legendre
# sub-intervals: one or two posterior sd each, up to 84.5 nats (13 sd).
_LEVELS = _np.array([0.5, 2.0, 8.0, 18.0, 32.0, 50.0, 84.5])
_DROP = 90.0  # pieces whose peak is this far below the line's best are bounded, not integrated


def cpa_forward(weights, biases, slopes, Z, upto=None):
    """Plain forward pass of a CPA MLP.

    Parameters
    ----------
    weights, biases : list of ndarray
        ``weights[l]`` of shape ``(out, in)``, ``biases[l]`` of shape ``(out,)``.
    slopes : list of ndarray
        Per hidden layer, the per-unit negative-side slopes ``eta``.
    Z : ndarray, shape (N, S)
    upto : int, optional
        Return the pre-activations of hidden layer ``upto`` instead of g.

    Returns
    -------
    ndarray
        ``g(Z)`` of shape ``(N, D)``, or the pre-activations ``(N, width)``.
    """
    h = _np.asarray(Z, float)
    for l, (W, c, eta) in enumerate(zip(weights[:-1], biases[:-1], slopes)):
        u = h @ W.T + c
        if upto == l:
            return u
        h = _np.where(u >= 0, u, eta * u)
    return h @ weights[-1].T + biases[-1]


def line_kinks(weights, biases, slopes, P0, d, t_lo, t_hi):
    """Every kink of g along the segments ``z = P0[i] + t d``, ``t_lo <= t <= t_hi``.

    Layer by layer: with the kinks of the layers below already in the list,
    each pre-activation of the next layer is affine between consecutive
    points, so its sign changes are found exactly (up to rounding) by linear
    interpolation of the forward pass at those points.

    Parameters
    ----------
    weights, biases, slopes : see :func:`cpa_forward`
    P0 : ndarray, shape (m, S)
        Line origins.
    d : ndarray, shape (S,)
        Common direction.
    t_lo, t_hi : float
        Segment ends (finite).

    Returns
    -------
    line : ndarray of int, shape (n,)
    t : ndarray, shape (n,)
        The breakpoints (segment ends included), sorted by line, then t.
    """
    P0 = _np.atleast_2d(_np.asarray(P0, float))
    d = _np.asarray(d, float)
    m = len(P0)
    line = _np.repeat(_np.arange(m), 2)
    t = _np.tile([float(t_lo), float(t_hi)], m)
    for l, eta in enumerate(slopes):
        U = cpa_forward(weights, biases, slopes, P0[line] + t[:, None] * d, upto=l)
        same = line[1:] == line[:-1]
        Ua, Ub = U[:-1], U[1:]
        cross = same[:, None] & (Ua * Ub < 0) & (eta != 1.0)[None, :]
        i, j = _np.nonzero(cross)
        if len(i):
            ua, ub = Ua[i, j], Ub[i, j]
            tr = t[i] + (t[i + 1] - t[i]) * (ua / (ua - ub))
            line = _np.concatenate([line, line[i]])
            t = _np.concatenate([t, _np.clip(tr, t[i], t[i + 1])])
            order = _np.lexsort((t, line))
            line, t = line[order], t[order]
            keep = _np.ones(len(t), bool)
            keep[1:] = (line[1:] != line[:-1]) | (t[1:] != t[:-1])
            line, t = line[keep], t[keep]
    return line, t


class _Joint:
    """log p(x, z) of one data point, evaluated from the forward pass (direct residuals)."""

    def __init__(self, weights, biases, slopes, x, sigma_x, sigma_z):
        self.net = (weights, biases, slopes)
        self.x = _np.asarray(x, float)
        D = len(self.x)
        self.sx = _np.broadcast_to(_np.asarray(sigma_x, float), (D,)).copy()
        self.sz = float(sigma_z)
        self.S = weights[0].shape[1]
        self.const = -_np.log(_np.sqrt(2 * _np.pi) * self.sx).sum() - self.S * _math.log(_math.sqrt(2 * _math.pi) * self.sz)

    def g(self, Z):
        return cpa_forward(*self.net, Z)

    def __call__(self, Z):
        r = (self.x - self.g(Z)) / self.sx
        return self.const - 0.5 * (r * r).sum(1) - 0.5 * (Z * Z).sum(1) / self.sz**2

    def bound_radius(self, M, margin=100.0):
        """Radius beyond which log p(x, z) < M - margin (from the prior factor alone)."""
        return self.sz * _math.sqrt(2.0 * max(self.const - M + margin, 0.0))


_GL_NODES = {}


def _gl(n):
    if n not in _GL_NODES:
        _GL_NODES[n] = _np.polynomial.legendre.leggauss(n)
    return _GL_NODES[n]


def _integrate_lines(joint, P0, d, t_lo, t_hi, n_lo=16, n_hi=24, chunk=128):
    """Chunked front end of :func:`_integrate_lines_chunk` (bounded memory)."""
    P0 = _np.atleast_2d(_np.asarray(P0, float))
    parts = [_integrate_lines_chunk(joint, P0[i:i + chunk], d, t_lo, t_hi, n_lo, n_hi)
             for i in range(0, len(P0), chunk)]
    return tuple(_np.concatenate(v) for v in zip(*parts))


def _integrate_lines_chunk(joint, P0, d, t_lo, t_hi, n_lo=16, n_hi=24):
    """Integrate ``exp(log p(x, P0[i] + t d))`` over ``t_lo <= t <= t_hi`` for each line.

    On each piece between kinks g is affine, so the log-integrand is a concave
    quadratic; its peak and curvature (from a finite-difference slope of g on
    the piece, used only to place sub-intervals) split the piece where it has
    dropped by ``_LEVELS`` nats, and each sub-interval is integrated by
    Gauss-Legendre with ``n_lo`` and ``n_hi`` nodes (forward-pass values).

    Returns
    -------
    log_I : ndarray (m,)
        ``log`` of each line integral.
    rel_err : ndarray (m,)
        Estimated relative error: the node-count difference, the bound on
        dropped pieces and tails, and a rounding term ``8 eps |peak log p|``
        (the log-integrand's own rounding, far off the manifold).
    m1, m2 : ndarray (m,)
        ``E[t]`` and ``E[t^2]`` under each line's normalised integrand.
    peak_t, peak_f : ndarray (m,)
        Location and value of each line's highest point found.
    """
    P0 = _np.atleast_2d(_np.asarray(P0, float))
    d = _np.asarray(d, float)
    m = len(P0)
    line, t = line_kinks(*joint.net, P0, d, t_lo, t_hi)
    same = line[1:] == line[:-1]
    pl, a, b = line[:-1][same], t[:-1][same], t[1:][same]
    ok = b > a
    pl, a, b = pl[ok], a[ok], b[ok]
    # slope of g on each piece from two interior points (placement only)
    p1, p2 = a + 0.25 * (b - a), a + 0.75 * (b - a)
    Z1, Z2 = P0[pl] + p1[:, None] * d, P0[pl] + p2[:, None] * d
    g1, g2 = joint.g(Z1), joint.g(Z2)
    Ap = (g2 - g1) / (p2 - p1)[:, None]
    w = 1.0 / joint.sx**2
    kap = (Ap * Ap * w).sum(1) + (d @ d) / joint.sz**2

    def slope_at(tt):
        Z = P0[pl] + tt[:, None] * d
        return (Ap * (joint.x - joint.g(Z)) * w).sum(1) - (Z @ d) / joint.sz**2

    # Newton step (exact for the quadratic) from the midpoint, twice
    ts = 0.5 * (a + b)
    for _ in range(2):
        ts = _np.clip(ts + slope_at(ts) / kap, a, b)
    Z = lambda tt: P0[pl] + tt[:, None] * d  # noqa: E731
    fa, fb, fs = joint(Z(a)), joint(Z(b)), joint(Z(ts))
    best = _np.argmax(_np.stack([fs, fa, fb]), axis=0)
    ts = _np.choose(best, [ts, a, b])
    fs = _np.choose(best, [fs, fa, fb])
    Mline = _np.full(m, -_np.inf)
    _np.maximum.at(Mline, pl, fs)
    # pieces far below the line's best: bounded by exp(f*) sqrt(2 pi / kappa_min)
    drop = fs < Mline[pl] - _DROP
    err = _np.zeros(m)
    _np.add.at(err, pl[drop], _np.exp(fs[drop] - Mline[pl[drop]]) * _math.sqrt(2 * _math.pi) * joint.sz)
    keep = ~drop
    pl, a, b, ts, fs, kap = pl[keep], a[keep], b[keep], ts[keep], fs[keep], kap[keep]
    Zs = P0[pl] + ts[:, None] * d
    sl = (Ap[keep] * (joint.x - joint.g(Zs)) * w).sum(1) - (Zs @ d) / joint.sz**2
    L = _LEVELS[None, :]
    # distance u at which the quadratic has dropped by L on each side (stable roots of
    # kap u^2 / 2 -+ sl u = L); only places sub-intervals, so rounding here is harmless
    root = _np.sqrt(sl[:, None] ** 2 + 2 * kap[:, None] * L)
    right = 2 * L / (_np.maximum(-sl, 0)[:, None] + root)
    left = 2 * L / (_np.maximum(sl, 0)[:, None] + root)
    tr = _np.minimum(ts[:, None] + right, b[:, None])
    tl = _np.maximum(ts[:, None] - left, a[:, None])
    edges = _np.concatenate([tl[:, ::-1], ts[:, None], tr], axis=1)  # (k, 2 levels + 1)
    lo_e, hi_e = edges[:, :-1].ravel(), edges[:, 1:].ravel()
    sub_line = _np.repeat(pl, edges.shape[1] - 1)
    nz = hi_e > lo_e  # levels clipped by the piece's ends leave empty sub-intervals
    lo_e, hi_e, sub_line = lo_e[nz], hi_e[nz], sub_line[nz]
    res = []
    for n in (n_lo, n_hi):
        x_, w_ = _gl(n)
        half = 0.5 * (hi_e - lo_e)
        T = 0.5 * (hi_e + lo_e)[:, None] + half[:, None] * x_[None, :]
        F = joint((P0[sub_line][:, None, :] + T[..., None] * d).reshape(-1, len(d))).reshape(T.shape)
        E = _np.exp(F - Mline[sub_line][:, None]) * (half[:, None] * w_[None, :])
        out = _np.zeros((3, m))
        for k, mom in enumerate((E, E * T, E * T * T)):
            _np.add.at(out[k], sub_line, mom.sum(1))
        res.append(out)
    I = res[1]
    diff = _np.abs(res[1] - res[0])
    # beyond the last level each side holds at most e^-84.5 of the piece's peak times
    # sqrt(2 pi) sigma_z (the curvature is at least 1 / sigma_z^2 along a unit direction)
    tails = _np.zeros(m)
    _np.add.at(tails, pl, 2 * _np.exp(fs - Mline[pl] - _LEVELS[-1]) * _math.sqrt(2 * _math.pi) * joint.sz)
    with _np.errstate(divide="ignore", invalid="ignore"):
        log_I = Mline + _np.log(I[0])
        rel = (diff[0] + err + tails) / I[0] + 8 * _EPS * _np.abs(Mline)
        m1 = I[1] / I[0]
        m2 = I[2] / I[0]
    peak_t, peak_k = _np.zeros(m), _np.ones(m)
    order = _np.lexsort((-fs, pl))
    first = _np.ones(len(order), bool)
    first[1:] = pl[order][1:] != pl[order][:-1]
    peak_t[pl[order][first]] = ts[order][first]
    peak_k[pl[order][first]] = kap[order][first]
    return log_I, rel, m1, m2, peak_t, Mline, peak_k


def _slopes_of(weights, slopes):
    if slopes is None:
        return [_np.zeros(W.shape[0]) for W in weights[:-1]]
    return [_np.broadcast_to(_np.asarray(e, float), (W.shape[0],)) for e, W in zip(slopes, weights[:-1])]


def log_prob_quad(weights, biases, slopes, x, sigma_x, sigma_z=1.0, tol=1e-13):
    """Converged latent quadrature of ``log p(x)`` for S = 1 or 2, with its own error.

    Parameters
    ----------
    weights, biases, slopes : list of ndarray
        The CPA MLP (see :func:`cpa_forward`); ``slopes`` per hidden layer.
    x : ndarray, shape (D,)
    sigma_x : float or ndarray (D,)
    sigma_z : float
    tol : float
        S = 2: relative accuracy asked of the outer adaptive quadrature.

    Returns
    -------
    log_p : float
    err : float
        Estimated absolute error of ``log_p`` (nats): quadrature differences,
        bounds on everything dropped, and the log-integrand's rounding.
    mean : ndarray, shape (S,)
        Posterior mean ``E[z | x]`` (to about the same relative accuracy).

    Notes
    -----
    S = 1: the real line is cut at ``|z| = Z`` where the prior factor alone
    puts the joint density 100 nats below its best value (``Z`` from a first
    pass on ``|z| <= 40 sigma_z``); every kink of g inside is found by
    :func:`line_kinks`, and :func:`_integrate_lines` integrates the pieces.

    S = 2: ``p(x) = int F(z1) dz1`` with ``F(z1) = int p(x, z1, t) dt`` computed
    exactly as in S = 1 along the vertical line through ``z1``. The outer
    integral is adaptive Gauss-Legendre (12 vs 20 nodes per cell, cells bisected
    until they agree to ``tol`` of the total) over ``[-Z, Z]``, started from a
    uniform grid plus geometric ladders (ratio 10, from ``1e-12 sigma_z``)
    around the z1 of the highest points found by a scan of horizontal and
    vertical lines, so a posterior narrower than any grid cell is still
    resolved. Its coverage rests on that scan finding every mode whose height
    matters (checked on the tests' nets by the consistency tests).
    """
    weights = [_np.asarray(W, float) for W in weights]
    biases = [_np.asarray(c, float) for c in biases]
    slopes = _slopes_of(weights, slopes)
    joint = _Joint(weights, biases, slopes, x, sigma_x, sigma_z)
    S = joint.S
    if S == 1:
        R = 40.0 * joint.sz
        for _ in range(2):
            lI, rel, m1, _, _, M, _ = _integrate_lines(joint, _np.zeros((1, 1)), _np.ones(1), -R, R)
            Z = joint.bound_radius(M[0])
            if Z <= R:
                break
            R = Z
        return float(lI[0]), float(rel[0] + 1e-40), _np.array([m1[0]])
    if S != 2:
        raise ValueError("log_prob_quad: S must be 1 or 2")
    e1, e2 = _np.array([1.0, 0.0]), _np.array([0.0, 1.0])
    R = 40.0 * joint.sz
    for _ in range(2):
        grid = _np.linspace(-R, R, 129)
        P_h = _np.stack([_np.zeros_like(grid), grid], 1)  # horizontal lines z2 = grid
        P_v = _np.stack([grid, _np.zeros_like(grid)], 1)  # vertical lines z1 = grid
        _, _, _, _, th, fh, _ = _integrate_lines(joint, P_h, e1, -R, R)
        _, _, _, _, tv, fv, _ = _integrate_lines(joint, P_v, e2, -R, R)
        cand = _np.concatenate([_np.stack([th, grid], 1), _np.stack([grid, tv], 1)])
        fc = _np.concatenate([fh, fv])
        top = cand[_np.argsort(-fc)[:4]]
        # coordinate ascent from the best points (each step an exact line maximum)
        for _ in range(3):
            _, _, _, _, t1, f1, k1 = _integrate_lines(joint, _np.stack([_np.zeros(len(top)), top[:, 1]], 1), e1, -R, R)
            top = _np.stack([t1, top[:, 1]], 1)
            _, _, _, _, t2, f2, _ = _integrate_lines(joint, _np.stack([top[:, 0], _np.zeros(len(top))], 1), e2, -R, R)
            top = _np.stack([top[:, 0], t2], 1)
        M = max(fc.max(), f2.max())
        Z = joint.bound_radius(M)
        if Z <= R:
            break
        R = Z
    Z = R
    # outer breakpoints: uniform cells + geometric ladders around the candidate peaks
    # ladders start at 1e-3 of the narrowest conditional z1-width seen at the peaks
    # (1 / sqrt(curvature) along z1); candidates within 0.1 width share one
    w1 = float(_np.min(1.0 / _np.sqrt(k1)))
    pts = [_np.linspace(-Z, Z, 17)]
    call = _np.sort(top[f2 >= f2.max() - 30.0, 0])
    keep_c = [call[0]]
    for c in call[1:]:
        if c - keep_c[-1] > 0.1 * w1:
            keep_c.append(c)
    ladder = 1e-3 * w1 * 10.0 ** _np.arange(0, max(1, int(_np.ceil(_np.log10(2 * Z / (1e-3 * w1)))) + 1))
    for c in keep_c[:12]:
        pts.append(c + ladder)
        pts.append(c - ladder)
        pts.append([c])
    pts = _np.unique(_np.clip(_np.concatenate(pts), -Z, Z))
    cells = list(zip(pts[:-1], pts[1:]))
    xs12, ws12 = _gl(12)
    xs20, ws20 = _gl(20)
    done = _np.zeros(3)
    done_err = 0.0
    inner_rel = 0.0
    scale = None
    for _round in range(40):
        lo = _np.array([c[0] for c in cells])
        hi = _np.array([c[1] for c in cells])
        half, mid = 0.5 * (hi - lo), 0.5 * (hi + lo)
        T = _np.concatenate([mid[:, None] + half[:, None] * xs12, mid[:, None] + half[:, None] * xs20], 1)
        lI, rel, m1, _, _, _, _ = _integrate_lines(joint, _np.stack([T.ravel(), _np.zeros(T.size)], 1), e2, -Z, Z,
                                                   n_lo=12, n_hi=20)
        if scale is None:
            scale = _np.nanmax(lI)
        F = _np.exp(lI - scale).reshape(T.shape)
        G = F * m1.reshape(T.shape)
        Rl = _np.where(F > 0, rel.reshape(T.shape), 0.0) * F  # inner errors, weighted by F
        n12 = len(xs12)
        est = []
        for wts, sl_ in ((ws12, slice(0, n12)), (ws20, slice(n12, None))):
            Wt = half[:, None] * wts[None, :]
            est.append(_np.stack([(F[:, sl_] * Wt).sum(1), (F[:, sl_] * T[:, sl_] * Wt).sum(1), (G[:, sl_] * Wt).sum(1)]))
        hi_est, lo_est = est[1], est[0]
        cell_err = _np.abs(hi_est - lo_est).max(0)
        total = done[0] + hi_est[0].sum()
        bad = cell_err > tol * total * 0.1
        if _round == 39:
            bad[:] = False
        done += hi_est[:, ~bad].sum(1)
        done_err += cell_err[~bad].sum()
        inner_rel += float((Rl[~bad][:, n12:] * (half[~bad, None] * ws20[None, :])).sum())
        if not bad.any():
            break
        cells = [(l, m_) for l, m_, b_ in zip(lo, mid, bad) if b_] + [(m_, h) for m_, h, b_ in zip(mid, hi, bad) if b_]
    else:
        done_err = _np.inf
    tail = _math.exp(M - 100.0 - scale) * 2 * _math.pi * joint.sz**2  # |z| > Z (prior bound), vs e^scale
    log_p = scale + _math.log(done[0])
    err = (done_err + tail + inner_rel) / done[0] + 8 * _EPS * abs(M)
    return log_p, float(err), _np.array([done[1] / done[0], done[2] / done[0]])


def _mp_forward_pre(Wm, cm, em, z):
    """Pre-activations of every hidden layer and g at scalar z (S = 1), in mpmath."""
    h = [z]
    pres = []
    for W, c, eta in zip(Wm[:-1], cm[:-1], em):
        u = [mp.fsum(w * v for w, v in zip(row, h)) + ci for row, ci in zip(W, c)]
        pres.append(u)
        h = [ui if ui >= 0 else e * ui for ui, e in zip(u, eta)]
    g = [mp.fsum(w * v for w, v in zip(row, h)) + ci for row, ci in zip(Wm[-1], cm[-1])]
    return pres, g


def _log_prob_mp_at(weights, biases, slopes, x, sx, sz):
    """One evaluation of :func:`log_prob_mp_1d` at the current precision."""
    Wm = [[[_mpf(v) for v in row] for row in W] for W in weights]
    cm = [[_mpf(v) for v in c] for c in biases]
    em = [[_mpf(v) for v in e] for e in slopes]
    xm, sxm, szm = [_mpf(v) for v in x], [_mpf(v) for v in sx], _mpf(sz)
    # exact kinks: each pre-activation is affine between the kinks of the layers
    # below; on the two unbounded end pieces the affine piece is extrapolated
    B = []
    for l in range(len(em)):
        pts = [B[0] - 1] + B + [B[-1] + 1] if B else [mp.zero, mp.one]
        vals = [_mp_forward_pre(Wm, cm, em, p)[0][l] for p in pts]
        new = []
        lo_ends = [mp.ninf] + B
        hi_ends = B + [mp.inf]
        # piece k is (lo_ends[k], hi_ends[k]); take two of the evaluation points inside or on it
        reps = [(0, 1)] + [(k, k + 1) for k in range(1, len(pts) - 2)] + [(len(pts) - 2, len(pts) - 1)] if B \
            else [(0, 1)]
        for k, (i, j) in enumerate(reps):
            for unit in range(len(vals[0])):
                if em[l][unit] == 1:
                    continue
                ui, uj = vals[i][unit], vals[j][unit]
                if ui == uj:
                    continue
                r = pts[i] + (pts[j] - pts[i]) * ui / (ui - uj)
                if lo_ends[k] < r < hi_ends[k]:
                    new.append(r)
        B = sorted(set(B + new))
    ends = [mp.ninf] + B + [mp.inf]
    logs, m1s, m2s = [], [], []
    C = -mp.fsum(mp.log(mp.sqrt(2 * mp.pi) * s) for s in sxm) - mp.log(mp.sqrt(2 * mp.pi) * szm)
    for a, b in zip(ends[:-1], ends[1:]):
        if mp.isinf(a) and mp.isinf(b):
            p, q = mp.zero, mp.one
        elif mp.isinf(a):
            p, q = b - 2, b - 1
        elif mp.isinf(b):
            p, q = a + 1, a + 2
        else:
            p, q = a + (b - a) / 3, a + 2 * (b - a) / 3
        gp, gq = _mp_forward_pre(Wm, cm, em, p)[1], _mp_forward_pre(Wm, cm, em, q)[1]
        alpha = [(u - v) / (q - p) for u, v in zip(gq, gp)]
        beta = [u - al * p for u, al in zip(gp, alpha)]
        r0 = [xi - be for xi, be in zip(xm, beta)]
        kap = mp.fsum(al * al / (s * s) for al, s in zip(alpha, sxm)) + 1 / (szm * szm)
        y = mp.fsum(al * ri / (s * s) for al, ri, s in zip(alpha, r0, sxm))
        mu = y / kap
        lk = C - mp.fsum(ri * ri / (s * s) for ri, s in zip(r0, sxm)) / 2 + y * mu / 2 + mp.log(2 * mp.pi / kap) / 2
        sk = mp.sqrt(kap)
        m0, m1, m2 = _std_interval_raw((a - mu) * sk if not mp.isinf(a) else a, (b - mu) * sk if not mp.isinf(b) else b)
        if not m0 > 0:
            continue
        logs.append(lk + mp.log(m0))
        m1s.append(mu + m1 / m0 / sk)
        m2s.append(mu * mu + 2 * mu * m1 / m0 / sk + m2 / m0 / kap)
    top = max(logs)
    w = [mp.exp(v - top) for v in logs]
    tot = mp.fsum(w)
    mean = mp.fsum(wi * v for wi, v in zip(w, m1s)) / tot
    second = mp.fsum(wi * v for wi, v in zip(w, m2s)) / tot
    return top + mp.log(tot), mean, second - mean * mean


def log_prob_mp_1d(weights, biases, slopes, x, sigma_x, sigma_z=1.0, dps=30):
    """``log p(x)``, posterior mean and variance of an S = 1 CPA model in mpmath.

    Parameters
    ----------
    weights, biases, slopes : list of array_like
        The CPA MLP (float64 values are taken exactly); ``slopes`` per hidden layer.
    x : array_like, shape (D,)
    sigma_x : float or array_like (D,)
    sigma_z : float
    dps : int
        Decimal digits wanted.

    Returns
    -------
    log_p, mean, var : mpf

    Notes
    -----
    Exact piecewise closed form at high precision: the kinks of g on the whole
    line are found layer by layer (each pre-activation is affine between the
    kinks of the layers below, the two unbounded end pieces included); on each
    piece g is ``alpha z + beta`` (from two points inside it) and the joint
    density is integrated in closed form with the tail-safe standard-normal
    interval moments of this module. Completing the square cancels about
    ``log10(|x - beta|^2 / sigma_x^2)`` digits and thin pieces lose more, so
    the whole evaluation is repeated at ``dps + 40`` and ``dps + 70`` digits,
    doubling until the two agree to ``dps`` digits. Cost: about 0.1-2 s for
    nets of up to ~50 units.
    """
    weights = [_np.asarray(W, float) for W in weights]
    biases = [_np.asarray(c, float) for c in biases]
    slopes = [_np.asarray(e, float) for e in _slopes_of(weights, slopes)]
    x = _np.asarray(x, float)
    sx = _np.broadcast_to(_np.asarray(sigma_x, float), x.shape)
    if weights[0].shape[1] != 1:
        raise ValueError("log_prob_mp_1d: S must be 1")
    wp = dps + 40
    tol = mp.mpf(10) ** (-dps)
    while wp < 20 * dps + 2000:
        with mp.workdps(wp):
            r1 = _log_prob_mp_at(weights, biases, slopes, x, sx, sigma_z)
        with mp.workdps(wp + 30):
            r2 = _log_prob_mp_at(weights, biases, slopes, x, sx, sigma_z)
            sd = mp.sqrt(abs(r2[2]))
            if (abs(r1[0] - r2[0]) <= tol * max(1, abs(r2[0])) and abs(r1[1] - r2[1]) <= tol * (abs(r2[1]) + sd)
                    and abs(r1[2] - r2[2]) <= tol * r2[2]):
                return r2
        wp *= 2
    raise ArithmeticError("log_prob_mp_1d: no agreement between precisions")


def linear_log_prob_mp(A, b, x, sigma_x, sigma_z=1.0, dps=40):
    """Closed form of an affine generator: ``log N(x; b, Sigma_x + sigma_z^2 A A^T)`` and ``E[z | x]``.

    Parameters
    ----------
    A : array_like, shape (D, S)
    b : array_like, shape (D,)
    x : array_like, shape (D,)
    sigma_x : float or array_like (D,)
    sigma_z : float
    dps : int
        Working digits are ``dps + 40`` (the covariance's condition number and the
        quadratic form's cancellation cost at most that many digits here).

    Returns
    -------
    log_p : mpf
    mean : list of mpf
        Posterior mean ``sigma_z^2 A^T C^-1 (x - b)``.
    """
    A = _np.atleast_2d(_np.asarray(A, float))
    D, S = A.shape
    sx = _np.broadcast_to(_np.asarray(sigma_x, float), (D,))
    with mp.workdps(dps + 40):
        Am = mp.matrix([[_mpf(v) for v in row] for row in A])
        sz2 = _mpf(sigma_z) ** 2
        Cm = sz2 * Am * Am.T
        for i in range(D):
            Cm[i, i] += _mpf(sx[i]) ** 2
        r = mp.matrix([_mpf(xi) - _mpf(bi) for xi, bi in zip(x, b)])
        L = mp.cholesky(Cm)
        y = mp.lu_solve(L, r)  # L y = r (lower triangular: lu_solve is exact enough at this precision)
        quad = mp.fsum(v * v for v in y)
        logdet = 2 * mp.fsum(mp.log(L[i, i]) for i in range(D))
        log_p = -(D * mp.log(2 * mp.pi) + logdet + quad) / 2
        sol = mp.lu_solve(Cm, r)
        mean = [sz2 * mp.fsum(Am[i, s] * sol[i] for i in range(D)) for s in range(S)]
        return +log_p, [+m for m in mean]


def _mp_forward(Wm, cm, em, z):
    """g(z) of a CPA MLP at a point z (list of mpf) in mpmath."""
    h = list(z)
    for W, c, eta in zip(Wm[:-1], cm[:-1], em):
        u = [mp.fsum(w * v for w, v in zip(row, h)) + ci for row, ci in zip(W, c)]
        h = [ui if ui >= 0 else e * ui for ui, e in zip(u, eta)]
    return [mp.fsum(w * v for w, v in zip(row, h)) + ci for row, ci in zip(Wm[-1], cm[-1])]


def far_vertex_log_prob_mp(weights, biases, slopes, part, x, sigma_x, sigma_z=1.0, dps=40, level=60.0):
    """``log p(x)`` of an S = 2 CPA model whose posterior sits at one vertex of
    the partition, far out in every region's Gaussian (a point far off the
    manifold of a steep net), in mpmath.

    Each region's energy ``E(z) = -|x - g(z)|^2 / (2 sigma_x^2) - |z|^2 / (2
    sigma_z^2)`` is maximised over its polygon (the partition's facets, taken
    as exact lines; its map ``A``, with the offset from ``g`` itself at a
    point of the region); the regions within ``level`` nats of the best must
    all peak at one vertex ``v`` (else ``ValueError``: not this oracle's
    case). There ``E(v)`` comes from the net's own forward pass, and each
    region r meeting at ``v`` adds the integral of ``exp`` of its energy's
    linearisation over its cone at ``v``: ``|e1 x e2| / ((-grad . e1)(-grad .
    e2))``, ``e1``, ``e2`` the cone's unit edges. Dropped: the quadratic part
    over the cone's scale ``1 / |grad|`` (relative ``|A / sigma|^2 / |grad|^2``),
    regions peaking elsewhere (below ``level``), and the facets' rounding as
    lines (``|grad| eps |v|``).
    """
    with mp.workdps(dps):
        Wm = [[[_mpf(v) for v in row] for row in W] for W in weights]
        cm = [[_mpf(v) for v in c] for c in biases]
        em = [[_mpf(v) for v in e] for e in slopes]
        D = len(x)
        sx = [_mpf(v) for v in _np.broadcast_to(sigma_x, (D,))]
        xm = [_mpf(v) for v in x]
        sz = _mpf(sigma_z)

        def energy(gz, z):
            return (-mp.fsum(((xi - gi) / s) ** 2 for xi, gi, s in zip(xm, gz, sx)) / 2
                    - (z[0] ** 2 + z[1] ** 2) / (2 * sz * sz))

        peaks = []
        for r in range(part.n_regions):
            fs = slice(part.facet_ptr[r], part.facet_ptr[r + 1])
            N = [[_mpf(a), _mpf(b)] for a, b in part.facet_normal[fs]]
            O = [_mpf(o) for o in part.facet_offset[fs]]
            A = [[_mpf(a) for a in row] for row in part.A[r]]
            verts = part.polygon(r)[0]
            z0 = [_mpf(verts[0, 0]), _mpf(verts[0, 1])]
            g0 = _mp_forward(Wm, cm, em, z0)

            def E(z):
                gz = [gi + A[d][0] * (z[0] - z0[0]) + A[d][1] * (z[1] - z0[1]) for d, gi in enumerate(g0)]
                return energy(gz, z)

            def inside(z):
                return all(n[0] * z[0] + n[1] * z[1] + o >= -mp.mpf(10) ** (8 - dps) * (1 + abs(z[0]) + abs(z[1]))
                           for n, o in zip(N, O))

            cands = []
            for k in range(len(O)):
                for k2 in range(k + 1, len(O)):
                    det = N[k][0] * N[k2][1] - N[k][1] * N[k2][0]
                    if det == 0:
                        continue
                    v = [(-O[k] * N[k2][1] + O[k2] * N[k][1]) / det, (-N[k][0] * O[k2] + N[k2][0] * O[k]) / det]
                    if inside(v):
                        cands.append((E(v), v, (k, k2)))
            # an edge or the interior holding the peak instead: not this oracle's case, unless far below
            for k in range(len(O)):
                n, o = N[k], O[k]
                t = [-n[1], n[0]]
                p = [-o * n[0], -o * n[1]]
                # maximise E along the line: quadratic in the parameter s
                e0, e1, e2 = E(p), E([p[0] + t[0], p[1] + t[1]]), E([p[0] - t[0], p[1] - t[1]])
                a2 = (e1 + e2 - 2 * e0) / 2
                s = -(e1 - e2) / (4 * a2) if a2 < 0 else None
                if s is not None:
                    q = [p[0] + s * t[0], p[1] + s * t[1]]
                    if inside(q):
                        cands.append((E(q), q, (k,)))
            if not cands:
                continue
            best = max(cands, key=lambda c: c[0])
            peaks.append((best[0], r, best[1], best[2], N, A))
        top = max(p[0] for p in peaks)
        near = [p for p in peaks if p[0] > top - level]
        v = near[0][2]
        for p in near:
            if len(p[3]) != 2 or max(abs(p[2][0] - v[0]), abs(p[2][1] - v[1])) > mp.mpf(10) ** (10 - dps) * (1 + abs(v[0])):
                raise ValueError("the posterior does not sit at one vertex")
        gv = _mp_forward(Wm, cm, em, v)
        Ev = energy(gv, v)
        res = [(xi - gi) / (s * s) for xi, gi, s in zip(xm, gv, sx)]
        logs = []
        for _, r, _, (k1, k2), N, A in near:
            grad = [mp.fsum(A[d][t] * res[d] for d in range(D)) - v[t] / (sz * sz) for t in range(2)]

            def edge(ka, kb):  # along facet ka's line, into facet kb's half-plane
                t = [-N[ka][1], N[ka][0]]
                return t if t[0] * N[kb][0] + t[1] * N[kb][1] > 0 else [-t[0], -t[1]]

            e1, e2 = edge(k1, k2), edge(k2, k1)
            r1 = -(grad[0] * e1[0] + grad[1] * e1[1])
            r2 = -(grad[0] * e2[0] + grad[1] * e2[1])
            if not (r1 > 0 and r2 > 0):
                raise ValueError("a region's energy rises along its cone at the vertex")
            logs.append(mp.log(abs(e1[0] * e2[1] - e1[1] * e2[0]) / (r1 * r2)))
        m = max(logs)
        C = -mp.fsum(mp.log(mp.sqrt(2 * mp.pi) * s) for s in sx) - mp.log(2 * mp.pi * sz * sz)
        return float(C + Ev + m + mp.log(mp.fsum(mp.exp(l - m) for l in logs)))
