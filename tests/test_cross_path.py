"""Cross-path consistency and independent oracles for ``CPAModel``.

Cross-path (no oracle): each (sample, region) pair's weight in ``posterior().region_probs``
equals ``exp(log kappa + log Phi - log p)`` rebuilt from the public pieces: the region's
map ``(A_r, b_r)`` (``Partition.A``, ``.b``), its Gaussian ``(mu_r, Sigma_r)`` formed here in
numpy, and its mass from ``fastcpa.interval_moments`` (S = 1, ``Partition.intervals``) or
``fastcpa.polygon_moments`` (S = 2, ``Partition.facets``); the posterior mean equals the
weighted truncated means; ``log_prob == posterior().log_prob == sufficient_stats().log_likelihood``;
region probabilities sum to 1 and ``T0`` to N within 1e-12.

Oracles (``tests/oracles.py``, no fastcpa inside): S = 1 mpmath closed form per exact
piece (30 digits) and converged latent quadrature (S = 1, 2) with its own error
estimate; the tolerance is ``max(4 err_oracle, C eps (|x| |grad| + |log p|))``.
"""

import math

import numpy as np
from mpmath import mp
import pytest
import scipy.stats

import fastcpa
from oracles import cpa_forward, linear_log_prob_mp, log_prob_mp_1d, log_prob_quad
from test_metamorphic import EPS, random_case, residual_scale

C = 32.0


def region_terms(model, x, regions):
    """log kappa_r(x) + log Phi_r(x), the truncated means, for the given regions (numpy + public API)."""
    part = model.partition
    S, D = part.latent_dim, part.output_dim
    var = np.broadcast_to(np.asarray(model.sigma_x, float) ** 2, (D,))
    out, means = [], []
    for r in regions:
        A, b = part.A[r], part.b[r]
        # the region's Gaussian at 40 digits, then rounded (in float64, mu carries
        # the rounding of A^T (x - b) amplified by cond(Lambda))
        with mp.workdps(40):
            Am, Vi = mp.matrix(A.tolist()), mp.diag([1 / mp.mpf(float(v)) for v in var])
            Sm = (mp.eye(S) / mp.mpf(float(model.sigma_z)) ** 2 + Am.T * Vi * Am) ** -1
            mm = Sm * (Am.T * Vi * (mp.matrix(x.tolist()) - mp.matrix(b.tolist())))
            Sig = np.array([[float(Sm[i, j]) for j in range(S)] for i in range(S)])
            Sig = 0.5 * (Sig + Sig.T)
            mu = np.array([float(mm[i]) for i in range(S)])
        lk = float(linear_log_prob_mp(A, b, x, np.sqrt(var), model.sigma_z)[0])  # 40 digits
        if S == 1:
            lo, hi = part.intervals[r]
            res = fastcpa.interval_moments(lo, hi, mu[0], math.sqrt(Sig[0, 0]))
            lphi, m = float(res.log_mass), np.array([float(res.mean)])
        else:
            n, o = part.facets(r)[:2]
            if len(n) == 0:
                lphi, m = 0.0, mu
            else:
                res = fastcpa.polygon_moments(n, o, mu, Sig)
                lphi, m = float(res.log_mass), np.asarray(res.mean)
        out.append(lk + lphi)
        means.append(m)
    return np.array(out), np.array(means)


TERM_CASES = [(S, seed) for seed in range(4) for S in (1, 2)]


@pytest.mark.parametrize("S,seed", TERM_CASES)
def test_region_terms_match_public_integrals(S, seed):
    rng = np.random.default_rng(100 + seed)
    case = random_case(rng, S, "ordinary", n_points=3)
    model = case.model()
    post = model.posterior(case.X)
    lp = model.log_prob(case.X)
    P = post.region_probs.toarray()
    for n, x in enumerate(case.X):
        regs = np.flatnonzero(P[n] > 0)
        terms, means = region_terms(model, x, regs)
        prob = np.exp(terms - lp[n])
        # each term is a different formula for the same quantity: rounding of order
        # eps (|x - b|^2 / sigma^2 + |log p|) in the exponent
        r, g, xn = residual_scale(case)
        sig = float(np.min(case.sigma_x))
        tol_log = C * EPS * ((xn[n] + g[n]) * (r[n] + sig) / sig**2 + abs(lp[n]) + 10)
        np.testing.assert_allclose(prob, P[n, regs], rtol=tol_log, atol=1e-15, err_msg=case.desc)
        mean = (prob[:, None] * means).sum(0) / prob.sum()
        sd = np.sqrt(np.max(np.diag(post.cov[n])))
        assert np.all(np.abs(mean - post.mean[n]) <= 1e-9 * (np.abs(mean) + sd)), (mean, post.mean[n], case.desc)


