"""Checks of the mpmath oracles in ``oracles.py`` by independent routes.

No expected number comes from the oracle under test: references are SciPy,
asymptotic series, closed forms evaluated here at high precision (1-D tails,
wedge angles, products of 1-D moments), a brute-force 2-D quadrature, a 1-D
quadrature conditional on one coordinate in the original (unwhitened)
coordinates (:func:`conditional_moments`, for nearly singular covariances),
Monte Carlo, or (for invariance) the oracle compared with itself on a
different but equivalent input.
"""

import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
from mpmath import mp

from oracles import interval_moments_mp, polygon_from_vertices, polygon_moments_mp

INF = float("inf")


# ---------------------------------------------------------------------------
# independent references (computed here, at high precision)
# ---------------------------------------------------------------------------


def mills_tail(t, dps=120):
    """``(log Q(t), phi(t)/Q(t), Var[x | x >= t])`` from the asymptotic Mills series.

    ``Q(t) = phi(t)/t * sum_n (-1)^n (2n-1)!! / t^(2n)``, summed to the smallest
    term (error below that term; for t >= 40 it is < 1e-300 relative).
    """
    with mp.workdps(dps):
        t = mp.mpf(t)
        t2 = t * t
        s, term, n = mp.one, mp.one, 0
        while True:
            n += 1
            nxt = term * -(2 * n - 1) / t2
            if abs(nxt) >= abs(term) or abs(nxt) < mp.mpf(10) ** (-dps - 5):
                break
            term = nxt
            s += term
        R = s / t  # Q / phi
        logQ = -t2 / 2 - mp.log(2 * mp.pi) / 2 + mp.log(R)
        lam = 1 / R
        return logQ, lam, 1 + t * lam - lam * lam


def std_interval(a, b, dps=120):
    """``(mass, mean, var)`` of N(0,1) on [a, b] via erfc at ``dps`` digits (mpf)."""
    with mp.workdps(dps):
        a, b = mp.mpf(a), mp.mpf(b)

        def Q(x):
            return mp.erfc(x / mp.sqrt(2)) / 2

        def pdf(x):
            return mp.zero if mp.isinf(x) else mp.exp(-x * x / 2) / mp.sqrt(2 * mp.pi)

        def xpdf(x):
            return mp.zero if mp.isinf(x) else x * pdf(x)

        m = Q(a) - Q(b) if a >= 0 else (Q(-b) - Q(-a) if b <= 0 else 1 - Q(-a) - Q(b))
        mean = (pdf(a) - pdf(b)) / m
        var = 1 + (xpdf(a) - xpdf(b)) / m - mean * mean
        return m, mean, var


def linear_truncation(n, lo, hi, mu, Sigma, dps=120):
    """Moments of z ~ N(mu, Sigma) given lo <= n.z <= hi (exact 1-D reduction).

    With s = n.z ~ N(n.mu, n^T Sigma n): E[z|.] = mu + Sigma n (E[s|.] - n.mu)/s2,
    Cov[z|.] = Sigma - Sigma n n^T Sigma (s2 - Var[s|.]) / s2^2.
    """
    with mp.workdps(dps):
        n = mp.matrix([mp.mpf(n[0]), mp.mpf(n[1])])
        mu = mp.matrix([mp.mpf(mu[0]), mp.mpf(mu[1])])
        S = Sigma if isinstance(Sigma, mp.matrix) else mp.matrix([[mp.mpf(x) for x in r] for r in Sigma])
        Sn = S * n
        s2 = (n.T * Sn)[0]
        s0 = (n.T * mu)[0]
        sd = mp.sqrt(s2)
        a = (mp.mpf(lo) - s0) / sd if not mp.isinf(mp.mpf(lo)) else mp.mpf(lo)
        b = (mp.mpf(hi) - s0) / sd if not mp.isinf(mp.mpf(hi)) else mp.mpf(hi)
        m, em, ev = std_interval(a, b, dps)
        mean = mu + Sn * (em / sd)
        cov = S - Sn * Sn.T * ((1 - ev) / s2)
        return mp.log(m), mean, cov


