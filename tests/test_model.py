"""``CPAModel``: exact log p(x), posterior and moments against oracles that do not use fastcpa's sums.

Oracles: dense latent quadrature (Simpson on a fine z grid, in log space), the
closed-form Gaussian of an affine generator (probabilistic PCA) and sklearn's
``PCA.score_samples``, Monte Carlo with stated standard errors.
"""

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.stats

import fastcpa
from reference import init_layers

Z_GRID = np.linspace(-12.0, 12.0, 480001)  # prior-scale grid (moments of x, density normalisation)


def make_gen(rng, sizes, activation="relu", slope=0.1):
    Ws, cs = init_layers(rng, sizes, scale="normal")
    return fastcpa.Generator(Ws, cs, activation=activation, slope=slope)


def log_joint(gen, x, z, sigma_x, sigma_z=1.0):
    """log p(x, z) at the points z (S = 1), straight from the forward pass."""
    var = np.broadcast_to(np.asarray(sigma_x, float) ** 2, (gen.output_dim,))
    G = gen(z[:, None])
    lx = -0.5 * (((x - G) ** 2 / var).sum(1) + np.log(2 * np.pi * var).sum())
    return lx - 0.5 * (z**2 / sigma_z**2 + math.log(2 * math.pi * sigma_z**2))


def grid_for(gen, x, sigma_x, sigma_z=1.0):
    """A fine z grid covering everything within 80 nats of the joint's peak.

    A coarse scan over +-300 sigma_z finds the range (far from the manifold the
    posterior can sit many prior sd out); 100k Simpson points then cover it.
    """
    coarse = np.linspace(-300.0, 300.0, 120001) * sigma_z
    f = log_joint(gen, x, coarse, sigma_x, sigma_z)
    idx = np.flatnonzero(f >= f.max() - 80.0)
    return np.linspace(coarse[max(idx[0] - 1, 0)], coarse[min(idx[-1] + 1, len(coarse) - 1)], 100001)


def quad_log_prob(gen, x, sigma_x, sigma_z=1.0):
    z = grid_for(gen, x, sigma_x, sigma_z)
    f = log_joint(gen, x, z, sigma_x, sigma_z)
    m = f.max()
    return m + math.log(scipy.integrate.simpson(np.exp(f - m), x=z))


def quad_posterior_moments(gen, x, sigma_x, sigma_z=1.0):
    z = grid_for(gen, x, sigma_x, sigma_z)
    f = log_joint(gen, x, z, sigma_x, sigma_z)
    w = np.exp(f - f.max())
    w /= scipy.integrate.simpson(w, x=z)
    mean = scipy.integrate.simpson(w * z, x=z)
    return mean, scipy.integrate.simpson(w * (z - mean) ** 2, x=z)


def off_manifold(model, rng, n, k_sigmas):
    """Samples from the model pushed ``k`` noise standard deviations off, in a random direction."""
    X = model.sample(n, seed=rng)
    u = rng.normal(size=X.shape)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return X + k_sigmas * np.max(model.sigma_x) * u


NETS = [("relu", [1, 12, 2]), ("leaky_relu", [1, 10, 8, 16]), ("abs", [1, 9, 7, 64]), ("relu", [1, 16, 16, 64])]


@pytest.mark.parametrize("activation,sizes", NETS)
@pytest.mark.parametrize("sigma_x", [0.02, 0.3])
@pytest.mark.parametrize("k_sigmas", [0.0, 5.0, 15.0, 30.0])
def test_log_prob_matches_quadrature(rng, activation, sizes, sigma_x, k_sigmas):
    gen = make_gen(rng, sizes, activation)
    model = fastcpa.CPAModel(gen, sigma_x=sigma_x)
    X = off_manifold(model, rng, 3, k_sigmas)
    lp = model.log_prob(X)
    for n in range(len(X)):
        assert abs(lp[n] - quad_log_prob(gen, X[n], sigma_x)) <= 1e-7 * max(1.0, abs(lp[n]))


