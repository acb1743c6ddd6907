"""Accuracy under translation and scaling of data and parameters, and far off the manifold.

The expanded quadratic form ``|x - b|^2 = |x|^2 - 2 x.b + |b|^2`` cancels when
the data carry a large offset, the weights are large or the points lie far
from the model; the likelihood itself is as well conditioned there as
anywhere. Each case is held to what the inputs' own rounding implies: for a
log p whose sensitivity to the data is ``|grad_x log p| ~ |r| / sigma_x^2``
(``r`` the residual), rounding ``x`` to ``eps |x|`` moves it by about
``eps |x| |r| / sigma_x^2``; the tests allow a small multiple of that (plus
``eps |log p|``), never a fixed absolute tolerance. Oracles: the identity
itself (translation), and an independent 50-digit evaluation
(``oracles.log_prob_mp_1d``) that follows the generator piece by piece.
"""

import math

import numpy as np
import pytest

import fastcpa
from oracles import log_prob_mp_1d

EPS = np.finfo(float).eps


def _net(rng, sizes, scale=1.0):
    Ws = [scale * rng.normal(size=(b, a)) for a, b in zip(sizes[:-1], sizes[1:])]
    cs = [rng.normal(size=b) for b in sizes[1:]]
    return Ws, cs


def _allowed(x, log_p, sigma_x, resid, k=64.0):
    """``k`` times the rounding-implied spread of log p (see the module docstring)."""
    return k * EPS * (np.abs(x).sum(axis=1) * resid / sigma_x**2 + np.abs(log_p) + 1.0)


@pytest.mark.parametrize("S", [1, 2])
@pytest.mark.parametrize("B, sigma_x", [(1e4, 0.01), (1e6, 0.01), (1e8, 1.0), (1e8, 0.01)])
def test_translation_of_bias_and_data(S, B, sigma_x):
    """log p(x + B | g + B) = log p(x | g): the review saw 4e-4 nats at B = 1e4 (sigma_x 0.01), 4.7 at 1e6."""
    rng = np.random.default_rng(3)
    Ws, cs = _net(rng, [S, 6, 5, 3])
    gen = fastcpa.Generator(Ws, cs, activation="leaky_relu", slope=0.1)
    model = fastcpa.CPAModel(gen, sigma_x=sigma_x)
    X = np.concatenate([model.sample(20, seed=1), model.sample(5, seed=2) + 30 * sigma_x])
    cs2 = [c.copy() for c in cs]
    cs2[-1] = cs[-1] + B
    shifted = fastcpa.CPAModel(fastcpa.Generator(Ws, cs2, activation="leaky_relu", slope=0.1), sigma_x=sigma_x)
    Xs = X + B
    lp, lps = model.log_prob(X), shifted.log_prob(Xs)
    # both sides' inputs are rounded at |x + B|: the shift itself moves x by eps B
    resid = np.sqrt(np.maximum(-2.0 * lp, 1.0)) * sigma_x + 1.0
    tol = _allowed(Xs, lp, sigma_x, resid)
    assert np.all(np.abs(lps - lp) <= tol), (np.abs(lps - lp) / tol).max()
    # the posterior region probabilities agree too
    p0 = model.posterior(X).region_probs.toarray()
    p1 = shifted.posterior(Xs).region_probs.toarray()
    assert np.abs(p0 - p1).max() <= 1e3 * EPS * B / sigma_x + 1e-12


@pytest.mark.parametrize("scale", [1.0, 100.0, 1000.0])
def test_large_weights_against_mpmath(scale):
    """All weights x100 and x1000 (S = 1, sigma_x 0.1): the review saw 0.026 nats and +1.6e4 (truth about -20)."""
    rng = np.random.default_rng(5)
    Ws, cs = _net(rng, [1, 5, 4, 3], scale=1.0)
    Ws = [W * scale for W in Ws]
    gen = fastcpa.Generator(Ws, cs, activation="leaky_relu", slope=0.1)
    model = fastcpa.CPAModel(gen, sigma_x=0.1)
    X = model.sample(4, seed=0)
    got = model.log_prob(X)
    for x, g in zip(X, got):
        ref = float(log_prob_mp_1d(Ws, cs, gen.slopes, x, 0.1, 1.0)[0])
        tol = _allowed(x[None], np.array([ref]), 0.1, 1.0)[0] * (1 + np.abs(x).max())
        assert abs(g - ref) <= tol, (scale, x, g, ref)


@pytest.mark.parametrize("off", [5.0, 30.0, 1e3, 1e6])
@pytest.mark.parametrize("sigma_x", [1e-6, 1e-2, 1.0])
def test_far_off_manifold_against_mpmath(off, sigma_x):
    """Points ``off`` noise standard deviations from the manifold, tiny to unit noise."""
    rng = np.random.default_rng(7)
    Ws, cs = _net(rng, [1, 4, 3, 2])
    gen = fastcpa.Generator(Ws, cs, activation="abs")
    model = fastcpa.CPAModel(gen, sigma_x=sigma_x)
    z = np.array([[-1.3], [0.4]])
    d = rng.normal(size=(2, 2))
    X = gen(z) + off * sigma_x * d / np.linalg.norm(d, axis=1, keepdims=True)
    got = model.log_prob(X)
    for x, g in zip(X, got):
        ref = float(log_prob_mp_1d(Ws, cs, gen.slopes, x, sigma_x, 1.0)[0])
        tol = _allowed(x[None], np.array([ref]), sigma_x, off * sigma_x)[0]
        assert abs(g - ref) <= tol, (off, sigma_x, g, ref, abs(g - ref) / tol)


