"""The outside review's remaining cases, each against an oracle the library does not share.

Deep and narrow S = 2 nets, near-dead and tiny-weight units, a leaky slope of 1e6, noise
down to 1e-14, steep weights, polygons a million standard deviations out, and the inputs
float64 cannot represent a likelihood for (a clear error, never NaN). Oracles: the
converged latent quadrature (``oracles.log_prob_quad``, S = 1 and 2, with its own error),
the 50-digit S = 1 evaluation (``oracles.log_prob_mp_1d``) and mpmath's normal tail.
"""

import math
import warnings

import numpy as np
import pytest
from mpmath import mp

import fastcpa
from oracles import log_prob_mp_1d, log_prob_quad
from test_cross_path import _compare
from test_metamorphic import EPS, Case


def _case(sizes, act, slope, sigma_x, rng, scale=1.0, first=1.0, n=2, off=(0.0, 3.0)):
    Ws = [rng.normal(size=(b, a)) * scale / math.sqrt(a) for a, b in zip(sizes[:-1], sizes[1:])]
    Ws[0] = Ws[0] * first
    cs = [0.3 * rng.normal(size=b) for b in sizes[1:]]
    L = len(sizes) - 2
    case = Case(Ws, cs, [act] * L, [slope] * L, sigma_x, 1.0, np.zeros((0, sizes[-1])))
    X = case.model().sample(n, seed=rng)
    u = rng.normal(size=X.shape)
    X = X + np.asarray(off)[:n, None] * sigma_x * u / np.linalg.norm(u, axis=1, keepdims=True)
    return case.replace(X=X, desc=f"sizes={sizes} {act} slope={slope} sigma_x={sigma_x} scale={scale} first={first}")


def _against_quad(case, tol=1e-11):
    for x in case.X:
        lp, err, mean = log_prob_quad(case.weights, case.biases, case.slopes(), x, case.sigma_x, case.sigma_z, tol=tol)
        _compare(case, x, lp, err, mean, "quadrature")


def _against_mp(case):
    for x in case.X:
        lp, mean, _ = log_prob_mp_1d(case.weights, case.biases, case.slopes(), x, case.sigma_x, case.sigma_z, dps=40)
        _compare(case, x, float(lp), 0.0, np.array([float(mean)]), "mpmath")


@pytest.mark.slow
@pytest.mark.parametrize("depth", [8, 10])
def test_deep_s2_relu_nets_against_quadrature(depth):
    """8-10 hidden layers of width 8 (ReLU, sigma_x 0.5): the review saw 1e-3 to 1e-2 relative."""
    case = _case([2] + [8] * depth + [3], "relu", 0.0, 0.5, np.random.default_rng(depth), scale=1.5)
    _against_quad(case, tol=1e-8)


def test_s2_with_one_output_and_small_noise_against_quadrature():
    """S = 2, D = 1, sigma_x 0.02 (the review: 0.6% off): a curve of solutions in the latent plane."""
    case = _case([2, 6, 5, 1], "leaky_relu", 0.1, 0.02, np.random.default_rng(11))
    _against_quad(case)


def test_tiny_weight_unit_beside_normal_units():
    """A first-layer unit with weights 1e-16 (its kink line ~1e16 away, or anywhere): the review saw
    the posterior mean 0.2 off and log p 5e-3. Mean and log p against the quadrature."""
    case = _case([2, 5, 3], "leaky_relu", 0.1, 0.2, np.random.default_rng(12))
    case.weights[0][2] = [1e-16, -1e-16]
    case.biases[0][2] = 1e-17
    _against_quad(case)


@pytest.mark.parametrize("first", [1e-8, 1e-12])
def test_near_dead_first_layer(first):
    """First-layer weights x1e-8 .. 1e-12 (every unit nearly constant; the review: NaN posteriors).
    S = 1 against mpmath, S = 2 against the quadrature; region probabilities sum to 1."""
    for S, check in ((1, _against_mp), (2, _against_quad)):
        case = _case([S, 6, 4, 3], "leaky_relu", 0.1, 0.3, np.random.default_rng(13 + S), first=first)
        check(case)
        post = case.model().posterior(case.X)
        assert np.all(np.isfinite(post.mean)) and np.all(np.isfinite(post.cov))
        np.testing.assert_allclose(post.region_probs.sum(axis=1), 1.0, rtol=0, atol=1e-12)


