"""A straightforward log p(x) for S = 1, as a user would write it from the paper.

One Python-level loop over (sample, region) pairs with SciPy's special
functions: per pair the evidence ``N(x; b, sigma_x^2 I + sigma_z^2 A A^T)``
(``scipy.stats.multivariate_normal``) times the posterior mass of the interval
(``scipy.stats.norm.cdf`` difference), summed in linear space. It is the
baseline of the log_prob benchmarks, not a reference for accuracy: off the
data manifold its sum underflows (log 0 = -inf) and cdf differences of far
intervals lose every digit, which is exactly what fastcpa fixes.
"""

import numpy as np
import scipy.stats


def naive_log_prob(A, b, intervals, X, sigma_x, sigma_z=1.0, max_pairs=None):
    """log p(x) of the rows of X by a plain loop over pairs.

    Parameters
    ----------
    A : (R, D, 1), b : (R, D), intervals : (R, 2)
        Regions of an S = 1 partition (``fastcpa.Partition`` attributes).
    X : (N, D)
    sigma_x, sigma_z : float
    max_pairs : int, optional
        Stop after this many pairs (for timing a partial run); the rows not
        finished are NaN.

    Returns
    -------
    log_p : (N,) ndarray
    pairs : int
        Pairs evaluated.
    """
    N, D = X.shape
    R = A.shape[0]
    out = np.full(N, np.nan)
    pairs = 0
    for n in range(N):
        p = 0.0
        for r in range(R):
            if max_pairs is not None and pairs >= max_pairs:
                return out, pairs
            a = A[r, :, 0]
            cov = sigma_x**2 * np.eye(D) + sigma_z**2 * np.outer(a, a)
            kappa = scipy.stats.multivariate_normal.pdf(X[n], mean=b[r], cov=cov)
            prec = 1.0 / sigma_z**2 + a @ a / sigma_x**2
            mu = (a @ (X[n] - b[r])) / sigma_x**2 / prec
            sd = np.sqrt(1.0 / prec)
            lo, hi = intervals[r]
            mass = scipy.stats.norm.cdf(hi, mu, sd) - scipy.stats.norm.cdf(lo, mu, sd)
            p += kappa * mass
            pairs += 1
        out[n] = np.log(p)
    return out, pairs
