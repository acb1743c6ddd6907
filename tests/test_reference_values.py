"""Published reference values from other projects' test suites (numbers only, no code).

Each table names the project and file it comes from. fastcpa must reproduce them to the
precision the table carries (or to a few ulps where the reference has 16+ digits):

* Owen's T: Boost.Math ``test/test_owens_t.hpp`` (``test_spots``: Patefield-Tandy T1-T6
  method checks and Mathematica spot values, 30+ digits) and John Burkardt's
  ``asa076.py`` (``owen_values``: the Patefield-Tandy (2000) table, 16 digits).
* log Phi (log_ndtr): SciPy ``scipy/special/tests/test_ndtr.py`` (``TestLogNdtr``, mpmath
  values), as ``interval_moments(-inf, x).log_mass``.
* truncated-normal log CDF: SciPy ``scipy/stats/tests/test_distributions.py``
  (``TestTruncnorm.test_logcdf_gh17064``), as a difference of interval log masses.
* bivariate normal CDF: QuantLib ``test-suite/distributions.cpp`` (``checkBivariate``;
  Haug, "Option pricing formulas", 1998, p. 193, six decimals), as ``polygon_moments``
  on two half-planes with a correlated covariance; and the exact orthant identity
  ``P(X > 0, Y > 0) = 1/4 + asin(rho) / (2 pi)`` (Sheppard).
"""

import math

import numpy as np
import pytest

import fastcpa
from fastcpa.kernels import _owens_t as owt

EPS = 2.0**-52

# Boost.Math test/test_owens_t.hpp, test_spots: (h, a, T(h, a)) (first 20 digits kept)
BOOST_OWENS_T = [
    (0.0625, 0.25, 3.89119302347013668966e-2),
    (6.5, 0.4375, 2.00057730485083154101e-11),
    (7.0, 0.96875, 6.39906271938986853083e-13),
    (4.78125, 0.0625, 1.06329748046874638058e-7),
    (2.0, 0.5, 8.62507798552150713113e-3),
    (1.0, 0.9999975, 6.67418089782285927716e-2),
    (0.4375, 6.5, 0.165401301254493962475),
    (0.96875, 7.0, 0.0831674847460297377053),
    (0.0625, 4.78125, 0.215711858198979898573),
    (0.5, 2.0, 0.141580603653978393467),
]

# John Burkardt, asa076.py, owen_values (Patefield & Tandy 2000 table): (h, a, T)
BURKARDT_OWENS_T = [
    (1.0, 0.5, 0.4306469112078537e-01), (1.0, 1.0, 0.6674188216570097e-01),
    (1.0, 2.0, 0.7846818699308410e-01), (1.0, 3.0, 0.7929950474887259e-01),
    (0.5, 0.5, 0.6448860284750376e-01), (0.5, 1.0, 0.1066710629614485e+00),
    (0.5, 2.0, 0.1415806036539784e+00), (0.5, 3.0, 0.1510840430760184e+00),
    (0.25, 0.5, 0.7134663382271778e-01), (0.25, 1.0, 0.1201285306350883e+00),
    (0.25, 2.0, 0.1666128410939293e+00), (0.25, 3.0, 0.1847501847929859e+00),
    (0.125, 0.5, 0.7317273327500385e-01), (0.125, 1.0, 0.1237630544953746e+00),
    (0.125, 2.0, 0.1737438887583106e+00), (0.125, 3.0, 0.1951190307092811e+00),
    (0.0078125, 0.5, 0.7378938035365546e-01), (0.0078125, 1.0, 0.1249951430754052e+00),
    (0.0078125, 2.0, 0.1761984774738108e+00), (0.0078125, 3.0, 0.1987772386442824e+00),
    (0.0078125, 10.0, 0.2340886964802671e+00), (0.0078125, 100.0, 0.2479460829231492e+00),
]

