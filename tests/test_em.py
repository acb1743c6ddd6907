"""Exact EM (``CPAModel.fit``): monotone by construction, and it learns.

Oracles: the exact log-likelihood itself (``history_`` must never decrease, whatever the net),
and a full-covariance Gaussian fitted by maximum likelihood (closed form), which a fitted
generator must beat on held-out data of curved manifolds.
"""

import numpy as np
import pytest
import scipy.stats

import fastcpa
from reference import init_layers


def wave(rng, n):
    t = rng.normal(size=n)
    return np.c_[t, np.cos(1.4 * t)] + 0.1 * rng.normal(size=(n, 2))


def circle(rng, n):
    a = rng.uniform(0, 2 * np.pi, size=n)
    return np.c_[np.cos(a), np.sin(a)] + 0.1 * rng.normal(size=(n, 2))


def gaussian_score(train, test):
    return scipy.stats.multivariate_normal(train.mean(0), np.cov(train.T, bias=True)).logpdf(test).mean()


@pytest.mark.parametrize("S,activation,sizes,diag", [(1, "relu", [1, 8, 2], False), (1, "leaky_relu", [1, 6, 5, 3], True),
                                                     (1, "abs", [1, 5, 4, 2], False), (2, "relu", [2, 6, 3], False),
                                                     (2, "leaky_relu", [2, 5, 4, 3], True), (2, "abs", [2, 4, 3], False)])
def test_history_never_decreases(rng, S, activation, sizes, diag):
    Ws, cs = init_layers(rng, sizes, scale="normal")
    gen = fastcpa.Generator(Ws, cs, activation=activation, slope=0.1)
    truth = fastcpa.CPAModel(gen, sigma_x=0.2)
    X = truth.sample(150, seed=rng)
    Ws2, cs2 = init_layers(rng, sizes, scale="normal")
    sx = np.full(sizes[-1], 0.5) if diag else 0.5
    model = fastcpa.CPAModel(fastcpa.Generator(Ws2, cs2, activation=activation, slope=0.1), sigma_x=sx)
    model.fit(X, n_iter=6, tol=0.0, progress=False)
    h = model.history_
    assert len(h) == 7 and len(model.backtracks_) == 6
    assert np.all(np.diff(h) >= 0.0), h
    assert h[-1] > h[0]
    # the reported history is the fitted model's exact likelihood
    assert abs(model.log_prob(X).mean() - h[-1]) <= 1e-10 * abs(h[-1])
    assert np.shape(model.sigma_x) == ((sizes[-1],) if diag else ())


@pytest.mark.parametrize("data", [wave, circle])
def test_beats_a_full_covariance_gaussian_held_out(rng, data):
    train, test = data(rng, 400), data(rng, 400)
    gen = fastcpa.Generator([rng.normal(size=(10, 1)), 0.3 * rng.normal(size=(2, 10))],
                            [rng.normal(size=10), np.zeros(2)], activation="leaky_relu", slope=0.1)
    model = fastcpa.CPAModel(gen, sigma_x=1.0).fit(train, n_iter=40, progress=False)
    assert np.all(np.diff(model.history_) >= 0.0)
    assert model.log_prob(test).mean() > gaussian_score(train, test) + 0.2


@pytest.mark.parametrize("S,activation,sizes,diag", [(1, "leaky_relu", [1, 6, 5, 3], False), (1, "abs", [1, 5, 2], True),
                                                     (2, "relu", [2, 5, 4, 3], True)])
