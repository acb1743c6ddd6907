import numpy as np
import pytest

import fastcpa
from reference import (facet_is_nonredundant, forward_codes, init_layers, interior_point, sample_latent,
                       unique_codes)

ACTS = [("relu", 0.01), ("leaky_relu", 0.1), ("abs", 0.0)]


def make(rng, sizes, activation="relu", slope=0.1, scale="normal"):
    Ws, cs = init_layers(rng, sizes, scale=scale)
    return fastcpa.Generator(Ws, cs, activation=activation, slope=slope)


def check_affine_maps(gen, part, Z):
    """A z + b reproduces g(z) at Z (relative to the size of the terms)."""
    r = part.locate(Z)
    pred = np.einsum("nds,ns->nd", part.A[r], Z) + part.b[r]
    g = gen(Z)
    scale = np.abs(np.einsum("nds,ns->nd", np.abs(part.A[r]), np.abs(Z))) + np.abs(part.b[r])
    assert np.all(np.abs(pred - g) <= 1e-10 * scale + 1e-300), np.max(np.abs(pred - g) / scale)


def check_partition(gen, part, rng, n_sample=3000):
    """The core invariants, each against an oracle that does not use the partition."""
    S = gen.latent_dim
    codes = part.code_bits()
    # 1. regions have distinct codes (a code defines a convex, hence connected, set)
    assert len(unique_codes(codes)) == part.n_regions
    # 2. dense sampling (out to radius 1e5) finds no code the partition lacks
    Z = sample_latent(rng, S, n_sample)
    sampled = unique_codes(forward_codes(gen.weights, gen.biases, gen.slopes, Z))
    assert sampled <= unique_codes(codes)
    # 3. an interior point of every region has that region's code and A z + b = g(z)
    P = np.array([interior_point(part, r) for r in range(part.n_regions)])
    np.testing.assert_array_equal(forward_codes(gen.weights, gen.biases, gen.slopes, P), codes)
    check_affine_maps(gen, part, P)
    check_affine_maps(gen, part, Z)
    # 4. facets describe the region: interior points satisfy their own facets strictly
    for r in range(part.n_regions):
        N, o, _, _ = part.facets(r)
        assert np.all(N @ P[r] + o > 0)
    # 5. adjacency is symmetric and crosses the facet's own unit
    for r in range(part.n_regions):
        _, _, units, nbrs = part.facets(r)
        for u, s in zip(units, nbrs):
            assert s >= 0 and s != r
            _, _, units_s, nbrs_s = part.facets(s)
            assert r in nbrs_s[units_s == u], (r, s, u)
            assert codes[r, u] != codes[s, u]


@pytest.mark.parametrize("S", [1, 2])
@pytest.mark.parametrize("n", [1, 4, 9, 17])
@pytest.mark.parametrize("activation,slope", ACTS)
def test_one_layer_general_position_counts(rng, S, n, activation, slope):
    gen = make(rng, [S, n, 3], activation, slope)
    part = fastcpa.partition(gen)
    expected = n + 1 if S == 1 else 1 + n + n * (n - 1) // 2
    assert part.n_regions == expected
    check_partition(gen, part, rng, n_sample=500)


@pytest.mark.parametrize("S", [1, 2])
@pytest.mark.parametrize("activation,slope", ACTS + [("prelu", None)])
def test_deep_nets(rng, S, activation, slope):
    sizes = [S, 12, 10, 8, 6, 4] if S == 2 else [S, 24, 20, 16, 12, 4]
    if slope is None:  # per-unit PReLU slopes, including a unit with slope exactly 1 (never switches)
        slope = [rng.uniform(-0.5, 0.5, size=w) for w in sizes[1:-1]]
        slope[1][3] = 1.0
    gen = make(rng, sizes, activation, slope)
    part = fastcpa.partition(gen)
    check_partition(gen, part, rng)


def test_per_layer_activations_and_linear_layer(rng):
    gen = make(rng, [2, 8, 6, 7, 3], ["relu", "linear", "abs"], 0.1)
    part = fastcpa.partition(gen)
    check_partition(gen, part, rng)
    assert not part.code_bits()[:, 8:14].any()  # the linear layer's units never switch


