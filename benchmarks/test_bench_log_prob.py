"""pytest-benchmark: ``CPAModel.log_prob`` (S = 1) vs a straightforward pair loop.

    pytest benchmarks/test_bench_log_prob.py                     # smoke: each runs once
    pytest benchmarks/test_bench_log_prob.py --benchmark-enable  # timed

Throughput is (sample, region) pairs per second: dense (pruning off) and
effective (pruning on). The naive loop (``naive_log_prob.py``) is timed on a
capped number of pairs; its rate is pairs / time.
"""

import time

import numpy as np
import pytest

from _cases import build_generator

# (sizes, sigma_x, N); D is the last size
LOG_PROB_CASES = {
    "lp-S1-D2": ((1, 256, 2), 0.05, 2000),
    "lp-S1-D64": ((1, 256, 64), 0.05, 2000),
    "lp-S1-D784": ((1, 256, 784), 0.05, 500),
}
# pairs the naive loop runs per case (its D x D covariance per pair makes D = 784 slow)
NAIVE_MAX_PAIRS = {"lp-S1-D2": 2000, "lp-S1-D64": 2000, "lp-S1-D784": 20}


def _model(fastcpa, case):
    sizes, sigma_x, n = LOG_PROB_CASES[case]
    model = fastcpa.CPAModel(build_generator(sizes), sigma_x=sigma_x)
    X = model.sample(n, seed=1)
    model.log_prob(X[:2])  # partition and region parameters outside the timing
    return model, X


@pytest.mark.parametrize("prune", [False, True], ids=["dense", "pruned"])
@pytest.mark.parametrize("case", list(LOG_PROB_CASES))
def test_log_prob(benchmark, warm_fastcpa, case, prune):
    model, X = _model(warm_fastcpa, case)
    benchmark.group = f"log_prob|{case}"
    t0 = time.perf_counter()
    lp = benchmark.pedantic(model.log_prob, args=(X,), kwargs=dict(prune=prune), rounds=3, iterations=1)
    seconds = time.perf_counter() - t0
    stats = getattr(benchmark, "stats", None)
    seconds = float(stats.stats.median) if stats is not None else seconds
    assert np.all(np.isfinite(lp))
    pairs = len(X) * model.partition.n_regions
    benchmark.extra_info.update(case=case, pairs=pairs, pairs_per_s=pairs / seconds, prune=prune,
                                skipped=model.last_pairs_skipped_)


@pytest.mark.parametrize("case", list(LOG_PROB_CASES))
def test_naive_log_prob(benchmark, warm_fastcpa, case):
    from naive_log_prob import naive_log_prob

    model, X = _model(warm_fastcpa, case)
    part = model.partition
    benchmark.group = f"log_prob|{case}"
    t0 = time.perf_counter()
    _, pairs = benchmark.pedantic(naive_log_prob, args=(part.A, part.b, part.intervals, X, model.sigma_x),
                                  kwargs=dict(max_pairs=NAIVE_MAX_PAIRS[case]), rounds=1, iterations=1)
    benchmark.extra_info.update(case=case, pairs=pairs, pairs_per_s=pairs / (time.perf_counter() - t0))


def test_naive_agrees_on_the_manifold(warm_fastcpa):
    """Where the naive sum neither underflows nor cancels, both give the same log p."""
    from naive_log_prob import naive_log_prob

    model = warm_fastcpa.CPAModel(build_generator((1, 16, 3)), sigma_x=0.3)
    X = model.sample(5, seed=2)
    part = model.partition
    naive, _ = naive_log_prob(part.A, part.b, part.intervals, X, model.sigma_x)
    np.testing.assert_allclose(model.log_prob(X), naive, rtol=1e-9)