def test_gradient_matches_finite_differences_of_the_exact_likelihood(rng, S, activation, sizes, diag):
    """Fisher's identity: the gradient from the E-step statistics equals central finite differences
    of the exact sum of log p(x_n) (partition recomputed at every perturbed generator), in random
    directions of every layer's weights and bias and in sigma_x."""
    Ws, cs = init_layers(rng, sizes, scale="normal")
    gen = fastcpa.Generator(Ws, cs, activation=activation, slope=0.1)
    sx = np.full(sizes[-1], 0.3) if diag else 0.3
    model = fastcpa.CPAModel(gen, sigma_x=sx)
    X = model.sample(25, seed=rng) + 0.2 * rng.normal(size=(25, sizes[-1]))
    grad = fastcpa.em.log_likelihood_gradient(model, X)

    def total(Ws_, cs_, s_):
        m = fastcpa.CPAModel(fastcpa.Generator(Ws_, cs_, activation=activation, slope=0.1), sigma_x=s_)
        return m.log_prob(X, prune=False).sum()

    h = 1e-6
    for k in range(len(Ws)):
        dW, dc = rng.normal(size=Ws[k].shape), rng.normal(size=cs[k].shape)
        plus = [w.copy() for w in Ws], [c.copy() for c in cs]
        minus = [w.copy() for w in Ws], [c.copy() for c in cs]
        plus[0][k] += h * dW
        plus[1][k] += h * dc
        minus[0][k] -= h * dW
        minus[1][k] -= h * dc
        fd = (total(*plus, sx) - total(*minus, sx)) / (2 * h)
        an = np.sum(grad["weights"][k] * dW) + np.sum(grad["biases"][k] * dc)
        assert abs(fd - an) <= 1e-5 * (abs(an) + 1.0), (k, fd, an)
    ds = rng.normal(size=np.shape(sx))
    fd = (total(Ws, cs, sx + h * ds) - total(Ws, cs, sx - h * ds)) / (2 * h)
    an = np.sum(grad["sigma_x"] * ds)
    assert abs(fd - an) <= 1e-5 * (abs(an) + 1.0), (fd, an)


@pytest.mark.parametrize("diag", [False, True])
def test_gradient_method_climbs_monotonically(rng, diag):
    """``method="gradient"``: Adam on the exact log-likelihood with the exact gradient, each step
    checked like an EM step: the history never decreases, and it climbs well above the start."""
    X = wave(rng, 300)
    gen = fastcpa.Generator([rng.normal(size=(8, 1)), 0.3 * rng.normal(size=(2, 8))],
                            [rng.normal(size=8), np.zeros(2)], activation="leaky_relu", slope=0.1)
    model = fastcpa.CPAModel(gen, sigma_x=np.full(2, 1.0) if diag else 1.0)
    model.fit(X, n_iter=60, tol=0.0, method="gradient", lr=0.05, progress=False)
    h = model.history_
    assert np.all(np.diff(h) >= 0.0)
    assert h[-1] > h[0] + 0.5
    assert abs(model.log_prob(X).mean() - h[-1]) <= 1e-10 * abs(h[-1])


def test_fit_rejects_an_unknown_method(rng):
    gen = fastcpa.Generator([rng.normal(size=(3, 1)), rng.normal(size=(2, 3))], [np.zeros(3), np.zeros(2)])
    with pytest.raises(ValueError, match="method must be 'em' or 'gradient'"):
        fastcpa.CPAModel(gen, sigma_x=0.5).fit(np.zeros((4, 2)), method="newton")


def test_callback_returning_true_stops_and_keeps_the_fit(rng):
    X = wave(rng, 100)
    gen = fastcpa.Generator([rng.normal(size=(6, 1)), 0.3 * rng.normal(size=(2, 6))],
                            [rng.normal(size=6), np.zeros(2)], activation="leaky_relu", slope=0.1)
    seen = []

    def stop_at_three(i, ll, fit):
        seen.append((i, ll))
        return i == 3

    model = fastcpa.CPAModel(gen, sigma_x=1.0).fit(X, n_iter=20, tol=0.0, progress=False, callback=stop_at_three)
    assert [i for i, _ in seen] == [1, 2, 3]
    assert len(model.history_) == 4 and model.history_[-1] == seen[-1][1]
    assert abs(model.log_prob(X).mean() - model.history_[-1]) <= 1e-12 * abs(model.history_[-1])