def conditional_moments(normals, offsets, mu, Sigma, x_range=None, dps=40, axis=None):
    """(log_mass, mean, cov) of N(mu, Sigma) on a polygon by conditioning on one coordinate.

    With ``x = z_k`` (``k`` = ``axis``, default the coordinate of larger
    variance) and ``y = z_j``: ``y | x ~ N(c(x), s^2)``, ``c(x) = mu_j + b (x -
    mu_k)``, ``b = S_jk / S_kk``, ``s^2 = S_jj - S_jk^2 / S_kk``. A half-plane
    with ``n_j != 0`` bounds the standardised ``(y - c(x)) / s`` by a line
    ``A + B x``; one with ``n_j = 0`` bounds ``x``. The six moments are 1-D
    integrals over ``x`` of the density of ``x`` times closed-form truncated-normal
    moments in ``y`` (tails on the far side, no ``1 - tiny``).

    Quadrature: the x-range is cut at every line-line intersection (vertices
    and kinks; between two cuts everything is analytic) and where an ``A + B x``
    or ``(x - mu_k) / sd_k`` crosses 0 or ``+-4^e`` (``e = -1..12``), then pieces
    are halved until ``log f`` (``f`` = the mass integrand) varies by at most 6
    over 7 interior samples. ``f`` is log-concave (Prekopa), so no narrow peak
    hides between samples, and the factor-4 bands keep a sharp step (nearly
    singular Sigma: width ``1/|B|``) from hiding next to a piece's end; pieces
    where ``f`` stays below ``10^-(dps+10) e^-20`` times the running peak are
    dropped. Each piece then gets mpmath's Gauss-Legendre ``quad``. The
    integrands are evaluated with ``log10(|B| (1 + |x|))`` extra digits, as
    ``A + B x`` cancels that many (``|B| ~ 1e4`` for eigenvalues 1 and 1e-8).
    Nothing is shared with the oracle (no whitening, rotation or own
    quadrature). ``x_range`` (default: the extent of the vertices, for
    bounded polygons) may be any superset of the polygon's extent in ``x``;
    unbounded polygons are clipped to it. Cost ~1-3 s at ``dps=30``.
    """
    with mp.workdps(dps + 20):
        N = [[mp.mpf(float(v)) for v in row] for row in normals]
        O = [mp.mpf(float(v)) for v in offsets]
        m = [mp.mpf(float(v)) for v in mu]
        S = [[mp.mpf(float(v)) for v in row] for row in Sigma]
        k = axis if axis is not None else (0 if S[0][0] >= S[1][1] else 1)
        j = 1 - k
        var_k = S[k][k]
        b = S[j][k] / var_k
        s = mp.sqrt(S[j][j] - S[j][k] ** 2 / var_k)
        if x_range is None:  # bounded polygon: its vertices are the feasible corners
            xs = []
            for i, (n1, o1) in enumerate(zip(N, O)):
                for n2, o2 in zip(N[i + 1:], O[i + 1:]):
                    det = n1[0] * n2[1] - n1[1] * n2[0]
                    if det != 0:
                        z = ((-o1 * n2[1] + o2 * n1[1]) / det, (-n1[0] * o2 + n2[0] * o1) / det)
                        if all(n[0] * z[0] + n[1] * z[1] + o >= -mp.eps * 1e6 * (1 + abs(o)) for n, o in zip(N, O)):
                            xs.append(z[k])
            x_range = (min(xs), max(xs))
        xa, xb = mp.mpf(x_range[0]), mp.mpf(x_range[1])
        lows, ups = [], []
        for n, o in zip(N, O):
            if n[j] == 0:
                if n[k] > 0:
                    xa = max(xa, -o / n[k])
                elif n[k] < 0:
                    xb = min(xb, -o / n[k])
                continue
            A = (-o / n[j] - m[j] + b * m[k]) / s
            B = (-n[k] / n[j] - b) / s
            (lows if n[j] > 0 else ups).append((A, B))
        assert xb > xa
        x0 = (xa + xb) / 2  # moments about (x0, c(x0)): no cancellation far out
        y0 = m[j] + b * (x0 - m[k])
        lines = lows + ups
        cuts = {xa, xb}
        for i, (A1, B1) in enumerate(lines):
            for A2, B2 in lines[i + 1:]:
                if B1 != B2:
                    cuts.add((A2 - A1) / (B1 - B2))
        # ... and where a standardised bound, or (x - mu_k) / sd_k, crosses 0 or
        # +-4^e: between cuts each of them stays within a factor-4 band, so
        # log f cannot be flat over most of a piece and then plunge (a sharp
        # step) in a short stretch next to its end that no sample sees
        levels = [mp.zero] + [sg * mp.mpf(2) ** e for e in range(-2, 25, 2) for sg in (1, -1)]
        for A, B in lines:
            if B != 0:
                cuts.update((c - A) / B for c in levels)
        cuts.update(m[k] + c * mp.sqrt(var_k) for c in levels)
        cuts = sorted(x for x in cuts if xa <= x <= xb)
        big = max([abs(B) for A, B in lines] + [1]) * (1 + max(abs(xa), abs(xb)))
        return _conditional_quad(lows, ups, cuts, m, k, var_k, b, s, x0, y0,
                                 dps, dps + int(mp.log10(big)) + 3)


