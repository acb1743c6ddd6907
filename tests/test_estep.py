"""E-step sufficient statistics against oracles that do not use the pair kernels' region algebra.

* S = 1: per-region integrals of ``p(x, z) {1, z, z^2}`` by adaptive quadrature over each
  region's interval, with ``p(x | z)`` from the generator's forward pass (not the region maps),
  so the weights, moments, residuals and Q are checked region by region.
* S = 1 and S = 2: the statistics summed over regions equal the posterior's mixture moments
  (a different reduction of the same posterior), and the weights of each sample sum to 1.
"""

import math

import numpy as np
import pytest
import scipy.integrate

import fastcpa
from reference import init_layers


def make_model(rng, sizes, activation, sigma_x, slope=0.1):
    Ws, cs = init_layers(rng, sizes, scale="normal")
    return fastcpa.CPAModel(fastcpa.Generator(Ws, cs, activation=activation, slope=slope), sigma_x=sigma_x)


def samples(model, rng, n, k_sigmas):
    """Samples from the model, the second half pushed ``k`` noise sd off the manifold."""
    X = model.sample(n, seed=rng)
    u = rng.normal(size=X.shape)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    X[n // 2:] += k_sigmas * np.max(model.sigma_x) * u[n // 2:]
    return X


def quadrature_stats(model, X):
    """Per-region (T0, T1, T2, Tx, Txz, residual) for S = 1 by scipy.integrate.quad of the joint
    density from the forward pass, scaled per sample by its peak over a fine grid."""
    gen, var = model.generator, np.broadcast_to(np.asarray(model.sigma_x, float) ** 2, (model.generator.output_dim,))
    iv = model.partition.intervals
    R, D = len(iv), gen.output_dim
    out = {k: np.zeros(s) for k, s in dict(T0=R, T1=R, T2=R, Tx=(R, D), Txz=(R, D), res=D).items()}
    zg = np.linspace(-12, 12, 24001)
    for x in X:
        def log_joint(z):
            g = gen(np.atleast_1d(z)[:, None])
            return (-0.5 * (((x - g) ** 2 / var).sum(1) + np.log(2 * np.pi * var).sum())
                    - 0.5 * (np.atleast_1d(z) ** 2 + math.log(2 * math.pi)))
        top = log_joint(zg).max()
        zpk = zg[np.argmax(log_joint(zg))]

        def integral(f, lo, hi):
            pts = [p for p in (zpk,) if lo < p < hi] if (np.isfinite(lo) and np.isfinite(hi)) else None
            val, _ = scipy.integrate.quad(lambda z: f(z) * math.exp(log_joint(z)[0] - top), lo, hi, points=pts,
                                          epsabs=0.0, epsrel=1e-12, limit=400)
            return val

        per = np.array([[integral(lambda z, k=k: z**k, lo, hi) for k in range(3)] for lo, hi in iv])
        res = np.array([[integral(lambda z, d=d: (x[d] - gen(np.array([[z]]))[0, d]) ** 2, lo, hi) for d in range(D)]
                        for lo, hi in iv])
        px = per[:, 0].sum()
        w = per / px
        out["T0"] += w[:, 0]
        out["T1"] += w[:, 1]
        out["T2"] += w[:, 2]
        out["Tx"] += w[:, :1] * x
        out["Txz"] += w[:, 1:2] * x
        out["res"] += res.sum(0) / px
    return out


@pytest.mark.parametrize("activation,sizes", [("relu", [1, 6, 2]), ("leaky_relu", [1, 5, 4, 3]), ("abs", [1, 4, 3, 2])])
@pytest.mark.parametrize("sigma_x", [0.05, 0.4])
def test_stats_against_quadrature_s1(rng, activation, sizes, sigma_x):
    model = make_model(rng, sizes, activation, sigma_x)
    X = samples(model, rng, 4, 15.0)
    st = model.sufficient_stats(X)
    ref = quadrature_stats(model, X)
    scale = max(1.0, np.abs(X).max())
    np.testing.assert_allclose(st.T0, ref["T0"], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(st.T1, ref["T1"][:, None], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(st.T2, ref["T2"][:, None, None], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(st.Tx, ref["Tx"], rtol=1e-7, atol=1e-9 * scale)
    np.testing.assert_allclose(st.Txz, ref["Txz"][:, :, None], rtol=1e-7, atol=1e-9 * scale)
    part = model.partition
    res = st.squared_residuals(part.A, part.b)
    np.testing.assert_allclose(res, ref["res"], rtol=1e-6, atol=1e-9 * scale**2)
    # Q = E[log p(x, z)] from the statistics, against the same quadrature's residuals
    var = np.full(model.generator.output_dim, sigma_x**2)
    q_ref = (-0.5 * np.sum(ref["res"] / var) - 0.5 * len(X) * np.log(2 * np.pi * var).sum()
             - 0.5 * ref["T2"].sum() - 0.5 * len(X) * math.log(2 * math.pi))
    q = st.expected_complete_log_likelihood(part.A, part.b, var, 1.0)
    assert abs(q - q_ref) <= 1e-6 * abs(q_ref)


@pytest.mark.parametrize("S,activation,sizes", [(1, "relu", [1, 16, 16, 8]), (2, "leaky_relu", [2, 8, 6, 5]),
                                                (2, "abs", [2, 6, 4])])
@pytest.mark.parametrize("sigma_x", [0.02, 0.3])
def test_stats_sum_to_the_posterior_mixture(rng, S, activation, sizes, sigma_x):
    """Summed over regions, the statistics are the posterior mixture's moments of every sample
    (its region weights sum to 1), including samples 30 sd off the manifold."""
    model = make_model(rng, sizes, activation, sigma_x)
    X = samples(model, rng, 12, 30.0)
    st = model.sufficient_stats(X, region_chunk=7, sample_chunk=5)  # several chunks each way
    post = model.posterior(X)
    N = len(X)
    assert abs(st.T0.sum() - N) <= 1e-12 * N
    assert abs(st.log_likelihood - model.log_prob(X).sum()) <= 1e-12 * abs(st.log_likelihood)
    scale = 1.0 + np.abs(post.mean).max()
    np.testing.assert_allclose(st.T1.sum(0), post.mean.sum(0), rtol=1e-9, atol=1e-11 * N * scale)
    second = post.cov + post.mean[:, :, None] * post.mean[:, None, :]
    np.testing.assert_allclose(st.T2.sum(0), second.sum(0), rtol=1e-9, atol=1e-11 * N * scale**2)
    np.testing.assert_allclose(st.Tx.sum(0), X.sum(0), rtol=1e-12, atol=1e-12 * np.abs(X).sum())
    np.testing.assert_allclose(st.Txz.sum(0), np.einsum("nd,ns->ds", X, post.mean), rtol=1e-9,
                               atol=1e-11 * np.abs(X).sum() * scale)
    np.testing.assert_allclose(st.xx, (X**2).sum(0), rtol=1e-14)
    # the sparse region probabilities are the per-sample weights behind T0
    np.testing.assert_allclose(st.T0, np.asarray(post.region_probs.sum(axis=0)).ravel(), rtol=1e-9, atol=1e-12 * N)


@pytest.mark.parametrize("sigma_x", [0.02, 0.3])
def test_s1_fused_kernel_matches_the_region_major_chunks(rng, sigma_x):
    """The S = 1 statistics (row blocks with the GEMM fused in) equal those of the generic
    region-major chunk kernel on the same likelihood rows, to a few ulps of each entry's scale;
    other chunkings (which move the likelihood pass's references, so each term's rounding, by
    eps |log kappa|: 2e-13 here, rows 30 sd off at sigma_x = 0.02) agree to 1e-12; and the
    result does not depend on the thread count at all."""
    from fastcpa import estep

    model = make_model(rng, [1, 12, 10, 6], "leaky_relu", sigma_x)
    X = samples(model, rng, 70, 30.0)
    rows = model._likelihood_rows(X)
    st = model.sufficient_stats(X)
    p = model._region_params()
    R, S, D = model.partition.n_regions, 1, model.generator.output_dim
    ref = [np.zeros(R), np.zeros((R, S)), np.zeros((R, S, S)), np.zeros((R, D)), np.zeros((R, D, S))]
    estep._statistics_chunks(model, X, p, *rows[1:], 40.0, 256, 1024, st.shift, *ref)
    for got, want in zip((st.T0, st.T1, st.T2, st.Tx_c, st.Txz_c), ref):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-14 * np.abs(want).max())
    _check_chunkings_and_threads(model, X, st, ((3, 5), (17, 1), (1000, 2)))


def _check_chunkings_and_threads(model, X, st, chunkings):
    """``model.sufficient_stats(X)`` under other (sample, region) chunkings agrees with ``st``
    to 1e-12 of each field's scale, and with one thread it is ``st`` to the bit."""
    import numba

    fields = ("T0", "T1", "T2", "Tx", "Txz")
    for sc, rc in chunkings:
        other = model.sufficient_stats(X, sample_chunk=sc, region_chunk=rc)
        for f in fields:
            want = getattr(st, f)
            np.testing.assert_allclose(getattr(other, f), want, rtol=0, atol=1e-12 * np.abs(want).max(), err_msg=f)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = model.sufficient_stats(X)
    finally:
        numba.set_num_threads(threads)
    for f in fields:
        assert np.array_equal(getattr(one, f), getattr(st, f)), f


@pytest.mark.parametrize("sigma_x", [0.02, 0.3])
@pytest.mark.parametrize("sizes", [[2, 8, 7, 5], [2, 5], [3, 4], [1, 12, 10, 6], [1, 4]])
def test_one_pass_statistics_match_the_two_passes(rng, sizes, sigma_x):
    """Without likelihood rows, the statistics are formed in the likelihood pass itself,
    keeping each pair's term and moments until its row's log p is
    known: the log p is the likelihood pass's own to the bit, the statistics equal the
    separate E-step's on those rows to rounding, under other chunkings too (small region
    chunks move the references mid-row, rows 30 sd off at sigma_x = 0.02), and do not
    depend on the thread count."""
    from fastcpa import estep

    activation = "leaky_relu" if len(sizes) > 2 else "linear"
    model = make_model(rng, sizes, activation, sigma_x)
    X = samples(model, rng, 60, 30.0)
    st, rows = estep._statistics_and_rows(model, X)
    plain = model._likelihood_rows(X)
    assert np.array_equal(rows[0], plain[0])
    two = estep.sufficient_statistics(model, X, likelihood_rows=plain)
    fields = ("T0", "T1", "T2", "Tx", "Txz")
    for f in fields:
        want = getattr(two, f)
        np.testing.assert_allclose(getattr(st, f), want, rtol=0, atol=1e-13 * np.abs(want).max(), err_msg=f)
    _check_chunkings_and_threads(model, X, st, ((7, 3), (1, 1000)))


def test_leaving_out_negligible_pairs_changes_nothing(rng):
    """``gap`` leaves out pairs below exp(-gap) of a sample's likelihood: the statistics agree with
    those of every pair within that bound."""
    model = make_model(rng, [1, 24, 24, 6], "relu", 0.03)
    X = samples(model, rng, 20, 5.0)
    a = model.sufficient_stats(X)
    b = model.sufficient_stats(X, gap=np.inf)
    R = model.partition.n_regions
    for name in ("T0", "T1", "T2", "Tx", "Txz"):
        x, y = getattr(a, name), getattr(b, name)
        assert np.abs(x - y).max() <= (1e-12 + R * math.exp(-40)) * (1.0 + np.abs(y).max()), name


def ppca(rng, D, S, sigma, n):
    """A linear generator (PPCA), samples from it, their statistics, and PPCA's closed-form
    posterior: Cov[z | x] = M^-1 and E[z | x] = M^-1 W^T (x - b) / sigma^2, M = I + W^T W / sigma^2."""
    W, b = rng.normal(size=(D, S)), rng.normal(size=D)
    model = fastcpa.CPAModel(fastcpa.Generator([W], [b]), sigma_x=sigma)
    X = model.sample(n, seed=rng)
    Minv = np.linalg.inv(np.eye(S) + W.T @ W / sigma**2)
    return model, X, model.sufficient_stats(X), W, b, Minv, (X - b) @ W @ Minv.T / sigma**2


def test_linear_generator_is_ppca(rng):
    """No hidden layer: one region whose weights are 1 and whose moments are PPCA's closed form."""
    model, X, st, W, b, Minv, Ez = ppca(rng, 5, 2, 0.4, 30)
    np.testing.assert_allclose(st.T0, [30.0], rtol=1e-14)
    np.testing.assert_allclose(st.T1[0], Ez.sum(0), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(st.T2[0], 30 * Minv + Ez.T @ Ez, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(st.Txz[0], X.T @ Ez, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("diagonal", [False, True])
def test_noise_update_maximises_q(rng, diagonal):
    """The closed-form noise update is the maximiser of Q over sigma_x (any step away lowers it),
    and for PPCA (one region, exact posterior) it is the classical EM update
    sum_n E||x_n - W z - b||^2 / (N D) computed from the closed-form posterior."""
    model = make_model(rng, [1, 8, 6, 4], "leaky_relu", 0.2)
    X = samples(model, rng, 40, 3.0)
    st = model.sufficient_stats(X)
    A, b = model.partition.A, model.partition.b
    s = st.noise_update(A, b, diagonal=diagonal)
    var = np.broadcast_to(np.asarray(s, float) ** 2, (4,))
    q0 = st.expected_complete_log_likelihood(A, b, var, 1.0)
    for f in (0.99, 1.01):
        for d in range(4 if diagonal else 1):
            v = var.copy()
            if diagonal:
                v[d] *= f
            else:
                v = v * f
            assert st.expected_complete_log_likelihood(A, b, v, 1.0) < q0

    D = 6
    lin, X, st, W, c, Minv, Ez = ppca(rng, D, 2, 0.5, 50)
    R = X - c - Ez @ W.T
    expected = (np.sum(R**2) + len(X) * np.trace(W @ Minv @ W.T)) / (len(X) * D)  # Cov(z | x) = Minv
    assert abs(st.noise_update(lin.partition.A, lin.partition.b) ** 2 - expected) <= 1e-11 * expected


def test_noise_floor_against_collapse(rng):
    """A generator that passes through every sample exactly would drive sigma_x to 0: the update
    stops at the documented floor, NOISE_FLOOR times the data variance."""
    from fastcpa.estep import NOISE_FLOOR

    W, c = np.array([[1.0], [2.0]]), np.array([0.5, -0.5])
    model = fastcpa.CPAModel(fastcpa.Generator([W], [c]), sigma_x=1e-9)
    X = c + np.linspace(-2, 2, 30)[:, None] * W.T  # on the line: residuals ~ 1e-18
    st = model.sufficient_stats(X)
    s = st.noise_update(model.partition.A, model.partition.b, diagonal=True)
    np.testing.assert_allclose(s**2, NOISE_FLOOR * X.var(axis=0), rtol=1e-9)


# ----------------------------------------------------------------------------- M-step pieces
@pytest.mark.parametrize("S,activation,sizes", [(1, "leaky_relu", [1, 8, 6, 4]), (2, "abs", [2, 6, 5, 3]),
                                                (2, "relu", [2, 7, 3])])
def test_hidden_maps_reproduce_the_region_maps(rng, S, activation, sizes):
    """The last hidden layer's maps, pushed through the output layer, are the partition's maps
    (computed by a different route), and match the forward pass at points inside each region."""
    from fastcpa.mstep import hidden_maps

    model = make_model(rng, sizes, activation, 0.1)
    gen, part = model.generator, model.partition
    G, g = hidden_maps(gen, part)
    W, c = gen.weights[-1], gen.biases[-1]
    np.testing.assert_allclose(np.matmul(W, G), part.A, rtol=1e-12, atol=1e-12 * np.abs(part.A).max())
    np.testing.assert_allclose(g @ W.T + c, part.b, rtol=1e-12, atol=1e-12 * np.abs(part.b).max())


@pytest.mark.parametrize("S,activation,sizes", [(1, "leaky_relu", [1, 8, 6, 4]), (2, "relu", [2, 7, 5, 3])])
def test_output_layer_update_zeroes_the_gradient_of_q(rng, S, activation, sizes):
    """After the closed-form output-layer update, Q's gradient in (W, c) vanishes (central
    finite differences of Q evaluated from the statistics), and Q rose."""
    from fastcpa.mstep import hidden_maps, output_layer_update

    model = make_model(rng, sizes, activation, 0.2)
    X = samples(model, rng, 30, 2.0)
    st = model.sufficient_stats(X)
    gen, part = model.generator, model.partition
    G, g = hidden_maps(gen, part)
    var = np.full(gen.output_dim, 0.04)

    def q(W, c):
        return st.expected_complete_log_likelihood(np.matmul(W, G), g @ W.T + c, var, 1.0)

    W1, c1 = output_layer_update(st, gen, part)
    assert q(W1, c1) >= q(gen.weights[-1], gen.biases[-1])
    scale = abs(q(W1, c1))
    for _ in range(6):
        dW, dc = rng.normal(size=W1.shape), rng.normal(size=c1.shape)
        h = 1e-4
        slope = (q(W1 + h * dW, c1 + h * dc) - q(W1 - h * dW, c1 - h * dc)) / (2 * h)
        assert abs(slope) <= 1e-6 * scale, slope
        assert q(W1 + 1e-2 * dW, c1 + 1e-2 * dc) < q(W1, c1)


def test_em_on_a_linear_generator_reaches_ppca(rng):
    """A generator without hidden layers is PPCA: EM with the closed-form output-layer and noise
    updates (an ECM sweep per iteration, exact E-step) never lowers the exact likelihood and
    converges to the maximum-likelihood fit: Tipping and Bishop's closed form from the 1/N sample
    covariance (same mean log-likelihood to 1e-9, same subspace as sklearn's PCA). sklearn's own
    score uses the 1/(N-1) covariance, so it lies slightly below the maximum (within 1e-5 here)."""
    sklearn = pytest.importorskip("sklearn.decomposition")
    from fastcpa.mstep import output_layer_update

    D, S, N = 6, 2, 400
    data = rng.normal(size=(N, S)) @ rng.normal(size=(S, D)) * 2.0 + rng.normal(size=D) + 0.3 * rng.normal(size=(N, D))
    pca = sklearn.PCA(n_components=S).fit(data)
    cov = np.cov(data.T, bias=True)
    lam, U = np.linalg.eigh(cov)
    lam, U = lam[::-1], U[:, ::-1]
    s2 = lam[S:].mean()
    C = U[:, :S] @ np.diag(lam[:S] - s2) @ U[:, :S].T + s2 * np.eye(D)
    target = -0.5 * (D * math.log(2 * math.pi) + np.linalg.slogdet(C)[1] + np.trace(np.linalg.solve(C, cov)))
    model = fastcpa.CPAModel(fastcpa.Generator([rng.normal(size=(D, S))], [np.zeros(D)]), sigma_x=1.0)
    history = []
    for _ in range(3000):
        st = model.sufficient_stats(data)
        history.append(st.log_likelihood / N)
        if len(history) > 1 and history[-1] - history[-2] < 1e-11:
            break
        W, c = output_layer_update(st, model.generator, model.partition)
        A, b = W[None], c[None]
        sigma = st.noise_update(A, b)
        model = fastcpa.CPAModel(fastcpa.Generator([W], [c]), sigma_x=sigma)
    assert np.all(np.diff(history) >= -1e-12 * np.abs(history[1:]))
    assert abs(history[-1] - target) <= 1e-9 * abs(target), (history[-1], target)
    assert 0.0 <= history[-1] - pca.score(data) <= 1e-5 * abs(target)
    # same principal subspace: the projector onto W's columns equals PCA's
    Wf = model.generator.weights[0]
    Pw = Wf @ np.linalg.pinv(Wf)
    U = pca.components_.T
    np.testing.assert_allclose(Pw, U @ U.T, atol=1e-4)


@pytest.mark.parametrize("S,sizes", [(1, [1, 9, 8, 7, 3]), (2, [2, 6, 5, 4, 3])])
def test_levels_group_the_regions_by_their_leading_patterns(rng, S, sizes):
    """The M-step's grouping (``mstep._Levels``): a level-j group is exactly the set of
    regions whose layers 0..j patterns agree (checked against the codes directly), the
    slopes kept per group are the regions', and summing runs is the adjoint of repeating
    rows: <expand(x), y> = <x, reduce(y)> (numpy sums as the oracle)."""
    from fastcpa.mstep import _Levels

    model = make_model(rng, sizes, "leaky_relu", 0.2)
    gen, part = model.generator, model.partition
    lv = _Levels(gen, part)
    bits = part.code_bits()[lv.order]
    L, R = gen.n_layers, part.n_regions
    assert sorted(lv.order) == list(range(R))
    start = 0
    for j, W in enumerate(gen.weights[:-1]):
        start += W.shape[0]
        _, ref = np.unique(bits[:, :start], axis=0, return_inverse=True)
        gid = lv.expand(np.arange(lv.size(j)), j, L - 1)
        # the same partition of the regions, and each group one run of the sorted regions
        assert len(set(zip(gid, ref.ravel()))) == lv.size(j) == len(set(ref.ravel()))
        assert np.all(np.diff(gid) >= 0)
        eta = gen.slopes[j]
        np.testing.assert_array_equal(lv.expand(lv.q[j], j, L - 1),
                                      np.where(bits[:, start - W.shape[0]:start], 1.0, eta))
        for a in range(-1, j):
            x = rng.normal(size=(lv.size(a), 2, 3))
            y = rng.normal(size=(lv.size(j), 2, 3))
            lhs = np.sum(lv.expand(x, a, j) * y)
            sums = np.zeros_like(x)
            np.add.at(sums, lv.expand(np.arange(lv.size(a)), a, j), y)
            np.testing.assert_allclose(lv.reduce(y, j, a), sums, rtol=1e-14, atol=1e-14)
            assert abs(lhs - np.sum(x * lv.reduce(y, j, a))) <= 1e-12 * (1 + abs(lhs))
    assert min(lv.size(j) for j in range(L - 1)) < R  # the test has groups to merge


@pytest.mark.parametrize("run_length", [2, 32])
@pytest.mark.parametrize("S,sizes", [(1, [1, 12, 10, 9, 3]), (2, [2, 7, 6, 5, 3])])
def test_grouped_products_equal_the_region_by_region_operator(rng, monkeypatch, S, sizes, run_length):
    """The normal equations' operator and right-hand side, formed group by group with products
    derived along runs (``_Levels.runs``: chains cut every ``run_length`` groups), equal the
    dense matrix built region by region from ``apply_F`` (no groups, no runs) for every layer;
    and the runs are in use for S = 1."""
    from fastcpa import mstep
    from fastcpa.mstep import FrozenLayer

    monkeypatch.setattr(mstep, "_RUN_LENGTH", run_length)
    model = make_model(rng, sizes, "leaky_relu", 0.3)
    X = samples(model, rng, 40, 2.0)
    st = model.sufficient_stats(X)
    var = rng.uniform(0.05, 0.2, size=sizes[-1])
    for k in range(len(sizes) - 1):
        fl = FrozenLayer(model.generator, model.partition, k)
        op, rhs = fl._normal_equations(st, var)
        M = fl._dense_operator(st, var)
        for _ in range(2):
            V = rng.normal(size=fl.V0.shape)
            np.testing.assert_allclose(op(V).ravel(), M @ V.ravel(), rtol=1e-11, atol=1e-11 * np.abs(M).max())
        # rhs = op(V) at the V whose maps fit the statistics' targets: checked through Q's gradient
        G = rhs - op(fl.V0)
        dV = rng.normal(size=fl.V0.shape)
        h = 1e-5
        qd = (st.expected_complete_log_likelihood(*fl.maps(fl.V0 + h * dV), var, 1.0)
              - st.expected_complete_log_likelihood(*fl.maps(fl.V0 - h * dV), var, 1.0)) / (2 * h)
        assert abs(qd - np.sum(G * dV)) <= 1e-6 * (abs(qd) + np.abs(G).sum()), (k, qd, np.sum(G * dV))
        if S == 1:
            assert fl.levels.runs(0) is not None


@pytest.mark.parametrize("S,activation,sizes,k", [(1, "leaky_relu", [1, 8, 6, 4], 0), (1, "abs", [1, 6, 5, 3], 1),
                                                  (2, "relu", [2, 7, 5, 3], 0), (2, "leaky_relu", [2, 6, 5, 4], 1)])
@pytest.mark.parametrize("solver", ["cg", "dense"])
def test_inner_layer_update_zeroes_the_frozen_gradient(rng, S, activation, sizes, k, solver):
    """Layer k's block update (masks frozen; conjugate gradients on the region-by-region operator, or the dense matrix):
    the frozen maps at the current parameters are the partition's, and after the update the
    gradient of the frozen-mask Q in (W_k, c_k) vanishes (central finite differences) and Q rose."""
    from fastcpa.mstep import FrozenLayer

    model = make_model(rng, sizes, activation, 0.2)
    X = samples(model, rng, 30, 2.0)
    st = model.sufficient_stats(X)
    gen, part = model.generator, model.partition
    fl = FrozenLayer(gen, part, k)
    A0, b0 = fl.maps(fl.V0)
    np.testing.assert_allclose(A0, part.A, rtol=1e-11, atol=1e-11 * np.abs(part.A).max())
    np.testing.assert_allclose(b0, part.b, rtol=1e-11, atol=1e-11 * np.abs(part.b).max())
    var = np.full(gen.output_dim, 0.04)

    def q(V):
        return st.expected_complete_log_likelihood(*fl.maps(V), var, 1.0)

    W1, c1 = fl.update(st, var, solver=solver)
    V1 = np.concatenate([W1, c1[:, None]], axis=1)
    assert q(V1) >= q(fl.V0)
    scale = abs(q(V1))
    for _ in range(6):
        dV = rng.normal(size=V1.shape)
        h = 1e-4
        slope = (q(V1 + h * dV) - q(V1 - h * dV)) / (2 * h)
        assert abs(slope) <= 1e-6 * scale, slope


@pytest.mark.parametrize("solver", ["cg", "dense"])
def test_update_returns_the_exact_log_likelihood_gradient(rng, solver):
    """``update(..., return_gradient=True)``'s gradient (the solve's first residual) is
    ``FrozenLayer.gradient`` and, by Fisher's identity, the derivative of the exact
    sum of log p(x_n) in layer k's [W c] (central differences of ``log_prob``)."""
    from fastcpa.mstep import FrozenLayer

    model = make_model(rng, [1, 6, 5, 3], "leaky_relu", 0.3)
    X = samples(model, rng, 25, 2.0)
    st = model.sufficient_stats(X)
    gen, k = model.generator, 1
    fl = FrozenLayer(gen, model.partition, k)
    W1, c1, G = fl.update(st, model._noise_var, solver=solver, maxiter=3, return_gradient=True)
    W2, c2 = fl.update(st, model._noise_var, solver=solver, maxiter=3)
    assert np.array_equal(W1, W2) and np.array_equal(c1, c2)
    dW, dc = fl.gradient(st, model._noise_var)
    np.testing.assert_allclose(G, np.concatenate([dW, dc[:, None]], axis=1), rtol=1e-12,
                               atol=1e-12 * np.abs(G).max())
    V0 = fl.V0
    for _ in range(3):
        dV = rng.normal(size=V0.shape)
        h = 1e-5

        def total(V):
            g = fastcpa.Generator([V[:, :-1] if j == k else W for j, W in enumerate(gen.weights)],
                                  [V[:, -1] if j == k else c for j, c in enumerate(gen.biases)],
                                  activation=gen.activations, slope=[np.asarray(e) for e in gen.slopes])
            return fastcpa.CPAModel(g, sigma_x=model.sigma_x).log_prob(X).sum()

        fd = (total(V0 + h * dV) - total(V0 - h * dV)) / (2 * h)
        assert abs(fd - np.sum(G * dV)) <= 1e-5 * (abs(fd) + 1.0), (fd, np.sum(G * dV))


def test_update_gradient_of_an_all_zero_layer(rng):
    """A layer whose weights and biases are all 0: conjugate gradients then starts without
    a product at V0 (its residual is the right-hand side), and the gradient returned
    is still dQ/dV at V0."""
    from fastcpa.mstep import FrozenLayer

    model = make_model(rng, [1, 6, 5, 3], "leaky_relu", 0.3)
    gen = model.generator
    k = gen.n_layers - 1  # the output layer: zeroing it leaves the partition as it was
    gen0 = fastcpa.Generator(gen.weights[:-1] + [np.zeros_like(gen.weights[-1])],
                             gen.biases[:-1] + [np.zeros_like(gen.biases[-1])],
                             activation=gen.activations, slope=[np.asarray(e) for e in gen.slopes])
    model0 = fastcpa.CPAModel(gen0, sigma_x=0.3)
    X = samples(model, rng, 20, 2.0)
    st = model0.sufficient_stats(X)
    fl = FrozenLayer(gen0, model0.partition, k)
    assert not fl.V0.any()
    _, _, G = fl.update(st, model0._noise_var, solver="cg", maxiter=2, return_gradient=True)
    dW, dc = fl.gradient(st, model0._noise_var)
    np.testing.assert_allclose(G, np.concatenate([dW, dc[:, None]], axis=1), rtol=1e-12,
                               atol=1e-12 * np.abs(G).max())


@pytest.mark.parametrize("S,k", [(1, 0), (1, 1), (2, 2)])
def test_normal_equations_product_at_the_current_layer_is_the_kept_maps(rng, S, k):
    """The normal equations' product at the current parameters comes from the maps formed
    when the layer was frozen (``FrozenLayer._M0``); elsewhere it is computed afresh. The
    operator is linear, so op(V0) = op(2 V0) / 2 checks one against the other."""
    from fastcpa.mstep import FrozenLayer

    model = make_model(rng, [S, 6, 5, 4, 3], "leaky_relu", 0.3)
    X = samples(model, rng, 20, 2.0)
    st = model.sufficient_stats(X)
    fl = FrozenLayer(model.generator, model.partition, k)
    op, _ = fl._normal_equations(st, model._noise_var)
    a, b = op(fl.V0), 0.5 * op(2.0 * fl.V0)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())


@pytest.mark.parametrize("ridge", [0.0, 3.0])
def test_inner_layer_solvers_agree(rng, ridge):
    """The dense matrix sum_w N_w (x) F_w^T P F_w and the matrix-free operator are the same map,
    and both solvers reach the frozen-mask maximum: the same Q, and with a ridge (a strictly
    concave Q, on W_k only) the same update. (Without one, 40 samples leave directions in which
    Q is nearly flat, and the two solvers may stop at different points along them.)"""
    from fastcpa.mstep import FrozenLayer

    model = make_model(rng, [1, 6, 5, 3], "leaky_relu", 0.2)
    X = samples(model, rng, 40, 1.0)
    st = model.sufficient_stats(X)
    fl = FrozenLayer(model.generator, model.partition, 1)
    var = np.array([0.04, 0.09, 0.02])
    op, _ = fl._normal_equations(st, var, ridge)
    M = fl._dense_operator(st, var, ridge)
    for _ in range(3):
        V = rng.normal(size=fl.V0.shape)
        np.testing.assert_allclose(M @ V.ravel(), op(V).ravel(), rtol=1e-12, atol=1e-12 * np.abs(M).max())
    assert fl._dense_is_cheap()
    Wd, cd = fl.update(st, var, ridge=ridge, solver="dense")
    Wc, cc = fl.update(st, var, ridge=ridge, solver="cg", rtol=1e-13)
    Wa, ca = fl.update(st, var, ridge=ridge)
    np.testing.assert_array_equal(Wa, Wd)

    def q(W, c):
        A, b = fl.maps(np.concatenate([W, c[:, None]], axis=1))
        return st.expected_complete_log_likelihood(A, b, var, 1.0) - 0.5 * ridge * np.sum(W * W)

    assert q(Wd, cd) >= q(*fl.update(st, var, ridge=ridge, maxiter=3, solver="cg")) - 1e-9 * abs(q(Wd, cd))
    assert abs(q(Wd, cd) - q(Wc, cc)) <= 1e-10 * abs(q(Wd, cd))
    if ridge > 0:
        np.testing.assert_allclose(Wd, Wc, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(cd, cc, rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError, match="solver must be"):
        fl.update(st, var, solver="lu")


@pytest.mark.parametrize("precondition", [False, True])
def test_truncated_conjugate_gradients_raise_q_monotonically(rng, precondition):
    """fit's cg_maxiter: every CG iterate from the current parameters raises the frozen-mask Q
    (a generalised EM step), and more iterations never give less, with the Kronecker-factored
    preconditioner or without."""
    from fastcpa.mstep import FrozenLayer

    model = make_model(rng, [1, 7, 6, 3], "leaky_relu", 0.2)
    X = samples(model, rng, 40, 1.0)
    st = model.sufficient_stats(X)
    fl = FrozenLayer(model.generator, model.partition, 1)
    var = np.full(3, 0.04)

    def q(W, c):
        return st.expected_complete_log_likelihood(*fl.maps(np.concatenate([W, c[:, None]], axis=1)), var, 1.0)

    values = [q(fl.V0[:, :-1], fl.V0[:, -1])]
    for its in (1, 2, 4, 8, 16, 400):
        values.append(q(*fl.update(st, var, solver="cg", maxiter=its, precondition=precondition)))
    tol = 1e-12 * abs(values[-1])
    assert np.all(np.diff(values) >= -tol), values
    assert values[1] > values[0]


@pytest.mark.parametrize("k, ridge", [(0, 0.0), (1, 0.0), (1, 0.3)])
def test_kronecker_preconditioner_is_exact_for_one_pattern(rng, k, ridge):
    """With linear hidden layers there is one region, so the Kronecker factors are the operator
    itself (up to their 1e-10 damping; a ridge is taken to cover the bias too, so with one
    it is close, not exact):
    one preconditioned CG iteration reaches the dense solve's Q where plain CG is far from it."""
    from fastcpa.mstep import FrozenLayer

    Ws, cs = init_layers(rng, [2, 6, 5, 4], scale="normal")
    model = fastcpa.CPAModel(fastcpa.Generator(Ws, cs, activation="linear"), sigma_x=0.3)
    assert model.partition.n_regions == 1
    X = model.sample(50, seed=rng) + rng.normal(size=(50, 4))  # off the model: a real step
    st = model.sufficient_stats(X)
    fl = FrozenLayer(model.generator, model.partition, k)
    var = np.array([0.09, 0.04, 0.2, 0.1])

    def q(W, c):
        V = np.concatenate([W, c[:, None]], axis=1)
        pen = 0.5 * ridge * np.sum(W**2)
        return st.expected_complete_log_likelihood(*fl.maps(V), var, 1.0) - pen

    q0 = q(fl.V0[:, :-1], fl.V0[:, -1])
    qd = q(*fl.update(st, var, ridge=ridge, solver="dense"))
    qp = q(*fl.update(st, var, ridge=ridge, solver="cg", maxiter=1, precondition=True))
    q1 = q(*fl.update(st, var, ridge=ridge, solver="cg", maxiter=1, precondition=False))
    assert qd > q0 + 1.0
    assert q1 < qd - 1e-3 * (qd - q0)  # one plain iteration is not enough: the check has teeth
    if ridge == 0:
        assert abs(qd - qp) <= 1e-8 * (qd - q0)
    else:
        assert qd - qp <= 0.02 * (qd - q0)
