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
* truncated-normal mean and variance (``interval_moments(...).mean`` / ``.var``): SciPy
  ``scipy/stats/tests/test_distributions.py`` (``TestTruncnorm._truncnorm_stats_data``, mpmath,
  and the older ``TestTruncnorm.test_moments`` tail table, good to its 7 decimals only);
  cossio/TruncatedNormal.jl ``test/tnmean.jl``, ``test/tnvar.jl``, ``test/tnmom2.jl`` (30-50
  digits, tails out to 1e6 standard deviations); JuliaStats/Distributions.jl
  ``test/truncated/normal.jl``.
* interval log mass: JuliaMath/SpecialFunctions.jl ``test/erf.jl`` (``logerf(x, y)`` and
  ``erf(x, y)``, 27-30 digits), as ``interval_moments(x, y, 0, sqrt(1/2))``.
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

# SciPy scipy/stats/tests/test_distributions.py, TestTruncnorm._truncnorm_stats_data ("Generated
# using https://gist.github.com/WarrenWeckesser/636b537ee889679227d53543d333a720", mpmath; it came
# with scipy/scipy PR #16593, "TST: stats: replace TestTruncnorm::test_moments"): (a, b, mean,
# variance) of N(0, 1) on [a, b], float64 reprs (16-17 digits). The table's skewness and
# kurtosis columns are not used.
SCIPY_TRUNCNORM_STATS = [
    (-30.0, 30.0, 0.0, 1.0),
    (-10.0, 10.0, 0.0, 1.0),
    (-3.0, 3.0, 0.0, 0.9733369246625415),
    (-2.0, 2.0, 0.0, 0.7737413035499232),
    (0.0, np.inf, 0.7978845608028654, 0.3633802276324187),
    (-np.inf, 0.0, -0.7978845608028654, 0.3633802276324187),
    (-1.0, 3.0, 0.282786110727154, 0.6161417353578293),
    (-3.0, 1.0, -0.282786110727154, 0.6161417353578293),
    (-10.0, -9.0, -9.108456288012409, 0.011448805821636248),
]

# The table that one replaced: the same file's older TestTruncnorm.test_moments (read at the fork
# tirthasheshpatel/scipy, commit 9da86f1c0d217f6631e96882bb8e4093b50cca98), tail rows: (a, b,
# mean, variance). It prints 16-17 digits but SciPy checked them with assert_almost_equal, i.e.
# to 7 decimals, and scipy/scipy#15871 found its higher moments inaccurate. Against mpmath the
# variances are off by 5e-11 to 1.5e-7 relative ([-40, -39], [39, 40]) and the means by up to
# 1.1e-13 ([-30, -29]): test_old_scipy_truncnorm_tail_table_against_mpmath.
SCIPY_OLD_TRUNCNORM_TAILS = [
    (-10.0, -9.0, -9.1084562880124764, 0.0114488058210104),
    (-20.0, -19.0, -19.0523439459766628, 0.0027250730180314),
    (-30.0, -29.0, -29.0344012377394698, 0.0011806603928891),
    (-40.0, -39.0, -39.0256074199326264, 0.0006548826719649),
    (39.0, 40.0, 39.0256074199326264, 0.0006548826719649),
]

