"""``fastcpa.em.log_likelihood_gradient`` with the arrays a user has at hand: the caller's own
weight arrays stay theirs to edit (a finite-difference check perturbs them in place), and
read-only inputs of every kind are accepted.

Oracle: a linear generator is probabilistic PCA, ``x ~ N(b, Sigma_x + sigma_z^2 A A^T)`` with
``A = W2 W1`` and ``b = W2 c1 + c2``, whose log-likelihood gradient has a closed form.
"""

import numpy as np
import pytest

import fastcpa


def ppca_gradient(Ws, cs, sigma, sigma_z, X):
    """Closed-form gradient of sum_n log N(x_n; b, C) for the two-layer linear generator."""
    (W1, W2), (c1, c2) = Ws, cs
    A, b = W2 @ W1, W2 @ c1 + c2
    D = len(b)
    var = np.broadcast_to(np.asarray(sigma, float) ** 2, (D,))
    C = np.diag(var) + sigma_z**2 * A @ A.T
    Ci = np.linalg.inv(C)
    R = X - b
    gb = Ci @ R.sum(axis=0)
    G = 0.5 * (Ci @ (R.T @ R) @ Ci - len(X) * Ci)  # dL/dC
    gA = 2.0 * sigma_z**2 * G @ A
    ds = 2.0 * np.sqrt(var) * np.diag(G)
    return {"weights": [W2.T @ gA, gA @ W1.T + np.outer(gb, c1)], "biases": [W2.T @ gb, gb],
            "sigma_x": float(ds.sum()) if np.ndim(sigma) == 0 else ds}


@pytest.mark.parametrize("diag", [False, True])
def test_gradient_with_read_only_inputs_matches_ppca(rng, diag):
    S, H, D = 2, 3, 4
    Ws = [rng.normal(size=(H, S)), rng.normal(size=(D, H))]
    cs = [rng.normal(size=H), rng.normal(size=D)]
    sigma = np.array([0.5, 0.7, 0.9, 1.1]) if diag else 0.6
    X = rng.normal(size=(40, D)) * 2.0
    ro = [a.copy() for a in (*Ws, *cs)] + [np.array(sigma, dtype=float), X.copy()]
    for a in ro:
        a.setflags(write=False)
    gen = fastcpa.Generator(ro[:2], ro[2:4], activation="linear")
    model = fastcpa.CPAModel(gen, sigma_x=ro[4] if diag else sigma, sigma_z=1.3)
    got = fastcpa.em.log_likelihood_gradient(model, ro[5])
    want = ppca_gradient(Ws, cs, sigma, 1.3, X)
    for key in ("weights", "biases"):
        for g, w in zip(got[key], want[key]):
            np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-9 * np.abs(w).max())
    np.testing.assert_allclose(got["sigma_x"], want["sigma_x"], rtol=1e-9)
    for g in (*got["weights"], *got["biases"]):
        assert g.flags.writeable  # the caller may scale or accumulate them in place


def test_callers_arrays_stay_writable_and_separate(rng):
    """The finite-difference loop a reviewer wrote: perturb the arrays given to Generator in
    place and rebuild. Generator froze the caller's arrays ("assignment destination is
    read-only"); it now keeps read-only copies and leaves the caller's alone."""
    S, H, D = 2, 3, 3
    Ws = [rng.normal(size=(H, S)), rng.normal(size=(D, H))]
    cs = [rng.normal(size=H), rng.normal(size=D)]
    X = rng.normal(size=(30, D))
    gen = fastcpa.Generator(Ws, cs, activation="linear")
    grad = fastcpa.em.log_likelihood_gradient(fastcpa.CPAModel(gen, sigma_x=0.5), X)
    assert all(a.flags.writeable for a in (*Ws, *cs))
    assert not any(a.flags.writeable for a in (*gen.weights, *gen.biases))
    W0 = gen.weights[0].copy()

    def total():
        return fastcpa.CPAModel(fastcpa.Generator(Ws, cs, activation="linear"), sigma_x=0.5).log_prob(X).sum()

    h = 1e-6
    for i, j in [(0, 0), (2, 1)]:
        Ws[0][i, j] += h
        up = total()
        Ws[0][i, j] -= 2 * h
        down = total()
        Ws[0][i, j] += h
        assert (up - down) / (2 * h) == pytest.approx(grad["weights"][0][i, j], rel=1e-6, abs=1e-6)
    np.testing.assert_array_equal(gen.weights[0], W0)  # the generator did not see the edits
    want = ppca_gradient(Ws, cs, 0.5, 1.0, X)
    np.testing.assert_allclose(grad["weights"][0], want["weights"][0], rtol=1e-9)
