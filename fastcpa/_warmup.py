"""Ahead-of-time compilation of the CPU kernels."""

import itertools
import warnings

import numpy as np

__all__ = ["warmup"]


def warmup(backend="cpu"):
    """Compile every CPU kernel, in every signature the public API calls it with.

    Numba compiles a kernel the first time it is called with a new
    combination of argument types (tens of seconds per kernel on a cold
    machine; well under a second when the on-disk cache is warm). This runs
    the public API once on tiny S = 1, S = 2 and affine models: the Gaussian
    integrals (``interval_moments``, ``polygon_moments`` with and without
    moments), the partition (serial and parallel polygon splitting) and
    ``locate``, ``log_prob`` (pruned and not), ``posterior`` and its
    sampling, ``sufficient_stats``, ``marginal_moments``, the exact gradient
    and one iteration of ``fit`` with both methods, including read-only data
    and every broadcasting pattern of the Gaussian integrals' inputs (Numba
    compiles read-only arrays apart). No later call on float64 input then
    compiles, except the Gaussian integrals given some inputs read-only and
    others writable, all of the full batch shape: pass writable arrays there.

    Call it once at start-up, a deployment step; with the cache warm it
    takes a few seconds.

    Parameters
    ----------
    backend : {"cpu"}, default "cpu"
        Only CPU kernels exist so far.

    Examples
    --------
    >>> import fastcpa
    >>> fastcpa.warmup()
    """
    if backend not in ("cpu", "auto", "host"):
        raise NotImplementedError(f"no {backend!r} kernels to compile yet; use backend='cpu'.")
    from .em import log_likelihood_gradient
    from .gaussian import interval_moments, polygon_moments
    from .generator import Generator
    from .model import CPAModel
    from .partition import partition

    with warnings.catch_warnings():
        # numpy warns when Numba reads the writeable flag of a broadcast view; not the caller's concern here
        warnings.simplefilter("ignore", FutureWarning)
        _run_api(interval_moments, polygon_moments, Generator, CPAModel, partition, log_likelihood_gradient)