@pytest.mark.parametrize("S", [1, 2])
@pytest.mark.parametrize("seed", range(4))
def test_paths_agree(S, seed):
    rng = np.random.default_rng(200 + seed)
    case = random_case(rng, S, "ordinary", n_points=4)
    model = case.model()
    lp = model.log_prob(case.X)
    post = model.posterior(case.X)
    stats = model.sufficient_stats(case.X)
    R = model.partition.n_regions
    tol = C * EPS * (np.abs(lp) + 1) + R * math.exp(-40)
    assert np.all(np.abs(post.log_prob - lp) <= tol), (post.log_prob - lp, case.desc)
    assert abs(stats.log_likelihood - lp.sum()) <= tol.sum(), (stats.log_likelihood - lp.sum(), case.desc)
    sums = np.asarray(post.region_probs.sum(axis=1)).ravel()
    assert np.all(np.abs(sums - 1) <= 1e-12 + R * fastcpa.model.MIN_REGION_PROB), (sums, case.desc)
    assert abs(stats.T0.sum() - len(case.X)) <= 1e-12 * len(case.X) + len(case.X) * R * math.exp(-40), case.desc


# --------------------------------------------------------------------------- oracles
def test_oracle_on_linear_closed_form():
    """The quadrature oracle itself against the affine closed form (S = 1, 2), with its stated error."""
    from oracles import linear_log_prob_mp

    rng = np.random.default_rng(7)
    for S in (1, 2):
        A, b, x = rng.normal(size=(3, S)), rng.normal(size=3), rng.normal(size=3) * 3
        ref, mref = linear_log_prob_mp(A, b, x, 0.3, 1.2)
        lp, err, mean = log_prob_quad([A], [b], [], x, 0.3, 1.2)
        assert abs(lp - float(ref)) <= max(err, 4 * EPS * abs(lp)), (S, lp, float(ref), err)
        assert err <= 1e-11
        np.testing.assert_allclose(mean, [float(v) for v in mref], rtol=1e-10)


def test_oracles_agree_s1():
    """Quadrature (float64) and the 30-digit closed form agree within the quadrature's stated error."""
    rng = np.random.default_rng(8)
    for k in (0.0, 30.0):
        case = random_case(rng, 1, "ordinary", n_points=1, depth=2)
        x = case.X[0] + k * np.max(case.sigma_x)
        q, err, _ = log_prob_quad(case.weights, case.biases, case.slopes(), x, case.sigma_x, case.sigma_z)
        m = float(log_prob_mp_1d(case.weights, case.biases, case.slopes(), x, case.sigma_x, case.sigma_z)[0])
        assert abs(q - m) <= max(err, 4 * EPS * abs(m)), (q, m, err)


def _compare(case, x, ref_lp, ref_err, ref_mean, what):
    model = case.model()
    lp = float(model.log_prob(x[None])[0])
    post = model.posterior(x[None])
    sig = float(np.min(case.sigma_x))
    g = cpa_forward(case.weights, case.biases, case.slopes(), post.mean)[0]
    grad = (np.linalg.norm(x - g) + math.sqrt(case.D) * sig) / sig**2
    tol = max(4 * ref_err, C * EPS * (np.linalg.norm(x) * grad + abs(ref_lp) + case.D * 10))
    assert abs(lp - ref_lp) <= tol, f"{what}: log p {lp!r} vs {ref_lp!r} (err {abs(lp - ref_lp):.3g}, tol {tol:.3g}); {case.desc}; x={x.tolist()}"
    sd = math.sqrt(float(np.max(np.diag(post.cov[0]))))
    assert np.all(np.abs(post.mean[0] - ref_mean) <= 1e-8 * (np.abs(ref_mean) + sd)), (what, post.mean[0], ref_mean)


