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


def _ppca_posterior_mp(A, b, x, sigma_x, dps=60):
    """Posterior covariance of an affine generator (sigma_z = 1) in ``dps`` digits:
    ``I - A^T C^-1 A`` with ``C = sigma_x^2 I + A A^T``."""
    import mpmath as mp

    with mp.workdps(dps):
        Am = mp.matrix(A.tolist())
        C = Am * Am.T
        for i in range(A.shape[0]):
            C[i, i] += mp.mpf(float(sigma_x)) ** 2
        cov = mp.eye(A.shape[1]) - Am.T * mp.inverse(C) * Am
        return np.array(cov.tolist(), dtype=float)


@pytest.mark.parametrize("S, D", [(2, 1), (3, 1), (3, 2), (4, 2), (3, 6)])
@pytest.mark.parametrize("scale, sigma_x", [(1.0, 0.3), (150.0, 1.2e-4)])
def test_affine_generator_of_any_latent_dim_against_mpmath(S, D, scale, sigma_x):
    """An affine generator is PPCA: log p = log N(x; b, sigma_x^2 I + A A^T) and a Gaussian
    posterior, in closed form (mpmath). With a steep map at small sigma_x, Lambda = I + A~^T A~
    has condition number ~1e12: through Sigma = Lambda^-1 its rounding reached the posterior mean
    times |A~^T x~| and log p was 57 to 1e7 nats off (S = 2, D = 1: the metamorphic harness's
    linear-hard seed 200565; S = 3, 4). The unmapped directions (S > D) keep the prior."""
    from oracles import linear_log_prob_mp

    rng = np.random.default_rng(S * 100 + D)
    A, b = scale * rng.normal(size=(D, S)), scale * rng.normal(size=D)
    model = fastcpa.CPAModel(fastcpa.Generator([A], [b]), sigma_x=sigma_x)
    X = rng.normal(size=(4, S)) @ A.T + b + sigma_x * rng.normal(size=(4, D)) * [[0.0], [1.0], [30.0], [1e3]]
    ref = [linear_log_prob_mp(A, b, x, sigma_x) for x in X]
    lp_ref = np.array([float(r[0]) for r in ref])
    mean_ref = np.array([[float(m) for m in r[1]] for r in ref])
    cov_ref = _ppca_posterior_mp(A, b, X[0], sigma_x)
    post = model.posterior(X)
    resid = np.sqrt(np.maximum(-2.0 * lp_ref, 1.0)) * sigma_x + sigma_x
    tol = _allowed(X, lp_ref, sigma_x, resid) + 64 * EPS * np.abs(b).sum() * resid / sigma_x**2
    for lp in (model.log_prob(X), post.log_prob):
        assert np.all(np.abs(lp - lp_ref) <= tol), (np.abs(lp - lp_ref) / tol).max()
    # the mean to the accuracy x's rounding allows (it moves by A^+ eps |x| along the mapped directions)
    assert np.abs(post.mean - mean_ref).max() <= 1e-12 * (1.0 + np.abs(mean_ref).max())
    np.testing.assert_allclose(post.cov, np.broadcast_to(cov_ref, post.cov.shape), rtol=1e-9, atol=1e-12)
    st = model.sufficient_stats(X)
    np.testing.assert_allclose(st.T1[0], post.mean.sum(0), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(st.T2[0], (post.cov + post.mean[:, :, None] * post.mean[:, None, :]).sum(0),
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(st.Txz[0], X.T @ post.mean, rtol=1e-11, atol=1e-9 * np.abs(X).max())
    # exact draws: their spread along the unmapped directions is the prior's, along A~'s the posterior's
    Z = post.sample(4000, seed=1)[0]
    np.testing.assert_allclose(np.cov(Z.T), cov_ref, atol=0.1)


def _perturbed_mp(case, x, rng, k):
    """log p (50 digits) of ``k`` copies of an S = 1 case with every input (weights, biases,
    slopes, x, sigma_x, sigma_z) multiplied by ``1 + eps u``, u uniform in [-1, 1]."""
    def jig(a):
        a = np.asarray(a, float)
        return a * (1.0 + EPS * rng.uniform(-1, 1, size=a.shape))

    out = []
    for _ in range(k):
        slopes = [jig(s) for s in case.slopes()]
        out.append(float(log_prob_mp_1d([jig(W) for W in case.weights], [jig(c) for c in case.biases], slopes,
                                        jig(x), jig(case.sigma_x), float(jig(case.sigma_z)), dps=40)[0]))
    return np.array(out)


@pytest.mark.parametrize("which", ["steep-far-region", pytest.param("far-off-manifold", marks=pytest.mark.slow),
                                   "ordinary"])
def test_uncertainty_estimate_brackets_the_spread_under_input_rounding(which):
    """``last_log_prob_uncertainty_`` against the 50-digit log p of eps-perturbed inputs: within a
    factor 4 of the spread those perturbations produce or above it (a first-order estimate at one
    point of the posterior: a posterior spread over several regions moves a little more), and not
    wildly more (summing absolute values overestimates a random spread by about the square root of
    the number of terms)."""
    from test_metamorphic import random_additive, random_case

    if which == "steep-far-region":
        case = random_additive(np.random.default_rng(1045), "hard")[1]
        x = case.X[1]
    elif which == "far-off-manifold":
        case = random_case(np.random.default_rng(7), 1, "ordinary")
        x = case.X[0] + 1e4 * float(np.min(case.sigma_x))
    else:
        case = random_case(np.random.default_rng(8), 1, "ordinary")
        x = case.X[0]
    model = case.model()
    lp = model.log_prob(x[None])[0]
    est = model.last_log_prob_uncertainty_[0]
    ref = float(log_prob_mp_1d(case.weights, case.biases, case.slopes(), x, case.sigma_x, case.sigma_z, dps=40)[0])
    spread = np.abs(_perturbed_mp(case, x, np.random.default_rng(0), 4) - ref).max()
    assert abs(lp - ref) <= 8 * est, (lp, ref, est)
    assert spread <= 4 * est, (spread, est)
    assert est <= 1e4 * spread + 1e3 * EPS * (abs(ref) + 1.0), (spread, est)


def test_undetermined_log_prob_warns():
    """Points off a steep S = 2 net (weights ~5e3 per layer, four layers) where eps-perturbed
    inputs move log p by more than 1e-3 of itself: the likelihood says so. A net's own samples
    at ordinary scales do not."""
    from test_metamorphic import random_case

    case = random_case(np.random.default_rng(102933), 2, "hard")
    model = case.model()
    with pytest.warns(fastcpa.AccuracyWarning, match=r"row\(s\) \[0, 1, 2\] is not determined by float64"):
        lp = model.log_prob(case.X)
    # (row 0: 15 sigma_x off, the net's slope 1e14 per unit z in its region; rows 1, 2: 1e6 sigma_x off)
    assert np.all(model.last_log_prob_uncertainty_ > 1e-3 * np.abs(lp))
    quiet = fastcpa.CPAModel(fastcpa.Generator(*_net(np.random.default_rng(2), [2, 8, 8, 3]), activation="relu"),
                             sigma_x=0.1)
    X = quiet.sample(50, seed=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", fastcpa.AccuracyWarning)
        quiet.log_prob(X)
    assert quiet.last_log_prob_uncertainty_.max() < 1e-10


def test_posterior_with_a_needle_thin_region_gaussian():
    """A point 1e6 sigma_x off a net with weights ~1e3 per layer (permutation-S2-hard seed 300012,
    row 1): one region's Gaussian is 1e13 times narrower one way than the other and 1e3 sigma_z
    from the region. Whitened, that polygon's vertices come from products that cancel (x ~ 7e13)
    and its exact log-mass came out NaN / +inf, so the posterior raised "internal error". The pair
    lies ~1e11 nats below the best: its tail bound serves (as in log_prob's pruning), and the
    posterior agrees with log_prob."""
    import warnings

    from test_metamorphic import random_case

    case = random_case(np.random.default_rng(300012), 2, "hard")
    model = case.model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastcpa.AccuracyWarning)
        lp = model.log_prob(case.X)
    post = model.posterior(case.X)
    assert np.all(np.isfinite(post.log_prob)) and np.all(np.isfinite(post.mean)) and np.all(np.isfinite(post.cov))
    assert np.allclose(post.region_probs.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.all(np.abs(post.log_prob - lp) <= 1e-12 * np.abs(lp) + 1e-12)


def test_far_polygon_term_at_its_nearest_point_against_mpmath():
    """duplication-S2-hard seed 1001666, row 0: a point 1e7 off an S = 2 net whose posterior sits
    on a vertex where four regions meet, each region's Gaussian peaking 4.8e7 whitened sd away
    (log p = -1.29e15). The term was the peak minus d^2 / 2, two numbers of the term's size, the
    peak's fitted point extrapolated far from the region and d rounded with the whitened offset of
    that peak: 15 nats (53 eps |log p|) off, and duplicating a unit moved it by 10.5. The term's
    energy is now taken at the polygon's nearest point. Oracle: the net's own forward pass at the
    vertex and the cones' integrals there, in mpmath (``far_vertex_log_prob_mp``); log_prob,
    posterior and the E-step must agree with it to a few eps |log p|."""
    import warnings

    from oracles import far_vertex_log_prob_mp
    from test_metamorphic import random_case

    case = random_case(np.random.default_rng(1001666), 2, "hard")
    model = case.model()
    x = case.X[:1]
    truth = far_vertex_log_prob_mp(case.weights, case.biases, case.slopes(), model.partition, x[0], case.sigma_x,
                                   case.sigma_z)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastcpa.AccuracyWarning)
        lp = model.log_prob(x)[0]
        post = model.posterior(x)
        stats = model.sufficient_stats(x)
    tol = 4 * EPS * abs(truth)
    assert abs(lp - truth) <= tol, (lp - truth) / (EPS * abs(truth))
    assert abs(post.log_prob[0] - truth) <= tol
    assert abs(stats.log_likelihood - truth) <= tol
    # the posterior is at the vertex: the uncertainty estimate is taken there, not at a peak 4.8e7 sd out
    assert model.last_log_prob_uncertainty_[0] <= 16 * EPS * abs(truth)
    assert np.allclose(post.region_probs.sum(axis=1), 1.0, rtol=0, atol=1e-12)
