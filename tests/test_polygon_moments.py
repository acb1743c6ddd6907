"""``fastcpa.polygon_moments`` against the mpmath oracle (``oracles.polygon_moments_mp``, 40 digits).

Issue targets, checked here as stated:

* log-mass: ``|err| <= 1e-12 max(1, |log_mass|)`` in the bulk (the polygon
  within ``BULK_RADIUS`` Mahalanobis units of the mean) and ``<= 1e-9 max(1,
  |log_mass|)`` for polygons up to 37 standard deviations out;
* normalised moments to 1e-9: ``|mean_i - ref_i| <= 1e-9 (|ref_i| + sd)`` with
  ``sd = sqrt(max diag cov_ref)``, ``|cov_ij - ref_ij| <= 1e-9 max |cov_ref|``;
* thin (width down to 1e-8), tiny, huge and unbounded polygons, the mean
  inside, on an edge or at a vertex, nearly singular covariances (eigenvalue
  ratio 1e8 at several rotations), and tail masses where SciPy returns 0.

Every reference is computed from exactly the float64 numbers given to
fastcpa (the oracle reads floats exactly). Where a closed form exists
(half-planes, strips, the whole plane, axis-aligned boxes and orthants under a
diagonal covariance) it is used instead of the oracle, which costs 0.1-1 s a
call; the default tests make about 40 oracle calls, the random sweep under
``slow`` 300 more.
"""

import dataclasses
import math

import numpy as np
import pytest
import scipy.stats
from mpmath import mp

import fastcpa
from oracles import interval_moments_mp, polygon_moments_mp

LOG_TOL_BULK = 1e-12
LOG_TOL_FAR = 1e-9
MOM_TOL = 1e-9
BULK_RADIUS = 5.0  # Mahalanobis distance from the mean to the polygon up to which "bulk" applies

I2 = np.eye(2)
CORR = np.array([[2.0, 0.8], [0.8, 1.5]])
ANTI = np.array([[0.5, -0.45], [-0.45, 0.9]])


def rot_cov(l1, l2, angle):
    """float64 ``R diag(l1, l2) R^T``, exactly symmetric."""
    c, s = math.cos(angle), math.sin(angle)
    R = np.array([[c, -s], [s, c]])
    S = R @ np.diag([l1, l2]) @ R.T
    return (S + S.T) / 2


RHO = np.array([[1.0, 1 - 1e-8], [1 - 1e-8, 1.0]])  # eigenvalues 2 and 1e-8


def poly(vertices):
    """float64 (normals, offsets) of a CCW convex polygon: edge vectors turned left."""
    V = np.asarray(vertices, dtype=float)
    E = np.roll(V, -1, axis=0) - V
    normals = np.stack([-E[:, 1], E[:, 0]], axis=1)
    return normals, -(normals * V).sum(axis=1)


def halfplanes(*rows):
    """``((n0, n1), o), ...`` -> float64 (normals, offsets)."""
    return np.array([r[0] for r in rows], dtype=float).reshape(-1, 2), np.array([r[1] for r in rows], dtype=float)


def mahalanobis_distance(normals, offsets, mean, cov):
    """Distance (in whitened units) from the mean to the polygon, 0 inside (float64 geometry)."""
    L = np.linalg.cholesky(cov)
    A = normals @ L  # half-planes A u + c >= 0 in u = L^-1 (z - mean)
    c = normals @ mean + offsets
    keep = np.hypot(A[:, 0], A[:, 1]) > 0
    A, c = A[keep], c[keep]
    if np.all(c >= 0):
        return 0.0
    nrm = np.hypot(A[:, 0], A[:, 1])
    A, c = A / nrm[:, None], c / nrm
    cands = [-ci * a for a, ci in zip(A, c)]
    for i in range(len(A)):
        for j in range(i + 1, len(A)):
            det = A[i, 0] * A[j, 1] - A[i, 1] * A[j, 0]
            if abs(det) > 1e-300:
                cands.append(np.linalg.solve(A[[i, j]], -c[[i, j]]))
    slack = 1e-12 * (1 + np.abs(c).max())
    feas = [p for p in cands if np.all(A @ p + c >= -slack * (1 + np.abs(p).sum()))]
    return min(float(np.hypot(*p)) for p in feas)


# ---------------------------------------------------------------------------
# references
# ---------------------------------------------------------------------------


def oracle(normals, offsets, mean, cov):
    """Oracle at 40 digits on exactly these floats -> (log_mass, mean[2], cov[2][2]) as mpf."""
    N = [[float(x) for x in row] for row in np.asarray(normals, dtype=float).reshape(-1, 2)]
    O = [float(x) for x in np.asarray(offsets, dtype=float).reshape(-1)]
    lm, m, C = polygon_moments_mp(N, O, [float(x) for x in mean], [[float(x) for x in r] for r in cov], dps=40)
    return lm, [m[0], m[1]], [[C[0, 0], C[0, 1]], [C[1, 0], C[1, 1]]]


def strip_reference(n, lo, hi, mean, cov):
    """Exact moments given ``lo <= n.z <= hi`` (``s = n.z`` is 1-D normal): the oracle-free route.

    ``E[z|.] = mu + S n (E[s|.] - n.mu) / v``, ``Cov[z|.] = S - S n n^T S (v - Var[s|.]) / v^2``
    with ``v = n^T S n``; the 1-D moments from ``interval_moments_mp`` (closed forms).
    """
    with mp.workdps(80):
        n = [mp.mpf(float(x)) for x in n]
        mu = [mp.mpf(float(x)) for x in mean]
        S = [[mp.mpf(float(x)) for x in r] for r in cov]
        Sn = [S[0][0] * n[0] + S[0][1] * n[1], S[1][0] * n[0] + S[1][1] * n[1]]
        v = n[0] * Sn[0] + n[1] * Sn[1]
        s0 = n[0] * mu[0] + n[1] * mu[1]
        lo = mp.mpf(float(lo))
        hi = mp.mpf(float(hi))
        lm, es, vs = interval_moments_mp(lo, hi, s0, mp.sqrt(v), dps=45)
        m = [mu[i] + Sn[i] * (es - s0) / v for i in range(2)]
        C = [[S[i][j] - Sn[i] * Sn[j] * (v - vs) / v**2 for j in range(2)] for i in range(2)]
        return lm, m, C


def box_reference(x0, x1, y0, y1, mean, sd):
    """Axis-aligned box under diag(sd^2): product of 1-D truncated normals."""
    lx, mx, vx = interval_moments_mp(x0, x1, mean[0], sd[0], dps=45)
    ly, my, vy = interval_moments_mp(y0, y1, mean[1], sd[1], dps=45)
    return lx + ly, [mx, my], [[vx, mp.zero], [mp.zero, vy]]