# SciPy scipy/special/tests/test_ndtr.py, TestLogNdtr: (x, log Phi(x), the table's rtol)
SCIPY_LOG_NDTR = [
    (-0.75, -1.4844482299196562, 1e-14), (-0.25, -0.9130617648111351, 1e-14),
    (0.0, -0.6931471805599453, 1e-14), (0.5, -0.3689464152886564, 1e-14),
    (1.5, -0.06914345561223398, 1e-14), (2.5, -0.006229025485860002, 1e-14),
    (3.0, -0.0013508099647481938, 1e-14), (4.0, -3.167174337748927e-05, 1e-14),
    (5.0, -2.866516129637636e-07, 1e-14), (7.0, -1.279812543886654e-12, 1e-14),
    (8.0, -6.220960574271786e-16, 1e-14),
    (8.001, -6.170639424817055e-16, 5e-14), (8.06, -3.814722443652823e-16, 5e-14),
    (8.15, -1.819621363526629e-16, 5e-14), (8.5, -9.479534822203318e-18, 5e-14),
    (10.0, -7.619853024160525e-24, 5e-14), (12.0, -1.776482112077679e-33, 5e-14),
    (14.0, -7.7935368191928e-45, 5e-14), (16.0, -6.388754400538087e-58, 5e-14),
    (16.15, -5.678084565148492e-59, 2e-13), (20.3, -6.429244467698346e-92, 2e-13),
    (21.4, -6.680402412553295e-102, 2e-13), (26.2, -1.328698078458869e-151, 2e-13),
    (30.9, -5.972288641838264e-210, 2e-13),
    (31.6, -1.846036234858162e-219, 3e-13), (32.8, -2.9440539964066835e-236, 3e-13),
    (34.9, -3.71721649450857e-267, 3e-13), (37.1, -1.4047119663106221e-301, 3e-13),
]

# SciPy scipy/stats/tests/test_distributions.py, TestTruncnorm.test_logcdf_gh17064:
# (a, b, x, log P(a <= z <= x) - log P(a <= z <= b))
SCIPY_TRUNCNORM_LOGCDF = [
    (-np.inf, np.inf, 10.0, -7.619853024160525e-24),
    (-np.inf, np.inf, 7.5, -3.190891672910947e-14),
    (-8.0, 8.0, 7.5, -3.128682067168231e-14),
    (-np.inf, 10.0, 9.0, -1.1285122074235991e-19),
    (10.0, np.inf, 20.0, -3.61374964828753e-66),
]

# QuantLib test-suite/distributions.cpp, checkBivariate (Haug 1998, p. 193): (a, b, rho,
# P(X <= a, Y <= b)) to six decimals
QUANTLIB_BIVARIATE = [
    (0.0, 0.0, 0.0, 0.250000), (0.0, 0.0, -0.5, 0.166667), (0.0, 0.0, 0.5, 1.0 / 3),
    (0.0, -0.5, 0.0, 0.154269), (0.0, -0.5, -0.5, 0.081660), (0.0, -0.5, 0.5, 0.226878),
    (0.0, 0.5, 0.0, 0.345731), (0.0, 0.5, -0.5, 0.273122), (0.0, 0.5, 0.5, 0.418340),
    (-0.5, 0.0, 0.0, 0.154269), (-0.5, 0.0, -0.5, 0.081660), (-0.5, 0.0, 0.5, 0.226878),
    (-0.5, -0.5, 0.0, 0.095195), (-0.5, -0.5, -0.5, 0.036298),
    # (-0.5, -0.5, 0.5, 0.163319) is left out: the exact value is 0.16331952131 (mpmath
    # quadrature, below), so the table's sixth decimal is rounded the wrong way

    (-0.5, 0.5, 0.0, 0.213342),
]


def rel(got, ref):
    return abs(got - ref) / abs(ref)


@pytest.mark.parametrize("h,a,ref", BOOST_OWENS_T)
def test_owens_t_boost(h, a, ref):
    # Boost's own tolerance for these is 30 eps in double; fastcpa's target is a few ulps
    assert rel(owt.owens_t(h, a), ref) <= 8 * EPS
    assert abs(owt.log_owens_t(h, a) - math.log(ref)) <= 8 * EPS * max(1.0, abs(math.log(ref)))


@pytest.mark.parametrize("h,a,ref", BURKARDT_OWENS_T)
def test_owens_t_patefield_tandy_table(h, a, ref):
    # the table has 16 significant digits
    assert rel(owt.owens_t(h, a), ref) <= 1e-15


