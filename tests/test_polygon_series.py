"""The moment-series rule for small S = 2 polygons (``kernels._polygon_series``) against
mpmath, and its refusals where its proven bound is too loose."""

import math

import numpy as np
import pytest

from oracles import polygon_from_vertices, polygon_moments_mp


def _series(verts, Lt, mu):
    """(ser[0], log-mass, mean, cov) of one polygon by the kernels' series path."""
    from fastcpa.kernels.cpu import pairs

    k = len(verts)
    B = np.c_[verts, np.ones(k)]
    ptr = np.array([0, k], dtype=np.int64)
    SC = np.empty((1, pairs.SERIES_COLS))
    SM = np.empty(pairs.SERIES_WIDTH)
    pairs.series_tables(ptr, B, np.array([Lt], float), SC, SM)
    ser = np.empty(8)
    pw = np.empty(pairs.SERIES_SCRATCH)
    if not SC[0, 10] <= pairs.SERIES_H:
        return 0, None, None, None
    lm = pairs._series_term(SC, SM, 0, np.array(mu, float), True, ser, pw, np.inf, np.inf)
    if lm != lm:
        return 0, None, None, None
    mean = ser[1:3].copy()
    cov = np.array([[ser[3], ser[4]], [ser[4], ser[5]]])
    return int(ser[0]), lm, mean, cov


def _random_case(rng):
    k = int(rng.integers(3, 8))
    ang = np.sort(rng.uniform(0, 2 * np.pi, k))
    verts = np.c_[np.cos(ang), np.sin(ang) * 10 ** rng.uniform(-2, 0)]  # some thin
    th = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    size = 10 ** rng.uniform(-3, 0.5)
    verts = (verts @ rot.T) * size + rng.normal(size=2) * 10 ** rng.uniform(-1, 1)
    # a precision factor L^T = [[l11, l21], [0, l22]], sd from 0.03 to 3
    l11, l22 = 10 ** rng.uniform(-0.5, 1.5, 2)
    l21 = rng.normal() * min(l11, l22)
    mu = verts.mean(axis=0) + rng.normal(size=2) * 10 ** rng.uniform(-1.5, 0.5) / min(l11, l22)
    return verts, (l11, l21, l22), mu


def test_series_rule_against_mpmath():
    """Random convex polygons (some 100x thinner than long, 1e-3 to 3 across), random
    posterior precisions and means about them: wherever the rule serves, the log-mass
    agrees with 30-digit mpmath to 1e-13, the mean to 1e-13 of the truncated law's sd (and
    its own rounding) and
    the covariance to 1e-12 relative in its own metric (``|C^-1/2 E C^-1/2|``; its
    proven bounds are 1e-12 and 1e-10); and it serves most cases, thin ones and means several sd away included."""
    rng = np.random.default_rng(20261207)
    served = moments = thin = far = 0
    for _ in range(60):
        verts, Lt, mu = _random_case(rng)
        flag, lm, mean, cov = _series(verts, Lt, mu)
        if flag == 0:
            continue
        served += 1
        L = np.array([[Lt[0], 0.0], [Lt[1], Lt[2]]])
        Sigma = np.linalg.inv(L @ L.T)
        Sigma = 0.5 * (Sigma + Sigma.T)
        N, O = polygon_from_vertices(verts)
        ref_lm, ref_mean, ref_cov = polygon_moments_mp(N, O, mu, Sigma, dps=30)
        assert abs(lm - float(ref_lm)) <= 1e-13 * max(1.0, abs(float(ref_lm)))
        if flag != 1:
            continue
        moments += 1
        C = np.array([[float(ref_cov[i, j]) for j in range(2)] for i in range(2)])
        ev = np.linalg.eigvalsh(C)
        thin += ev[0] < 1e-3 * ev[1]
        far += np.linalg.norm(L.T @ (mu - verts.mean(axis=0))) > 3.0
        m = np.array([float(ref_mean[0]), float(ref_mean[1])])
        # (plus the mean's own representation: a law 1e-3 sd wide at z = 1.6)
        assert np.abs(mean - m).max() <= 1e-13 * math.sqrt(np.trace(C)) + 4 * 2.2e-16 * np.abs(m).max()
        # relative in the covariance's own metric: |C^-1/2 (cov - C) C^-1/2|, plus what
        # storing it in z's coordinates implies: each entry rounded at eps of the largest,
        # u cond(C) in that metric (a thin polygon turned off the axes: up to 5e5 here)
        w, V = np.linalg.eigh(C)
        Ci = V @ np.diag(w**-0.5) @ V.T
        assert np.linalg.norm(Ci @ (cov - C) @ Ci, 2) <= 1e-12 + 4 * 1.1e-16 * w[1] / w[0]
    assert served >= 20 and moments >= 16 and thin >= 3 and far >= 2, (served, moments, thin, far)