# ---------------------------------------------------------------------------
# the comparison
# ---------------------------------------------------------------------------


def errors(got, ref):
    """(log-mass error / max(1, |ref|), mean error / (|ref|+sd), cov error / max |ref|), all floats."""
    lm, m, C = got
    rl, rm, rC = ref
    with mp.workdps(50):
        e_log = abs(mp.mpf(float(lm)) - rl) / max(1, abs(rl))
        sd = mp.sqrt(max(rC[0][0], rC[1][1]))
        e_mean = max(abs(mp.mpf(float(m[i])) - rm[i]) / (abs(rm[i]) + sd) for i in range(2))
        cmax = max(abs(rC[i][j]) for i in range(2) for j in range(2))
        e_cov = max(abs(mp.mpf(float(C[i][j])) - rC[i][j]) for i in range(2) for j in range(2)) / cmax
    return float(e_log), float(e_mean), float(e_cov)


def assert_matches(got, ref, log_tol, what):
    e_log, e_mean, e_cov = errors(got, ref)
    detail = (f"{what}\n  fastcpa: log_mass={float(got[0])!r} mean={np.asarray(got[1]).tolist()} "
              f"cov={np.asarray(got[2]).tolist()}\n  reference: log_mass={mp.nstr(ref[0], 20)} "
              f"mean={[mp.nstr(x, 17) for x in ref[1]]} cov={[[mp.nstr(x, 17) for x in r] for r in ref[2]]}\n"
              f"  relative errors: log_mass {e_log:.3g} (tol {log_tol:g}), mean {e_mean:.3g}, cov {e_cov:.3g} "
              f"(tol {MOM_TOL:g})")
    assert e_log <= log_tol and e_mean <= MOM_TOL and e_cov <= MOM_TOL, detail


def log_tol_for(normals, offsets, mean, cov):
    d = mahalanobis_distance(np.asarray(normals, float).reshape(-1, 2), np.asarray(offsets, float).reshape(-1),
                             np.asarray(mean, float), np.asarray(cov, float))
    assert d <= 37.5, f"case is {d:.1f} sd out, beyond the 37 sd of the targets"
    return LOG_TOL_BULK if d <= BULK_RADIUS else LOG_TOL_FAR


def fast(normals, offsets, mean, cov):
    r = fastcpa.polygon_moments(normals, offsets, mean, cov)
    return float(r.log_mass), r.mean, r.cov


def describe(normals, offsets, mean, cov):
    return (f"normals={np.asarray(normals).tolist()!r}, offsets={np.asarray(offsets).tolist()!r}, "
            f"mean={list(map(float, mean))!r}, cov={np.asarray(cov).tolist()!r}")


# ---------------------------------------------------------------------------
# single polygons against the oracle
# ---------------------------------------------------------------------------


def _thin_wedge(apex, direction, angle):
    """Wedge with the given apex and opening angle, bisected by ``direction`` (float64)."""
    d = math.atan2(direction[1], direction[0])
    a1, a2 = d - angle / 2, d + angle / 2
    # left of ray a1 and right of ray a2: normals (-sin a1, cos a1) and (sin a2, -cos a2)
    n = np.array([[-math.sin(a1), math.cos(a1)], [math.sin(a2), -math.cos(a2)]])
    return n, -(n @ np.asarray(apex, dtype=float))


def _far_triangle(mean, cov, direction, dist, size):
    """A triangle whose nearest point is about ``dist`` Mahalanobis units from the mean."""
    L = np.linalg.cholesky(cov)
    u = np.asarray(direction, float) / np.hypot(*direction)
    w = np.array([-u[1], u[0]])
    base = [dist * u - size * w, (dist + 0.5 * size) * u + size * w, (dist + 2 * size) * u - 0.2 * size * w]
    V = [np.asarray(mean) + L @ b for b in base]
    e1, e2 = V[1] - V[0], V[2] - V[0]
    if e1[0] * e2[1] - e1[1] * e2[0] < 0:
        V = V[::-1]
    return poly(V)


def _off_axis_quad(angle, mean, near, far):
    """Quadrilateral beside the long axis of rot_cov(1, 1e-8, angle), its lower edge running
    from ``near`` to ``far`` short-axis sd off the axis."""
    e = np.array([math.cos(angle), math.sin(angle)])
    f = np.array([-e[1], e[0]])
    c = np.asarray(mean) + e
    return poly([c - 0.4 * e + near * 1e-4 * f, c + 0.4 * e + far * 1e-4 * f, c + 0.3 * e + 0.3 * f,
                 c - 0.3 * e + 0.2 * f])


