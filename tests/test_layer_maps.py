"""The incremental layer-map kernel against a dense NumPy product.

``scaled_maps_product`` updates each region's map from the previous row's by
rank-one terms; the oracle here is the plain product ``(q * U[parent]) @ W.T``
per row, with an error bound in units of the sizes of the row's own terms.
"""

import numpy as np
import pytest

from fastcpa.kernels.cpu.layer_maps import scaled_maps_product
from fastcpa.partition import _map_blocks

EPS = np.finfo(float).eps


def dense_maps(U_prev, parent, code, eta, W, c):
    """Oracle: the per-row product, and the sizes of its terms (sum_k |q_k U_ak| |W_dk|)."""
    q = np.where(code, 1.0, eta[None, :])
    H = q[:, None, :] * U_prev[parent]  # (n, S+1, w)
    M = H @ W.T
    M[:, -1] += c
    mag = np.abs(H) @ np.abs(W.T)
    return M, mag


def random_walk_codes(rng, n, w, p_flip):
    """Rows that differ from the row before in a few random bits, like enumeration order."""
    code = np.empty((n, w), bool)
    code[0] = rng.random(w) < 0.5
    for i in range(1, n):
        code[i] = code[i - 1] ^ (rng.random(w) < p_flip)
    return code


def run_kernel(U_prev, parent, code, eta, W, c, restart=32, transposed=False):
    n, S1 = len(parent), U_prev.shape[1]
    if transposed:  # the output-layer layout: A (n, out, S) written through a strided view
        A = np.empty((n, W.shape[0], S1 - 1))
        b = np.empty((n, W.shape[0]))
        scaled_maps_product(U_prev, parent, code, eta, np.ascontiguousarray(W.T), c,
                            _map_blocks(parent, restart), np.swapaxes(A, 1, 2), b)
        return np.concatenate([np.swapaxes(A, 1, 2), b[:, None]], axis=1)
    M = np.empty((n, S1, W.shape[0]))
    scaled_maps_product(U_prev, parent, code, eta, np.ascontiguousarray(W.T), c,
                        _map_blocks(parent, restart), M[:, :-1], M[:, -1])
    return M


@pytest.mark.parametrize("S", [1, 2])
@pytest.mark.parametrize("eta_kind", ["relu", "leaky", "abs", "prelu"])
@pytest.mark.parametrize("transposed", [False, True])
def test_matches_dense_product(rng, S, eta_kind, transposed):
    w, out, n_par = 40, 7, 5
    eta = {"relu": np.zeros(w), "leaky": np.full(w, 0.1), "abs": np.full(w, -1.0),
           "prelu": rng.uniform(-0.5, 1.0, w)}[eta_kind]
    if eta_kind == "prelu":
        eta[3] = 1.0  # a linear unit: q = 1 whatever its bit
    U_prev = rng.normal(size=(n_par, S + 1, w)) * np.exp(rng.normal(size=(n_par, 1, w)))
    parent = np.sort(rng.integers(0, n_par, size=400))
    code = random_walk_codes(rng, len(parent), w, 0.05)
    W, c = rng.normal(size=(out, w)), rng.normal(size=out)
    got = run_kernel(U_prev, parent, code, eta, W, c, transposed=transposed)
    M, mag = dense_maps(U_prev, parent, code, eta, W, c)
    # the module's bound: 8 * restart ulps of the row's term size (+ the bias)
    bound = 8 * 32 * EPS * (mag.max(axis=2, keepdims=True) + np.abs(c).max())
    assert np.all(np.abs(got - M) <= bound)


def test_unsorted_parents_and_restart_one(rng):
    """Blocks never span two parents, whatever their order; restart=1 is a dense product per row."""
    w, out = 12, 3
    U_prev = rng.normal(size=(4, 3, w))
    parent = rng.integers(0, 4, size=100)
    code = random_walk_codes(rng, 100, w, 0.2)
    eta = np.full(w, 0.2)
    W, c = rng.normal(size=(out, w)), rng.normal(size=out)
    M, mag = dense_maps(U_prev, parent, code, eta, W, c)
    for restart in (1, 7, 1000):
        got = run_kernel(U_prev, parent, code, eta, W, c, restart=restart)
        np.testing.assert_allclose(got, M, rtol=0, atol=1e-12 * (mag.max() + 1))


def test_dead_relu_region_is_exactly_constant(rng):
    """Reaching an all-off ReLU pattern by updates leaves no rounding residue:
    its slope rows are exactly 0 and its offset exactly the bias."""
    w, out = 64, 5
    U_prev = rng.normal(size=(1, 3, w)) * 10.0
    n = 70
    code = np.ones((n, w), bool)
    for i in range(1, n):  # switch units off one by one, all off from row 64 on
        code[i] = code[i - 1]
        code[i, (i - 1) % w] = False
    parent = np.zeros(n, np.int64)
    W, c = rng.normal(size=(out, w)), rng.normal(size=out)
    got = run_kernel(U_prev, parent, code, np.zeros(w), W, c, restart=1000)
    assert np.all(got[w:, :2] == 0.0)
    assert np.all(got[w:, 2] == c)


def test_map_blocks():
    parent = np.array([0, 0, 0, 0, 0, 1, 1, 0, 0, 2], np.int64)
    blocks = _map_blocks(parent, restart=3)
    np.testing.assert_array_equal(blocks, [0, 3, 5, 6, 7, 9, 10])
    for a, e in zip(blocks[:-1], blocks[1:]):
        assert e - a <= 3 and len(set(parent[a:e])) == 1