def test_series_rule_refuses_beyond_its_bound():
    """A polygon 2 sd across whose Gaussian's mean lies 12 sd away (rho far beyond the
    series' reach), and one wider than ``SERIES_H``, are left to the edge formulas."""
    from fastcpa.kernels.cpu import pairs

    tri = np.array([[0.0, 0.0], [0.6, 0.0], [0.0, 0.6]])
    assert _series(tri, (1.0, 0.0, 1.0), [0.2, 0.2])[0] == 1
    assert _series(tri, (1.0, 0.0, 1.0), [12.0, 0.2])[0] == 0
    big = tri * (4.0 * pairs.SERIES_H)
    assert _series(big, (1.0, 0.0, 1.0), [0.5, 0.5])[0] == 0


@pytest.mark.parametrize("sigma_x", [0.3, 0.02])
def test_series_and_edge_formulas_agree_in_a_model(sigma_x):
    """A ReLU S = 2 net's log p and E-step statistics with the series rule on and off
    (every region's table marked unserved): the same to 1e-13 (log p) and 1e-12
    (statistics, relative to their largest entry)."""
    import fastcpa

    rng = np.random.default_rng(5)
    W = [rng.normal(size=(24, 2)), rng.normal(size=(24, 24)) / 5, rng.normal(size=(6, 24)) / 5]
    c = [rng.normal(size=24), rng.normal(size=24) / 5, np.zeros(6)]
    gen = fastcpa.Generator(W, c)
    X = fastcpa.CPAModel(gen, sigma_x=sigma_x).sample(40, seed=1)
    on = fastcpa.CPAModel(gen, sigma_x=sigma_x)
    off = fastcpa.CPAModel(gen, sigma_x=sigma_x)
    p = off._region_params()
    assert (p["SC"][:, 10] <= 1.0).mean() > 0.05  # the rule has regions to serve
    p["SC"][:, 10] = np.inf
    np.testing.assert_allclose(on.log_prob(X), off.log_prob(X), rtol=0, atol=1e-13)
    a, b = on.sufficient_stats(X), off.sufficient_stats(X)
    for k in ("T0", "T1", "T2", "Tx", "Txz"):
        x, y = getattr(a, k), getattr(b, k)
        assert np.abs(x - y).max() <= 1e-12 * np.abs(y).max(), k


def test_light_pairs_moments_keep_each_samples_posterior():
    """The E-step widens the moment tolerances of pairs light in their sample's posterior
    (``pairs._SLACK_WEIGHT``): summed over regions its statistics still give every sample's
    posterior mean and second moment as ``posterior`` computes them (every pair on the
    strict path), to 1e-11 of their scale, in the dense regime where most pairs are light."""
    import fastcpa
    from fastcpa.kernels.cpu import pairs

    rng = np.random.default_rng(11)
    W = [rng.normal(size=(24, 2)), rng.normal(size=(24, 24)) / 4, rng.normal(size=(6, 24)) / 4]
    c = [rng.normal(size=24), rng.normal(size=24) / 4, np.zeros(6)]
    model = fastcpa.CPAModel(fastcpa.Generator(W, c), sigma_x=0.5)
    X = model.sample(30, seed=3)
    X[15:] += 3.0 * rng.normal(size=(15, 6))  # and off the manifold
    st = model.sufficient_stats(X)
    post = model.posterior(X)
    P = np.asarray(post.region_probs.todense()) if hasattr(post.region_probs, "todense") else post.region_probs
    assert np.mean((P > 0) & (P < pairs._SLACK_WEIGHT)) > 0.2  # light pairs are common here
    scale = 1.0 + np.abs(post.mean).max()
    second = post.cov + post.mean[:, :, None] * post.mean[:, None, :]
    assert np.abs(st.T1.sum(0) - post.mean.sum(0)).max() <= 1e-11 * len(X) * scale
    assert np.abs(st.T2.sum(0) - second.sum(0)).max() <= 1e-11 * len(X) * scale**2
    assert np.abs(st.Txz.sum(0) - X.T @ post.mean).max() <= 1e-11 * np.abs(X).sum() * scale


