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


def naive_polygon_mass(boundary, mu, cov):
    """P(z in polygon) for z ~ N(mu, cov) the way the paper writes it: whiten,
    split into origin-apex triangles and sum Owen's T values
    (``scipy.special.owens_t``), in linear space. ``boundary`` is the CCW
    cycle of homogeneous points of ``fastcpa.Partition`` (w = 0: ideal)."""
    from scipy.special import owens_t

    Li = np.linalg.inv(np.linalg.cholesky(cov))
    pts = [(Li @ (v[:2] - mu) if v[2] else Li @ v[:2], v[2]) for v in boundary]
    mass, inside = 0.0, True
    for i in range(len(pts)):
        (p, pw), (q, qw) = pts[i], pts[(i + 1) % len(pts)]
        if pw == 0.0 and qw == 0.0:  # arc at infinity
            continue
        t = (q - p) if (pw and qw) else (q if pw else -p)
        t = t / np.linalg.norm(t)
        f = p if pw else q
        c = t[0] * f[1] - t[1] * f[0]
        s1 = t @ p if pw else -np.inf
        s2 = t @ q if qw else np.inf
        h = abs(c)
        mass += np.sign(c) * (owens_t(h, s2 / h) - owens_t(h, s1 / h))
        inside &= c <= 0
    return mass + (1.0 if inside else 0.0)


def naive_log_prob_2d(part, X, sigma_x, sigma_z=1.0, max_pairs=None):
    """log p(x) for S = 2 by a plain loop over (sample, region) pairs (see
    :func:`naive_log_prob`), with :func:`naive_polygon_mass` per pair."""
    N, D = X.shape
    out = np.full(N, np.nan)
    pairs = 0
    polys = [part.boundary[part.boundary_ptr[r]:part.boundary_ptr[r + 1]] for r in range(part.n_regions)]
    for n in range(N):
        p = 0.0
        for r in range(part.n_regions):
            if max_pairs is not None and pairs >= max_pairs:
                return out, pairs
            A, b = part.A[r], part.b[r]
            kappa = scipy.stats.multivariate_normal.pdf(X[n], mean=b, cov=sigma_x**2 * np.eye(D) + sigma_z**2 * A @ A.T)
            prec = np.eye(2) / sigma_z**2 + A.T @ A / sigma_x**2
            cov = np.linalg.inv(prec)
            mu = cov @ (A.T @ (X[n] - b)) / sigma_x**2
            p += kappa * naive_polygon_mass(polys[r], mu, cov)
            pairs += 1
        out[n] = np.log(p)
    return out, pairs