def _conditional_quad(lows, ups, cuts, m, k, var_k, b, s, x0, y0, dps, wp):
    """The quadrature part of :func:`conditional_moments`, at ``wp`` digits."""
    j = 1 - k
    with mp.workdps(wp):

        def Q(u):
            return mp.erfc(u / mp.sqrt(2)) / 2

        def section(x):
            lo = max((A + B * x for A, B in lows), default=mp.ninf)
            hi = min((A + B * x for A, B in ups), default=mp.inf)
            return lo, hi

        def inner_mass(lo, hi):
            if lo >= 0:
                return Q(lo) - Q(hi)
            if hi <= 0:
                return Q(-hi) - Q(-lo)
            return 1 - Q(-lo) - Q(hi)

        def log_f(x):
            lo, hi = section(x)
            if not hi > lo:
                return mp.ninf
            return mp.log(inner_mass(lo, hi)) - (x - m[k]) ** 2 / (2 * var_k)

        def probe(a, c):
            return a, c, [log_f(a + (c - a) * i / 8) for i in range(1, 8)]

        drop = (dps + 10) * mp.log(10) + 20
        stack = [probe(a, c) for a, c in zip(cuts[:-1], cuts[1:]) if c > a]
        peak = max(max(ls) for a, c, ls in stack)  # first estimate, so tails are dropped early
        pieces = []
        while stack:
            a, c, ls = stack.pop()
            top = max(ls)
            if mp.isinf(top):
                continue  # no cut inside, so the section is empty on the whole piece
            peak = max(peak, top)
            if top < peak - drop:
                continue
            if top - min(ls) <= 6 or c - a <= mp.eps * 1e6 * (abs(a) + abs(c)):
                pieces.append((a, c, top))
            else:
                stack += [probe(a, (a + c) / 2), probe((a + c) / 2, c)]
        pieces = sorted((a, c) for a, c, top in pieces if top >= peak - drop)

        cache = {}

        def integrands(x):  # the six integrands at x, scaled by e^-peak (cached)
            if x not in cache:
                lo, hi = section(x)
                if not hi > lo:
                    cache[x] = [mp.zero] * 6
                    return cache[x]
                m0 = inner_mass(lo, hi)
                pl = mp.zero if mp.isinf(lo) else mp.npdf(lo)
                ph = mp.zero if mp.isinf(hi) else mp.npdf(hi)
                m1 = pl - ph
                m2 = m0 + (lo * pl if pl else 0) - (hi * ph if ph else 0)
                w = mp.exp(-(x - m[k]) ** 2 / (2 * var_k) - peak)
                X, C = x - x0, m[j] + b * (x - m[k]) - y0
                e0, e1, e2 = m0, C * m0 + s * m1, C * C * m0 + 2 * C * s * m1 + s * s * m2
                cache[x] = [w * e0, w * X * e0, w * X * X * e0, w * e1, w * X * e1, w * e2]
            return cache[x]

        I = [mp.zero] * 6
        for a, c in pieces:
            for q in range(6):
                I[q] += mp.quad(lambda x, q=q: integrands(x)[q], [a, c], method="gauss-legendre")
        I0, Ix, Ixx, Iy, Ixy, Iyy = I
        ex, ey = Ix / I0, Iy / I0
        mean = [None, None]
        mean[k], mean[j] = x0 + ex, y0 + ey
        cov = mp.matrix(2, 2)
        cov[k, k], cov[j, j] = Ixx / I0 - ex * ex, Iyy / I0 - ey * ey
        cov[k, j] = cov[j, k] = Ixy / I0 - ex * ey
        return mp.log(I0) + peak - mp.log(2 * mp.pi * var_k) / 2, mp.matrix(mean), cov


def float_polygon(vertices):
    """float64 half-planes of a CCW polygon (normals = edge vectors turned left)."""
    V = np.asarray(vertices, dtype=float)
    E = np.roll(V, -1, axis=0) - V
    normals = np.stack([-E[:, 1], E[:, 0]], axis=1)
    return normals, -(normals * V).sum(axis=1)


def float_rot_sigma(l1, l2, angle):
    """float64 R diag(l1, l2) R^T, made exactly symmetric."""
    c, s = math.cos(angle), math.sin(angle)
    R = np.array([[c, -s], [s, c]])
    S = R @ np.diag([l1, l2]) @ R.T
    return (S + S.T) / 2


def as_mp(Sigma):
    return mp.matrix([[mp.mpf(x) for x in row] for row in Sigma])


def check_moments(got, ref, tol_log, tol_mom):
    """Compare (log_mass, mean, cov) to a reference.

    log_mass: absolute (i.e. relative in the mass) scaled by max(1, |log|);
    mean: relative to |mean| + sd; cov: relative to the largest variance.
    """
    lg, mg, cg = got
    lr, mr, cr = ref
    with mp.workdps(60):
        assert abs(lg - lr) <= tol_log * max(1, abs(lr)), (mp.nstr(lg, 35), mp.nstr(lr, 35))
        sd = mp.sqrt(max(cr[0, 0], cr[1, 1]))
        for i in range(2):
            assert abs(mg[i] - mr[i]) <= tol_mom * (abs(mr[i]) + sd), (i, mp.nstr(mg[i], 35), mp.nstr(mr[i], 35))
            for j in range(2):
                assert abs(cg[i, j] - cr[i, j]) <= tol_mom * sd * sd, (i, j, mp.nstr(cg[i, j], 35), mp.nstr(cr[i, j], 35))


def rot_sigma(l1, l2, angle, dps=80):
    """Sigma = R diag(l1, l2) R^T at ``dps`` digits (an mp.matrix)."""
    with mp.workdps(dps):
        c, s = mp.cos(angle), mp.sin(angle)
        R = mp.matrix([[c, -s], [s, c]])
        return R * mp.matrix([[mp.mpf(l1), 0], [0, mp.mpf(l2)]]) * R.T


# ---------------------------------------------------------------------------
# intervals
# ---------------------------------------------------------------------------


def scipy_log_mass(a, b):
    """log(Phi(b) - Phi(a)) from scipy.special.log_ndtr, cancellation-free."""
    if a >= 0:
        a, b = -b, -a
    if b <= 0:
        la, lb = scipy.special.log_ndtr(a), scipy.special.log_ndtr(b)
        return lb + math.log1p(-math.exp(la - lb))
    return math.log1p(-(scipy.special.ndtr(a) + scipy.special.ndtr(-b)))