def _run_api(interval_moments, polygon_moments, Generator, CPAModel, partition, log_likelihood_gradient):
    """The public API once over tiny inputs, in every way that reaches a kernel with new types."""
    import importlib

    from .estep import sufficient_statistics

    rng = np.random.default_rng(0)
    # Numba compiles read-only arrays apart from writable ones, and the Gaussian integrals pass
    # their inputs on as broadcast views or copies, read-only or not by which inputs carry the
    # batch shape: every such pattern occurs in ordinary calls
    for batched in itertools.product((False, True), repeat=4):
        interval_moments(*(np.full(2, v) if bt else v for v, bt in zip((-1.0, np.inf, 0.0, 1.0), batched)))
    read_only = [np.full(2, v) for v in (-1.0, np.inf, 0.0, 1.0)]
    for a in read_only:
        a.setflags(write=False)
    interval_moments(*read_only)
    polygon_moments([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0], moments=False)
    one = (np.array([[1.0, 0.0]]), np.zeros(1), np.zeros(2), np.eye(2))  # the half-plane z1 >= 0
    for batched in itertools.product((False, True), repeat=4):
        polygon_moments(*(np.stack([a, a]) if bt else a for a, bt in zip(one, batched)))
    for S in (1, 2):
        gen = Generator([rng.normal(size=(4, S)), rng.normal(size=(4, 4)), rng.normal(size=(3, 4))],
                        [rng.normal(size=4), rng.normal(size=4), rng.normal(size=3)],
                        activation="leaky_relu", slope=0.1)
        if S == 2:
            partition_module = importlib.import_module("fastcpa.partition")  # the module, not the function
            # the parallel split runs on larger partitions with more than 2 threads: compile it too
            mode = partition_module._SPLIT_MODE
            try:
                partition_module._SPLIT_MODE = "parallel"
                partition(gen)
            finally:
                partition_module._SPLIT_MODE = mode
        model = CPAModel(gen, sigma_x=0.5)
        X = model.sample(8, seed=0)
        model.log_prob(X)
        model.log_prob(X, prune=False)
        post = model.posterior(X)
        post.sample(2, seed=0)
        # one row: the E-step's region-major chunk is then C- as well as F-contiguous, and Numba
        # types it C (as it does a chunk of one region, which a fit meets as the regions change)
        model.sufficient_stats(X[:1])
        # the E-step on a likelihood pass already made (a fit's, after a refused trial)
        for rows in (X, X[:1]):
            sufficient_statistics(model, rows, likelihood_rows=model._likelihood_rows(rows))
        # references moved onto a later chunk's best pair (rare: region chunks whose first
        # one misleads the search), so not reached above
        model._references_at(model._whiten(X[:2])[2], np.zeros((2, 3 + S)))
        model.partition.locate(rng.normal(size=(2, S)))
        model.marginal_moments()
        log_likelihood_gradient(model, X)
        # one iteration of each method (diagonal noise: the same kernels)
        CPAModel(gen, sigma_x=0.5).fit(X, n_iter=1, tol=-np.inf, progress=False)
        CPAModel(gen, sigma_x=[0.5] * 3).fit(X, n_iter=1, tol=-np.inf, method="gradient", progress=False)
        if S == 1:
            # read-only data (a memory map, pandas' copy-on-write arrays) reach the S = 1 kernel as they are
            X.setflags(write=False)
            model.log_prob(X)
    # the M-step's grouped products sum runs of rows (mstep._Levels.reduce) only where
    # groups merge, and derives products along runs of groups (mstep._Levels.runs) only for
    # nets wide enough to pay for it
    from fastcpa.kernels.cpu.runs import run_contract, run_products, run_products_adjoint, sum_runs

    sum_runs(np.ones((3, 2)), np.array([0, 1, 3], dtype=np.int64), np.empty((2, 2)))
    # one run of two groups, the second with one change (unit 0): start, end, ptr, unit, dq
    run = tuple(np.array(v, dtype=np.int64) for v in ([0], [2], [0, 0, 1], [0])) + (np.ones(1),)
    parent = np.zeros(2, dtype=np.int64)
    fixed = np.ones((2, 2))
    fixed.setflags(write=False)  # a generator's (read-only) weights, or a layer's own
    for Mt in (fixed, np.ones((2, 2))):
        run_products(np.ones((2, 1, 2)), *run, parent, np.ones((1, 1, 2)), Mt)
        run_products_adjoint(np.ones((2, 1, 2)), *run, Mt, np.ones((1, 1, 2)))
    run_contract(np.ones((2, 1, 2)), *run, parent, np.ones((1, 1, 2)), np.zeros((2, 2)))
    # wide products split across Numba's threads (fastcpa._threads.matmul): A's rows by a
    # matrix in either order, read-only (a generator's weights) or not
    from fastcpa.kernels.cpu.gemm import split_inner, split_rows

    for B in (fixed, fixed.T, np.ones((2, 2)), np.ones((2, 2)).T):
        split_rows(np.ones((4, 2)), B, np.empty((4, 2)), 2)
    split_inner(np.ones((4, 2)), np.ones((4, 2)), np.empty((2, 2, 2)), 2)
    # affine generators: one whole-space region (S = 1: its one-element interval arrays are
    # read-only views; S = 2 and 3: the general pair kernels, S = 3 in a singular frame)
    for S in (1, 2, 3):
        gen = Generator([rng.normal(size=(3, S)), rng.normal(size=(2, 3))], [rng.normal(size=3), np.zeros(2)],
                        activation="linear")
        model = CPAModel(gen, sigma_x=0.5)
        X = model.sample(4, seed=0)
        model.log_prob(X)
        model.posterior(X)
        model.sufficient_stats(X)
        sufficient_statistics(model, X, likelihood_rows=model._likelihood_rows(X))
        model.marginal_moments()
        if S == 1:
            X.setflags(write=False)
            model.log_prob(X)