@pytest.mark.parametrize("S", [1, 2])
@pytest.mark.parametrize("off", [1e4, 1e6])
def test_far_points_keep_weights_summing_to_one(S, off):
    """Far off the manifold the region probabilities and the E-step's T0 still sum
    to 1 per point (the review saw 1 - 3e-5), and log_prob, the posterior and the
    E-step give one log-likelihood."""
    rng = np.random.default_rng(11)
    Ws, cs = _net(rng, [S, 5, 4, 3])
    model = fastcpa.CPAModel(fastcpa.Generator(Ws, cs, activation="leaky_relu", slope=0.2), sigma_x=0.05)
    X = model.sample(6, seed=3)
    d = rng.normal(size=X.shape)
    X = X + off * 0.05 * d / np.linalg.norm(d, axis=1, keepdims=True)
    post = model.posterior(X)
    assert np.abs(post.region_probs.sum(axis=1) - 1.0).max() <= 1e-12
    stats = model.sufficient_stats(X)
    assert abs(stats.T0.sum() - len(X)) <= 1e-12 * len(X)
    lp = model.log_prob(X)
    tol = 16 * EPS * np.abs(lp)
    assert np.all(np.abs(post.log_prob - lp) <= tol)
    assert abs(stats.log_likelihood - lp.sum()) <= 16 * EPS * np.abs(lp).sum()


def test_unrepresentable_log_likelihood_is_an_error():
    """A point so far out that log p(x) is below -1.8e308 gets a clear error, not -inf or NaN."""
    gen = fastcpa.Generator([np.ones((2, 1)), np.ones((2, 2))], [np.zeros(2), np.zeros(2)])
    model = fastcpa.CPAModel(gen, sigma_x=1e-100)
    with pytest.raises(FloatingPointError, match="float64 range"):
        model.log_prob(np.array([[1e60, -1e60]]))
    # 1e154 per entry with unit noise: log p = -1e308, representable
    lp = fastcpa.CPAModel(gen, sigma_x=1.0).log_prob(np.array([[1e154, -1e154]]))
    assert np.isfinite(lp[0]) and math.isclose(lp[0], -1e308, rel_tol=1e-12)


def test_steep_region_far_from_the_origin_against_mpmath():
    """A posterior (sd 8e-10) inside a steep region near z = 1.5, on a net whose
    output at z = 0 is ~1e8 while the data are ~7e3. Through the region's
    offset ``b`` (its map extrapolated to z = 0) or a centre at g(0), the
    residual carried eps * 1e8 and log p was 7e-6 off; perturbing every weight
    by eps moves the 50-digit answer by only ~2e-10, and the residuals formed
    at the region's anchor keep to that."""
    from test_metamorphic import random_additive

    c2 = random_additive(np.random.default_rng(1045), "hard")[1]  # an S = 1 net: sizes [1, 4, 4, 13, 3]
    x = c2.X[1]
    got = c2.model().log_prob(x[None])[0]
    ref = float(log_prob_mp_1d(c2.weights, c2.biases, c2.slopes(), x, c2.sigma_x, c2.sigma_z, dps=40)[0])
    assert abs(got - ref) <= 5e-9, (got, ref)


@pytest.mark.parametrize("region_chunk", [3, 16, 10**6])
def test_reference_moves_to_a_later_chunk_exactly(region_chunk):
    """Points whose posterior sits in the last region chunk, far (thousands of
    nats) from every pair of the first: the row's reference from the first
    chunk would leave log p as a difference of large numbers, so the S = 1
    kernel moves the reference (and the running sum) onto the later chunk's
    best term. Against the 50-digit oracle, for any chunking; the tolerance is
    what rounding the data to eps |x| implies (module docstring)."""
    rng = np.random.default_rng(7)
    Ws, cs = _net(rng, [1, 12, 8, 3])
    gen = fastcpa.Generator(Ws, cs, activation="leaky_relu", slope=0.2)
    model = fastcpa.CPAModel(gen, sigma_x=0.01)
    Z = np.array([[2.5], [-2.5], [0.3]])
    X = gen(Z) + 0.02 * rng.normal(size=(3, 3))
    got = model.log_prob(X, region_chunk=region_chunk)
    for x, lp in zip(X, got):
        ref = float(log_prob_mp_1d(Ws, cs, gen.slopes, x, 0.01, dps=40)[0])
        r = 0.03 * np.sqrt(3)
        tol = 32 * EPS * (np.abs(x).max() * r / 0.01**2 + abs(ref) + 10)
        assert abs(lp - ref) <= tol, (lp, ref, tol)
