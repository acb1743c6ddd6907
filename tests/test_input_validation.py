"""Bad and extreme input: every case gives a correct finite answer or a clear error.

Expected values come from closed forms (the linear generator's Gaussian
marginal, the orthant's half-normal moments) or from the input itself, never
from the code under test.
"""

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import scipy.stats

import fastcpa

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _relu_gen(rng, S=1, D=2, width=4):
    return fastcpa.Generator([rng.normal(size=(width, S)), rng.normal(size=(D, width))],
                             [rng.normal(size=width), rng.normal(size=D)])


def _linear_model(rng, S=2, D=3, sigma_x=0.4, sigma_z=1.3):
    """A one-region model: p(x) = N(b, sigma_x^2 I + sigma_z^2 A A^T) exactly."""
    W1, c1, W2, c2 = rng.normal(size=(4, S)), rng.normal(size=4), rng.normal(size=(D, 4)), rng.normal(size=D)
    gen = fastcpa.Generator([W1, W2], [c1, c2], activation="linear")
    A, b = W2 @ W1, W2 @ c1 + c2
    cov = sigma_x**2 * np.eye(D) + sigma_z**2 * A @ A.T
    return fastcpa.CPAModel(gen, sigma_x, sigma_z), scipy.stats.multivariate_normal(b, cov)


# ----------------------------------------------------------------------------- 1. N = 0
@pytest.mark.parametrize("S", [1, 2])
def test_empty_batch_gives_empty_results(rng, S):
    model = fastcpa.CPAModel(_relu_gen(rng, S=S), sigma_x=0.5)
    R = model.partition.n_regions
    X = np.zeros((0, 2))
    assert model.log_prob(X).shape == (0,)
    post = model.posterior(X)
    assert post.log_prob.shape == (0,) and post.mean.shape == (0, S) and post.cov.shape == (0, S, S)
    assert post.region_probs.shape == (0, R)
    assert post.sample(3, seed=0).shape == (0, 3, S)
    st = model.sufficient_stats(X)
    assert st.n == 0 and st.log_likelihood == 0.0
    assert st.T0.shape == (R,) and not st.T0.any() and st.T2.shape == (R, S, S)
    assert model.sample(0).shape == (0, 2)
    assert model.generator(np.zeros((0, S))).shape == (0, 2)
    assert model.partition.locate(np.zeros((0, S))).shape == (0,)


def test_fit_rejects_empty_data(rng):
    model = fastcpa.CPAModel(_relu_gen(rng), sigma_x=0.5)
    with pytest.raises(ValueError, match="at least one sample"):
        model.fit(np.zeros((0, 2)), n_iter=1, progress=False)


# ----------------------------------------------------------------------------- 2. chunk sizes
@pytest.mark.parametrize("method", ["log_prob", "posterior", "sufficient_stats"])
@pytest.mark.parametrize("arg", ["sample_chunk", "region_chunk"])
@pytest.mark.parametrize("value,err", [(0, ValueError), (-1, ValueError), (2.5, TypeError), (2.0, TypeError),
                                       (True, TypeError), ("8", TypeError), (None, TypeError)])
def test_bad_chunk_sizes_raise(rng, method, arg, value, err):
    model = fastcpa.CPAModel(_relu_gen(rng), sigma_x=0.5)
    X = rng.normal(size=(3, 2))
    with pytest.raises(err, match=f"{arg} must be an integer >= 1"):
        getattr(model, method)(X, **{arg: value})


@pytest.mark.parametrize("chunk", [1, np.int64(2), np.int32(7)])
def test_numpy_integer_chunks_give_the_exact_answer(rng, chunk):
    model, exact = _linear_model(rng)
    X = exact.rvs(size=5, random_state=1)
    expected = exact.logpdf(X)
    np.testing.assert_allclose(model.log_prob(X, sample_chunk=chunk, region_chunk=chunk), expected, rtol=1e-12)
    np.testing.assert_allclose(model.posterior(X, sample_chunk=chunk, region_chunk=chunk).log_prob, expected,
                               rtol=1e-12)
    st = model.sufficient_stats(X, sample_chunk=chunk, region_chunk=chunk)
    np.testing.assert_allclose(st.log_likelihood, expected.sum(), rtol=1e-12)