@pytest.mark.parametrize("B", [1e4, 1e6, 1e8])
def test_m_step_is_translation_equivariant(rng, B):
    """Data and output bias moved by B: the noise update and the output layer's
    weights are unchanged and its bias moves by B. The residuals once came from
    raw sums (``|x|^2 - 2 x.b + |b|^2`` summed over samples), which cancel at
    ``B^2``: at B = 1e6 the noise update was off by orders of magnitude. Held
    to what rounding the data to ``eps B`` implies (relative to the residual
    scale sigma ~ 0.1: ``eps B / sigma``, times a small multiple)."""
    from fastcpa.mstep import output_layer_update

    Ws, cs = init_layers(rng, [1, 6, 2])
    gen = fastcpa.Generator(Ws, cs, activation="relu")
    model = fastcpa.CPAModel(gen, sigma_x=0.1)
    X = wave(rng, 200)
    shift = np.array([B, -0.7 * B])
    moved = fastcpa.CPAModel(fastcpa.Generator(Ws, cs[:-1] + [cs[-1] + shift], activation="relu"), sigma_x=0.1)
    st, st_m = model.sufficient_stats(X), moved.sufficient_stats(X + shift)
    part, part_m = model.partition, moved.partition
    tol = 64 * np.finfo(float).eps * B / 0.1
    s0 = st.noise_update(part.A, part.b, diagonal=True)
    s1 = st_m.noise_update(part_m.A, part_m.b, diagonal=True)
    np.testing.assert_allclose(s1, s0, rtol=tol)
    W0, c0 = output_layer_update(st, gen, part)
    W1, c1 = output_layer_update(st_m, moved.generator, part_m)
    np.testing.assert_allclose(W1, W0, rtol=tol, atol=tol * np.abs(W0).max())
    np.testing.assert_allclose(c1 - shift, c0, atol=tol * (1 + np.abs(c0).max()))


# ----------------------------------------------------------------------------- schedules
def _s2_problem(rng, sizes=(2, 6, 5, 3)):
    Ws, cs = init_layers(rng, list(sizes), scale="normal")
    X = fastcpa.CPAModel(fastcpa.Generator(Ws, cs, activation="leaky_relu", slope=0.1), sigma_x=0.2).sample(120, seed=rng)
    Ws2, cs2 = init_layers(rng, list(sizes), scale="normal")
    return X, fastcpa.CPAModel(fastcpa.Generator(Ws2, cs2, activation="leaky_relu", slope=0.1), sigma_x=0.5)


@pytest.mark.parametrize("schedule, S, per_iteration", [("joint", 2, 1), ("layerwise", 2, 3), ("auto", 2, 1),
                                                         ("joint", 1, 1), ("auto", 1, 3)])
def test_schedules_estep_count_and_monotone(rng, monkeypatch, schedule, S, per_iteration):
    """``schedule="joint"`` takes one E-step per iteration (``"layerwise"``: one per block,
    here two hidden layers and the output layer; ``"auto"``: joint for S = 2 only), and its
    history never decreases and is the fitted model's exact likelihood. The statistics
    computed are those used, plus at most the last trial's and the refused trials' (S = 2
    forms them in the likelihood pass of a trial likely to be taken)."""
    import fastcpa.em
    import fastcpa.estep

    X, model = _s2_problem(rng, (S, 6, 5, 3))
    used, made = [], []

    def counting(real, calls):
        def f(*args, **kwargs):
            calls.append(1)
            return real(*args, **kwargs)
        return f

    monkeypatch.setattr(fastcpa.em, "_stats", counting(fastcpa.em._stats, used))
    monkeypatch.setattr(fastcpa.estep, "_statistics_and_rows", counting(fastcpa.estep._statistics_and_rows, made))
    model.fit(X, n_iter=3, tol=-np.inf, progress=False, schedule=schedule)
    assert len(used) == 3 * per_iteration
    assert len(used) <= len(made) <= len(used) + model.backtracks_.sum() + 1
    h = model.history_
    assert np.all(np.diff(h) >= 0.0) and h[-1] > h[0], h
    assert abs(model.log_prob(X).mean() - h[-1]) <= 1e-10 * abs(h[-1])