@pytest.mark.parametrize(
    "lo, hi, mu, sigma",
    [
        (-1.0, 2.0, 0.0, 1.0),
        (0.5, 3.0, 1.0, 2.0),
        (-INF, 0.3, 0.0, 1.0),
        (2.0, INF, -1.0, 0.5),
        (-5.0, -4.0, 0.0, 1.0),
        (-0.1, 0.1, 0.0, 1.0),
        (3.0, 8.0, 0.0, 1.0),
        (-8.0, -3.0, 1.0, 3.0),
        (-INF, INF, 2.0, 3.0),
        (-7.0, -6.0, 0.0, 1.0),
    ],
)
def test_interval_vs_scipy(lo, hi, mu, sigma):
    lm, mean, var = interval_moments_mp(lo, hi, mu, sigma)
    a, b = (lo - mu) / sigma, (hi - mu) / sigma
    ref_lm = scipy_log_mass(a, b)
    assert abs(float(lm) - ref_lm) <= 1e-13 * max(1.0, abs(ref_lm))
    m, v = scipy.stats.truncnorm.stats(a, b, loc=mu, scale=sigma, moments="mv")
    sd = math.sqrt(float(var))
    assert abs(float(mean) - m) <= 1e-12 * (abs(m) + sd)
    assert abs(float(var) - v) <= 1e-11 * v


@pytest.mark.parametrize("t", [40, 100, 1000])
@pytest.mark.parametrize("mu, sigma, side", [(0, 1, +1), ("1.5", "0.25", +1), ("-3", "2", -1)])
def test_interval_far_tail_mills(t, mu, sigma, side):
    logQ, lam, v = mills_tail(t)
    with mp.workdps(80):
        mu_, sg = mp.mpf(mu), mp.mpf(sigma)
        edge = mu_ + side * t * sg  # exact in binary for these inputs
        lo, hi = (edge, mp.inf) if side > 0 else (mp.ninf, edge)
    lm, mean, var = interval_moments_mp(lo, hi, mu_, sg)
    with mp.workdps(80):
        assert abs(lm - logQ) <= mp.mpf(10) ** -40 * abs(logQ)
        assert abs(mean - (mu_ + side * sg * lam)) <= mp.mpf(10) ** -40 * abs(sg * lam)
        assert abs(var - sg * sg * v) <= mp.mpf(10) ** -40 * sg * sg * v


def test_interval_far_tail_erfc_high_precision():
    # a second route far out: erfc at 400 digits (no cancellation for one-sided tails)
    for t in (40, 100, 1000):
        with mp.workdps(400):
            ref = mp.log(mp.erfc(mp.mpf(t) / mp.sqrt(2)) / 2)
        lm, _, _ = interval_moments_mp(t, INF)
        with mp.workdps(80):
            assert abs(lm - ref) <= mp.mpf(10) ** -45 * abs(ref)


@pytest.mark.parametrize("c", [0.0, 3.0, -7.5, 40.0, -25.0])
@pytest.mark.parametrize("w", ["1e-10", "1e-6"])
def test_interval_thin(c, w):
    with mp.workdps(80):
        w = mp.mpf(w)
        c = mp.mpf(c)
        lo, hi = c - w / 2, c + w / 2
    lm, mean, var = interval_moments_mp(lo, hi)
    with mp.workdps(80):
        pdf = mp.exp(-c * c / 2) / mp.sqrt(2 * mp.pi)
        # mass = w phi(c) (1 + w^2 (c^2 - 1)/24 + O(w^4 c^4))
        approx = w * pdf * (1 + w * w * (c * c - 1) / 24)
        assert abs(mp.exp(lm) / approx - 1) <= 10 * w**4 * (1 + c * c) ** 2
        # mean = c - c w^2/12 + O(w^4 |c|^3); var = w^2/12 (1 + O(w^2 c^2))
        assert abs(mean - (c - c * w * w / 12)) <= 10 * w**4 * (1 + abs(c)) ** 3
        assert abs(var / (w * w / 12) - 1) <= w * w * (1 + c * c)
        # tighter: local-coordinate quadrature (no cancellation), s = z - c
        h = w / 2
        g = lambda s, k: s**k * mp.exp(-c * s - s * s / 2)  # noqa: E731
        Z = mp.quad(lambda s: g(s, 0), [-h, h], method="gauss-legendre")
        Es = mp.quad(lambda s: g(s, 1), [-h, h], method="gauss-legendre") / Z
        Vs = mp.quad(lambda s: (s - Es) ** 2 * mp.exp(-c * s - s * s / 2), [-h, h], method="gauss-legendre") / Z
        assert abs(lm - mp.log(pdf * Z)) <= mp.mpf(10) ** -40 * max(1, abs(lm))
        assert abs(mean - (c + Es)) <= mp.mpf(10) ** -40 * (abs(c) + w)
        assert abs(var - Vs) <= mp.mpf(10) ** -40 * Vs


@pytest.mark.parametrize("lo, hi", [(-1e6, 1e6), (-1e300, 1e300), (-INF, INF), (-1e6, 0.5), (-0.5, 1e9)])
def test_interval_huge(lo, hi):
    lm, mean, var = interval_moments_mp(lo, hi, mu=0, sigma=1)
    m, em, ev = std_interval(max(lo, -1e5), min(hi, 1e5))  # beyond 1e5 sd nothing is left
    with mp.workdps(60):
        assert abs(lm - mp.log(m)) <= mp.mpf(10) ** -45
        assert abs(mean - em) <= mp.mpf(10) ** -45
        assert abs(var - ev) <= mp.mpf(10) ** -45


def test_interval_errors_and_precision():
    dps0 = mp.dps
    with pytest.raises(ValueError):
        interval_moments_mp(1.0, 1.0)
    with pytest.raises(ValueError):
        interval_moments_mp(2.0, 1.0)
    with pytest.raises(ValueError):
        interval_moments_mp(0.0, 1.0, sigma=0.0)
    interval_moments_mp(40.0, 40.0 + 1e-9)
    assert mp.dps == dps0