def test_bad_sample_counts_raise(rng):
    model = fastcpa.CPAModel(_relu_gen(rng), sigma_x=0.5)
    with pytest.raises(TypeError, match="n must be an integer"):
        model.sample(2.5)
    with pytest.raises(ValueError, match="n must be an integer >= 0"):
        model.sample(-1)
    post = model.posterior(rng.normal(size=(2, 2)))
    with pytest.raises(TypeError, match="k must be an integer"):
        post.sample(1.5)


# ----------------------------------------------------------------------------- 3. pruning gap, tolerances
@pytest.mark.parametrize("gap", [-1.0, 0.0, np.nan, -np.inf])
def test_bad_gap_raises(rng, gap):
    model = fastcpa.CPAModel(_relu_gen(rng), sigma_x=0.5)
    with pytest.raises(ValueError, match="gap must be"):
        model.sufficient_stats(rng.normal(size=(3, 2)), gap=gap)


def test_gap_type_and_infinite_gap(rng):
    model = fastcpa.CPAModel(_relu_gen(rng), sigma_x=0.5)
    X = rng.normal(size=(6, 2))
    with pytest.raises(TypeError, match="gap must be a real number"):
        model.sufficient_stats(X, gap="40")
    st = model.sufficient_stats(X, gap=np.inf)  # no pruning: each row's weights sum to one
    np.testing.assert_allclose(st.T0.sum(), 6.0, rtol=1e-12)


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(tol=np.nan), ValueError, "tol"),
    (dict(ridge=-1.0), ValueError, "ridge"),
    (dict(ridge=np.inf), ValueError, "ridge"),
    (dict(n_iter=2.5), TypeError, "n_iter"),
    (dict(n_iter=-1), ValueError, "n_iter"),
    (dict(max_backtracks=-1), ValueError, "max_backtracks"),
    (dict(cg_maxiter=0), ValueError, "cg_maxiter"),
    (dict(cg_maxiter="fast"), TypeError, "cg_maxiter"),
    (dict(precondition="yes"), TypeError, "precondition"),
    (dict(lr=0.0, method="gradient"), ValueError, "lr"),
])
def test_bad_fit_arguments_raise(rng, kwargs, err, match):
    model = fastcpa.CPAModel(_relu_gen(rng), sigma_x=0.5)
    with pytest.raises(err, match=match):
        model.fit(rng.normal(size=(4, 2)), progress=False, **kwargs)


# ----------------------------------------------------------------------------- 4. torch tensors
@pytest.mark.torch
def test_torch_tensors_requiring_grad_are_accepted(rng):
    torch = pytest.importorskip("torch")
    W1, c1 = rng.normal(size=(4, 1)), rng.normal(size=4)
    W2, c2 = rng.normal(size=(2, 4)), rng.normal(size=2)
    tw = [torch.tensor(W1, requires_grad=True), torch.tensor(W2, dtype=torch.float32, requires_grad=True)]
    tc = [torch.tensor(c1, requires_grad=True), torch.tensor(c2)]
    gen = fastcpa.Generator(tw, tc)
    np.testing.assert_array_equal(gen.weights[0], W1)
    np.testing.assert_array_equal(gen.weights[1], W2.astype(np.float32).astype(np.float64))
    assert gen.weights[1].dtype == np.float64
    model = fastcpa.CPAModel(gen, sigma_x=torch.tensor(0.5, requires_grad=True))
    assert model.sigma_x == 0.5
    X = rng.normal(size=(5, 2))
    expected = model.log_prob(X)
    Xt = torch.tensor(X, requires_grad=True)
    np.testing.assert_array_equal(model.log_prob(Xt), expected)
    np.testing.assert_array_equal(model.posterior(Xt).log_prob, model.posterior(X).log_prob)
    r = fastcpa.interval_moments(torch.tensor([-1.0], requires_grad=True), torch.tensor([1.0]))
    np.testing.assert_allclose(r.mass, scipy.stats.norm.cdf(1) - scipy.stats.norm.cdf(-1), rtol=1e-14)


# ----------------------------------------------------------------------------- 5. activations
_W = [np.ones((2, 1)), np.ones((1, 2))]
_C = [np.zeros(2), np.zeros(1)]


@pytest.mark.parametrize("activation,err,match", [
    (None, TypeError, "activation must be one of"),
    (5, TypeError, "activation must be one of"),
    ("softplus", ValueError, "unknown activation 'softplus'"),
    ("ReLU", ValueError, "choose from"),
    (["relu", "relu"], ValueError, "1 hidden layers"),
    ([None], ValueError, "unknown activation None"),
    ([["relu"]], ValueError, "unknown activation"),
])
def test_bad_activation_names(activation, err, match):
    with pytest.raises(err, match=match) as info:
        fastcpa.Generator(_W, _C, activation=activation)
    assert "relu" in str(info.value)  # the valid names are listed