@pytest.mark.parametrize("diag", [False, True])
def test_joint_equals_layerwise_without_hidden_layers(rng, diag):
    """With no hidden layer (or ``layers=False``) both schedules are the same exact M-step of
    the output layer and noise: the same parameters to rounding."""
    X, _ = _s2_problem(rng)
    gen = fastcpa.Generator([rng.normal(size=(3, 2))], [rng.normal(size=3)])
    sx = np.full(3, 0.7) if diag else 0.7
    fits = [fastcpa.CPAModel(gen, sigma_x=sx).fit(X, n_iter=3, tol=-np.inf, progress=False, schedule=s)
            for s in ("joint", "layerwise")]
    np.testing.assert_allclose(fits[0].generator.weights[0], fits[1].generator.weights[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fits[0].sigma_x, fits[1].sigma_x, rtol=1e-12)
    np.testing.assert_allclose(fits[0].history_, fits[1].history_, rtol=1e-12)
    _, model = _s2_problem(np.random.default_rng(3))
    fits = [fastcpa.CPAModel(model.generator, sigma_x=sx).fit(X, n_iter=2, tol=-np.inf, progress=False,
                                                              schedule=s, layers=False)
            for s in ("joint", "layerwise")]
    for a, b in zip(fits[0].generator.weights, fits[1].generator.weights):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fits[0].history_, fits[1].history_, rtol=1e-12)


def test_joint_frozen_sweep_raises_the_frozen_mask_q(rng):
    """The joint proposal's hidden layers, each fitted with the masks frozen and the layers
    before it already moved, never lower the frozen-mask Q of the E-step they came from: Q
    computed from the statistics with every region's map rebuilt through the frozen masks
    (``FrozenLayer.maps``) rises layer by layer."""
    from fastcpa.em import _FrozenCodes, _with_layer
    from fastcpa.mstep import FrozenLayer

    X, model = _s2_problem(rng)
    st = model.sufficient_stats(X)
    gen, part = model.generator, model.partition
    var = model._noise_var
    frozen = _FrozenCodes(part, part.b)
    q = [st.expected_complete_log_likelihood(part.A, part.b, var, model.sigma_z)]
    for k in range(gen.n_layers - 1):
        fl = FrozenLayer(gen, frozen, k)
        W1, c1 = fl.update(st, var)
        A, b = fl.maps(np.concatenate([W1, c1[:, None]], axis=1))
        gen = _with_layer(gen, k, W1, c1)
        frozen = _FrozenCodes(part, b)
        q.append(st.expected_complete_log_likelihood(A, b, var, model.sigma_z))
    assert np.all(np.diff(q) >= -1e-9 * abs(q[0])), q
    assert q[-1] > q[0]


def test_next_step_is_the_parabolas_maximum_within_bounds():
    """After a rejected step, the next trial maximises the parabola through the start
    (value 0, the given slope) and the rejected trial, kept within [s/16, s/2]; with no
    ascent direction or a non-finite drop it halves."""
    from fastcpa.em import _next_step

    g, c = 2.0, 3.0  # phi(s) = g s - c s^2, maximal at g / (2c) = 1/3
    for s in (0.7, 0.9):
        assert _next_step(s, g, g * s - c * s * s) == pytest.approx(1.0 / 3.0, rel=1e-12)
    assert _next_step(1.0, g, -1e9) == 1.0 / 16.0  # a steep drop: no shorter than s/16
    assert _next_step(1.0, 1e-9, -1e-12) == pytest.approx(0.5 / 1.001, rel=1e-12)  # barely a drop: ~s/2
    assert _next_step(1.0, 1.0, 0.5) == 0.5  # (a rise: not a rejection, but never beyond s/2)
    for slope, drop in ((0.0, -1.0), (-1.0, -1.0), (1.0, -np.inf), (1.0, np.nan), (np.nan, -1.0)):
        assert _next_step(0.8, slope, drop) == 0.4


def test_schedule_must_be_known(rng):
    X, model = _s2_problem(rng)
    with pytest.raises(ValueError, match="schedule must be 'auto', 'layerwise' or 'joint'"):
        model.fit(X, n_iter=1, progress=False, schedule="blockwise")