# ---------------------------------------------------------------------------
# polygons
# ---------------------------------------------------------------------------

SIGMAS = {
    "identity": [[1.0, 0.0], [0.0, 1.0]],
    "correlated": [[2.0, 0.8], [0.8, 1.5]],
    "anticorrelated": [[0.5, -0.45], [-0.45, 0.9]],
}


@pytest.mark.parametrize("name", sorted(SIGMAS) + ["near_singular"])
def test_polygon_whole_plane(name):
    Sigma = rot_sigma(1, "1e-8", 0.3) if name == "near_singular" else SIGMAS[name]
    mu = [0.7, -1.3]
    lm, mean, cov = polygon_moments_mp(np.zeros((0, 2)), np.zeros(0), mu, Sigma)
    S = Sigma if isinstance(Sigma, mp.matrix) else as_mp(Sigma)
    ref = (mp.zero, mp.matrix(mu), S)
    check_moments((lm, mean, cov), ref, 1e-30, 1e-30)


@pytest.mark.parametrize(
    "n, o, mu, sigma",
    [
        ((1.0, 0.0), -1.0, (0.0, 0.0), "identity"),
        ((0.6, -0.8), 0.4, (0.3, 0.2), "correlated"),
        ((-1.0, 2.0), -3.0, (0.5, -0.5), "anticorrelated"),
        ((1.0, 1.0), -30.0 * math.sqrt(2.0), (0.0, 0.0), "identity"),  # distance 30
        ((0.3, 1.0), -60.0, (1.0, 2.0), "correlated"),  # ~50 sd out
        ((1.0, -0.5), 5.0, (0.0, 0.0), "correlated"),  # contains the mean
    ],
)
def test_polygon_half_plane(n, o, mu, sigma):
    Sigma = SIGMAS[sigma]
    got = polygon_moments_mp([n], [o], mu, Sigma)
    ref = linear_truncation(n, -o, mp.inf, mu, Sigma)
    check_moments(got, ref, 1e-30, 1e-30)


@pytest.mark.parametrize("a, b", [(0.0, 0.0), (1.0, -2.0), (-3.0, 0.5), (30.0, 30.0), (40.0, -1.0), (40.0, 40.0)])
def test_polygon_orthant_identity(a, b):
    got = polygon_moments_mp([(1, 0), (0, 1)], [-a, -b], (0, 0), SIGMAS["identity"])
    ma, ea, va = std_interval(a, mp.inf)
    mb, eb, vb = std_interval(b, mp.inf)
    with mp.workdps(120):
        ref = (mp.log(ma) + mp.log(mb), mp.matrix([ea, eb]), mp.matrix([[va, 0], [0, vb]]))
    if a == b == 30.0:
        assert -910 < float(ref[0]) < -900  # mass ~ 1e-394
    check_moments(got, ref, 1e-30, 1e-30)


@pytest.mark.parametrize("a, b, s1, s2, mu", [(1.0, 2.0, 2.0, 0.5, (0.5, -1.0)), (30.0, -1.0, 0.3, 3.0, (2.0, 1.0))])
def test_polygon_orthant_diagonal(a, b, s1, s2, mu):
    # {z1 >= mu1 + a s1, z2 >= mu2 + b s2} under diag(s1^2, s2^2): product of 1-D tails
    with mp.workdps(120):  # exact inputs (no float rounding of a*s1 or s^2)
        s1, s2, mu = mp.mpf(s1), mp.mpf(s2), (mp.mpf(mu[0]), mp.mpf(mu[1]))
        offsets = [-(mu[0] + a * s1), -(mu[1] + b * s2)]
        Sigma = [[s1**2, 0], [0, s2**2]]
    got = polygon_moments_mp([(1, 0), (0, 1)], offsets, mu, Sigma)
    ma, ea, va = std_interval(a, mp.inf)
    mb, eb, vb = std_interval(b, mp.inf)
    with mp.workdps(120):
        ref = (mp.log(ma * mb), mp.matrix([mu[0] + s1 * ea, mu[1] + s2 * eb]),
               mp.matrix([[s1**2 * va, 0], [0, s2**2 * vb]]))
    check_moments(got, ref, 1e-30, 1e-30)


def sym_sqrt(S, dps=80):
    """Symmetric square root Sigma^(1/2) by eigendecomposition (a whitening independent of Cholesky)."""
    with mp.workdps(dps):
        E, Q = mp.eigsy(S)
        return Q * mp.diag([mp.sqrt(E[0]), mp.sqrt(E[1])]) * Q.T