# cossio/TruncatedNormal.jl test/tnmean.jl (commit 3c16866c), test/tnvar.jl (commit 1838a9d9) and
# test/tnmom2.jl (the later version, `import TruncatedNormal as TruncNorm`, which adds the mu,
# sigma rows): (lo, hi, mu, sigma, quantity, value) for N(mu, sigma^2) on [lo, hi], with quantity
# "mean", "var" or "m2" (E[z^2 | lo <= z <= hi], tnmom2). 30-50 digits, kept as published.
TRUNCATEDNORMAL_JL = [
    (1e-44, 1e-43, 0.0, 1.0, "mean", 5.4999999999999999999999999999999999999999e-44),
    (100.0, 115.0, 0.0, 1.0, "mean", 100.00999800099926070518490239457545847490332879043),
    (-1e6, -999000.0, 0.0, 1.0, "mean", -999000.00000100100100099899498898098),
    (1e6, np.inf, 0.0, 1.0, "mean", +1.00000000000099999999999800000e6),
    (-np.inf, -1e6, 0.0, 1.0, "mean", -1.00000000000099999999999800000e6),
    (0.0, 1e200, 0.0, 1.0, "mean", 0.797884560802865355879892119869),
    (50.0, 70.0, -2.0, 3.0, "mean", 50.171943499898757645751683644632860837133138152489),
    (-100.0, 0.0, 0.0, 2.0986317998643735, "mean", -1.6744659119217125058885983754999713622460154892645),
    (0.0, 0.9, 0.0, 0.07132755843183151, "mean", 0.056911157632522598806524588414964004271754161737065),
    (-100.0, 0.5, 0.0, 0.47383322897860064, "mean", -0.1267981330521791493635176736743283314399),
    # Distributions.jl issue #827: the normal's mean 1000 standard deviations beyond the interval
    (0.0, 1000.0, 1e6, 1.0, "mean", 999.99999899899899900100501101901899090472046236710608108591983),
    (50.0, 70.0, 0.0, 1.0, "var", 0.0003990431868038995479099272265360593305365),
    (1e6, np.inf, 0.0, 1.0, "var", 9.99999999994000000000050000000e-13),
    # marked @test_broken in tnvar.jl (TruncatedNormal.jl's own result was wrong), value as published
    (999000.0, 1e6, 0.0, 1.0, "var", 1.00200300399898194688784897455e-12),
    (50.0, 70.0, -2.0, 3.0, "var", 0.029373438107168350377591231295634273607812172191712),
    (-100.0, 0.0, 0.0, 2.0986317998643735, "var", 1.6004193412141677189841357987638847137391508803335),
    (0.0, 0.9, 0.0, 0.07132755843183151, "var", 0.0018487407287725028827020557707636415445504260892486),
    (-100.0, 100.0, 0.0, 17.185261847875548, "var", 295.333163899557735486302841237124507431445),
    (-100.0, 0.5, 0.0, 0.47383322897860064, "var", 0.145041095812679283837328561547251019229612),
    (-1e6, -999000.0, 0.0, 1.0, "m2", 9.9800100000199999999999799599399200002e11),
    (1e6, np.inf, 0.0, 1.0, "m2", 1.00000000000199999999999800000e12),
    (0.0, 20.0, 3.0, 1.5, "m2", 11.4986153820554548159603543747),
    (10.0, 20.0, 3.0, 1.5, "m2", 106.111726253622178129044932133),
    (-10.0, 20.0, 3.0, 1.5, "m2", 11.2499999999999997949173964131),
]

# JuliaStats/Distributions.jl test/truncated/normal.jl (commit 14c0a62d), the rows not already in
# TruncatedNormal.jl's tests: (lo, hi, mu, sigma, quantity, value), quantity "std" the square root
# of the variance. 50 digits.
DISTRIBUTIONS_JL_TRUNCNORMAL = [
    (-100.0, 0.0, 0.0, 2.0, "mean", -1.59576912160573071175978423973752747390343452465973),
    (0.0, 1.0, 1.5, 4.1, "mean", 0.50494725270783081889610661619986770485973643194141),
    (0.0, 1.0, 1.5, 4.1, "std", 0.28836356398830993140576947440881738258157196701554),
]