def oracle_cases():
    m0 = (0.1, 0.2)
    cases = {
        # bulk
        "triangle_contains_mean": (*poly([(-1.0, -0.5), (1.5, -0.2), (0.2, 1.3)]), m0, CORR),
        "pentagon_near_mean": (*poly([(-0.5, -1.0), (1.5, -1.2), (2.0, 0.3), (0.6, 1.4), (-0.8, 0.5)]), m0, ANTI),
        "quad_beside_mean": (*poly([(1.0, -1.0), (3.0, -0.5), (2.5, 2.0), (0.8, 1.0)]), (0.0, 0.0), I2),
        "mean_on_edge": (*poly([(-1.0, 0.0), (2.0, 0.0), (2.0, 1.5), (-1.0, 1.5)]), (0.5, 0.0), CORR),
        "mean_at_vertex": (*poly([(0.25, -0.5), (2.0, -0.25), (1.0, 1.5)]), (0.25, -0.5), CORR),
        "wedge_apex_at_mean": (*halfplanes(((1.0, 0.5), 0.0), ((-0.25, 1.0), 0.5625)), (0.25, -0.5), ANTI),
        "quadrant_through_mean": (*halfplanes(((1.0, 0.0), -0.1), ((0.0, 1.0), -0.2)), m0, CORR),
        "huge_triangle": (*poly([(-3e5, -2e5), (4e5, -1e5), (1e4, 5e5)]), m0, CORR),
        "tiny_triangle_near": (*poly([(0.3, 0.1), (0.3 + 2**-20, 0.1), (0.3, 0.1 + 2**-21)]), m0, CORR),
        # thin (width 1e-8)
        "thin_triangle_near": (*poly([(-1.0, 0.2), (2.0, 0.2), (0.5, 0.2 + 1e-8)]), m0, CORR),
        "thin_wedge_apex_at_mean": (*_thin_wedge(m0, (1.0, 0.3), 1e-8), m0, ANTI),
        "thin_wedge_near": (*_thin_wedge((-0.5, 0.4), (0.6, -0.8), 1e-8), m0, CORR),
        # far (tolerance 1e-9 beyond BULK_RADIUS)
        "tiny_triangle_far": (*poly([(6.0, 4.5), (6.0 + 2**-20, 4.5), (6.0, 4.5 + 2**-21)]), (0.0, 0.0), I2),
        "thin_triangle_far": (*poly([(6.0, 6.0), (9.0, 6.0), (7.5, 6.0 + 1e-8)]), m0, CORR),
        "thin_wedge_far": (*_thin_wedge((10.0, 5.0), (1.0, 0.2), 1e-8), m0, CORR),
        "triangle_20sd": (*_far_triangle(m0, ANTI, (-0.3, 1.0), 20.0, 1.5), m0, ANTI),
        "triangle_37sd": (*_far_triangle(m0, CORR, (1.0, 0.4), 37.0, 0.8), m0, CORR),
        "orthant_30sd_corr": (*halfplanes(((1.0, 0.0), -30.0), ((0.0, 1.0), -25.0)), (0.0, 0.0), CORR),
        # nearly singular covariances (eigenvalue ratio 1e8)
        "rho_1e-8_quad": (*poly([(1.0, 0.0), (3.0, 0.5), (2.0, 2.0), (0.5, 1.5)]), (0.3, -0.2), RHO),
        "rot0_triangle_mean_outside": (*poly([(0.5, -0.5), (2.0, -1e-4), (1.0, 1.0)]), (0.0, 0.0),
                                       np.diag([1.0, 1e-8])),
        "rot0.3_wedge_contains_mean": (*halfplanes(((1.0, 0.2), 0.5), ((-0.3, 1.0), 0.4)), m0,
                                       rot_cov(1.0, 1e-8, 0.3)),
        "rot1.2_off_axis_quad": (*_off_axis_quad(1.2, m0, 6.0, 3.0), m0, rot_cov(1.0, 1e-8, 1.2)),
        "rot2.5_pentagon": (*poly([(-0.5, -1.0), (1.5, -1.2), (2.0, 0.3), (0.6, 1.4), (-0.8, 0.5)]), (-1.5, 0.2),
                            rot_cov(2.0, 2e-8, 2.5)),
    }
    return cases


ORACLE_CASES = oracle_cases()


@pytest.mark.parametrize("name", sorted(ORACLE_CASES))
def test_against_oracle(name):
    normals, offsets, mean, cov = ORACLE_CASES[name]
    ref = oracle(normals, offsets, mean, cov)
    assert_matches(fast(normals, offsets, mean, cov), ref, log_tol_for(normals, offsets, mean, cov),
                   f"{name}: {describe(normals, offsets, mean, cov)}")


# ---------------------------------------------------------------------------
# closed forms: whole plane, half-planes, strips, boxes and orthants
# ---------------------------------------------------------------------------


def test_narrow_wedge_57sd_opening_away():
    """Regression: a 1.3-degree wedge whose apex is the nearest point, 57 sd out, opening away
    from the mean. Its sections are steep near the apex; sampling them inside a piece once put
    the whole wedge past the section rule's cutoff (log-mass -inf instead of -1623.67)."""
    normals = np.array([[0.83341738, 0.55264408], [-0.84531879, -0.53426223]])
    offsets = np.array([-1.13238967, -0.11015619])
    ref = oracle(normals, offsets, (0.0, 0.0), I2)
    assert_matches(fast(normals, offsets, (0.0, 0.0), I2), ref, LOG_TOL_FAR, "narrow wedge 57 sd out")


STRIPS = {
    # name: (n, lo, hi, mean, cov) for {lo <= n.z <= hi}; hi = inf is a half-plane
    "half_plane_contains_mean": ((1.0, -0.5), -5.0, math.inf, (0.0, 0.0), CORR),
    "half_plane_3sd": ((0.6, -0.8), 0.4 + 3.0, math.inf, (0.3, 0.2), ANTI),
    "half_plane_37sd": ((1.0, 1.0), 37.0 * math.sqrt(2.0), math.inf, (0.0, 0.0), I2),
    "half_plane_mean_on_edge": ((0.3, 1.0), 0.5, math.inf, (1.0, 0.2), CORR),
    "strip_contains_mean": ((1.0, 2.0), -1.0, 2.5, (0.5, -0.5), ANTI),
    "thin_strip_near": ((0.6, 0.8), 0.3, 0.3 + 1e-8, (0.0, 0.0), CORR),
    "thin_strip_through_mean": ((1.0, -0.25), -5e-9, 5e-9, (0.0, 0.0), I2),
    "thin_strip_8sd": ((1.0, 0.0), 8.0, 8.0 + 1e-8, (0.0, 0.0), I2),
    "thin_strip_30sd": ((0.6, 0.8), 30.0, 30.0 + 1e-8, (0.0, 0.0), I2),
    "near_singular_half_plane_small_axis": ((-math.sin(0.7), math.cos(0.7)), 3e-4, math.inf, (0.0, 0.0),
                                            rot_cov(1.0, 1e-8, 0.7)),
    "near_singular_thin_strip": ((1.0, 0.7), 0.2, 0.2 + 1e-8, (0.1, -0.1), rot_cov(1.0, 1e-8, 2.5)),
    "near_singular_strip_rho": ((1.0, -1.0), 1e-4, 2e-4, (0.0, 0.0), RHO),
}


@pytest.mark.parametrize("name", sorted(STRIPS))
def test_half_planes_and_strips_closed_form(name):
    n, lo, hi, mean, cov = STRIPS[name]
    rows = [(n, -lo)] + ([] if math.isinf(hi) else [((-n[0], -n[1]), hi)])
    normals, offsets = halfplanes(*rows)
    ref = strip_reference(n, lo, hi, mean, cov)
    assert_matches(fast(normals, offsets, mean, cov), ref, log_tol_for(normals, offsets, mean, cov),
                   f"{name}: {describe(normals, offsets, mean, cov)}")