@pytest.mark.parametrize("S", [1, 2])
def test_linear_generator_is_one_region(rng, S):
    W, c = rng.normal(size=(4, S)), rng.normal(size=4)
    part = fastcpa.partition(fastcpa.Generator([W], [c]))
    assert part.n_regions == 1 and part.codes.shape == (1, 0)
    np.testing.assert_array_equal(part.A[0], W)
    np.testing.assert_array_equal(part.b[0], c)
    assert len(part.facet_unit) == 0
    np.testing.assert_array_equal(part.locate(rng.normal(size=(5, S))), 0)


@pytest.mark.parametrize("S", [1, 2])
def test_permuting_hidden_units_changes_nothing(rng, S):
    sizes = [S, 9, 7, 3]
    Ws, cs = init_layers(rng, sizes, scale="normal")
    gen = fastcpa.Generator(Ws, cs, activation="leaky_relu", slope=0.2)
    p1, p2 = rng.permutation(9), rng.permutation(7)
    Wp = [Ws[0][p1], Ws[1][p2][:, p1], Ws[2][:, p2]]
    cp = [cs[0][p1], cs[1][p2], cs[2]]
    genp = fastcpa.Generator(Wp, cp, activation="leaky_relu", slope=0.2)
    a, b = fastcpa.partition(gen), fastcpa.partition(genp)
    assert a.n_regions == b.n_regions
    perm = np.concatenate([p1, 9 + p2])
    ca, cb = a.code_bits(), b.code_bits()[:, np.argsort(perm)]
    ia, ib = np.lexsort(ca.T), np.lexsort(cb.T)
    np.testing.assert_array_equal(ca[ia], cb[ib])
    np.testing.assert_allclose(a.A[ia], b.A[ib], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a.b[ia], b.b[ib], rtol=1e-12, atol=1e-12)


def test_facets_are_nonredundant_by_lp(rng):
    gen = make(rng, [2, 10, 8, 3], "leaky_relu", 0.1)
    part = fastcpa.partition(gen)
    for r in range(part.n_regions):
        N, o, _, _ = part.facets(r)
        for f in range(len(o)):
            assert facet_is_nonredundant(N, o, f), (r, f)


