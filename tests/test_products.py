"""The wide products split across Numba's threads (``fastcpa._threads.matmul``, ``matmul_tn``).

Oracle: integer-valued matrices, whose products are exact in float64 whatever
the order of the additions, against numpy's int64 product; on general floats,
the same bits whatever the thread count.
"""

import numba
import numpy as np
import pytest

from fastcpa._threads import _SPLIT_WORK, matmul, matmul_tn


def _ints(rng, shape):
    return rng.integers(-50, 51, size=shape).astype(np.float64)


@pytest.fixture
def threads():
    n = numba.get_num_threads()
    yield n
    numba.set_num_threads(n)


def test_split_products_are_exact_on_integers_in_every_layout(rng):
    n, k, m = 900, 120, 80
    assert n * k * m >= _SPLIT_WORK  # the split path, not numpy's
    A, B = _ints(rng, (n, k)), _ints(rng, (k, m))
    exact = (A.astype(np.int64) @ B.astype(np.int64)).astype(np.float64)
    Bf = np.asfortranarray(B)
    Bro = B.copy()
    Bro.setflags(write=False)
    strided = np.repeat(B, 2, axis=1)[:, ::2]  # neither C- nor F-contiguous
    for b in (B, Bf, Bro, strided):
        np.testing.assert_array_equal(matmul(A, b), exact)
    out = np.full((n, m), np.nan)
    assert matmul(np.asfortranarray(A), B, out=out) is out
    np.testing.assert_array_equal(out, exact)
    np.testing.assert_array_equal(matmul(A[::-1], B), exact[::-1])  # a non-contiguous A
    Aro = A.copy()
    Aro.setflags(write=False)  # a user's read-only points (sign_codes)
    np.testing.assert_array_equal(matmul(Aro, Bro), exact)
    C = _ints(rng, (n, m))
    np.testing.assert_array_equal(matmul_tn(A, C), (A.astype(np.int64).T @ C.astype(np.int64)).astype(np.float64))


def test_split_products_do_not_depend_on_the_thread_count(rng, threads):
    A, B, C = rng.normal(size=(1500, 200)), rng.normal(size=(200, 70)), rng.normal(size=(1500, 90))
    results = []
    for t in sorted({1, 2, threads}):
        numba.set_num_threads(t)
        results.append((matmul(A, B), matmul_tn(A, C)))
    for ab, ac in results[1:]:
        np.testing.assert_array_equal(ab, results[0][0])
        np.testing.assert_array_equal(ac, results[0][1])
    np.testing.assert_allclose(results[0][0], A @ B, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(results[0][1], A.T @ C, rtol=1e-12, atol=1e-11)


def test_small_and_other_dtype_products_are_numpys(rng):
    A, B = rng.normal(size=(5, 3)), rng.normal(size=(3, 4))
    np.testing.assert_array_equal(matmul(A, B), A @ B)
    np.testing.assert_array_equal(matmul_tn(A, A), A.T @ A)
    A32 = _ints(rng, (900, 120)).astype(np.float32)
    B32 = _ints(rng, (120, 80)).astype(np.float32)
    np.testing.assert_array_equal(matmul(A32, B32, out=np.empty((900, 80), np.float32)), A32 @ B32)


def test_fit_runs_blas_single_threaded_and_gives_the_setting_back(rng):
    from threadpoolctl import threadpool_info, threadpool_limits

    import fastcpa

    def blas_threads():
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    gen = fastcpa.Generator([rng.normal(size=(6, 1)), rng.normal(size=(3, 6))], [rng.normal(size=6), np.zeros(3)])
    model = fastcpa.CPAModel(gen, sigma_x=0.5)
    X = model.sample(40, seed=1)
    seen = []
    with threadpool_limits(2, user_api="blas"):
        model.fit(X, n_iter=2, progress=False, callback=lambda i, ll, m: seen.append(blas_threads()))
        assert blas_threads() <= {2}
    assert seen == [{1}, {1}]