@pytest.mark.parametrize("sigma", sorted(SIGMAS) + ["near_singular"])
@pytest.mark.parametrize("r1, r2", [((1.0, 0.2), (0.5, 1.0)), ((1.0, 0.0), (-1.0, 0.05)), ((-0.3, -1.0), (1.0, -1.0))])
def test_polygon_wedge_at_mean(sigma, r1, r2):
    Sigma = rot_sigma(1, "1e-8", 0.3) if sigma == "near_singular" else as_mp(SIGMAS[sigma])
    mu = (0.25, -0.75)
    # wedge {z : cross(r1, z - mu) >= 0, cross(z - mu, r2) >= 0} (angle < pi)
    n1 = (-r1[1], r1[0])
    n2 = (r2[1], -r2[0])
    normals = [n1, n2]
    with mp.workdps(80):  # exact products/sums of doubles: the apex is exactly mu
        offsets = [-(mp.mpf(n1[0]) * mu[0] + mp.mpf(n1[1]) * mu[1]), -(mp.mpf(n2[0]) * mu[0] + mp.mpf(n2[1]) * mu[1])]
    got = polygon_moments_mp(normals, offsets, mu, Sigma)
    with mp.workdps(80):
        W = sym_sqrt(Sigma)
        Wi = mp.inverse(W)
        w1 = Wi * mp.matrix(r1)
        w2 = Wi * mp.matrix(r2)
        a1 = mp.atan2(w1[1], w1[0])
        th = mp.atan2(w1[0] * w2[1] - w1[1] * w2[0], w1[0] * w2[0] + w1[1] * w2[1])
        assert 0 < th < mp.pi
        a2 = a1 + th
        # u = r (cos f, sin f), r ~ Rayleigh (E r = sqrt(pi/2), E r^2 = 2), f ~ U[a1, a2]
        Eu = mp.sqrt(mp.pi / 2) / th * mp.matrix([mp.sin(a2) - mp.sin(a1), mp.cos(a1) - mp.cos(a2)])
        d = (mp.sin(2 * a2) - mp.sin(2 * a1)) / (4 * th)
        cs = (mp.cos(2 * a1) - mp.cos(2 * a2)) / (4 * th)
        Euu = 2 * mp.matrix([[mp.mpf(1) / 2 + d, cs], [cs, mp.mpf(1) / 2 - d]])
        Cu = Euu - Eu * Eu.T
        ref = (mp.log(th / (2 * mp.pi)), mp.matrix(mu) + W * Eu, W * Cu * W.T)
    check_moments(got, ref, 1e-30, 1e-30)


@pytest.mark.parametrize(
    "n, lo, hi, mu, sigma",
    [
        ((1.0, 0.5), -1.0, 2.0, (0.0, 0.0), "correlated"),
        ((0.0, 1.0), 0.25, 0.5, (1.0, 0.0), "anticorrelated"),
        ((1.0, -1.0), 35.0, 36.0, (0.0, 0.0), "identity"),  # far strip
        ((2.0, 1.0), 1.0, 1.001, (0.2, 0.1), "correlated"),  # thin strip
    ],
)
def test_polygon_strip(n, lo, hi, mu, sigma):
    Sigma = SIGMAS[sigma]
    # {s0 + lo sd <= n.z <= s0 + hi sd}, s0 = n.mu, sd = sqrt(n^T Sigma n) (float offsets,
    # used as given by both sides)
    sd = math.sqrt(np.array(n) @ np.array(Sigma) @ np.array(n))
    s0 = n[0] * mu[0] + n[1] * mu[1]
    normals = [n, (-n[0], -n[1])]
    offsets = [-(s0 + lo * sd), s0 + hi * sd]
    got = polygon_moments_mp(normals, offsets, mu, Sigma)
    ref = linear_truncation(n, -mp.mpf(offsets[0]), mp.mpf(offsets[1]), mu, Sigma)
    check_moments(got, ref, 1e-30, 1e-30)


def test_polygon_monte_carlo_correlated():
    rng = np.random.default_rng(12345)
    Sigma = np.array([[1.3, -0.7], [-0.7, 0.9]])
    mu = np.array([0.4, -0.2])
    verts = [(-0.5, -1.0), (1.5, -1.2), (2.0, 0.3), (0.6, 1.4), (-0.8, 0.5)]
    normals, offsets = polygon_from_vertices(verts)
    lm, mean, cov = polygon_moments_mp(normals, offsets, mu, Sigma)
    N = 2_000_000
    Z = rng.multivariate_normal(mu, Sigma, size=N)
    Nf = np.array([[float(x) for x in row] for row in normals])
    of = np.array([float(x) for x in offsets])
    inside = np.all(Z @ Nf.T + of >= 0, axis=1)
    p = inside.mean()
    se_p = math.sqrt(p * (1 - p) / N)
    assert abs(math.exp(float(lm)) - p) <= 5 * se_p
    Zi = Z[inside]
    n_in = len(Zi)
    m_hat = Zi.mean(axis=0)
    for i in range(2):
        assert abs(float(mean[i]) - m_hat[i]) <= 5 * Zi[:, i].std() / math.sqrt(n_in)
    D = Zi - m_hat
    for i in range(2):
        for j in range(2):
            prod = D[:, i] * D[:, j]
            assert abs(float(cov[i, j]) - prod.mean()) <= 5 * prod.std() / math.sqrt(n_in)


@pytest.mark.parametrize("x, sigma", [((0.5, 1.0), "correlated"), ((-1.5, 0.2), "anticorrelated"), ((-2.0, -2.5), "correlated")])
def test_polygon_quadrant_vs_scipy_mvn(x, sigma):
    Sigma = SIGMAS[sigma]
    mu = (0.3, -0.2)
    lm, _, _ = polygon_moments_mp([(-1, 0), (0, -1)], [x[0], x[1]], mu, Sigma)
    ref = scipy.stats.multivariate_normal.cdf(x, mean=mu, cov=Sigma, abseps=1e-14, releps=1e-14)
    assert abs(math.exp(float(lm)) - ref) <= 1e-12 * ref