@pytest.mark.parametrize("k", [0.0, 5.0, 15.0, 30.0, 1e3])
@pytest.mark.parametrize("seed", range(3))
def test_s1_against_mpmath(seed, k):
    rng = np.random.default_rng(300 + seed)
    case = random_case(rng, 1, "ordinary", n_points=1, depth=int(rng.integers(1, 4)))
    u = rng.normal(size=case.D)
    x = case.X[0] + k * np.max(case.sigma_x) * u / np.linalg.norm(u)
    lp, mean, _ = log_prob_mp_1d(case.weights, case.biases, case.slopes(), x, case.sigma_x, case.sigma_z)
    _compare(case, x, float(lp), 0.0, np.array([float(mean)]), f"S=1 mpmath k={k}")


@pytest.mark.parametrize("sx", [1e-4, 1e-3, 1e2, 1e3])
def test_s1_tiny_and_huge_noise(sx):
    rng = np.random.default_rng(int(1e4 * sx) % 997)
    case = random_case(rng, 1, "ordinary", n_points=1, depth=2)
    case.sigma_x = sx
    x = cpa_forward(case.weights, case.biases, case.slopes(), rng.normal(size=(1, 1)))[0] + sx * rng.normal(size=case.D)
    lp, mean, _ = log_prob_mp_1d(case.weights, case.biases, case.slopes(), x, sx, case.sigma_z)
    _compare(case, x, float(lp), 0.0, np.array([float(mean)]), f"S=1 sigma_x={sx}")


@pytest.mark.parametrize("k", [0.0, 5.0, 30.0])
@pytest.mark.parametrize("seed", range(2))
def test_s2_against_quadrature(seed, k):
    rng = np.random.default_rng(400 + seed)
    case = random_case(rng, 2, "ordinary", n_points=1, depth=1, D=3)
    u = rng.normal(size=case.D)
    x = case.X[0] + k * np.max(case.sigma_x) * u / np.linalg.norm(u)
    lp, err, mean = log_prob_quad(case.weights, case.biases, case.slopes(), x, case.sigma_x, case.sigma_z, tol=1e-11)
    _compare(case, x, lp, err, mean, f"S=2 quadrature k={k}")


def _repro():
    """The outside review's S = 2 reproducer (a 2-16-8-3 leaky-ReLU net and a point where a region's
    mass was wrong), kept with the tests."""
    import os

    return np.load(os.path.join(os.path.dirname(__file__), "data", "s2_region_mass.npz"))


def test_s2_region_mass_reproducer():
    """The shared reproducer: exact log p = -0.3534662 (converged quadrature, 7 digits)."""
    d = _repro()
    gen = fastcpa.Generator([d["W0"], d["W1"], d["W2"]], [d["b0"], d["b1"], d["b2"]], activation="leaky_relu",
                            slope=float(d["slope"]))
    model = fastcpa.CPAModel(gen, sigma_x=float(d["sigma_x"]), sigma_z=float(d["sigma_z"]))
    assert abs(float(model.log_prob(d["x"][None])[0]) - (-0.3534662)) <= 6e-8


@pytest.mark.slow
def test_s2_region_mass_reproducer_full_precision():
    """The reproducer against this suite's own quadrature at 1e-11 (about 40 s)."""
    d = _repro()
    Ws, cs = [d["W0"], d["W1"], d["W2"]], [d["b0"], d["b1"], d["b2"]]
    sl = [np.full(16, float(d["slope"])), np.full(8, float(d["slope"]))]
    lp, err, mean = log_prob_quad(Ws, cs, sl, d["x"], float(d["sigma_x"]), float(d["sigma_z"]), tol=1e-11)
    gen = fastcpa.Generator(Ws, cs, activation="leaky_relu", slope=float(d["slope"]))
    model = fastcpa.CPAModel(gen, sigma_x=float(d["sigma_x"]), sigma_z=float(d["sigma_z"]))
    got = float(model.log_prob(d["x"][None])[0])
    assert abs(got - lp) <= max(4 * err, 1e-12), (got, lp, err)
    np.testing.assert_allclose(model.posterior(d["x"][None]).mean[0], mean, rtol=1e-8)