def test_diagonal_noise_and_prior_scale(rng):
    gen = make_gen(rng, [1, 8, 5], "leaky_relu")
    sx = rng.uniform(0.05, 0.5, size=5)
    model = fastcpa.CPAModel(gen, sigma_x=sx, sigma_z=2.5)
    X = off_manifold(model, rng, 4, 10.0)
    lp = model.log_prob(X)
    for n in range(len(X)):
        assert abs(lp[n] - quad_log_prob(gen, X[n], sx, 2.5)) <= 1e-7 * max(1.0, abs(lp[n]))


@pytest.mark.parametrize("S", [1, 2, 3])
def test_affine_generator_is_probabilistic_pca(rng, S):
    """No hidden layer: p(x) = N(b, Sigma_x + sigma_z^2 A A^T) exactly."""
    D = 6
    A, b = rng.normal(size=(D, S)), rng.normal(size=D)
    gen = fastcpa.Generator([A], [b])
    model = fastcpa.CPAModel(gen, sigma_x=0.2, sigma_z=1.7)
    X = off_manifold(model, rng, 20, 30.0)
    cov = 0.04 * np.eye(D) + 1.7**2 * A @ A.T
    expected = scipy.stats.multivariate_normal(b, cov).logpdf(X)
    np.testing.assert_allclose(model.log_prob(X), expected, rtol=1e-10, atol=1e-10)
    post = model.posterior(X)
    Sigma = np.linalg.inv(np.eye(S) / 1.7**2 + A.T @ A / 0.04)
    np.testing.assert_allclose(post.cov, np.broadcast_to(Sigma, (20, S, S)), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(post.mean, (X - b) @ A @ Sigma.T / 0.04, rtol=1e-9, atol=1e-12)


def test_sklearn_ppca_score_samples(rng):
    sklearn = pytest.importorskip("sklearn.decomposition")
    D, S = 8, 2
    data = rng.normal(size=(500, S)) @ rng.normal(size=(S, D)) * 3 + rng.normal(size=(500, D)) * 0.5
    pca = sklearn.PCA(n_components=S).fit(data)
    W = pca.components_.T * np.sqrt(pca.explained_variance_ - pca.noise_variance_)
    model = fastcpa.CPAModel(fastcpa.Generator([W], [pca.mean_]), sigma_x=math.sqrt(pca.noise_variance_))
    X = np.vstack([data[:20], data[:5] + 40.0])
    np.testing.assert_allclose(model.log_prob(X), pca.score_samples(X), rtol=1e-10)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "abs"])