def test_owens_t_special_relations():
    """Owen (1956) relations that Boost also checks: T(0, a) = atan(a) / 2pi,
    T(h, 1) = Phi(h) Phi(-h) / 2, T(h, inf) = Phi(-|h|) / 2, T(h, 0) = 0 (right-hand
    sides in mpmath: SciPy's ndtr(-5) is itself 2e-15 off)."""
    import mpmath

    with mpmath.workdps(40):
        for a in (0.5, 2.0, 2000.0):
            assert rel(owt.owens_t(0.0, a), float(mpmath.atan(a) / (2 * mpmath.pi))) <= 4 * EPS
        for h in (0.125, 5.0, 30.0):
            assert rel(owt.owens_t(h, 1.0), float(mpmath.ncdf(h) * mpmath.ncdf(-h) / 2)) <= 8 * EPS
            assert rel(owt.owens_t(h, math.inf), float(mpmath.ncdf(-h) / 2)) <= 8 * EPS
    for h in (0.5, 10.0, 1e4):
        assert owt.owens_t(h, 0.0) == 0.0


@pytest.mark.parametrize("x,ref,rtol", SCIPY_LOG_NDTR)
def test_log_ndtr_scipy(x, ref, rtol):
    got = float(fastcpa.interval_moments(-np.inf, x).log_mass)
    # the SciPy table's own tolerance, which is looser than fastcpa's target of a few ulps
    assert rel(got, ref) <= min(rtol, 8 * EPS * max(1.0, abs(x) ** 2)), (x, got, ref)


@pytest.mark.parametrize("a,b,x,ref", SCIPY_TRUNCNORM_LOGCDF)
def test_truncnorm_logcdf_scipy(a, b, x, ref):
    import scipy.stats

    r = fastcpa.interval_moments([a, a], [x, b])
    got = float(r.log_mass[0] - r.log_mass[1])
    # conditioning: each end rounded on input moves log P(a <= z <= e) by
    # |e| eps phi(e) / P; plus a few ulps of each log mass and of the table value
    phi = scipy.stats.norm.pdf
    P = np.exp(r.log_mass)
    cond = sum(abs(e) * EPS * phi(e) / m for e, m in ((x, P[0]), (b, P[1]), (a, P[0]), (a, P[1])) if np.isfinite(e))
    tol = 4 * cond + 4 * EPS * (abs(r.log_mass[0]) + abs(r.log_mass[1])) + 4 * EPS * abs(ref)
    assert abs(got - ref) <= tol, (a, b, x, got, ref)


@pytest.mark.parametrize("a,b,rho,ref", QUANTLIB_BIVARIATE)
def test_bivariate_normal_quantlib(a, b, rho, ref):
    # X <= a, Y <= b  as  {z : -z1 + a >= 0, -z2 + b >= 0}
    cov = np.array([[1.0, rho], [rho, 1.0]])
    r = fastcpa.polygon_moments([[-1.0, 0.0], [0.0, -1.0]], [a, b], np.zeros(2), cov)
    assert abs(math.exp(float(r.log_mass)) - ref) <= 5.01e-7  # six decimals


def test_bivariate_haug_entry_against_mpmath():
    """The table entry left out above, against a 30-digit integral of phi(x) Phi((b - rho x) / sqrt(1 - rho^2))."""
    import mpmath

    a, b, rho = -0.5, -0.5, 0.5
    with mpmath.workdps(30):
        ref = mpmath.quad(lambda t: mpmath.npdf(t) * mpmath.ncdf((b - rho * t) / mpmath.sqrt(1 - rho * rho)),
                          [-mpmath.inf, a])
    cov = np.array([[1.0, rho], [rho, 1.0]])
    r = fastcpa.polygon_moments([[-1.0, 0.0], [0.0, -1.0]], [a, b], np.zeros(2), cov)
    assert rel(math.exp(float(r.log_mass)), float(ref)) <= 16 * EPS
    assert abs(float(ref) - 0.163319) > 5e-7  # the published value is off in its last digit


@pytest.mark.parametrize("rho", [-0.999999, -0.9, -0.5, -1e-8, 0.0, 0.3, 0.5, 0.9, 0.999999])
def test_bivariate_orthant_sheppard(rho):
    cov = np.array([[1.0, rho], [rho, 1.0]])
    r = fastcpa.polygon_moments([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0], np.zeros(2), cov)
    exact = 0.25 + math.asin(rho) / (2 * math.pi)
    # rho is rounded on input: d P / d rho = 1 / (2 pi sqrt(1 - rho^2))
    tol = 8 * EPS * exact + 2 * EPS * abs(rho) / (2 * math.pi * math.sqrt(1 - rho * rho))
    assert abs(math.exp(float(r.log_mass)) - exact) <= tol, (rho, math.exp(float(r.log_mass)), exact)
