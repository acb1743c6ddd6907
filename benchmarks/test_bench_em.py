"""pytest-benchmark: the exact E-step, fused kernel vs the posterior kernel reduced with NumPy.

    pytest benchmarks/test_bench_em.py                     # smoke: each runs once
    pytest benchmarks/test_bench_em.py --benchmark-enable  # timed

``fused``: ``CPAModel.sufficient_stats`` (``kernels/cpu/estep.py``: each pair's
weight and truncated moments added into its region's statistics in the
kernel). ``unfused``: the same chunks through the posterior kernel, which writes
every pair's term, mean and covariance, reduced afterwards with NumPy (the
straightforward way, and fastcpa's own E-step before the fused kernel). Both
give the same statistics; the ratio of their times is the fusion's gain. It
comes from the pairs the fused kernel can pass over with a bound (the
negligible ones, most pairs near convergence); where nearly every pair carries
weight (the start of a fit), both spend their time on the truncated moments,
and the fused kernel's separate likelihood pass makes it the slower by ~10%.
"""

import time

import numpy as np
import pytest

from _cases import build_generator

# (sizes, sigma_x of the model, N, data seed). Data seed 1: another network of the same
# architecture (sigma_x 0.1), as at the start of a fit: most pairs carry weight. Data seed 0:
# the model's own samples at small noise, as near convergence: most pairs are negligible.
ESTEP_CASES = {
    "estep-S1-256x3-start": ((1, 256, 256, 256, 64), 0.3, 1000, 1),
    "estep-S1-256x3-fitted": ((1, 256, 256, 256, 64), 0.05, 1000, 0),
    "estep-S2-16x2-start": ((2, 16, 16, 64), 0.3, 200, 1),
    "estep-S2-16x2-fitted": ((2, 16, 16, 64), 0.05, 200, 0),
}


def _model(fastcpa, case):
    sizes, sigma_x, n, data_seed = ESTEP_CASES[case]
    data_sigma = 0.1 if data_seed else sigma_x
    X = fastcpa.CPAModel(build_generator(sizes, seed=data_seed, activation="leaky_relu"),
                         sigma_x=data_sigma).sample(n, seed=2)
    model = fastcpa.CPAModel(build_generator(sizes, seed=0, activation="leaky_relu"), sigma_x=sigma_x)
    model.log_prob(X[:2])  # partition and region parameters outside the timing
    return model, X


def unfused_statistics(model, X, gap=40.0, sample_chunk=256, region_chunk=1024):
    """(T0, T1, T2, Tx, Txz) from the posterior kernel's per-pair output, reduced with NumPy."""
    S, D, R = model.generator.latent_dim, model.generator.output_dim, model.partition.n_regions
    log_p = model.log_prob(X)
    T0, T1, T2 = np.zeros(R), np.zeros((R, S)), np.zeros((R, S, S))
    Tx, Txz = np.zeros((R, D)), np.zeros((R, D, S))
    for rows, rs, terms, means, covs, REF in model._pair_moments(X, sample_chunk, region_chunk):
        terms = terms + REF[:, :1]
        w = np.exp(terms - log_p[rows, None])
        w[terms < log_p[rows, None] - gap] = 0.0
        m1 = w[..., None] * means
        T0[rs] += w.sum(0)
        T1[rs] += m1.sum(0)
        T2[rs] += np.einsum("nr,nrst->rst", w, covs) + np.einsum("nrs,nrt->rst", m1, means)
        Tx[rs] += w.T @ X[rows]
        Txz[rs] += np.einsum("nrs,nd->rds", m1, X[rows])
    return T0, T1, T2, Tx, Txz


@pytest.mark.parametrize("case", list(ESTEP_CASES))
@pytest.mark.parametrize("impl", ["fused", "unfused"])
def test_estep(benchmark, warm_fastcpa, case, impl):
    model, X = _model(warm_fastcpa, case)
    benchmark.group = f"estep|{case}"
    fn = model.sufficient_stats if impl == "fused" else (lambda X: unfused_statistics(model, X))
    t0 = time.perf_counter()
    out = benchmark.pedantic(fn, args=(X,), rounds=3, iterations=1)
    seconds = time.perf_counter() - t0
    stats = getattr(benchmark, "stats", None)
    seconds = float(stats.stats.median) if stats is not None else seconds
    T0 = out.T0 if impl == "fused" else out[0]
    np.testing.assert_allclose(T0.sum(), len(X), rtol=1e-12)  # each sample's weights sum to 1
    pairs = len(X) * model.partition.n_regions
    benchmark.extra_info.update(case=case, impl=impl, pairs=pairs, pairs_per_s=pairs / seconds)


def test_fused_matches_unfused(warm_fastcpa):
    model, X = _model(warm_fastcpa, "estep-S1-256x3-start")
    st = model.sufficient_stats(X[:200])
    ref = unfused_statistics(model, X[:200])
    for got, want in zip((st.T0, st.T1, st.T2, st.Tx, st.Txz), ref):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * np.abs(want).max())