@pytest.mark.parametrize("slope,err", [(np.nan, ValueError), (np.inf, ValueError), (True, TypeError),
                                       ("0.1", TypeError), ([0.1, 0.2], ValueError)])
def test_bad_slopes(slope, err):
    with pytest.raises(err, match="slope"):
        fastcpa.Generator(_W, _C, activation="leaky_relu", slope=slope)


@pytest.mark.parametrize("slope", [-3.0, 0.0, 2.0])
def test_any_finite_slope_is_a_two_slope_unit(slope):
    gen = fastcpa.Generator(_W, _C, activation="leaky_relu", slope=slope)
    # g(z) = 2 act(z): z for z >= 0, slope * z below
    np.testing.assert_allclose(gen([[-1.5], [2.0]])[:, 0], [2 * slope * -1.5, 4.0])


# ----------------------------------------------------------------------------- 6. region indices
def test_region_indices_are_checked(rng):
    part = fastcpa.partition(_relu_gen(rng, S=2, width=3))
    R = part.n_regions
    for method in (part.polygon, part.facets):
        for r in (-1, R, 10**6):
            with pytest.raises(IndexError, match=f"{R} regions"):
                method(r)
        for r in (1.5, 1.0, True, "0", None):
            with pytest.raises(TypeError, match="must be an integer"):
                method(r)
        method(np.int64(R - 1))  # NumPy integers are fine
    for regions in ([-1], [0, R], np.array([R + 3])):
        with pytest.raises(IndexError, match="out of range"):
            part.code_bits(regions)
    with pytest.raises(TypeError, match="integer region indices"):
        part.code_bits([1.5])
    with pytest.raises(TypeError, match="flatnonzero"):
        part.code_bits(np.ones(R, bool))
    assert part.code_bits([0, R - 1]).shape == (2, 3)
    assert part.code_bits(np.int64(1)).shape == (1, 3)


# ----------------------------------------------------------------------------- 7. masked arrays
def test_masked_arrays_with_masked_entries_are_rejected(rng):
    model = fastcpa.CPAModel(_relu_gen(rng), sigma_x=0.5)
    X = rng.normal(size=(3, 2))
    Xm = np.ma.masked_array(X, mask=[[False, True], [False, False], [False, False]])
    with pytest.raises(ValueError, match=r"X is a masked array.*missing data is not supported.*filled"):
        model.log_prob(Xm)
    with pytest.raises(ValueError, match="lo is a masked array"):
        fastcpa.interval_moments(np.ma.masked_invalid([np.nan, 0.0]), 1.0)
    # nothing masked: nothing is ignored, so the data are used as they are
    np.testing.assert_array_equal(model.log_prob(np.ma.masked_array(X)), model.log_prob(X))


