"""Ahead-of-time compilation of the CPU kernels."""

import numpy as np

__all__ = ["warmup"]


def warmup(backend="cpu"):
    """Compile every kernel on tiny float64 inputs.

    Numba compiles a kernel the first time it is called (seconds, or well
    under a second once the on-disk cache is warm). Call this once at start-up
    (a deployment step) so no later call pays that cost.

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
    from .generator import Generator
    from .partition import partition

    rng = np.random.default_rng(0)
    for S in (1, 2):
        gen = Generator([rng.normal(size=(3, S)), rng.normal(size=(3, 3)), rng.normal(size=(2, 3))],
                        [rng.normal(size=3), rng.normal(size=3), rng.normal(size=2)])
        part = partition(gen)
        part.locate(rng.normal(size=(2, S)))
    from .gaussian import interval_moments
    from .model import CPAModel

    interval_moments([-1.0, 0.5], [2.0, np.inf])
    gen = Generator([rng.normal(size=(3, 1)), rng.normal(size=(2, 3))], [rng.normal(size=3), rng.normal(size=2)])
    model = CPAModel(gen, sigma_x=0.5)
    X = model.sample(2, seed=0)
    model.log_prob(X)
    model.posterior(X)
