"""Many regions: memory stays O(R (D S + facets)) plus chunks (``slow``).

One hidden layer of width H has H + 1 regions for S = 1 and about H^2 / 2 for
S = 2. Before, the S = 1 partition held every region's sign code (R x H bits,
and R x H booleans while sweeping): a MemoryError at H = 1e5. Peak memory of
the inference calls is measured with tracemalloc (numpy reports its
allocations there), held to a bound linear in R, and every path gives the same
log-likelihood.
"""

import tracemalloc

import numpy as np
import pytest

import fastcpa


def _model(S, H, D=3, seed=0):
    rng = np.random.default_rng(seed)
    gen = fastcpa.Generator([rng.normal(size=(H, S)), rng.normal(size=(D, H)) / np.sqrt(H)],
                            [rng.normal(size=H), rng.normal(size=D)])
    return fastcpa.CPAModel(gen, sigma_x=0.1)


def _peak(f):
    tracemalloc.start()
    try:
        out = f()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
@pytest.mark.parametrize("S, H, min_regions", [(1, 1_000_000, 1_000_000), (2, 450, 100_000)])
def test_many_regions(S, H, min_regions):
    model = _model(S, H)
    X = model.sample(20, seed=1)
    (lp, R), peak = _peak(lambda: (model.log_prob(X), model.partition.n_regions))
    assert R >= min_regions
    D = model.generator.output_dim
    facets = len(model.partition.facet_offset) / R
    # a few dozen float64 per region and (D S + facets) entry, plus the chunks
    assert peak <= 64 * 8 * R * (D * S + facets + 4) + 256e6, (peak / 1e6, R)
    assert np.all(np.isfinite(lp))
    post, peak_post = _peak(lambda: model.posterior(X))
    assert peak_post <= 64 * 8 * R * (D * S + facets + 4) + 256e6
    np.testing.assert_allclose(post.log_prob, lp, rtol=1e-12, atol=1e-12)
    stats = model.sufficient_stats(X)
    assert abs(stats.T0.sum() - len(X)) <= 1e-12 * len(X)
    np.testing.assert_allclose(stats.log_likelihood, lp.sum(), rtol=1e-12)