@pytest.mark.parametrize("mean, cov", [((0.7, -1.3), CORR), ((0.0, 0.0), I2), ((5.0, 2.0), rot_cov(1.0, 1e-8, 0.3))])
def test_whole_plane(mean, cov):
    for normals, offsets in [(np.zeros((0, 2)), np.zeros(0)), (np.zeros((3, 2)), np.zeros(3))]:  # K = 0; padding only
        r = fastcpa.polygon_moments(normals, offsets, mean, cov)
        assert r.log_mass.shape == () and abs(float(r.log_mass)) <= 1e-15
        np.testing.assert_allclose(r.mean, mean, rtol=0, atol=1e-14 * (1 + np.abs(mean).max()))
        np.testing.assert_allclose(r.cov, cov, rtol=1e-13, atol=1e-15 * np.abs(cov).max())


@pytest.mark.parametrize(
    "box, mean, sd",
    [
        ((-1e6, 1e6, -1e6, 1e6), (0.1, 0.2), (1.0, 1.0)),  # huge square
        ((-1.0, 2.0, 0.5, 3.0), (0.2, 0.1), (1.5, 0.7)),
        ((2.0, 2.0 + 1e-8, -1.0, 1.0), (0.0, 0.0), (1.0, 1.0)),  # thin rectangle
        ((1e-6, 2e-6, -3e-6, -2e-6), (0.0, 0.0), (1.0, 1.0)),  # tiny square at the mean
        ((20.0, 20.5, 30.0, 31.0), (0.0, 0.0), (1.0, 1.0)),  # 36 sd out
        ((-1.0, 1.0, -1.0, 1.0), (0.0, 0.0), (1.0, 1e-4)),  # variance ratio 1e8
    ],
)
def test_axis_aligned_box_closed_form(box, mean, sd):
    x0, x1, y0, y1 = box
    normals, offsets = halfplanes(((1.0, 0.0), -x0), ((-1.0, 0.0), x1), ((0.0, 1.0), -y0), ((0.0, -1.0), y1))
    cov = np.diag([sd[0] ** 2, sd[1] ** 2])
    with mp.workdps(60):
        ref = box_reference(x0, x1, y0, y1, mean, sd)
    assert_matches(fast(normals, offsets, mean, cov), ref, log_tol_for(normals, offsets, mean, cov),
                   f"box {box}, mean {mean}, sd {sd}")


@pytest.mark.parametrize("a, b", [(8.0, 8.4), (9.0, 9.0), (12.0, 10.0), (30.0, 20.0), (26.0, 26.0), (-3.0, 37.0)])
def test_orthant_where_scipy_returns_zero(a, b):
    # {z1 >= a, z2 >= b} under the identity: mass Q(a) Q(b) (about 1e-32 at (8, 8.4));
    # scipy.stats.multivariate_normal.cdf returns 0 here, fastcpa the right logarithm
    normals, offsets = halfplanes(((1.0, 0.0), -a), ((0.0, 1.0), -b))
    r = fastcpa.polygon_moments(normals, offsets)
    scipy_mass = scipy.stats.multivariate_normal(mean=[0.0, 0.0], cov=I2).cdf([-a, -b])
    with mp.workdps(60):
        Q = lambda t: mp.erfc(mp.mpf(t) / mp.sqrt(2)) / 2  # noqa: E731
        closed = mp.log(Q(a)) + mp.log(Q(b))
        if a == 8.0 and b == 8.4:
            assert 1e-32 < mp.exp(closed) < 2e-32 and scipy_mass < 1e-33  # the example of the issue
        tol = LOG_TOL_BULK if math.hypot(max(a, 0), max(b, 0)) <= BULK_RADIUS else LOG_TOL_FAR
        err = abs(mp.mpf(float(r.log_mass)) - closed) / max(1, abs(closed))
        assert err <= tol, (a, b, float(r.log_mass), mp.nstr(closed, 20), f"scipy mass {scipy_mass!r}")
    ref = box_reference(a, math.inf, b, math.inf, (0.0, 0.0), (1.0, 1.0))
    assert_matches(fast(normals, offsets, (0.0, 0.0), I2), ref, tol, f"orthant z1 >= {a}, z2 >= {b}")


def test_orthant_1e_minus_32_correlated():
    # a rotated orthant under a correlated covariance with mass about 1e-35
    # (scipy's cdf cannot even express it), against the oracle
    normals, offsets = halfplanes(((1.0, 0.3), -16.0), ((-0.2, 1.0), -12.0))
    r = fastcpa.polygon_moments(normals, offsets, (0.0, 0.0), CORR)
    ref = oracle(normals, offsets, (0.0, 0.0), CORR)
    assert -95 < float(ref[0]) < -70  # mass ~3e-35
    assert_matches((float(r.log_mass), r.mean, r.cov), ref, log_tol_for(normals, offsets, (0.0, 0.0), CORR),
                   f"rotated orthant: {describe(normals, offsets, (0.0, 0.0), CORR)}")


# ---------------------------------------------------------------------------
# batches of random polygons in one call
# ---------------------------------------------------------------------------


def random_cases(rng, count, kmax=6):
    """Random (normals (count, kmax, 2) zero-padded, offsets, means, covs) and the unpadded rows.

    Covariances: random rotation and scale, eigenvalue ratio 1, 1e-2..1 or
    1e-8..1e-4. Two thirds bounded polygons (a random affine image of points
    on a circle in CCW order, so convex; size 1e-3..5 sd, centre ~2 sd from the
    mean), one third unbounded (1-3 half-planes through points near a random
    one: half-planes, wedges, strips, triangles), normals of random length.
    """
    normals = np.zeros((count, kmax, 2))
    offsets = np.zeros((count, kmax))
    means = np.empty((count, 2))
    covs = np.empty((count, 2, 2))
    rows = []
    for i in range(count):
        means[i] = rng.normal(scale=1.5, size=2)
        lam = 10.0 ** rng.uniform(-1, 1)
        ratio = [1.0, 10.0 ** rng.uniform(-2, 0), 10.0 ** rng.uniform(-8, -4)][rng.integers(3)]
        covs[i] = rot_cov(lam, lam * ratio, rng.uniform(0, math.pi))
        scale = math.sqrt(lam)
        if rng.integers(3) < 2:
            k = int(rng.integers(3, kmax + 1))
            th = np.sort(rng.uniform(0, 2 * math.pi, k))
            c, s_ = math.cos(th0 := rng.uniform(0, math.pi)), math.sin(th0)
            M = np.array([[c, -s_], [s_, c]]) @ np.diag([1.0, rng.uniform(0.05, 1.0)])
            radius = scale * 10.0 ** rng.uniform(-3, 0.7)
            centre = means[i] + scale * rng.normal(scale=2.0, size=2)
            n, o = poly(centre + radius * (np.c_[np.cos(th), np.sin(th)] @ M.T))
        else:
            k = int(rng.integers(1, 4))
            p = means[i] + scale * rng.normal(scale=2.0, size=2)
            ang = rng.uniform(0, 2 * math.pi) + np.cumsum(rng.uniform(0.3, 2.5, k))
            n = np.c_[np.cos(ang), np.sin(ang)] * 10.0 ** rng.uniform(-1, 1, (k, 1))
            o = -(n @ p) + rng.uniform(0, 0.5 * scale, k) * np.hypot(n[:, 0], n[:, 1])
        normals[i, : len(o)] = n
        offsets[i, : len(o)] = o
        rows.append((n, o))
    return normals, offsets, means, covs, rows