def test_agrees_with_lp_reference_enumeration(rng):
    """An independent enumeration (BFS over codes, one LP per region) finds the same regions."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parents[1] / "benchmarks" / "reference_enumeration.py"
    spec = importlib.util.spec_from_file_location("reference_enumeration", path)
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    for S, sizes in [(1, [1, 12, 10, 3]), (2, [2, 8, 6, 3])]:
        gen = make(rng, sizes, "relu")
        out = ref.enumerate_regions_lp(gen.weights, gen.biases, gen.slopes)
        part = fastcpa.partition(gen)
        assert out["complete"]
        assert unique_codes(out["codes"]) == unique_codes(part.code_bits())


def test_serial_and_parallel_polygon_splits_agree(rng, monkeypatch):
    import sys

    mod = sys.modules["fastcpa.partition"]  # the module (fastcpa.partition is the function)

    gen = make(rng, [2, 12, 10, 3], "leaky_relu", 0.1)
    out = {}
    for mode in ("serial", "parallel"):
        monkeypatch.setattr(mod, "_SPLIT_MODE", mode)
        out[mode] = fastcpa.partition(gen)
    a, b = out["serial"], out["parallel"]
    for name in ("A", "b", "codes", "facet_ptr", "facet_normal", "facet_unit", "boundary_ptr", "boundary"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


# ----------------------------------------------------------------------------- degenerate input
def test_unit_with_zero_incoming_weights_never_splits(rng):
    Ws, cs = init_layers(rng, [2, 6, 5, 2], scale="normal")
    Ws[0][2] = 0.0  # constant pre-activation c: on iff c >= 0
    Ws[1][1] = 0.0
    gen = fastcpa.Generator(Ws, cs)
    part = fastcpa.partition(gen)
    check_partition(gen, part, rng)
    bits = part.code_bits()
    assert np.all(bits[:, 2] == (cs[0][2] >= 0)) and np.all(bits[:, 7] == (cs[1][1] >= 0))
    # one layer with the dead unit: 5 lines in general position
    one = fastcpa.partition(fastcpa.Generator(Ws[:1] + [np.ones((1, 6))], cs[:1] + [np.zeros(1)]))
    assert one.n_regions == 1 + 5 + 10


@pytest.mark.parametrize("S", [1, 2])
def test_duplicated_units_add_no_regions(rng, S):
    W, c = rng.normal(size=(5, S)), rng.normal(size=5)
    Wd = np.vstack([W, W[1:2], -2.0 * W[3:4]])  # an exact copy and a flipped, rescaled copy
    cd = np.concatenate([c, c[1:2], -2.0 * c[3:4]])
    base = fastcpa.partition(fastcpa.Generator([W, np.ones((2, 5))], [c, np.zeros(2)]))
    gen = fastcpa.Generator([Wd, rng.normal(size=(2, 7))], [cd, np.zeros(2)])
    part = fastcpa.partition(gen)
    assert part.n_regions == base.n_regions
    check_partition(gen, part, rng, n_sample=500)


def test_concurrent_lines_through_a_vertex():
    # lines x = 0, y = 0, x = y and x = -y all through the origin: 8 sectors, all unbounded
    W = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0], [1.0, 1.0], [1.0, 2.0]])
    c = np.array([0.0, 0.0, 0.0, 0.0, -3.0])  # plus one line off the origin
    gen = fastcpa.Generator([W, np.ones((1, 5))], [c, np.zeros(1)])
    part = fastcpa.partition(gen)
    # 4 concurrent lines make 8 sectors; the 5th line crosses 5 of them (it meets 4 lines
    # at 4 distinct points), adding 5 regions
    assert part.n_regions == 13
    assert part.is_bounded().sum() == 3
    check_partition(gen, part, np.random.default_rng(1), n_sample=500)


def test_parallel_lines_make_strips():
    W = np.array([[0.0, 1.0], [0.0, 1.0], [0.0, -1.0], [1.0, 0.0]])
    c = np.array([0.0, -1.0, 3.0, 0.0])  # y = 0, y = 1, y = 3 and x = 0
    gen = fastcpa.Generator([W, np.ones((1, 4))], [c, np.zeros(1)])
    part = fastcpa.partition(gen)
    assert part.n_regions == 8
    assert not part.is_bounded().any()
    check_partition(gen, part, np.random.default_rng(2), n_sample=500)
    # a half-plane and a strip without x = 0: polygons with vertex-free boundary lines
    gen2 = fastcpa.Generator([W[:3], np.ones((1, 3))], [c[:3], np.zeros(1)])
    part2 = fastcpa.partition(gen2)
    assert part2.n_regions == 4
    check_partition(gen2, part2, np.random.default_rng(3), n_sample=500)


def test_s1_coincident_breakpoints_across_layers():
    # layer-2 unit u = relu(z) - relu(z): identically 0, and u = relu(z) + relu(-z) - 0 crosses nothing
    W1, c1 = np.array([[1.0], [-1.0], [1.0]]), np.array([0.0, 0.0, -1.0])
    W2, c2 = np.array([[1.0, -1.0, 0.0], [1.0, 1.0, -1.0], [0.0, 0.0, 1.0]]), np.array([0.0, -1.0, 0.0])
    gen = fastcpa.Generator([W1, W2, np.ones((1, 3))], [c1, c2, np.zeros(1)])
    part = fastcpa.partition(gen)
    check_partition(gen, part, np.random.default_rng(4), n_sample=500)


def test_far_out_regions_s2(rng):
    # lines far from the origin and nearly parallel lines crossing far away
    W = np.array([[1.0, 0.0], [1.0, 1e-7], [0.0, 1.0], [1.0, 1.0]])
    c = np.array([-1e4, -1e4 + 1.0, 5e4, 3e4])
    gen = fastcpa.Generator([W, rng.normal(size=(6, 4)), rng.normal(size=(2, 6))], [c, rng.normal(size=6), np.zeros(2)])
    part = fastcpa.partition(gen)
    check_partition(gen, part, rng)


# ----------------------------------------------------------------------------- API
def test_unsupported_latent_dim_and_backend(rng):
    gen = make(rng, [3, 4, 2])
    with pytest.raises(NotImplementedError, match="S = 3"):
        fastcpa.partition(gen)
    with pytest.raises(NotImplementedError, match="GPU"):
        fastcpa.partition(make(rng, [1, 4, 2]), backend="gpu")
    with pytest.raises(TypeError, match="Generator"):
        fastcpa.partition("not a generator")


def test_locate_validates_input(rng):
    part = fastcpa.partition(make(rng, [2, 4, 2]))
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        part.locate(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        part.locate(np.array([[0.0, np.nan]]))


def test_partition_arrays_are_read_only(rng):
    part = fastcpa.partition(make(rng, [2, 4, 2]))
    with pytest.raises(ValueError):
        part.A[0, 0, 0] = 1.0


@pytest.mark.parametrize("S", [1, 2])
def test_anchors_lie_in_their_regions_with_their_image(rng, S):
    """Each region's anchor is a point of its closure, and G is g there, on the
    region's own piece (the likelihood's residuals are formed from it)."""
    Ws = [rng.normal(size=(6, S)), rng.normal(size=(5, 6)), rng.normal(size=(3, 5))]
    cs = [rng.normal(size=6), rng.normal(size=5), rng.normal(size=3)]
    gen = fastcpa.Generator(Ws, cs, activation="leaky_relu", slope=0.1)
    part = fastcpa.partition(gen)
    Z, G = part.anchors
    assert Z.shape == (part.n_regions, S) and G.shape == (part.n_regions, gen.output_dim)
    # G is g there (g is continuous, so also on a boundary, to rounding) ...
    np.testing.assert_allclose(G, gen(Z), rtol=1e-12, atol=1e-12)
    # the anchor satisfies its region's facet inequalities (up to rounding)
    from fastcpa.partition import _inside_facets

    assert _inside_facets(part, np.arange(part.n_regions), Z).all()
    # and the region's map reproduces g there (continuity: also on a boundary)
    np.testing.assert_allclose(np.einsum("rds,rs->rd", part.A, Z) + part.b, G, rtol=1e-9, atol=1e-9)


def test_s1_anchors_kept_from_the_partition_are_those_computed_on_demand(rng):
    """The S = 1 partition keeps the anchors its maps' forward pass produced; they are
    bit for bit what ``Partition.anchors`` computes from the intervals."""
    from fastcpa.partition import _region_anchors

    gen = make(rng, [1, 7, 6, 3])
    part = fastcpa.partition(gen)
    assert part._anchors is not None  # kept, not recomputed
    for kept, fresh in zip(part.anchors, _region_anchors(part)):
        assert np.array_equal(kept, fresh)
        assert not kept.flags.writeable


def test_anchor_just_past_a_breakpoint_stays_on_its_own_piece():
    """A steep unit (slope 2^50) switches at z0 = 1.5; an anchor one ulp left of
    z0 must still be evaluated on its own region's piece, where the unit is on:
    there u = 2^50 (z - 1.5) = -1/4 exactly, so g_r(z) = z - 1/4, while g(z) = z
    (the plain forward pass takes the unit off: a jump of 1/4 from one ulp)."""
    from fastcpa.partition import _piece_forward

    W0 = np.array([[2.0**50], [1.0]])
    c0 = np.array([-1.5 * 2.0**50, 0.0])
    gen = fastcpa.Generator([W0, np.array([[1.0, 1.0]])], [c0, np.zeros(1)], activation="relu")
    part = fastcpa.partition(gen)
    r = int(part.locate([[2.0]])[0])  # the region right of 1.5, where the steep unit is on
    assert part.intervals[r, 0] == 1.5
    z = np.nextafter(1.5, 0.0)
    G = _piece_forward(gen, np.full((part.n_regions, 1), z), part.code_bits)
    assert G[r, 0] == z - 0.25 and gen([[z]])[0, 0] == z


def test_s1_region_maps_are_products_not_prefix_sums():
    """A region where every first-layer unit is off has the map 0 exactly, beside
    regions of slope ~1e16: a prefix sum of slope changes across the breakpoints
    left eps times the largest slope met (|A| ~ 8), which at small sigma_x moved
    log p by 90% (permutation-S1-hard 802078). Every region's map must equal the
    product over its own pattern, here computed in exact rational arithmetic."""
    from fractions import Fraction

    rng = np.random.default_rng(5)
    W0 = -np.abs(rng.normal(size=(6, 1))) * 1e3
    c0 = rng.uniform(-1e3, 1e3, size=6)
    Ws = [W0, rng.normal(size=(20, 6)) * 2e3, rng.normal(size=(4, 20)) * 2e3, rng.normal(size=(3, 4)) * 2e3]
    cs = [c0, rng.normal(size=20) * 1e6, rng.normal(size=4), rng.normal(size=3)]
    gen = fastcpa.Generator(Ws, cs, activation="relu")
    part = fastcpa.partition(gen)
    last = int(np.argmax(part.intervals[:, 0]))  # z beyond every first-layer kink: all units off
    assert np.all(part.A[last] == 0.0)
    for r in range(part.n_regions):
        lo, hi = part.intervals[r]
        z = lo + 0.5 * (hi - lo) if np.isfinite(lo) and np.isfinite(hi) else (lo + 1 if np.isfinite(lo) else hi - 1)
        h, t = [Fraction(float(z))], [Fraction(1)]
        for W, c in zip(Ws[:-1], cs[:-1]):
            u = [sum(Fraction(float(W[i, j])) * h[j] for j in range(len(h))) + Fraction(float(c[i])) for i in range(len(W))]
            du = [sum(Fraction(float(W[i, j])) * t[j] for j in range(len(t))) for i in range(len(W))]
            h = [v if v >= 0 else Fraction(0) for v in u]
            t = [d if v >= 0 else Fraction(0) for v, d in zip(u, du)]
        A = np.array([float(sum(Fraction(float(Ws[-1][i, j])) * t[j] for j in range(len(t)))) for i in range(3)])
        np.testing.assert_allclose(part.A[r, :, 0], A, rtol=1e-12, atol=1e-12 * np.abs(A).max())


@pytest.mark.parametrize("activation, sizes", [("relu", [1, 40, 30, 20, 3]), ("leaky_relu", [1, 64, 64, 5]),
                                               ("abs", [1, 25, 25, 2]),
                                               (["relu", "linear", "leaky_relu"], [1, 30, 10, 30, 4])])
def test_s1_codes_from_the_sweep_are_the_signs_inside_each_interval(rng, activation, sizes):
    """The S = 1 sweep decides each unit's sign on an interval from its breakpoints; a
    forward pass at the interval's midpoint (or a unit in from an unbounded end) must find
    the same signs wherever the unit's value there is clear of rounding."""
    gen = make(rng, sizes, activation=activation)
    part = fastcpa.partition(gen)
    lo, hi = part.intervals[:, 0], part.intervals[:, 1]
    with np.errstate(invalid="ignore"):
        z = np.where(np.isfinite(lo) & np.isfinite(hi), 0.5 * (lo + hi),
                     np.where(np.isfinite(lo), lo + 1.0, np.where(np.isfinite(hi), hi - 1.0, 0.0)))
    expected = gen.sign_codes(z[:, None])
    # the pre-activations at z, and a bound on their rounding: not a tie
    h, pre, bound = z[:, None], [], []
    for W, c, eta in zip(gen.weights[:-1], gen.biases[:-1], gen.slopes):
        u = h @ W.T + c
        pre.append(u)
        bound.append(1e-12 * (np.abs(h) @ np.abs(W.T) + np.abs(c)))
        h = np.where(u >= 0, u, eta * u)
    clear = np.abs(np.concatenate(pre, axis=1)) > np.concatenate(bound, axis=1)
    assert clear.mean() > 0.99
    got = part.code_bits()
    assert got.shape == expected.shape and part.n_regions > 20
    np.testing.assert_array_equal(got[clear], expected[clear])
