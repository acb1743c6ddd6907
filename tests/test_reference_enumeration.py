"""Checks of the LP-based reference enumeration against independent facts.

The reference lives in ``benchmarks/reference_enumeration.py``; it is imported
by path so these tests do not depend on the ``fastcpa`` package.
"""

import importlib.util
import pathlib

import numpy as np
import pytest

_PATH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "reference_enumeration.py"
_spec = importlib.util.spec_from_file_location("reference_enumeration", _PATH)
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)


def _net(widths, rng, eta=0.0):
    Ws = [rng.normal(size=(o, i)) for i, o in zip(widths[:-1], widths[1:])]
    bs = [rng.normal(size=o) for o in widths[1:]]
    slopes = [np.full(w, float(eta)) for w in widths[1:-1]]
    return Ws, bs, slopes


def _check_consistency(W, c, e, out):
    codes, A, b, Z = out["codes"], out["A"], out["b"], out["interior"]
    assert len({row.tobytes() for row in codes}) == codes.shape[0], "duplicate codes"
    g = ref.forward(W, c, e, Z)
    g_aff = np.einsum("rds,rs->rd", A, Z) + b
    np.testing.assert_allclose(g_aff, g, rtol=0, atol=1e-10 * (1 + np.abs(g).max()))
    np.testing.assert_array_equal(ref.forward_codes(W, c, e, Z), codes)
    assert np.all(out["inradius"] > 1e-9)


@pytest.mark.parametrize("S", [1, 2])
@pytest.mark.parametrize("n", [3, 6, 10])
def test_one_layer_general_position_counts(S, n):
    rng = np.random.default_rng(100 * S + n)
    W, c, e = _net([S, n, 3], rng)
    out = ref.enumerate_regions_lp(W, c, e)
    expected = n + 1 if S == 1 else 1 + n + n * (n - 1) // 2
    assert out["complete"]
    assert out["codes"].shape == (expected, n)
    assert out["A"].shape == (expected, 3, S)
    assert out["b"].shape == (expected, 3)
    assert out["interior"].shape == (expected, S)
    _check_consistency(W, c, e, out)


@pytest.mark.parametrize("eta", [0.1, -1.0])
def test_leaky_and_abs_same_arrangement(eta):
    # The partition depends only on the first layer's hyperplanes for one hidden layer.
    rng = np.random.default_rng(7)
    n = 6
    W, c, e = _net([2, n, 2], rng, eta=eta)
    out = ref.enumerate_regions_lp(W, c, e)
    assert out["codes"].shape[0] == 1 + n + n * (n - 1) // 2
    _check_consistency(W, c, e, out)


def test_linear_units_are_not_in_codes():
    rng = np.random.default_rng(3)
    W, c, e = _net([2, 5, 4, 2], rng)
    e[0][[1, 3]] = 1.0  # two linear units in layer 0
    e[1][0] = 1.0
    out = ref.enumerate_regions_lp(W, c, e)
    assert out["codes"].shape[1] == 3 + 3
    assert out["units"].tolist() == [[0, 0], [0, 2], [0, 4], [1, 1], [1, 2], [1, 3]]
    _check_consistency(W, c, e, out)


def test_duplicated_hyperplanes():
    # Repeating units (and scaled copies) must not hide facets.
    rng = np.random.default_rng(11)
    n = 5
    W1 = rng.normal(size=(n, 2))
    b1 = rng.normal(size=n)
    W1d = np.vstack([W1, 2.5 * W1[:2]])
    b1d = np.concatenate([b1, 2.5 * b1[:2]])
    W = [W1d, rng.normal(size=(2, n + 2))]
    c = [b1d, rng.normal(size=2)]
    e = [np.zeros(n + 2)]
    out = ref.enumerate_regions_lp(W, c, e)
    assert out["codes"].shape[0] == 1 + n + n * (n - 1) // 2
    assert np.array_equal(out["codes"][:, :2], out["codes"][:, n:])
    _check_consistency(W, c, e, out)


def test_two_layers_covers_sampled_codes():
    rng = np.random.default_rng(5)
    W, c, e = _net([2, 7, 7, 2], rng)
    out = ref.enumerate_regions_lp(W, c, e)
    assert out["complete"]
    _check_consistency(W, c, e, out)
    found = {row.tobytes() for row in out["codes"]}

    Z = [rng.normal(scale=3.0, size=(200_000, 2))]
    theta = np.linspace(0.0, 2 * np.pi, 20_000, endpoint=False)
    circle = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    Z += [r * circle for r in (10.0, 100.0, 1e3)]
    sampled = {row.tobytes() for row in ref.forward_codes(W, c, e, np.vstack(Z))}
    missing = sampled - found
    assert not missing, f"{len(missing)} sampled codes not enumerated"
    assert len(found) >= len(sampled)


def test_one_dimensional_deep_net_matches_breakpoints():
    # S = 1: every region is an interval; a dense grid (spacing 1e-3, much
    # finer than the narrowest interval of this net) must hit all of them.
    rng = np.random.default_rng(9)
    W, c, e = _net([1, 6, 6, 1], rng)
    out = ref.enumerate_regions_lp(W, c, e)
    _check_consistency(W, c, e, out)
    z = np.linspace(-200, 200, 400_001)[:, None]
    sampled = {row.tobytes() for row in ref.forward_codes(W, c, e, z)}
    assert sampled <= {row.tobytes() for row in out["codes"]}
    assert 2 * out["inradius"].min() > 1e-2
    assert out["codes"].shape[0] == len(sampled)


def test_radius_restricts_regions():
    rng = np.random.default_rng(13)
    n = 8
    W, c, e = _net([1, n, 1], rng)
    radius = 0.7
    breaks = -c[0] / W[0][:, 0]
    inside = int(np.sum(np.abs(breaks) < radius))
    out = ref.enumerate_regions_lp(W, c, e, radius=radius)
    assert out["codes"].shape[0] == inside + 1
    assert np.all(np.abs(out["interior"]) < radius)
    _check_consistency(W, c, e, out)


def test_max_regions_stops_early():
    rng = np.random.default_rng(17)
    W, c, e = _net([2, 10, 2], rng)
    out = ref.enumerate_regions_lp(W, c, e, max_regions=5)
    assert out["codes"].shape[0] == 5
    assert not out["complete"]
    _check_consistency(W, c, e, out)