# ----------------------------------------------------------------------------- 8. inputs are copied
def test_generator_and_model_own_copies_of_their_inputs(rng):
    base = rng.normal(size=(6, 1))
    W1 = base[:4]  # a view: editing ``base`` edits it
    c1, W2, c2 = rng.normal(size=4), rng.normal(size=(2, 4)), rng.normal(size=2)
    sigma = np.array([0.4, 0.7])
    gen = fastcpa.Generator([W1, W2], [c1, c2])
    model = fastcpa.CPAModel(gen, sigma_x=sigma)
    X = rng.normal(size=(5, 2))
    before = model.log_prob(X)
    for a in (base, W1, c1, W2, c2, sigma):
        assert a.flags.writeable
    base[:] = 7.0
    c1[:] = -3.0
    W2 *= 2.0
    c2 += 1.0
    sigma[:] = 1e-3
    np.testing.assert_array_equal(model.log_prob(X), before)
    np.testing.assert_array_equal(fastcpa.CPAModel(gen, sigma_x=[0.4, 0.7]).log_prob(X), before)
    # the model's own copies cannot be edited in place behind its cache either
    with pytest.raises(ValueError, match="read-only"):
        model.sigma_x[0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        gen.weights[0][0, 0] = 1.0


def test_assigning_parameters_refreshes_the_model(rng):
    model, _ = _linear_model(rng, sigma_x=0.4)
    other, exact = _linear_model(np.random.default_rng(5), sigma_x=0.9)
    X = exact.rvs(size=4, random_state=2)
    model.log_prob(X)  # fills the caches
    model.generator, model.sigma_x, model.sigma_z = other.generator, 0.9, other.sigma_z
    np.testing.assert_allclose(model.log_prob(X), exact.logpdf(X), rtol=1e-12)
    with pytest.raises(ValueError, match="sigma_x"):
        model.sigma_x = -1.0


# ----------------------------------------------------------------------------- 9. scales and non-finite input
@pytest.mark.parametrize("kwargs,name", [
    (dict(sigma_x=1e-160), "sigma_x"), (dict(sigma_x=1e160), "sigma_x"), (dict(sigma_x=[0.5, 1e-170]), "sigma_x"),
    (dict(sigma_x=0.5, sigma_z=1e-200), "sigma_z"), (dict(sigma_x=0.5, sigma_z=1e200), "sigma_z"),
])
def test_scales_whose_square_leaves_float64_raise(rng, kwargs, name):
    with pytest.raises(ValueError, match=rf"{name} = .* outside the supported range.*{name}\*\*2 must be a normal"):
        fastcpa.CPAModel(_relu_gen(rng), **kwargs)


@pytest.mark.parametrize("S", [1, 2])
def test_tiny_prior_scale_inside_the_range_works(rng, S):
    # sigma_z = 2^-500 ~ 3e-151 (inside the range): z is pinned at 0, so p(x) = N(g(0), sigma_x^2 I)
    W1, c1, W2, c2 = rng.normal(size=(3, S)), rng.normal(size=3), rng.normal(size=(2, 3)), rng.normal(size=2)
    X = rng.normal(size=(4, 2))
    g0 = W2 @ np.maximum(c1, 0.0) + c2
    out = fastcpa.CPAModel(fastcpa.Generator([W1, W2], [c1, c2]), 0.5, sigma_z=2.0**-500).log_prob(X)
    np.testing.assert_allclose(out, scipy.stats.multivariate_normal(g0, 0.25 * np.eye(2)).logpdf(X), rtol=1e-12)


@pytest.mark.parametrize("S", [1, 2])
def test_huge_noise_scale_inside_the_range(rng, S):
    # the linear generator's exact marginal N(b, sigma_x^2 I + sigma_z^2 A A^T), at both ends of sigma_x, sigma_z
    W1, c1, W2, c2 = rng.normal(size=(3, S)), rng.normal(size=3), rng.normal(size=(2, 3)), rng.normal(size=2)
    gen = fastcpa.Generator([W1, W2], [c1, c2], activation="linear")
    A, b = W2 @ W1, W2 @ c1 + c2
    X = rng.normal(size=(4, 2))
    big = 2.0**500
    exact = scipy.stats.multivariate_normal(b, big**2 * np.eye(2) + A @ A.T).logpdf(X)
    np.testing.assert_allclose(fastcpa.CPAModel(gen, big, 1.0).log_prob(X), exact, rtol=1e-12)


def test_huge_prior_scale_s1(rng):
    """sigma_z = 2^500 on an affine generator, against the closed form at 340
    digits (scipy's multivariate_normal cannot hold 0.25 I + 2^1000 a a^T)."""
    from oracles import linear_log_prob_mp

    W1, c1, W2, c2 = rng.normal(size=(3, 1)), rng.normal(size=3), rng.normal(size=(2, 3)), rng.normal(size=2)
    gen = fastcpa.Generator([W1, W2], [c1, c2], activation="linear")
    A, b = W2 @ W1, W2 @ c1 + c2
    X = rng.normal(size=(4, 2))
    big = 2.0**500
    # 2^1000 next to 0.25: the oracle needs over 300 digits
    exact = [float(linear_log_prob_mp(A, b, x, 0.5, big, dps=340)[0]) for x in X]
    np.testing.assert_allclose(fastcpa.CPAModel(gen, 0.5, big).log_prob(X), exact, rtol=1e-12)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_arrays_name_the_argument(rng, bad):
    gen = _relu_gen(rng)
    model = fastcpa.CPAModel(gen, sigma_x=0.5)
    X = rng.normal(size=(3, 2))
    X[1, 0] = bad
    for call, name in [
        (lambda: model.log_prob(X), "X"), (lambda: model.posterior(X), "X"),
        (lambda: model.sufficient_stats(X), "X"),
        (lambda: fastcpa.Generator([np.array([[bad]]), np.ones((1, 1))], [np.zeros(1), np.zeros(1)]), r"weights\[0\]"),
        (lambda: fastcpa.Generator([np.ones((1, 1)), np.ones((1, 1))], [np.zeros(1), np.array([bad])]), r"biases\[1\]"),
        (lambda: fastcpa.CPAModel(gen, sigma_x=[0.5, bad]), "sigma_x"),
        (lambda: fastcpa.CPAModel(gen, sigma_x=0.5, sigma_z=bad), "sigma_z"),
        (lambda: fastcpa.interval_moments(0.0, 1.0, mean=bad), "mean"),
        (lambda: fastcpa.interval_moments(0.0, 1.0, std=bad), "std"),
        (lambda: fastcpa.polygon_moments([[1.0, 0.0]], [bad]), "offsets"),
        (lambda: fastcpa.polygon_moments([[bad, 0.0]], [0.0]), "normals"),
        (lambda: fastcpa.partition(gen).locate([[bad]]), "Z"),
    ]:
        with pytest.raises(ValueError, match=rf"{name} contains NaN or inf"):
            call()


# ----------------------------------------------------------------------------- 10. empty intervals
@pytest.mark.parametrize("lo,hi", [(np.inf, np.inf), (-np.inf, -np.inf), (1.0, 1.0), (2.0, 1.0),
                                   (np.inf, -np.inf), (5.0, -np.inf)])
def test_empty_interval_has_no_mass_and_undefined_moments(lo, hi):
    r = fastcpa.interval_moments(lo, hi)
    assert r.log_mass == -np.inf and r.mass == 0.0
    assert np.isnan(r.mean) and np.isnan(r.var)


def test_empty_intervals_in_a_batch_leave_the_others_alone():
    r = fastcpa.interval_moments([np.inf, -1.0, 3.0], [np.inf, 1.0, 3.0], mean=[0.0, 0.0, 1.0])
    np.testing.assert_array_equal(r.log_mass[[0, 2]], [-np.inf, -np.inf])
    np.testing.assert_allclose(r.mass[1], scipy.stats.norm.cdf(1) - scipy.stats.norm.cdf(-1), rtol=1e-14)
    assert r.mean[1] == pytest.approx(0.0, abs=1e-15)
    assert np.isnan(r.mean[[0, 2]]).all()


def test_empty_polygon_moments_are_undefined_too():
    r = fastcpa.polygon_moments([[1.0, 0.0], [-1.0, 0.0]], [-1.0, -1.0])  # z1 >= 1 and z1 <= -1
    assert r.log_mass == -np.inf and np.isnan(r.mean).all() and np.isnan(r.cov).all()


# ----------------------------------------------------------------------------- 11. covariance scale
@pytest.mark.parametrize("scale", [1e-300, 1e-200, 1.0, 1e200, 1e300])
def test_covariance_checks_are_scale_invariant(scale):
    bad = scale * np.array([[1.0, 1.0], [1.0, 1.0]])  # singular at every scale
    with pytest.raises(ValueError, match="positive definite"):
        fastcpa.polygon_moments([[1.0, 0.0]], [0.0], cov=bad)
    asym = scale * np.array([[1.0, 0.5], [0.0, 1.0]])
    with pytest.raises(ValueError, match="symmetric"):
        fastcpa.polygon_moments([[1.0, 0.0]], [0.0], cov=asym)
    fastcpa.polygon_moments([[1.0, 0.0]], [0.0], cov=scale * np.array([[1.0, 0.3], [0.3, 2.0]]))


@pytest.mark.parametrize("scale", [1e-300, 1e-200, 1e200, 1e300])
def test_orthant_moments_at_extreme_scales(scale):
    # z >= 0 under N(0, s^2 I): mass 1/4, each coordinate half-normal: mean s sqrt(2/pi), var s^2 (1 - 2/pi)
    r = fastcpa.polygon_moments([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0], cov=scale * np.eye(2))
    s = np.sqrt(scale)
    np.testing.assert_allclose(r.log_mass, np.log(0.25), rtol=1e-14)
    np.testing.assert_allclose(r.mean, s * np.sqrt(2 / np.pi) * np.ones(2), rtol=1e-13)
    np.testing.assert_allclose(np.diag(r.cov), scale * (1 - 2 / np.pi) * np.ones(2), rtol=1e-13)
    assert abs(r.cov[0, 1]) <= 1e-13 * scale


# ----------------------------------------------------------------------------- 12. processes, threads, cache
def _run(code, env=None, timeout=240):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=full_env)


