"""Benchmark cases shared by ``test_bench_partition.py`` and ``run.py``.

A case is a name and the layer sizes ``[S, h_1, ..., h_k, D]`` of a ReLU
generator. Parameters use torch's default ``nn.Linear`` init: weights AND
biases drawn from ``uniform(-1/sqrt(fan_in), 1/sqrt(fan_in))``, layer by layer
(weights, then biases), from ``numpy.random.default_rng(seed)`` with seed 0.

To add a case, add it to ``ISSUE_CASES`` (sizes the issue sets targets for)
or ``SMOKE_CASES`` (small, quick), and give it a reference cap in
``REFERENCE_MAX_REGIONS``.
"""

import numpy as np

#: Output dimension used by every case.
D = 64
#: Seed of ``numpy.random.default_rng`` for the parameters.
SEED = 0

#: The sizes the issue states throughput targets for.
ISSUE_CASES = {
    "S1-1024x3": (1, 1024, 1024, 1024, D),
    "S2-64-128": (2, 64, 128, D),
    "S2-256": (2, 256, D),
}

#: Small sizes for quick runs (pytest smoke runs, ``run.py --quick``).
SMOKE_CASES = {
    "smoke-S1-64x3": (1, 64, 64, 64, D),
    "smoke-S2-16-32": (2, 16, 32, D),
    "smoke-S2-48": (2, 48, D),
}

#: Every case, name -> layer sizes.
CASES = {**SMOKE_CASES, **ISSUE_CASES}

#: Slow cases (pytest marks them ``slow``).
SLOW = frozenset(ISSUE_CASES)

#: Cap on the regions the LP reference enumerates per pytest-benchmark round.
#: The reference costs 1 + n_units LPs per region (each with n_units rows), so
#: the S = 1 case with 3072 units takes ~30 s per region.
REFERENCE_MAX_REGIONS = {
    "smoke-S1-64x3": 10,
    "smoke-S2-16-32": 20,
    "smoke-S2-48": 20,
    "S1-1024x3": 2,
    "S2-64-128": 50,
    "S2-256": 50,
}

#: Throughput targets of the issue (fastcpa regions/s by latent dimension S)
#: and the required speed-up over the LP reference.
TARGET_REGIONS_PER_S = {1: 1e6, 2: 1e5}
TARGET_SPEEDUP = 100.0


def sizes_of(case):
    """Layer sizes of a case name (or sizes given directly)."""
    return tuple(CASES[case]) if isinstance(case, str) else tuple(int(s) for s in case)


def init_params(case, seed=SEED):
    """``(weights, biases)`` with torch's default Linear init; ``weights[l]`` is (out, in)."""
    sizes = sizes_of(case)
    rng = np.random.default_rng(seed)
    weights, biases = [], []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        bound = 1.0 / np.sqrt(fan_in)
        weights.append(rng.uniform(-bound, bound, size=(fan_out, fan_in)))
        biases.append(rng.uniform(-bound, bound, size=fan_out))
    return weights, biases


def build_generator(case, seed=SEED, activation="relu"):
    """The ``fastcpa.Generator`` of a case (a name from ``CASES`` or a sizes list)."""
    import fastcpa

    weights, biases = init_params(case, seed)
    return fastcpa.Generator(weights, biases, activation=activation)


def reference_args(gen):
    """``(weights, biases, slopes)`` for ``enumerate_regions_lp`` on the same network."""
    return list(gen.weights), list(gen.biases), list(gen.slopes)