def test_leaky_slope_of_a_million():
    """Leaky slope 1e6 (the review: 0.03 nats): against mpmath."""
    case = _case([1, 6, 5, 3], "leaky_relu", 1e6, 0.1, np.random.default_rng(14), n=3, off=(0.0, 3.0, 30.0))
    _against_mp(case)


@pytest.mark.parametrize("sigma_x", [1e-10, 1e-14])
def test_tiny_noise_against_mpmath(sigma_x):
    """sigma_x 1e-10 (the review: inf) and 1e-14 (it hung): finite, within what the data's own
    rounding allows (at 1e-14 that is ~0.5 nats: an AccuracyWarning says so)."""
    case = _case([1, 6, 4, 3], "leaky_relu", 0.1, sigma_x, np.random.default_rng(15), n=2, off=(0.0, 30.0))
    model = case.model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastcpa.AccuracyWarning)
        lp = model.log_prob(case.X)
    est = model.last_log_prob_uncertainty_
    for x, got, e in zip(case.X, lp, est):
        ref = float(log_prob_mp_1d(case.weights, case.biases, case.slopes(), x, sigma_x, 1.0, dps=40)[0])
        assert abs(got - ref) <= max(8 * e, 1e-9 * abs(ref)), (got, ref, e)
    if sigma_x == 1e-14:
        with pytest.warns(fastcpa.AccuracyWarning):
            model.log_prob(case.X)


def test_steep_s2_net_against_quadrature():
    """Weights x1000 on an S = 2 net (the review: log p of +1.1e10 where the truth is about -20)."""
    case = _case([2, 5, 3], "leaky_relu", 0.1, 0.1, np.random.default_rng(16))
    case = case.replace(weights=[W * 10.0 ** 1.5 for W in case.weights])  # x1000 end to end
    case = case.replace(X=case.model().sample(2, seed=1))
    _against_quad(case)