_FORK_SCRIPT = """
    import multiprocessing as mp
    import fastcpa
    def work(i):
        return float(fastcpa.interval_moments(-1.0, float(i)).log_mass)
    if __name__ == "__main__":
        {before}
        with mp.get_context("fork").Pool(2) as pool:
            try:
                print("OK", pool.map_async(work, [1, 2]).get(timeout=150))
            except RuntimeError as err:
                print("ERROR", err)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="the fork start method and GNU OpenMP: Linux")
def test_fork_after_a_kernel_ran_raises_instead_of_hanging():
    out = _run(_FORK_SCRIPT.format(before="work(1)"))
    assert out.returncode == 0, out.stderr
    import numba

    numba.get_num_threads()  # the layer this interpreter picks (the subprocess picks the same)
    if numba.threading_layer() == "omp":
        assert "ERROR" in out.stdout and "spawn" in out.stdout and "forkserver" in out.stdout, out.stdout
    else:  # tbb / workqueue are fork-safe
        assert "OK" in out.stdout, out.stdout


@pytest.mark.skipif(sys.platform != "linux", reason="the fork start method: Linux")
def test_fork_before_any_kernel_ran_works():
    out = _run(_FORK_SCRIPT.format(before="pass"))
    assert out.returncode == 0 and "OK" in out.stdout, (out.stdout, out.stderr)
    assert "-0.38171514630212" in out.stdout  # log(Phi(1) - Phi(-1))


def test_concurrent_calls_from_four_threads(rng):
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads():
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    model, exact = _linear_model(rng, S=1, D=2)
    X = exact.rvs(size=300, random_state=3)
    expected = exact.logpdf(X)
    results, errors = [], []

    def work():
        try:
            for _ in range(5):
                results.append(model.log_prob(X))
                results.append(model.posterior(X).log_prob)
        except Exception as err:  # noqa: BLE001  (reported below)
            errors.append(err)

    with threadpool_limits(2, user_api="blas"):
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert blas_threads() <= {2}  # the user's setting came back
    assert not errors, errors
    assert len(results) == 40
    for r in results:
        np.testing.assert_allclose(r, expected, rtol=1e-12)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs a BLAS setting other than 1 thread")
def test_blas_limit_comes_back_when_calls_overlap_across_threads():
    from threadpoolctl import threadpool_info, threadpool_limits

    from fastcpa._threads import blas_single_threaded

    def blas_threads():
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    with blas_single_threaded():  # load SciPy's BLAS before reading the setting
        pass
    # (OpenBLAS caps a count above the core count when set from a non-main thread: use 2)
    # every order of two overlapping calls: (who enters first, who leaves first)
    for main_enters_first in (True, False):
        for main_leaves_first in (True, False):
            entered, release = threading.Event(), threading.Event()
            go = threading.Event()

            def other():
                if main_enters_first:
                    go.wait(10)
                with blas_single_threaded():
                    entered.set()
                    release.wait(10)

            with threadpool_limits(2, user_api="blas"):
                t = threading.Thread(target=other)
                t.start()
                if not main_enters_first:
                    entered.wait(10)
                call = blas_single_threaded()
                call.__enter__()
                go.set()
                entered.wait(10)
                if main_leaves_first:
                    call.__exit__(None, None, None)
                    release.set()
                    t.join()
                else:
                    release.set()
                    t.join()
                    call.__exit__(None, None, None)
                after = blas_threads()
            # the user's setting came back whichever call entered or left first
            assert after == {2}, (main_enters_first, main_leaves_first)


def test_unwritable_numba_cache_falls_back_with_a_warning():
    # Numba's "no locator available": simulated by offering it no cache locations at all
    out = _run("""
        import warnings
        import numba.core.caching as caching
        impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl  # renamed in Numba 0.60
        impl._locator_classes = []
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            from fastcpa.kernels.cpu import truncated
        msgs = [str(x.message) for x in w if "fastcpa" in str(x.message)]
        print(len(msgs))
        print(msgs[0])
        print(type(truncated.interval_moments_batch.dispatcher._cache).__name__)
    """, env={"FASTCPA_NUMBA_CACHE": "1"})
    assert out.returncode == 0, out.stderr
    count, msg, cache = out.stdout.strip().splitlines()
    assert count == "1"  # one warning, however many kernels
    assert "FASTCPA_NUMBA_CACHE=0" in msg and "NUMBA_CACHE_DIR" in msg
    assert cache == "NullCache"