def test_posterior_against_quadrature(rng, activation):
    gen = make_gen(rng, [1, 10, 6, 4], activation)
    model = fastcpa.CPAModel(gen, sigma_x=0.05)
    X = np.vstack([model.sample(2, seed=rng), off_manifold(model, rng, 2, 15.0)])
    post = model.posterior(X)
    np.testing.assert_allclose(post.log_prob, model.log_prob(X), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(post.region_probs.sum(axis=1), 1.0, rtol=0, atol=model.partition.n_regions * 1e-15)
    for n in range(len(X)):
        mean, var = quad_posterior_moments(gen, X[n], 0.05)
        sd = math.sqrt(var)
        assert abs(post.mean[n, 0] - mean) <= 1e-7 * sd
        assert abs(post.cov[n, 0, 0] - var) <= 1e-6 * var
    # the density integrates to 1 (it is discontinuous at region boundaries: fine grid)
    dens = np.exp(post.log_density(np.broadcast_to(Z_GRID[None, :, None], (len(X), len(Z_GRID), 1))))
    np.testing.assert_allclose(scipy.integrate.trapezoid(dens, x=Z_GRID, axis=1), 1.0, atol=1e-6)


def test_posterior_samples_match_moments(rng):
    gen = make_gen(rng, [1, 12, 3], "relu")
    model = fastcpa.CPAModel(gen, sigma_x=0.4)  # broad, multi-region posterior
    X = model.sample(3, seed=rng)
    post = model.posterior(X)
    k = 40000
    Z = post.sample(k, seed=7)
    assert Z.shape == (3, k, 1)
    for n in range(3):
        sd = math.sqrt(post.cov[n, 0, 0])
        assert abs(Z[n, :, 0].mean() - post.mean[n, 0]) <= 5 * sd / math.sqrt(k)
        # standard error of a sample variance ~ var * sqrt(2 / k) (plus kurtosis; 6 se is generous)
        assert abs(Z[n, :, 0].var() - sd**2) <= 6 * sd**2 * math.sqrt(2.0 / k) * 2


def test_p_of_x_integrates_to_one_in_2d():
    rng = np.random.default_rng(3)
    gen = make_gen(rng, [1, 6, 2], "leaky_relu")
    model = fastcpa.CPAModel(gen, sigma_x=0.25)
    Zs = rng.normal(size=(20000, 1)) * 6
    G = gen(Zs)
    lo, hi = G.min(0) - 3.0, G.max(0) + 3.0  # support: 12 noise sd around g(+-6 sd)
    xs = [np.linspace(lo[d], hi[d], 601) for d in range(2)]
    XX = np.stack(np.meshgrid(*xs, indexing="ij"), axis=-1).reshape(-1, 2)
    p = np.exp(model.log_prob(XX)).reshape(601, 601)
    total = scipy.integrate.simpson(scipy.integrate.simpson(p, x=xs[1], axis=1), x=xs[0])
    assert abs(total - 1.0) <= 1e-6


def test_marginal_moments_against_quadrature(rng):
    gen = make_gen(rng, [1, 8, 6, 3], "abs")
    model = fastcpa.CPAModel(gen, sigma_x=0.1, sigma_z=1.3)
    mean, cov = model.marginal_moments()
    G = gen(Z_GRID[:, None])
    w = scipy.stats.norm(0, 1.3).pdf(Z_GRID)
    m_q = scipy.integrate.simpson(w[:, None] * G, x=Z_GRID, axis=0)
    d = G - m_q
    c_q = scipy.integrate.simpson(w[:, None, None] * d[:, :, None] * d[:, None, :], x=Z_GRID, axis=0)
    np.testing.assert_allclose(mean, m_q, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(cov, c_q + 0.01 * np.eye(3), rtol=1e-8, atol=1e-9)


def test_pruning_is_certified(rng):
    gen = make_gen(rng, [1, 64, 64, 8], "relu")
    model = fastcpa.CPAModel(gen, sigma_x=0.01)
    X = off_manifold(model, rng, 50, 5.0)
    exact = model.log_prob(X, prune=False)
    assert model.last_pairs_skipped_ == 0
    pruned = model.log_prob(X, region_chunk=37, sample_chunk=16)
    assert model.last_pairs_skipped_ > 0
    bound = math.log1p(model.partition.n_regions * math.exp(-fastcpa.model.PRUNE_GAP))
    assert np.all(pruned <= exact + 1e-12) and np.all(exact - pruned <= bound + 1e-12)


def test_bad_input(rng):
    gen = make_gen(rng, [1, 4, 3])
    with pytest.raises(ValueError, match="sigma_x must be > 0"):
        fastcpa.CPAModel(gen, sigma_x=0.0)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        fastcpa.CPAModel(gen, sigma_x=[0.1, 0.2])
    with pytest.raises(ValueError, match="sigma_z must be a positive scalar"):
        fastcpa.CPAModel(gen, sigma_x=0.1, sigma_z=-1.0)
    with pytest.raises(TypeError, match="fastcpa.Generator"):
        fastcpa.CPAModel("net", sigma_x=0.1)
    model = fastcpa.CPAModel(gen, sigma_x=0.1)
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        model.log_prob(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"X\[None, :\]"):
        model.log_prob(np.zeros(3))
    with pytest.raises(ValueError, match="NaN or inf"):
        model.log_prob(np.array([[0.0, np.nan, 1.0]]))
    with pytest.raises(NotImplementedError, match="no GPU kernels"):
        model.log_prob(np.zeros((1, 3)), backend="gpu")


def test_three_dimensional_latent_not_yet_silent(rng):
    gen = make_gen(rng, [3, 5, 3])
    with pytest.raises(NotImplementedError, match="latent dimension 1 and 2"):
        fastcpa.CPAModel(gen, sigma_x=0.1).log_prob(np.zeros((1, 3)))