def _check_batch(rng, count):
    normals, offsets, means, covs, rows = random_cases(rng, count)
    r = fastcpa.polygon_moments(normals, offsets, means, covs)
    assert r.log_mass.shape == (count,) and r.mean.shape == (count, 2) and r.cov.shape == (count, 2, 2)
    failures, checked = [], 0
    for i, (n, o) in enumerate(rows):
        if mahalanobis_distance(n, o, means[i], covs[i]) > 37.0:
            continue  # beyond the targets' range
        checked += 1
        ref = oracle(n, o, means[i], covs[i])
        try:
            assert_matches((float(r.log_mass[i]), r.mean[i], r.cov[i]), ref, log_tol_for(n, o, means[i], covs[i]),
                           f"batch item {i}: {describe(n, o, means[i], covs[i])}")
        except AssertionError as e:
            failures.append(str(e))
    assert checked >= count * 3 // 4
    assert not failures, "\n".join(failures)


def test_random_batch(rng):
    _check_batch(rng, 14)


@pytest.mark.slow
def test_random_batch_sweep(rng):
    _check_batch(rng, 300)


# ---------------------------------------------------------------------------
# shapes, broadcasting, padding, the result type and bad input
# ---------------------------------------------------------------------------


def test_shapes_and_broadcasting():
    n1, o1 = poly([(-1.0, -0.5), (1.5, -0.2), (0.2, 1.3)])
    n2, o2 = poly([(1.0, -1.0), (3.0, -0.5), (2.5, 2.0), (0.8, 1.0)])
    n3, o3 = halfplanes(((1.0, 0.0), -0.5))
    K = 4
    pad = lambda n, o: (np.r_[n, np.zeros((K - len(o), 2))], np.r_[o, np.zeros(K - len(o))])  # noqa: E731
    P = [pad(n1, o1), pad(n2, o2), pad(n3, o3)]
    normals = np.stack([p[0] for p in P])  # (3, K, 2)
    offsets = np.stack([p[1] for p in P])  # (3, K)
    means = np.array([[0.1, 0.2], [-0.3, 0.4]])[:, None, :]  # (2, 1, 2)
    covs = np.stack([CORR, ANTI])[:, None]  # (2, 1, 2, 2)
    r = fastcpa.polygon_moments(normals, offsets, means, covs)
    assert r.log_mass.shape == (2, 3) and r.mean.shape == (2, 3, 2) and r.cov.shape == (2, 3, 2, 2)
    assert r.log_mass.dtype == np.float64
    unpadded = [(n1, o1), (n2, o2), (n3, o3)]
    for a in range(2):
        for b in range(3):
            s = fastcpa.polygon_moments(*unpadded[b], means[a, 0], covs[a, 0])  # padding rows are vacuous
            np.testing.assert_allclose(r.log_mass[a, b], s.log_mass, rtol=1e-14, atol=1e-14)
            np.testing.assert_allclose(r.mean[a, b], s.mean, rtol=1e-13, atol=1e-14)
            np.testing.assert_allclose(r.cov[a, b], s.cov, rtol=1e-13, atol=1e-14)
    # defaults (standard normal), a single polygon gives 0-d / (2,) / (2, 2) results
    s = fastcpa.polygon_moments(n3, o3)
    assert s.log_mass.shape == () and s.mean.shape == (2,) and s.cov.shape == (2, 2)
    assert abs(float(s.log_mass) - math.log(scipy.stats.norm.sf(0.5))) <= 1e-14
    np.testing.assert_allclose(s.mass, np.exp(s.log_mass), rtol=1e-15)
    # one polygon against a batch of means; integer input is upcast
    r = fastcpa.polygon_moments([[1, 0], [0, 1]], [0, 0], np.zeros((5, 2)))
    assert r.log_mass.shape == (5,)
    np.testing.assert_allclose(r.log_mass, math.log(0.25), rtol=1e-15)
    # scaling a half-plane's row (normal and offset together) changes nothing
    big = fastcpa.polygon_moments(n1 * 1e8, o1 * 1e8, (0.1, 0.2), CORR)
    base = fastcpa.polygon_moments(n1, o1, (0.1, 0.2), CORR)
    np.testing.assert_allclose(big.log_mass, base.log_mass, rtol=1e-13, atol=1e-13)
    # K = 0 in a batch
    r = fastcpa.polygon_moments(np.zeros((3, 0, 2)), np.zeros((3, 0)), np.zeros(2), I2)
    assert r.log_mass.shape == (3,) and np.all(r.log_mass == 0)


def test_result_is_frozen():
    r = fastcpa.polygon_moments([[1.0, 0.0]], [0.0])
    assert isinstance(r, fastcpa.PolygonMoments)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.log_mass = np.zeros(())
    assert abs(float(r.mass) - 0.5) <= 1e-15