# JuliaMath/SpecialFunctions.jl test/erf.jl (commit 036808bf), "two args version": logerf(x, y) =
# log(erf(y) - erf(x)) = log 2 + log P(x <= z <= y) for z ~ N(0, 1/2), and erf(x, y) =
# erf(y) - erf(x). Values kept as the published decimal strings (27-30 digits).
SPECIALFUNCTIONS_LOGERF = [
    (-5.0, 35.0, "0.693147180559176579520017808560"),
    (30.0, 35.0, "-903.974117110643878079600243618"),
    (-35.0, -30.0, "-903.974117110643878079600243618"),
    (10.0, np.inf, "-102.879889024844888574804787140"),
    (-np.inf, np.inf, "0.693147180559945309417232121458"),
    (-1e-6, 1e-6, "-13.0015811397694169056785314498"),
    (-1e-30, 1e-30, "-68.2636233716261799887769930733"),
    (1e-30, 2e-30, "-68.9567705521861252981942251947"),
    (-2e-30, -1e-30, "-68.9567705521861252981942251947"),
]
SPECIALFUNCTIONS_ERF2 = [
    (10.0, 11.0, "2.08848758232167861905709161e-45"),
    (-1.0, 1.0, "1.68540158589942973868244127017"),
    (1e-30, 2e-30, "1.12837916709551257389615890312e-30"),
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


def _moment(r, quantity):
    mean, var = float(r.mean), float(r.var)
    return {"mean": mean, "var": var, "std": math.sqrt(var), "m2": var + mean * mean}[quantity]


@pytest.mark.parametrize("a,b,mean,var", SCIPY_TRUNCNORM_STATS)
def test_truncnorm_mean_var_scipy(a, b, mean, var):
    r = fastcpa.interval_moments(a, b)
    # float64 reprs of mpmath values (half an ulp off at most); fastcpa's target is a few ulps.
    # The mean is measured against |mean| + sd: it is 0 on the symmetric intervals
    assert abs(float(r.mean) - mean) <= 8 * EPS * (abs(mean) + math.sqrt(var)), (a, b, float(r.mean), mean)
    assert rel(float(r.var), var) <= 8 * EPS, (a, b, float(r.var), var)


@pytest.mark.parametrize("a,b,mean,var", SCIPY_OLD_TRUNCNORM_TAILS)
def test_truncnorm_tail_moments_old_scipy_table(a, b, mean, var):
    r = fastcpa.interval_moments(a, b)
    # the table's own precision: SciPy checked it with assert_almost_equal (7 decimals)
    assert abs(float(r.mean) - mean) < 1.5e-7, (a, b, float(r.mean), mean)
    assert abs(float(r.var) - var) < 1.5e-7, (a, b, float(r.var), var)


def test_old_scipy_truncnorm_tail_table_against_mpmath():
    """The old SciPy tail table is right to its 7 decimals but not to the 16-17 digits it prints:
    50-digit mpmath puts its variances 5e-11 to 1.5e-7 off in relative terms and its means up to
    1.1e-13; fastcpa is within a few ulps of mpmath on every row, as it is of the newer SciPy
    table (whose [-10, -9] row agrees with mpmath)."""
    from oracles import interval_moments_mp

    worst_table_var = 0.0
    for a, b, mean, var in SCIPY_OLD_TRUNCNORM_TAILS:
        _, ref_mean, ref_var = (float(v) for v in interval_moments_mp(a, b, dps=50))
        r = fastcpa.interval_moments(a, b)
        assert rel(float(r.mean), ref_mean) <= 8 * EPS, (a, b, float(r.mean), ref_mean)
        assert rel(float(r.var), ref_var) <= 8 * EPS, (a, b, float(r.var), ref_var)
        assert abs(mean - ref_mean) < 1.5e-7 and abs(var - ref_var) < 1.5e-7  # good to 7 decimals
        worst_table_var = max(worst_table_var, rel(var, ref_var))
    assert worst_table_var > 1e-7  # [-40, -39] and [39, 40]: 0.0006548826719649 vs 0.00065488257...


@pytest.mark.parametrize("lo,hi,mu,sigma,quantity,ref", TRUNCATEDNORMAL_JL + DISTRIBUTIONS_JL_TRUNCNORMAL)
def test_truncnorm_moments_julia(lo, hi, mu, sigma, quantity, ref):
    r = fastcpa.interval_moments(lo, hi, mu, sigma)
    # 30-50 digit values, so fastcpa's few ulps. They match mpmath at the float64 inputs to
    # 1e-16 or better; [1e-44, 1e-43] is for the decimal ends, 6.6e-17 (relative) off the floats'
    got = _moment(r, quantity)
    assert rel(got, ref) <= 8 * EPS, (lo, hi, mu, sigma, quantity, got, ref)


def _log_mass_refs():
    """(x, y, log P(x <= z <= y) for z ~ N(0, 1/2), the half-unit of the published value's last
    digit carried into that log) from the SpecialFunctions.jl strings, in 40-digit arithmetic."""
    import decimal

    import mpmath

    out = []
    with mpmath.workdps(40):
        for x, y, s in SPECIALFUNCTIONS_LOGERF:
            half_unit = 0.5 * 10.0 ** decimal.Decimal(s).as_tuple().exponent
            out.append((x, y, float(mpmath.mpf(s) - mpmath.log(2)), half_unit))
        for x, y, s in SPECIALFUNCTIONS_ERF2:
            half_unit = 0.5 * 10.0 ** decimal.Decimal(s).as_tuple().exponent / float(s)
            out.append((x, y, float(mpmath.log(mpmath.mpf(s) / 2)), half_unit))
    return out


@pytest.mark.parametrize("x,y,ref,half_unit", _log_mass_refs())
def test_log_mass_specialfunctions_logerf(x, y, ref, half_unit):
    s = math.sqrt(0.5)
    r = fastcpa.interval_moments(x, y, 0.0, s)
    got = float(r.log_mass)
    # conditioning: sqrt(1/2) is rounded and so is each standardised end x / s, each by half an
    # ulp relative, and a relative change d of an end e moves log P by |e| phi(e) / P * d
    sens = sum(abs(e) * math.exp(-0.5 * e * e - 0.5 * math.log(2 * math.pi) - got)
               for e in (x / s, y / s) if math.isfinite(e))
    tol = 8 * EPS * abs(ref) + sens * EPS + half_unit
    assert abs(got - ref) <= tol, (x, y, got, ref, tol)