@pytest.mark.parametrize("S", [1, 2])
def test_weights_times_1e8_keep_a_proper_posterior(S):
    """Weights x1e8 per layer (slopes ~1e24 per unit z; the review: NaN posteriors at S = 2, region
    probabilities not summing to 1): the posterior is finite, its probabilities sum to 1, and its
    log p is log_prob's."""
    rng = np.random.default_rng(19)
    Ws = [rng.normal(size=(6, S)) * 1e8, rng.normal(size=(5, 6)) * 1e8, rng.normal(size=(3, 5)) * 1e8]
    cs = [rng.normal(size=6), rng.normal(size=5), rng.normal(size=3)]
    model = fastcpa.CPAModel(fastcpa.Generator(Ws, cs, activation="leaky_relu", slope=0.1), sigma_x=1.0)
    X = np.concatenate([model.sample(3, seed=1), rng.normal(size=(2, 3))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastcpa.AccuracyWarning)
        lp = model.log_prob(X)
    post = model.posterior(X)
    assert np.all(np.isfinite(post.mean)) and np.all(np.isfinite(post.cov))
    np.testing.assert_allclose(post.region_probs.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.all(np.abs(post.log_prob - lp) <= 1e-12 * np.abs(lp) + 1e-12)


@pytest.mark.parametrize("S", [1, 2])
@pytest.mark.parametrize("scale", [1e100, 1e200])
def test_overflowing_generator_is_a_clear_error(S, scale):
    """Weights x1e100 .. 1e200 per layer (the review: NaN): the slopes' squares or the slopes
    themselves leave float64, and the model says so."""
    rng = np.random.default_rng(17)
    Ws = [rng.normal(size=(6, S)) * scale, rng.normal(size=(5, 6)) * scale, rng.normal(size=(3, 5)) * scale]
    cs = [rng.normal(size=6), rng.normal(size=5), rng.normal(size=3)]
    with np.errstate(all="ignore"):
        model = fastcpa.CPAModel(fastcpa.Generator(Ws, cs, activation="leaky_relu", slope=0.1), sigma_x=1.0)
        with pytest.raises(ValueError, match="too steep for float64|overflow float64"):
            model.log_prob(rng.normal(size=(2, 3)))


@pytest.mark.parametrize("S", [1, 2])
@pytest.mark.parametrize("big", [1e200, 1e308])
def test_unrepresentable_rows_are_a_clear_error_everywhere(S, big):
    """An x entry of 1e200 .. 1e308 at sigma_x 1 (the review: NaN): log p ~ -big^2 / 2 is below the
    float64 range; log_prob, posterior and sufficient_stats say so."""
    rng = np.random.default_rng(18)
    Ws = [rng.normal(size=(6, S)), rng.normal(size=(5, 6)), rng.normal(size=(3, 5))]
    cs = [rng.normal(size=6), rng.normal(size=5), rng.normal(size=3)]
    model = fastcpa.CPAModel(fastcpa.Generator(Ws, cs, activation="leaky_relu", slope=0.1), sigma_x=1.0)
    X = np.array([[0.1, 0.2, 0.3], [big, 0.0, 1.0]])
    with np.errstate(all="ignore"):
        for call in (model.log_prob, model.posterior, model.sufficient_stats):
            with pytest.raises(FloatingPointError, match=r"row\(s\) \[1\] is below the float64 range"):
                call(X)


def _tail_mp(d):
    """log P(N(0, 1) > d), and the mean and variance of N(0, 1) beyond d: 1 + d lam - lam^2 cancels
    ~4 log10(d) digits, so 120 digits."""
    with mp.workdps(120):
        d = mp.mpf(d)
        q = mp.erfc(d / mp.sqrt(2)) / 2
        lam = mp.npdf(d) / q
        return float(mp.log(q)), lam, 1 + d * lam - lam**2


@pytest.mark.parametrize("d", [1e3, 1e5, 1e6, 2e6, 1e8, 1e12])
def test_polygon_far_out_against_closed_forms(d):
    """polygon_moments 1e3 .. 1e12 standard deviations out (the review: -inf and NaN at 1e6; the truth
    ~ -5e11). A half-plane and a strip of width 1, rotated off the axes, are one-dimensional in closed
    form (mpmath). Beyond 2^20 sd (the asymptotic path) a half-plane's own line came out split at
    its foot, and the half beyond it was given a half-normal along the line (mean 0.80, variance
    0.36 instead of 0 and 1); from 2^10 sd on, a polygon that holds its nearest edge's half-plane
    around the foot takes that half-plane's one-dimensional moments (the edge formulas' moments
    about the origin lost ``eps d^2``: 1.5e-2 of the covariance at 1e6 sd). Every entry to 64 eps
    of |cov| there; at 1e3 sd (the edge formulas) 64 eps d^2."""
    c, s = math.cos(0.7), math.sin(0.7)
    n, t = np.array([c, s]), np.array([-s, c])
    lq, lam, var = _tail_mp(d)
    half = fastcpa.polygon_moments(n[None], [-d])
    assert math.isclose(float(half.log_mass), lq, rel_tol=1e-14)
    with mp.workdps(120):
        lam_f, var_f = float(lam), float(var)
        ref_mean = np.array([float(lam * mp.mpf(c)), float(lam * mp.mpf(s))])
        ref_cov = np.array([[float(var * mp.mpf(a) * mp.mpf(b) + mp.mpf(e) * mp.mpf(f)) for (b, f) in ((c, -s), (s, c))]
                            for (a, e) in ((c, -s), (s, c))])
    tol = 64 * EPS if d > 2.0**10 else 64 * EPS * d * d
    assert np.abs(half.mean - ref_mean).max() <= 16 * EPS * d + tol, (half.mean, ref_mean)
    assert np.abs(half.cov - ref_cov).max() <= tol, (half.cov, ref_cov)
    # axis-aligned, the small variance across the line is an entry of its own: relative accuracy
    ax = fastcpa.polygon_moments(np.array([[1.0, 0.0]]), [-d])
    assert math.isclose(float(ax.mean[0]), lam_f, rel_tol=16 * EPS)
    assert math.isclose(float(ax.cov[0, 0]), var_f, rel_tol=1e-12 if d > 2.0**10 else 64 * EPS * d**4)
    assert math.isclose(float(ax.cov[1, 1]), 1.0, rel_tol=tol) and abs(float(ax.mean[1])) <= tol
    strip = fastcpa.polygon_moments(np.stack([n, -n]), [-d, d + 1.0])
    with mp.workdps(60):
        ref = float(mp.log(mp.erfc(mp.mpf(d) / mp.sqrt(2)) / 2 - mp.erfc(mp.mpf(d + 1.0) / mp.sqrt(2)) / 2))
    assert math.isclose(float(strip.log_mass), ref, rel_tol=1e-14)