@pytest.mark.parametrize("weight", [1e-4, 1e-6, 1e-9, 1e-14])
def test_light_pair_series_error_is_relative_to_its_weight(weight):
    """A small polygon whose Gaussian lies 12 sd away: the full-accuracy series refuses it
    (``e^rho`` in its rounding bound, rho = 5.9). Told (``lw``) that the pair weighs
    ``weight`` in its sample's posterior, it serves from ``weight`` 1e-9 down (at 1e-6 the
    degree its tolerance needs is beyond ``SERIES_K``), and wherever it serves its log-mass
    against 30-digit mpmath errs by at most ``_SLACK_SHARE * SERIES_MASS_TOL / weight``
    relative: the pair's weight errs by at most 1e-15."""
    from fastcpa.kernels.cpu import pairs

    tri = np.array([[0.0, 0.0], [0.6, 0.0], [0.0, 0.6]])
    Lt, mu = (1.0, 0.0, 1.0), np.array([12.0, 0.2])
    N, O = polygon_from_vertices(tri)
    ref = float(polygon_moments_mp(N, O, mu, np.eye(2), dps=30)[0])
    B = np.c_[tri, np.ones(3)]
    SC = np.empty((1, pairs.SERIES_COLS))
    SM = np.empty(pairs.SERIES_WIDTH)
    pairs.series_tables(np.array([0, 3], dtype=np.int64), B, np.array([Lt], float), SC, SM)
    ser = np.empty(8)
    pw = np.empty(pairs.SERIES_SCRATCH)
    assert np.isnan(pairs._series_term(SC, SM, 0, mu, False, ser, pw, np.inf, np.inf))
    lm = pairs._series_term(SC, SM, 0, mu, True, ser, pw, math.log(weight) - ref, math.log(weight) - ref)
    if np.isnan(lm):
        assert weight > 1e-9
        return
    assert ser[0] >= 1.0
    rel = abs(math.expm1(lm - ref))
    assert weight * rel <= pairs._SLACK_SHARE * pairs.SERIES_MASS_TOL, rel


@pytest.mark.parametrize("weight", [1e-5, 1e-9])
def test_light_pair_moments_within_their_widened_tolerance(weight):
    """Told (``mlw``) that a pair weighs ``weight`` in its sample's posterior, the series
    sums the moments' derivatives only to the degree their widened tolerance
    (``SERIES_COV_TOL * _SLACK_WEIGHT / weight``) needs, and the mass stays the
    full-accuracy one (bit for bit). Against 30-digit mpmath on random polygons the
    covariance then errs by at most that tolerance in its own metric and the mean by
    that many of its sd, and the cheap degree is in use (the moments differ from the
    full-accuracy ones in some cases)."""
    from fastcpa.kernels.cpu import pairs

    rng = np.random.default_rng(7)
    tol = pairs.SERIES_COV_TOL * pairs._SLACK_WEIGHT / weight
    served = differ = 0
    for _ in range(40):
        verts, Lt, mu = _random_case(rng)
        k = len(verts)
        B = np.c_[verts, np.ones(k)]
        SC = np.empty((1, pairs.SERIES_COLS))
        SM = np.empty(pairs.SERIES_WIDTH)
        pairs.series_tables(np.array([0, k], dtype=np.int64), B, np.array([Lt], float), SC, SM)
        if not SC[0, 10] <= pairs.SERIES_H:
            continue
        ser = np.empty(8)
        pw = np.empty(pairs.SERIES_SCRATCH)
        mu = np.asarray(mu, float)
        full = pairs._series_term(SC, SM, 0, mu, True, ser, pw, np.inf, np.inf)
        if full != full or ser[0] != 1.0:
            continue
        full_moments = ser[1:6].copy()
        lm = pairs._series_term(SC, SM, 0, mu, True, ser, pw, np.inf, math.log(weight) - full)
        assert lm == full  # the mass does not change
        assert ser[0] == 1.0  # where the full accuracy serves, a wider tolerance does
        served += 1
        differ += not np.array_equal(full_moments, ser[1:6])
        L = np.array([[Lt[0], 0.0], [Lt[1], Lt[2]]])
        Sigma = np.linalg.inv(L @ L.T)
        N, O = polygon_from_vertices(verts)
        _, ref_mean, ref_cov = polygon_moments_mp(N, O, mu, 0.5 * (Sigma + Sigma.T), dps=30)
        C = np.array([[float(ref_cov[i, j]) for j in range(2)] for i in range(2)])
        m = np.array([float(ref_mean[0]), float(ref_mean[1])])
        cov = np.array([[ser[3], ser[4]], [ser[4], ser[5]]])
        w, V = np.linalg.eigh(C)
        Ci = V @ np.diag(w**-0.5) @ V.T
        assert np.linalg.norm(Ci @ (cov - C) @ Ci, 2) <= tol
        assert np.linalg.norm(Ci @ (ser[1:3] - m)) <= tol + 4 * 2.2e-16 * np.abs(m).max() / math.sqrt(w[0])
    assert served >= 15 and differ >= 5, (served, differ)
