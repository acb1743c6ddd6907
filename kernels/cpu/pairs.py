"""Numba CPU kernels over (sample, region) pairs: exact log p(x) and the posterior.

For a region r with map ``x = A z + b`` and a sample x, completing the square
(DESIGN 2.2) gives the evidence of the affine extension and the Gaussian it
leaves on z::

    y     = A^T P (x - b)           (S,)   P = Sigma_x^-1 (diagonal)
    mu    = Sigma_r y                      Sigma_r = (I / sigma_z^2 + A^T P A)^-1
    log kappa = const - (logdet Lambda_r + (x-b)^T P (x-b) - y . mu) / 2

The products ``A^T P x`` and ``b^T P x`` come in from one GEMM per chunk
(``XA``, ``Xb``); everything else is O(S^2) per pair. The term of the pair is
``log kappa + log Phi_r`` with ``Phi_r`` the N(mu, Sigma_r)-mass of the region.

Pruning (certified): ``Phi_r <= 1``, so a pair whose ``log kappa`` lies more
than ``gap`` below the row's running best term cannot contribute more than
``exp(-gap)`` relative to it; such pairs are skipped. Every skipped pair is
bounded by that, so the returned log p(x) is low by at most
``log(1 + R exp(-gap))`` (R regions): ``R * 4.2e-18`` nats for the default
``gap = 40``. The row's best candidate (largest ``log kappa``) is evaluated
first so the running best is a good bound early.
"""

import math

import numpy as np
from numba import prange

from .. import _interval
from ._jit import jit, scalars

_iv = scalars(_interval)
interval_log_mass = _iv.interval_log_mass
interval_moments = _iv.interval_moments


@jit
def _kappa_and_mean(XA, Xb, xx, Ab, bb, Sigma, logdet_lam, const, i, r, y, mu):
    """log kappa of pair (i, r); fills ``y`` and the posterior mean ``mu`` of the region's Gaussian."""
    S = y.shape[0]
    for s in range(S):
        y[s] = XA[i, r, s] - Ab[r, s]
    ymu = 0.0
    for s in range(S):
        acc = 0.0
        for t in range(S):
            acc += Sigma[r, s, t] * y[t]
        mu[s] = acc
        ymu += y[s] * acc
    quad = xx[i] - 2.0 * Xb[i, r] + bb[r] - ymu
    return const - 0.5 * (logdet_lam[r] + quad)


@jit
def _region_log_mass(mu, Sigma, r, lo, hi, whole):
    """log of the N(mu, Sigma_r)-mass of region r (S = 1 intervals; whole-space regions)."""
    if whole[r]:
        return 0.0
    return interval_log_mass(lo[r], hi[r], mu[0], math.sqrt(Sigma[r, 0, 0]))


@jit
def _add_term(term, m, s):
    """Online logsumexp: fold ``term`` into the running ``(max, scaled sum)``."""
    if term == -math.inf:
        return m, s
    if term > m:
        return term, s * math.exp(m - term) + 1.0
    return m, s + math.exp(term - m)


@jit(parallel=True)
def log_prob_chunk(XA, Xb, xx, Ab, bb, Sigma, logdet_lam, lo, hi, whole, const, gap, run_max, run_sum,
                   n_skipped):
    """Fold one (samples x regions) chunk into each sample's running logsumexp.

    ``run_max``, ``run_sum`` (per sample) carry the state across region
    chunks; ``n_skipped`` counts pruned pairs. ``gap = inf`` evaluates all pairs.
    """
    n, R = Xb.shape
    S = Ab.shape[1]
    for i in prange(n):
        y = np.empty(S)
        mu = np.empty(S)
        lk = np.empty(R)
        best = 0
        for r in range(R):
            lk[r] = _kappa_and_mean(XA, Xb, xx, Ab, bb, Sigma, logdet_lam, const, i, r, y, mu)
            if lk[r] > lk[best]:
                best = r
        m, s = run_max[i], run_sum[i]
        skipped = 0
        for k in range(R):  # the best candidate first, then the others in order
            if k == 0:
                r = best
            elif k <= best:
                r = k - 1
            else:
                r = k
            if lk[r] < m - gap:
                skipped += 1
                continue
            _kappa_and_mean(XA, Xb, xx, Ab, bb, Sigma, logdet_lam, const, i, r, y, mu)
            m, s = _add_term(lk[r] + _region_log_mass(mu, Sigma, r, lo, hi, whole), m, s)
        run_max[i], run_sum[i] = m, s
        n_skipped[i] += skipped


@jit(parallel=True)
def posterior_chunk(XA, Xb, xx, Ab, bb, Sigma, logdet_lam, lo, hi, whole, const, terms, means, covs):
    """Every pair's term and the region's truncated posterior moments (no pruning).

    Writes ``terms[i, r]`` (log kappa + log Phi), ``means[i, r]`` (S,) and
    ``covs[i, r]`` (S, S): the mean and covariance of N(mu, Sigma_r)
    restricted to region r.
    """
    n, R = Xb.shape
    S = Ab.shape[1]
    for i in prange(n):
        y = np.empty(S)
        mu = np.empty(S)
        for r in range(R):
            lk = _kappa_and_mean(XA, Xb, xx, Ab, bb, Sigma, logdet_lam, const, i, r, y, mu)
            if whole[r]:
                terms[i, r] = lk
                for s in range(S):
                    means[i, r, s] = mu[s]
                    for t in range(S):
                        covs[i, r, s, t] = Sigma[r, s, t]
            else:  # S = 1
                lm, mean, var = interval_moments(lo[r], hi[r], mu[0], math.sqrt(Sigma[r, 0, 0]))
                terms[i, r] = lk + lm
                means[i, r, 0] = mean
                covs[i, r, 0, 0] = var