@pytest.mark.parametrize(
    "normals, offsets",
    [
        ([[1.0, 0.0], [-1.0, 0.0]], [-1.0, -1.0]),  # z1 >= 1 and z1 <= -1
        ([[1.0, 0.5], [-1.0, -0.5]], [-1.0, 0.5]),  # an inverted strip
        ([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], [-1.0, -1.0, 1.0]),  # z >= (1, 1) and z1 + z2 <= 1
        ([[1.0, 0.0], [-1.0, 0.0]], [-1.0, 1.0]),  # the line z1 = 1: zero area
        ([[0.0, 0.0]], [-1.0]),  # 0 . z - 1 >= 0
    ],
)
def test_empty_polygon_has_no_mass(normals, offsets):
    # documented: log_mass = -inf for an empty or zero-area polygon
    r = fastcpa.polygon_moments(normals, offsets)
    assert r.log_mass == -np.inf and r.mass == 0.0, (normals, offsets, r)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mean=(np.nan, 0.0)), "mean"),
        (dict(mean=(0.0, np.inf)), "mean"),
        (dict(normals=[[np.nan, 1.0]]), "normals"),
        (dict(offsets=[np.nan]), "offsets"),
        (dict(cov=[[1.0, 2.0], [2.0, 1.0]]), "positive definite"),
        (dict(cov=[[1.0, 1.0], [1.0, 1.0]]), "positive definite"),
        (dict(cov=[[-1.0, 0.0], [0.0, 1.0]]), "positive definite"),
        (dict(cov=[[1.0, 0.5], [0.0, 1.0]]), "symmetric"),
        (dict(cov=[[1.0, np.nan], [np.nan, 1.0]]), "cov"),
        (dict(normals=[[1.0, 0.0, 0.0]]), "normals"),
        (dict(offsets=[0.0, 1.0]), "offsets"),
        (dict(mean=(0.0, 0.0, 0.0)), "mean"),
        (dict(cov=np.eye(3)), "cov"),
        (dict(cov=np.ones((2, 3))), "cov"),
        (dict(normals=np.zeros((3, 1, 2)), offsets=np.zeros((4, 1))), "do not broadcast"),
        (dict(backend="bogus"), "backend"),
    ],
)
def test_bad_input(kwargs, match):
    args = dict(normals=[[1.0, 0.0]], offsets=[0.0], mean=(0.0, 0.0), cov=I2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        fastcpa.polygon_moments(args.pop("normals"), args.pop("offsets"), **args)


def test_tail_bound_bounds_the_mass(rng):
    """The cheap bound ``log Q(d)`` the likelihood kernel uses to skip negligible pairs is never below
    the exact log-mass (random polygons far and near, whitened frame)."""
    from fastcpa.kernels.cpu.truncated import _pg

    checked = 0
    for _ in range(400):
        centre = rng.normal(scale=rng.choice([1.0, 8.0, 30.0]), size=2)
        k = int(rng.integers(3, 7))
        th = np.sort(rng.uniform(0, 2 * math.pi, k))
        n, o = poly(centre + 10.0 ** rng.uniform(-3, 1) * np.c_[np.cos(th), np.sin(th)])
        exact = float(fastcpa.polygon_moments(n, o, moments=False).log_mass)
        P = np.zeros((2 * k + 4, 6))
        Q = np.zeros_like(P)
        m = _pg.whole_plane(P)
        for j in range(k):
            m = _pg.clip_halfplane(P, m, n[j, 0], n[j, 1], o[j], Q)
            P, Q = Q, P
        E, B1, B2 = np.empty((2 * k + 4, 6)), np.empty((2 * k + 12, 6)), np.empty((2 * k + 12, 6))
        V, Y = np.empty((2 * k + 12, 7)), np.empty(2 * k + 12)
        # any bound is below +inf (the section-rule polygon: P itself, unanchored)
        bound = _pg.std_polygon_log_mass(P, m, E, B1, B2, V, Y, math.inf, P, m, np.array([0.0, 0.0, 1.0]),
                                         np.empty((0, 4)), 0, np.empty(4))
        assert bound >= exact - 1e-12 * max(1.0, abs(exact)), (centre, bound, exact)
        checked += bound < 0.0
    assert checked > 100  # the bound was informative (origin outside) in most cases


@pytest.mark.parametrize("s1", [1e-3, 0.3, 1.0, 1.5, 1.86, 1.88, 3.0, 4.99, 5.0, 6.5, 7.75, 10.0, 20.0, 50.0])
def test_edge_term_against_mpmath(s1):
    """The edge term in every regime (a band within 45 degrees of the foot, an Owen's T difference,
    graded Gauss-Legendre panels, Gauss-Laguerre in the exponent) against direct 30-digit quadrature
    of ``B exp((h^2 + s1^2)/2) = h/(2 pi) int_0^L exp(-(s1 y + y^2/2)) / (h^2 + (s1 + y)^2) dy``,
    for edges short and long, near and far from their line's foot."""
    from fastcpa.kernels.cpu.truncated import _pg

    with mp.workdps(30):
        for h in (0.01, 0.5, 2.0, 6.0, 20.0):
            rho = math.hypot(h, s1)
            for L in (1e-3, 0.05, 0.5, 3.0, math.inf):
                f = lambda y: mp.exp(-(s1 * y + y * y / 2)) / (h * h + (s1 + y) ** 2)  # noqa: E731
                # breakpoints graded away from the poles at distance rho
                pts = [0.0] + [p for p in (rho / 4, rho, 4 * rho, 1.0, 4.0) if p < L] + [L]
                ref = h / (2 * mp.pi) * mp.quad(f, sorted(set(pts)))
                got = _pg.b_term(h, s1, s1 + L, L)[0]
                # an Owen's T difference (s1 < 1.87) may lose 4 bits of T's accuracy
                tol = 2e-15 if s1 >= 1.87 else 5e-15
                assert abs(got - ref) <= tol * ref, (h, L, got, ref)


def test_offset_at_is_exact_to_rounding(rng):
    """``offset_at`` (a line's offset at an anchor point, o + a x + b y) against exact rational
    arithmetic, where the three terms cancel to 1e-12 of their size: within an ulp or two of the
    result, so a line through the anchor keeps its tiny offset exact."""
    from fractions import Fraction

    from fastcpa.kernels._polygon import offset_at

    for _ in range(300):
        a, b, x, y = rng.normal(size=4) * 10.0 ** rng.uniform(-3, 3, size=4)
        o = -(a * x + b * y) * (1.0 + rng.normal() * 1e-12)
        exact = Fraction(o) + Fraction(a) * Fraction(x) + Fraction(b) * Fraction(y)
        got = offset_at(o, a, x, b, y)
        assert abs(Fraction(got) - exact) <= 2 * abs(exact) * Fraction(2.0**-53), (o, a, x, b, y)


@pytest.mark.parametrize("s1, s2", [(-20.0, -12.0), (-12.0, -3.0), (-3.0, 2.0), (-30.0, 30.0), (0.5, 8.0),
                                    (4.0, 12.0), (9.5, 14.0), (12.0, 20.0), (14.75, 24.1), (-24.1, -14.75),
                                    (10.0, math.inf), (-math.inf, -10.0), (-math.inf, 3.0)])
def test_sector_mass_against_mpmath(s1, s2):
    """The origin-apex sector mass of an edge seen from inside the polygon,
    ``W = h/(2 pi) int_{s1}^{s2} (1 - exp(-(h^2+s^2)/2)) / (h^2+s^2) ds``, in
    every placement of the edge against the panels' span ``|s| <= 9``: both
    ends beyond it on one side once gave a negative W (a panel of negative
    width), and S = 2 region masses 12% low."""
    from fastcpa.kernels.cpu.truncated import _pg

    with mp.workdps(30):
        for h in (0.01, 0.5, 0.685, 0.99, 1.5, 4.0):
            f = lambda s: -mp.expm1(-(h * h + s * s) / 2) / (h * h + s * s)  # noqa: E731
            pts = sorted({s1, s2, *(p for p in (-9.0, -1.0, 0.0, 1.0, 9.0) if s1 < p < s2)})
            ref = h / (2 * mp.pi) * mp.quad(f, pts)
            L = s2 - s1
            got = _pg.w_term(h, s1, s2, L)
            assert got > 0.0 and abs(got - ref) <= 1e-14 * ref, (h, s1, s2, got, ref)


def test_mass_only_path_matches_moments_path_and_oracle():
    """A region of an S = 2 model (the review's reproducer): its mean inside,
    one edge 0.69 sd from it whose ends lie 14.8 and 24.1 sd along its line.
    The mass-only path (used by ``CPAModel.log_prob``) was 11% low there."""
    normals = np.array([[0.10650558, -0.9943121], [0.22195225, -0.97505754], [0.13478174, 0.99087531],
                        [-0.65708041, 0.7538205], [-0.43980817, -0.89809174]])
    offsets = np.array([-0.14731741, 0.32873658, 1.59657771, -0.63471844, -1.47007315])
    mean = np.array([-1.85245047, -0.75674294])
    cov = np.array([[0.03223546, -0.10000978], [-0.10000978, 0.91503756]])
    ref = oracle(normals, offsets, mean, cov)
    only = fastcpa.polygon_moments(normals, offsets, mean, cov, moments=False).log_mass
    full = fastcpa.polygon_moments(normals, offsets, mean, cov).log_mass
    want = float(ref[0])
    for got in (only, full):
        assert abs(got - want) <= 1e-13 * max(1.0, abs(want)), (got, want)


def test_edge_with_a_far_end_keeps_its_near_end():
    """Two nearly parallel lines (normals differing in the last bit) meet about
    1e16 whitened units away. The edge from that vertex had its near end formed
    as ``far end + length``, rounded by ~1 there: the region's log-mass was off
    by 5e-9 (a region of an S = 2 model with an anisotropic posterior)."""
    v = [float.fromhex(h) for h in (
        "0x1.c0b3b168dc7dfp-1", "0x1.ed322f3a7526ap-2", "-0x1.ff55c72665a05p-1", "0x1.a15da55397b92p-5",
        "0x1.ff55c72665a04p-1", "-0x1.a15da55397b92p-5", "0x1.30ed89ae9f17ep-1", "0x1.060d02c936e2fp+1",
        "-0x1.f906bd403ebbep+0", "0x1.f85e1dd262b8ep+0", "-0x1.9badc5a7609fcp-4", "0x1.54f385dd93da1p-9",
        "0x1.a0d24abbb4540p-5", "0x1.a0d24abbb4540p-5", "0x1.feabc760c4588p-1")]
    normals, offsets = np.array(v[:6]).reshape(3, 2), np.array(v[6:9])
    mean, cov = np.array(v[9:11]), np.array(v[11:]).reshape(2, 2)
    ref = float(oracle(normals, offsets, mean, cov)[0])
    for moments in (True, False):
        got = float(fastcpa.polygon_moments(normals, offsets, mean, cov, moments=moments).log_mass)
        assert abs(got - ref) <= 1e-13 * max(1.0, abs(ref)), (moments, got, ref)


# ---------------------------------------------------------------------------
# the covariance in a polygon's thin direction
# ---------------------------------------------------------------------------

# An outside review's reproducer (four well-conditioned polygons, cov condition
# <= 217): inputs as float hex strings, ``ref_cov`` the true covariance (30
# digits). ``input_floor``: what rounding the inputs implies for the whitened
# error below, sum over every input x of |change| when x moves by x 2^-53
# (oracle at 40 digits, computed once: ~15 oracle calls a case). ``was``: the
# error before the section rule gathered the spread across a thin polygon in a
# frame sheared along it and before _AMP_MAX fell from 1e5 to 1e4.
THIN_COV_CASES = {
    "triangle": dict(
        normals=[['0x1.696234a08d362p+1', '0x1.a89740e6ab629p+2'], ['-0x1.8336a986f2f9cp+2', '-0x1.83af6f2f8f973p+1'], ['0x1.09a4bde81c15cp-1', '-0x1.552e3fe402dc2p+2']],
        offsets=['0x1.109b612df4951p+5', '-0x1.810a57c761efdp+4', '-0x1.1aeb29a42df76p+4'],
        mean=['-0x1.d93950a472554p+1', '-0x1.1db3552796c4cp+1'],
        cov=[['0x1.33e26e246c21fp-5', '-0x1.2861594e10b4ep-6'], ['-0x1.2861594e10b4ep-6', '0x1.007f090cd3f06p-5']],
        ref_cov=[['0.0243129265469786619735539590755', '0.00203168396400003228834843555025'], ['0.00203168396400003228834843555025', '0.000705439291281587860214915679288']],
        input_floor=1.6e-15, was=1.1e-11),
    "poly": dict(
        normals=[['-0x1.9a6df4a83bd4cp+2', '0x1.ce4e15487989cp+2'], ['-0x1.ffc1c1442ec26p+1', '0x1.a74a9b1d1eee9p+0'], ['-0x1.97c85770328c0p-3', '-0x1.886346c2defe5p+1'], ['0x1.22965f424ac66p+2', '-0x1.3c0fb2e5e09e5p+1']],
        offsets=['-0x1.8e18f9c22a204p+4', '-0x1.2a0df753d37abp+3', '0x1.aa885d81fb416p+2', '0x1.852a3f4750cd0p+3'],
        mean=['-0x1.6cda975526d8cp-2', '0x1.a062bf690f168p+1'],
        cov=[['0x1.065ca7888c0cbp-3', '0x1.936d03e626411p-4'], ['0x1.936d03e626411p-4', '0x1.7d3dd225743e1p-4']],
        ref_cov=[['0.000870136334507024240708516667227', '0.00100661449643601311353915154169'], ['0.00100661449643601311353915154169', '0.00173233898189336035964992085427']],
        input_floor=3.1e-14, was=5.1e-12),
    "wedge": dict(
        normals=[['-0x1.02d45f61fe7f4p+0', '-0x1.62a9e6a6c783ep-4'], ['0x1.090aae054af5fp+0', '0x1.7f25e654a5a02p-4']],
        offsets=['-0x1.4ca5d4ef20ac0p+4', '0x1.4e6b5c5060807p+4'],
        mean=['-0x1.bfdb0286fda1cp+2', '-0x1.9664a68f1ceeap-2'],
        cov=[['0x1.032fc6246ce3bp+1', '-0x1.d5e55be5c5e39p+2'], ['-0x1.d5e55be5c5e39p+2', '0x1.cc2830295e424p+4']],
        ref_cov=[['0.0015664252788631990216132789093', '-0.0177861113234344993068999239329'], ['-0.0177861113234344993068999239329', '0.202105017704958026134596984652']],
        input_floor=3.7e-13, was=2.3e-11),
    "sliver": dict(
        normals=[['0x1.03aac3ff306f4p-1', '-0x1.164bcc19354dcp-3'], ['-0x1.028d351003df3p-1', '0x1.1bc9e1b691e76p-3'], ['0x1.026c4afae46a2p-1', '-0x1.1c6b5ec89aa4bp-3']],
        offsets=['-0x1.80dbb450fb745p+1', '0x1.8572bf1550554p+1', '-0x1.85dbf4c1ae1f5p+1'],
        mean=['-0x1.575e1265b31dbp+0', '-0x1.e3e1c22c96836p-1'],
        cov=[['0x1.63a33c8a6a087p+1', '-0x1.8dbf3b04c7a64p+0'], ['-0x1.8dbf3b04c7a64p+0', '0x1.ed910b5d418efp+1']],
        ref_cov=[['0.01012747702525445816358892902', '0.036857492382283098777862559561'], ['0.036857492382283098777862559561', '0.134137797967294518735300589098']],
        input_floor=1.1e-12, was=4e-09),
}


@pytest.mark.parametrize("name", list(THIN_COV_CASES))
def test_covariance_in_the_thin_direction(name):
    """The covariance's error whitened by the true one, ``max |L^-1 (cov -
    ref) L^-T|`` (``L = chol(ref)``: relative error in every direction, the
    thin one included), within 16 times the larger of two floors: rounding
    the inputs (``input_floor``) and rounding the true covariance's entries to
    float64 (measured here). Before: 1.1e-11, 4.1e-12, 2.3e-11, 4.0e-9, 8 to
    440 times over: a triangle 7.7 sd out and a quadrilateral went through
    the edge formulas, which amplified rounding ~5e4 times in the thin
    direction; a narrow wedge and a sliver (eigenvalue ratio 1e7) went
    through the section rule, whose scatter cancelled across them."""
    c = THIN_COV_CASES[name]
    h = float.fromhex
    normals = np.array([[h(x) for x in r] for r in c["normals"]])
    offsets = np.array([h(x) for x in c["offsets"]])
    mean = np.array([h(x) for x in c["mean"]])
    cov = np.array([[h(x) for x in r] for r in c["cov"]])
    got = fastcpa.polygon_moments(normals, offsets, mean, cov).cov
    with mp.workdps(40):
        ref = mp.matrix([[mp.mpf(x) for x in r] for r in c["ref_cov"]])
        Li = mp.cholesky(ref) ** -1

        def whitened(C):
            W = Li * (mp.matrix([[mp.mpf(float(x)) for x in r] for r in C]) - ref) * Li.T
            return float(max(abs(W[i, j]) for i in range(2) for j in range(2)))

        output_floor = whitened([[float(ref[i, j]) for j in range(2)] for i in range(2)])
        err = whitened(got)
    tol = 16.0 * max(output_floor, c["input_floor"])
    assert err <= tol, f"{name}: whitened cov error {err:.3g} > {tol:.3g} (was {c['was']:.3g})"


@pytest.mark.parametrize("nodes, nu_max", [(8, 1.0), (10, 4.0)])
def test_small_polygon_rule_against_mpmath(nodes, nu_max):
    """``small_polygon_moments`` (the E-step's rule for small polygons: a product
    Gauss-Legendre rule on a triangle fan, where the whitened exponent varies by at most
    ``nu`` over the polygon) against 30-digit mpmath on random convex polygons, 3e-3 to 1
    sd across and 0.1 to 20 sd out, no thinner than the kernels take them (twice the area at
    least 0.1 of the bounding box's diagonal squared), at the node counts the kernels use up
    to their ``nu``: mass (relative), mean (in sd of the truncated law) and covariance
    (relative to its smaller eigenvalue) to 2e-13. (Eight nodes at nu = 4 err by ~5e-13;
    the kernels take ten there.)"""
    from fastcpa.kernels import _owens_t
    from fastcpa.kernels.cpu import pairs

    from oracles import polygon_from_vertices

    U = getattr(_owens_t, f"_GL{nodes}_U")
    V = getattr(_owens_t, f"_GL{nodes}_V")
    rng = np.random.default_rng(12 + nodes)
    done = 0
    while done < 12:
        k = int(rng.integers(3, 7))
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        verts = np.c_[np.cos(ang), np.sin(ang)] * 10 ** rng.uniform(-2.5, 0) / 2
        th = rng.uniform(0, 2 * np.pi)
        verts = verts + 10 ** rng.uniform(-1, 1.3) * np.array([np.cos(th), np.sin(th)])
        diam2 = np.ptp(verts[:, 0]) ** 2 + np.ptp(verts[:, 1]) ** 2
        w = verts - verts[0]
        area2 = float(np.sum(w[:, 0] * np.roll(w[:, 1], -1) - np.roll(w[:, 0], -1) * w[:, 1]))
        if not (np.hypot(*verts[0]) * math.sqrt(diam2) + diam2 / 2 <= nu_max and area2 >= 0.1 * diam2):
            continue
        done += 1
        P = np.zeros((k, 6))
        P[:, :2], P[:, 2] = verts, 1.0
        lm, mx, my, c00, c01, c11 = pairs.small_polygon_moments(P, k, U, V)
        N, O = polygon_from_vertices(verts)
        ref_lm, ref_mean, ref_cov = polygon_moments_mp(N, O, [0, 0], [[1, 0], [0, 1]], dps=30)
        C = np.array([[float(ref_cov[i, j]) for j in range(2)] for i in range(2)])
        assert abs(lm - float(ref_lm)) <= 2e-13 * max(1.0, abs(float(ref_lm)))
        assert max(abs(mx - float(ref_mean[0])), abs(my - float(ref_mean[1]))) <= 2e-13 * math.sqrt(np.trace(C))
        assert np.abs(np.array([[c00, c01], [c01, c11]]) - C).max() <= 2e-13 * np.linalg.eigvalsh(C).min()