@pytest.mark.parametrize(
    "verts, min_dist",
    [
        ([(30.0, 14.0), (31.0, 13.5), (30.5, 15.0)], 20.0),  # far: Mahalanobis distance > 20
        ([(2.0, 1.0), (2.0 + 2**-20, 1.0), (2.0, 1.0 + 2**-21)], 1.0),  # tiny (sides ~1e-6)
    ],
)
def test_polygon_triangle_bruteforce(verts, min_dist):
    # reference: nested Gauss-Legendre 2-D quadrature of the density over the
    # triangle (affine map of the unit simplex), slow, so only these two cases
    Sigma = as_mp(SIGMAS["correlated"])
    mu = (0.5, -0.25)
    normals, offsets = polygon_from_vertices(verts)
    got = polygon_moments_mp(normals, offsets, mu, Sigma)
    with mp.workdps(36):
        Si = mp.inverse(Sigma)
        V = [mp.matrix(v) - mp.matrix(mu) for v in verts]
        qf = lambda x, y: Si[0, 0] * x * x + 2 * Si[0, 1] * x * y + Si[1, 1] * y * y  # noqa: E731
        q0 = min(qf(v[0], v[1]) for v in V)
        assert q0 > min_dist**2
        e1, e2 = V[1] - V[0], V[2] - V[0]
        jac = abs(e1[0] * e2[1] - e1[1] * e2[0])

        def moments(s, t):
            x = V[0][0] + s * e1[0] + t * e2[0]
            y = V[0][1] + s * e1[1] + t * e2[1]
            g = mp.exp(-(qf(x, y) - q0) / 2)
            return [g, g * x, g * y, g * x * x, g * x * y, g * y * y]

        acc = []
        for k in range(6):
            acc.append(mp.quad(lambda s: mp.quad(lambda t: moments(s, t)[k], [0, 1 - s], method="gauss-legendre"),
                               [0, 1], method="gauss-legendre"))
        Z = acc[0]
        ex, ey = acc[1] / Z, acc[2] / Z
        cxx, cxy, cyy = acc[3] / Z - ex * ex, acc[4] / Z - ex * ey, acc[5] / Z - ey * ey
        log_mass = mp.log(Z * jac) - q0 / 2 - mp.log(2 * mp.pi) - mp.log(mp.det(Sigma)) / 2
        ref = (log_mass, mp.matrix([mu[0] + ex, mu[1] + ey]), mp.matrix([[cxx, cxy], [cxy, cyy]]))
    check_moments(got, ref, 1e-25, 1e-22)


@pytest.mark.parametrize(
    "which, dist",
    [("generic", 1.0), ("generic", 5.0), ("small_axis", 3.0), ("small_axis", -0.5), ("large_axis", 2.0), ("generic", 25.0)],
)
def test_polygon_near_singular_half_plane(which, dist):
    angle = mp.mpf("0.3")
    Sigma = rot_sigma(1, "1e-8", angle)
    mu = (0.125, -0.25)
    with mp.workdps(80):
        c, s = mp.cos(angle), mp.sin(angle)
        n = {"generic": mp.matrix([1, mp.mpf("0.7")]), "small_axis": mp.matrix([-s, c]),
             "large_axis": mp.matrix([c, s])}[which]
        sd = mp.sqrt((n.T * Sigma * n)[0])
        s0 = n[0] * mp.mpf(mu[0]) + n[1] * mp.mpf(mu[1])
        off = -(s0 + dist * sd)  # half-plane n.z >= n.mu + dist * sd
        lo = -off  # (negate at 80 digits, not at the default 15)
    got = polygon_moments_mp([[n[0], n[1]]], [off], mu, Sigma)
    ref = linear_truncation((n[0], n[1]), lo, mp.inf, mu, Sigma)
    check_moments(got, ref, 1e-28, 1e-27)


def _pentagon(shift):
    verts = [(-0.5 + shift, -1.0 + shift), (1.5 + shift, -1.2 + shift), (2.0 + shift, 0.3 + shift),
             (0.6 + shift, 1.4 + shift), (-0.8 + shift, 0.5 + shift)]
    return polygon_from_vertices(verts)


@pytest.mark.parametrize("shift", [0.0, 18.0])
def test_polygon_invariance(shift):
    Sigma = SIGMAS["correlated"]
    mu = (0.1, 0.2)
    normals, offsets = _pentagon(shift)
    base = polygon_moments_mp(normals, offsets, mu, Sigma)
    perm = [3, 0, 4, 2, 1]
    permuted = polygon_moments_mp([normals[i] for i in perm], [offsets[i] for i in perm], mu, Sigma)
    check_moments(permuted, base, 1e-32, 1e-32)
    # redundant half-planes: a loose one and a duplicate scaled copy of an edge
    with mp.workdps(80):  # exact: 3 * (53-bit numbers)
        redundant_n = normals + [(1.0, 1.0), [3 * normals[2][0], 3 * normals[2][1]]]
        redundant_o = offsets + [50.0, 3 * offsets[2]]
    redundant = polygon_moments_mp(redundant_n, redundant_o, mu, Sigma)
    check_moments(redundant, base, 1e-32, 1e-32)


