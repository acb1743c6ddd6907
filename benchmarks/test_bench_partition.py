"""pytest-benchmark: fastcpa.partition vs the LP reference enumeration.

    pytest benchmarks/ -m "not slow"            # smoke: each benchmark runs once
    pytest benchmarks/ --benchmark-enable       # timed, all sizes

The reference is capped at ``REFERENCE_MAX_REGIONS[case]`` regions per round
(it solves 1 + n_units LPs per region), so its regions/s is a rate over a
partial enumeration. Compile time is never timed (session warmup fixture).
"""

import os
import time

import pytest

from _cases import CASES, REFERENCE_MAX_REGIONS, SLOW, build_generator, reference_args, sizes_of

FASTCPA_ROUNDS = 5


def _case_params():
    return [pytest.param(name, id=name, marks=[pytest.mark.slow] if name in SLOW else [])
            for name in CASES]


def _median_seconds(benchmark, fallback):
    """Median round time when timing is enabled, else the single untimed run's time."""
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        return float(stats.stats.median)
    return fallback


def _record(benchmark, case, regions, seconds):
    benchmark.extra_info["case"] = case
    benchmark.extra_info["sizes"] = list(sizes_of(case))
    benchmark.extra_info["regions"] = int(regions)
    benchmark.extra_info["regions_per_s"] = regions / seconds if seconds > 0 else float("inf")
    benchmark.extra_info["numba_threads"] = os.environ.get("NUMBA_NUM_THREADS")


@pytest.mark.parametrize("case", _case_params())
def test_partition(benchmark, warm_fastcpa, case):
    fastcpa = warm_fastcpa
    gen = build_generator(case)
    benchmark.group = f"partition|{case}"

    t0 = time.perf_counter()
    part = benchmark.pedantic(fastcpa.partition, args=(gen,), rounds=FASTCPA_ROUNDS, iterations=1)
    elapsed = time.perf_counter() - t0

    assert part.n_regions >= 1
    _record(benchmark, case, part.n_regions, _median_seconds(benchmark, elapsed))


@pytest.mark.parametrize("case", _case_params())
def test_reference(benchmark, warm_fastcpa, case):
    from reference_enumeration import enumerate_regions_lp

    gen = build_generator(case)
    cap = REFERENCE_MAX_REGIONS[case]
    benchmark.group = f"partition|{case}"
    benchmark.extra_info["max_regions"] = cap

    t0 = time.perf_counter()
    out = benchmark.pedantic(enumerate_regions_lp, args=reference_args(gen),
                             kwargs={"max_regions": cap}, rounds=1, iterations=1)
    elapsed = time.perf_counter() - t0

    regions = len(out["codes"])
    assert 1 <= regions <= cap
    benchmark.extra_info["complete"] = bool(out["complete"])
    _record(benchmark, case, regions, _median_seconds(benchmark, elapsed))

    # the reference's regions are regions of fastcpa's partition (same sign code)
    part = warm_fastcpa.partition(gen)
    idx = part.locate(out["interior"])
    assert (part.code_bits(idx) == out["codes"]).all()