def test_polygon_from_vertices_square():
    # axis-aligned rectangle with diagonal Sigma: product of 1-D interval moments
    x0, x1, y0, y1 = -1.0, 2.0, 0.5, 3.0
    s1, s2 = 1.5, 0.7
    mu = (0.2, 0.1)
    normals, offsets = polygon_from_vertices([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
    for n, o in zip(normals, offsets):  # centre strictly inside
        assert n[0] * (x0 + x1) / 2 + n[1] * (y0 + y1) / 2 + o > 0
    with mp.workdps(120):  # exact inputs and standardised bounds
        s1, s2 = mp.mpf(s1), mp.mpf(s2)
        Sigma = [[s1**2, 0], [0, s2**2]]
        ma, ea, va = std_interval((mp.mpf(x0) - mu[0]) / s1, (mp.mpf(x1) - mu[0]) / s1)
        mb, eb, vb = std_interval((mp.mpf(y0) - mu[1]) / s2, (mp.mpf(y1) - mu[1]) / s2)
    got = polygon_moments_mp(normals, offsets, mu, Sigma)
    with mp.workdps(120):
        ref = (mp.log(ma * mb), mp.matrix([mu[0] + s1 * ea, mu[1] + s2 * eb]),
               mp.matrix([[s1**2 * va, 0], [0, s2**2 * vb]]))
    check_moments(got, ref, 1e-30, 1e-30)
    with pytest.raises(ValueError):
        polygon_from_vertices([(x0, y0), (x0, y1), (x1, y1), (x1, y0)])  # clockwise


def test_polygon_errors_and_precision():
    dps0 = mp.dps
    I = SIGMAS["identity"]
    with pytest.raises(ValueError, match="empty"):
        polygon_moments_mp([(1, 0), (-1, 0)], [-1, -1], (0, 0), I)  # u1 >= 1 and u1 <= -1
    with pytest.raises(ValueError, match="zero area"):
        polygon_moments_mp([(1, 0), (-1, 0)], [-2, 2], (0, 0), I)  # the line u1 = 2
    with pytest.raises(ValueError, match="zero area"):
        polygon_moments_mp([(1, 0), (-1, 0), (0, 1)], [0, 0, -1], (0, 0), I)  # a ray
    with pytest.raises(ValueError, match="empty"):
        polygon_moments_mp([(1, 1), (-1, 0), (0, -1)], [-1, 0, 0], (0, 0), I)  # u1+u2 >= 1, u <= 0
    with pytest.raises(ValueError, match="positive definite"):
        polygon_moments_mp([(1, 0)], [0], (0, 0), [[1, 2], [2, 1]])
    assert mp.dps == dps0


def _off_axis_quad(angle, mu):
    # quadrilateral beside the long axis of R diag(1, 1e-8) R^T: its lower edge runs
    # 12 -> 8 short-axis sd off the axis, so the mass is ~Q(8) and sits in a sliver
    e = np.array([math.cos(angle), math.sin(angle)])
    f = np.array([-e[1], e[0]])
    c = np.asarray(mu) + e
    return [tuple(c - 0.4 * e + 1.2e-3 * f), tuple(c + 0.4 * e + 0.8e-3 * f),
            tuple(c + 0.3 * e + 0.3 * f), tuple(c - 0.3 * e + 0.2 * f)]


NEAR_SINGULAR_POLYGONS = {
    # the reported case: rho = 1 - 1e-8 (floats), mean outside; the oracle used to give
    # -1.3707024163829553 (steep-edge breakpoints beyond the first one were dropped)
    "rho_1e-8": ([(1.0, 0.0), (3.0, 0.5), (2.0, 2.0), (0.5, 1.5)], (0.3, -0.2),
                 np.array([[1.0, 1 - 1e-8], [1 - 1e-8, 1.0]])),
    "rot0.3_triangle": ([(1.2, 0.1), (2.2, 0.5), (1.5, 0.9)], (0.1, -0.05), float_rot_sigma(1.0, 1e-8, 0.3)),
    "rot2.0_quad": ([(-0.5, 1.2), (0.3, 1.0), (0.2, 2.6), (-0.9, 2.5)], (0.2, 0.3), float_rot_sigma(1.0, 1e-8, 2.0)),
    "rot1.2_off_axis": (_off_axis_quad(1.2, (0.1, 0.2)), (0.1, 0.2), float_rot_sigma(1.0, 1e-8, 1.2)),
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "rot0.3_triangle" else n
                                  for n in sorted(NEAR_SINGULAR_POLYGONS)] + ["rot0.8_wedge"])
def test_polygon_near_singular_vs_conditional(name):
    # nearly singular Sigma (eigenvalues 1 and ~1e-8): whitening stretches P by
    # ~1e4, so its edges become steep and the section mass jumps within ~1e-4 in t
    x_range = None
    if name == "rot0.8_wedge":  # unbounded: apex (1, 1), mean outside; range of z_2 (larger variance)
        normals = np.array([[1.0, -0.3], [-0.2, 1.0]])
        offsets = -(normals @ np.array([1.0, 1.0]))
        mu, Sigma, x_range = (-0.5, -0.4), float_rot_sigma(1.0, 1e-8, 0.8), (-35.0, 35.0)
    else:
        verts, mu, Sigma = NEAR_SINGULAR_POLYGONS[name]
        normals, offsets = float_polygon(verts)
    ref = conditional_moments(normals, offsets, mu, Sigma, x_range, dps=25)  # z-space, conditioning on z_k
    got = polygon_moments_mp(normals, offsets, mu, Sigma)
    check_moments(got, ref, 1e-22, 1e-21)
    if name == "rho_1e-8":
        with mp.workdps(40):
            assert abs(got[0] - mp.mpf("-1.37070022961904246824056191763")) < 1e-28
