"""Numba CPU kernels over (sample, region) pairs: exact log p(x) and the posterior.

Everything on the data side is centred and whitened (``CPAModel`` does it):
``x~ = (x - c) / sigma_x``, ``b~_r = (b_r - c) / sigma_x``, ``A~_r = A_r /
sigma_x`` (per output dimension), with ``c`` the generator's output at the
latent origin. For a region r and a sample, completing the square gives the
evidence of the affine extension and the Gaussian it leaves on z
(docs/mathematics.md, section 3)::

    y     = A~^T (x~ - b~)                  (S,)
    mu    = Sigma_r y                        Sigma_r = (I / sigma_z^2 + A~^T A~)^-1
    e     = x~ - b~ - A~ mu                  (D,) the whitened residual
    log kappa = const - (logdet Lambda_r + |e|^2 + |mu|^2 / sigma_z^2) / 2

The products ``A~^T x~`` and ``b~ . x~`` come from one GEMM per chunk
(``XA``, ``Xb``); they give ``mu`` (accurate to what the inputs' rounding
implies) and a first, cheap ``log kappa`` by the expanded quadratic form
``|x~|^2 - 2 x~.b~ + |b~|^2 - y.mu``, which cancels far from the data (or
the parameters) and serves only to order and prune pairs, with a bound on its
rounding (:func:`_prune_slack`). Every pair that is evaluated gets its term
relative to a per-row reference pair (the row's pair with the best upper
bound on its term, ``log kappa + log Q(d)``, over all regions; row ``i`` of
``REF``, see :func:`_set_reference` and :func:`_best_candidate`)::

    log kappa_r - log kappa_ref = -(logdet_r - logdet_ref
                                    + sum_d delta_d (2 e_ref,d + delta_d)
                                    + (|mu_r|^2 - |mu_ref|^2) / sigma_z^2) / 2

with ``delta = f_ref - f_r`` the difference of the fitted points, formed
at each region's anchor ``z_r`` (a point of the region, see
``Partition.anchors``) as ``f = g(z_r) / sigma_x + A~ (mu - z_r)``, not as
``b~ + A~ mu`` (a steep region far from the origin has a large ``b~`` that
``A~ mu`` cancels), and with the rows ``Xs = x / sigma_x``, not centred (a
centre far from the data and the region would add its own rounding): nothing of the size of ``|x~|^2`` is ever subtracted, so the terms
(and the region probabilities, which depend only on their differences) keep
their accuracy however far the data lie from the manifold or from the
origin. The running logsumexp is kept relative to the reference; a row's
``log p(x) = REF[i, 0] + run_max + log(run_sum)``.

Pruning (certified): ``Phi_r <= 1``, so a pair whose ``log kappa`` (plus
the bound on its rounding) lies more than ``gap`` below the row's running
best term cannot contribute more than ``exp(-gap)`` relative to it; such
pairs are skipped. Every skipped pair is bounded by that, so the returned
log p(x) is low by at most ``log(1 + R exp(-gap))`` (R regions): ``R *
4.2e-18`` nats for the default ``gap = 40``. The row's best candidate
(largest ``log kappa``) is evaluated first so the running best is a good
bound early.

Negligible terms (exact, always on): the running sum is kept scaled so that
it is at least 1, so a term more than ``_NEGLIGIBLE`` (38) nats below the
running maximum rounds away when added. Such terms are not exponentiated,
and where an upper bound on the region's mass already puts the term there
(``Q(d)`` at the region's distance ``d`` from the pair's posterior mean) the
mass itself is not refined: the sum is the same to the bit as with every
term evaluated in full. ``prune=False`` ("dense") turns off only the
``gap`` pruning above.
"""

import math

import numpy as np
from numba import prange

from .. import _interval, _polygon, _polygon_series
from .._owens_t import _GL8_U, _GL8_V, _GL10_U, _GL10_V
from ._jit import jit, scalars

_iv = scalars(_interval)
interval_log_mass = _iv.interval_log_mass
interval_moments = _iv.interval_moments
_pg = scalars(_polygon)
std_polygon_log_mass = _pg.std_polygon_log_mass
std_polygon_moments = _pg.std_polygon_moments
edge_table = _pg.edge_table
nearest_point = _pg.nearest_point
whole_plane = _pg.whole_plane
clip_halfplane = _pg.clip_halfplane
offset_at = _pg.offset_at
log_tail_bound = _pg.log_tail_bound
small_polygon_moments = _pg.small_polygon_moments
_ps = scalars(_polygon_series)
series_table = _ps.series_table
series_degree = _ps.series_degree
series_growth = _ps.series_growth
series_error = _ps.series_error
series_eval = _ps.series_eval
series_abs_sum = _ps.series_abs_sum
series_abs_bound = _ps.series_abs_bound
series_derivatives = _ps.series_derivatives
SERIES_TRUNC = _polygon_series.SERIES_TRUNC
SERIES_N = _polygon_series.SERIES_N
SERIES_WIDTH = _polygon_series.SERIES_WIDTH
SERIES_COLS = _polygon_series.SERIES_COLS
SERIES_PW = _polygon_series.SERIES_PW
SERIES_SCRATCH = _polygon_series.SERIES_SCRATCH
SERIES_H = _polygon_series.SERIES_H
LOG_2PI_PS = _polygon_series._LOG_2PI
far_log_mass_at = _pg.far_log_mass_at
far_distance2 = _pg.far_distance2
_FAR2 = _polygon._FAR2


# float64 unit roundoff
_EPS = 1.1102230246251565e-16
# A row's reference pair: REF[i] = (log kappa_ref, logdet_ref, mu_ref (S), f_ref (D), e_ref (D), at); NaN
# first. ``at`` is 1 where mu_ref is not the region's Gaussian mean but a far polygon's nearest point
# (a boundary point, where the term's energy is taken: _polygon_term_2d), else 0. Candidate and
# largest-term rows (``best``, ``arg``) are (value, region, point (S), at).
_REF_LK = 0
_REF_LD = 1
_REF_MU = 2


def reference_width(S, D):
    """Columns of the per-row reference array ``REF`` (see :func:`_set_reference`)."""
    return 3 + S + 2 * D


@jit
def _kappa_and_mean(XA, Xb, xx, Ab, bb, Sigma, logdet_lam, const, an, i, r, y, mu):
    """First, cheap ``log kappa`` of pair (i, r) by the expanded quadratic
    form, and a bound on its rounding (:func:`_prune_slack`); fills ``y`` and
    the posterior mean ``mu`` of the region's Gaussian."""
    S = y.shape[0]
    for s in range(S):
        y[s] = XA[i, r, s] - Ab[r, s]
    ymu = 0.0
    mm = 0.0
    for s in range(S):
        acc = 0.0
        for t in range(S):
            acc += Sigma[r, s, t] * y[t]
        mu[s] = acc
        ymu += y[s] * acc
        mm += acc * acc
    quad = xx[i] - 2.0 * Xb[i, r] + bb[r] - ymu
    return const - 0.5 * (logdet_lam[r] + quad), _prune_slack(xx[i], Xb[i, r], bb[r], ymu, mm, an[r])


@jit
def _prune_slack(xx, xb, bb, ymu, mm, an):
    """Bound on the rounding of the expanded ``log kappa``: each of ``|x~|^2``,
    ``x~ . b~``, ``|b~|^2`` and ``y . mu`` carries at most ``(K + 2) eps``
    relative of its absolute terms (K the summed length, folded into ``an``'s
    row ``an[1]``), and ``y``'s own error ``|A~| (|x~| + |b~|)`` moves ``y . mu``
    by twice that times ``|mu|``. Used to keep pruning certified, never for
    a term."""
    return an[1] * (xx + 2.0 * abs(xb) + bb + abs(ymu) + 2.0 * math.sqrt(mm) * an[0] * (math.sqrt(xx) + math.sqrt(bb)))


# The fitted point of pair (i, r), entry d: f = g(z_r) / sigma_x + A~ (mu - z_r) at the
# region's anchor z_r (gz[r] = (g(z_r) / sigma_x, z_r), Partition.anchors): no
# extrapolated offset b~ for A~ mu to cancel, and not centred (the residual
# x / sigma_x - f takes the rows Xs = x / sigma_x, so a centre far from both adds no
# rounding). Written out in each function below: a call per entry is not inlined by
# Numba, which made the likelihood 3x slower at D = 784.


@jit
def _exact_log_kappa(Xs, i, Aw, gz, r, mu, s2, logdet_lam, const):
    """``log kappa`` of pair (i, r) from its whitened residual ``e = x~ - f``
    (the fitted point above, as :func:`_set_reference` forms it), for when the cheap form's
    rounding bound is too large to choose by."""
    D = Xs.shape[1]
    S = mu.shape[0]
    h = 0.7071067811865476
    q = 0.0
    for t in range(S):
        v = h * mu[t]
        q += s2 * v * v
    for d in range(D):
        f = gz[r, d]  # the fitted point (see above)
        for t in range(S):
            f += Aw[r, d, t] * (mu[t] - gz[r, D + t])
        v = h * (Xs[i, d] - f)
        q += v * v
    return (const - 0.5 * logdet_lam[r]) - q


@jit
def _set_reference(Xs, i, Aw, gz, r, mu, s2, logdet_lam, const, REF):
    """Make pair (i, r) row i's reference: its exact ``log kappa`` from the
    whitened residual ``e = x~ - f`` (the fitted point above: no cancellation),
    with ``mu``, ``f`` and ``e`` kept for :func:`_rel_log_kappa`. Half of each
    square is summed (``(e / sqrt 2)^2``) so a ``log kappa`` near the float64
    limit does not overflow early; below it the result is ``-inf``."""
    D = Xs.shape[1]
    S = mu.shape[0]
    h = 0.7071067811865476
    q = 0.0
    for t in range(S):
        REF[i, _REF_MU + t] = mu[t]
        v = h * mu[t]
        q += s2 * v * v
    for d in range(D):
        f = gz[r, d]  # the fitted point (see above)
        for t in range(S):
            f += Aw[r, d, t] * (mu[t] - gz[r, D + t])
        e = Xs[i, d] - f
        REF[i, _REF_MU + S + d] = f
        REF[i, _REF_MU + S + D + d] = e
        v = h * e
        q += v * v
    REF[i, _REF_LD] = logdet_lam[r]
    REF[i, _REF_LK] = (const - 0.5 * logdet_lam[r]) - q
    REF[i, REF.shape[1] - 1] = 0.0  # (a caller taking a boundary point marks it)


@jit
def _rel_log_kappa(Aw, gz, r, mu, s2, logdet_lam, i, REF):
    """``log kappa`` of pair (i, r) relative to row i's reference (module
    docstring): from the fitted points' difference ``delta = f_ref - f_r``,
    so nothing the size of the residuals themselves is subtracted."""
    D = Aw.shape[1]
    S = mu.shape[0]
    acc = 0.0
    if S == 1:
        # four running sums: one chain of dependent adds was the E-step's largest cost
        # (the same products; only the order of the additions differs)
        u = mu[0] - gz[r, D]
        jf = _REF_MU + 1
        je = _REF_MU + 1 + D
        a1 = 0.0
        a2 = 0.0
        a3 = 0.0
        d = 0
        while d + 4 <= D:
            l0 = REF[i, jf + d] - (gz[r, d] + Aw[r, d, 0] * u)
            l1 = REF[i, jf + d + 1] - (gz[r, d + 1] + Aw[r, d + 1, 0] * u)
            l2 = REF[i, jf + d + 2] - (gz[r, d + 2] + Aw[r, d + 2, 0] * u)
            l3 = REF[i, jf + d + 3] - (gz[r, d + 3] + Aw[r, d + 3, 0] * u)
            acc += l0 * (2.0 * REF[i, je + d] + l0)
            a1 += l1 * (2.0 * REF[i, je + d + 1] + l1)
            a2 += l2 * (2.0 * REF[i, je + d + 2] + l2)
            a3 += l3 * (2.0 * REF[i, je + d + 3] + l3)
            d += 4
        while d < D:
            l0 = REF[i, jf + d] - (gz[r, d] + Aw[r, d, 0] * u)
            acc += l0 * (2.0 * REF[i, je + d] + l0)
            d += 1
        acc = (acc + a1) + (a2 + a3)
    elif S == 2:
        u0 = mu[0] - gz[r, D]
        u1 = mu[1] - gz[r, D + 1]
        jf = _REF_MU + 2
        je = _REF_MU + 2 + D
        a1 = 0.0
        d = 0
        while d + 2 <= D:
            l0 = REF[i, jf + d] - ((gz[r, d] + Aw[r, d, 0] * u0) + Aw[r, d, 1] * u1)
            l1 = REF[i, jf + d + 1] - ((gz[r, d + 1] + Aw[r, d + 1, 0] * u0) + Aw[r, d + 1, 1] * u1)
            acc += l0 * (2.0 * REF[i, je + d] + l0)
            a1 += l1 * (2.0 * REF[i, je + d + 1] + l1)
            d += 2
        if d < D:
            l0 = REF[i, jf + d] - ((gz[r, d] + Aw[r, d, 0] * u0) + Aw[r, d, 1] * u1)
            acc += l0 * (2.0 * REF[i, je + d] + l0)
        acc += a1
    else:
        for d in range(D):
            f = gz[r, d]  # the fitted point (see above)
            for t in range(S):
                f += Aw[r, d, t] * (mu[t] - gz[r, D + t])
            dl = REF[i, _REF_MU + S + d] - f
            acc += dl * (2.0 * REF[i, _REF_MU + S + D + d] + dl)
    for t in range(S):
        m0 = REF[i, _REF_MU + t]
        acc += s2 * (mu[t] - m0) * (mu[t] + m0)
    return -0.5 * ((logdet_lam[r] - REF[i, _REF_LD]) + acc)


@jit
def _region_log_mass(mu, Sigma, r, lo, hi, whole):
    """log of the N(mu, Sigma_r)-mass of region r (S = 1 intervals; whole-space regions)."""
    if whole[r]:
        return 0.0
    return interval_log_mass(lo[r], hi[r], mu[0], math.sqrt(Sigma[r, 0, 0]))


@jit
def _log_mass_bound(lo, hi, mu, hl):
    """Upper bound on the log N(mu, 1 / (2 hl))-mass of ``[lo, hi]``, with no
    division or square root: ``Q(d) <= exp(-d^2/2) / 2`` at the interval's
    distance ``d = e / sd`` from the mean (0 where it holds the mean; a
    whole-space region has ``lo = -inf``, ``hi = inf``)."""
    e = max(lo - mu, mu - hi)
    return -(e * e * hl + _LOG2) if e > 0.0 else 0.0


@jit
def _best_first(k, best):
    """The k-th region to visit: the best candidate first, then the others in order."""
    if k == 0:
        return best
    if k <= best:
        return k - 1
    return k


# s >= 1 once a term is in, so a term below m - 38 (e^-38 = 3.1e-17) rounds away.
_NEGLIGIBLE = 38.0
# -log(2^-60): see log_prob_block_1d
_CHEAP_GAP = 41.6
# A later chunk's best term this far above the running maximum replaces the
# row's reference (log_prob_block_1d): e^-64 R stays far below an ulp of the sum.
_REBASE = 64.0
_LOG2 = 0.6931471805599453


@jit
def _add_term(term, m, s):
    """Online logsumexp: fold ``term`` into the running ``(max, scaled sum)``.
    A term too small to change the scaled sum is not exponentiated (the
    result is the same to the bit, and an underflowing exp is slow)."""
    if term == -math.inf or term < m - _NEGLIGIBLE:  # exp(term - m) < ulp(1)/2 <= ulp(s)/2: rounds to s
        return m, s
    if term > m:
        return term, s * math.exp(m - term) + 1.0
    return m, s + math.exp(term - m)


@jit
def _note_top(term, m, arg, i, r, mu, at):
    """Record pair (i, r) (region r, the point ``mu`` where its energy was
    taken, ``at``: 1 for a far polygon's nearest point) in ``arg[i] = (term,
    r, mu, at)`` when its term is the row's largest so far: the caller rebases
    a row whose largest term lies far above its reference (``CPAModel.log_prob``).
    ``mu``'s first ``S = arg.shape[1] - 3`` entries are read (a caller's longer
    scratch need not be sliced: a view per pair costs a reference count)."""
    if term > m:
        S = arg.shape[1] - 3
        arg[i, 0] = term
        arg[i, 1] = r
        for q in range(S):
            arg[i, 2 + q] = mu[q]
        arg[i, 2 + S] = at


@jit
def _best_candidate(XA, Xb, xx, Ab, bb, Sigma, logdet_lam, const, an, lo, hi, whole, Xs, Aw, gz, s2, i, r0, y, mu,
                    best):
    """Fold this chunk's pairs of row i into its best candidate reference
    ``best = (bound, region, mu)``, by the upper bound ``log kappa + log
    Q(d)`` on each term (S = 1 intervals, or whole-space regions): a
    reference whose mass is tiny would leave ``log p = log kappa_ref + (a
    large relative term)`` to cancel. Where the cheap ``log kappa``'s
    rounding bound exceeds one nat, the exact one decides."""
    R = Xb.shape[1]
    S = mu.shape[0]
    for r in range(R):  # (the interval bound is cheap: one pass in region order)
        lk, err = _kappa_and_mean(XA, Xb, xx, Ab, bb, Sigma, logdet_lam, const, an, i, r, y, mu)
        bound = 0.0 if whole[r] else _log_mass_bound(lo[r], hi[r], mu[0], 0.5 / Sigma[r, 0, 0])
        if not (lk + err + bound > best[0]):
            continue
        if err > 1.0:
            lk = _exact_log_kappa(Xs, i, Aw, gz, r, mu, s2, logdet_lam, const)
        lk += bound
        if lk > best[0]:
            best[0] = lk
            best[1] = r0 + r
            for t in range(S):
                best[2 + t] = mu[t]


@jit
def _ensure_reference(XA, Xb, xx, Ab, bb, Sigma, logdet_lam, const, an, lo, hi, whole, Xs, Aw, gz, s2, REF, i,
                      y, mu):
    """Give row i a reference (its best candidate in this chunk) if it has none."""
    if REF[i, _REF_LK] == REF[i, _REF_LK]:
        return
    best = np.full(3 + mu.shape[0], -math.inf)
    best[-1] = 0.0
    _best_candidate(XA, Xb, xx, Ab, bb, Sigma, logdet_lam, const, an, lo, hi, whole, Xs, Aw, gz, s2, i, 0, y, mu,
                    best)
    if not (best[0] > -math.inf):  # no finite candidate: any pair will do
        _kappa_and_mean(XA, Xb, xx, Ab, bb, Sigma, logdet_lam, const, an, i, 0, y, mu)
        best[1] = 0.0
        best[2:-1] = mu
    _set_reference(Xs, i, Aw, gz, int(best[1]), best[2:-1], s2, logdet_lam, const, REF)


@jit(parallel=True)
def best_pairs_chunk(XA, Xb, xx, Ab, bb, Sigma, logdet_lam, const, an, lo, hi, whole, Xs, Aw, gz, s2, r0, best):
    """Each row's best candidate reference so far (:func:`_best_candidate`,
    regions ``r0 + r`` of this chunk; ``best`` (n, 3 + S), bound ``-inf``
    first): the pass that picks the rows' references when the regions come
    in several chunks."""
    n, R = Xb.shape
    S = Ab.shape[1]
    for i in prange(n):
        y = np.empty(S)
        mu = np.empty(S)
        _best_candidate(XA, Xb, xx, Ab, bb, Sigma, logdet_lam, const, an, lo, hi, whole, Xs, Aw, gz, s2, i, r0, y, mu,
                        best[i])


@jit(parallel=True)
def best_pairs_chunk_2d(XA, Xb, xx, Ab, bb, Lt, K, Rt, logdet_lam, const, an, whole, ptr, PW, LN, Xs, Aw, gz, s2, r0, best):
    """:func:`best_pairs_chunk` for S = 2."""
    n, R = Xb.shape
    cap = polygon_cap(ptr)
    for i in prange(n):
        y = np.empty(2)
        mu = np.empty(2)
        W = np.empty((cap, 6))
        E = np.empty((cap, 6))
        _best_candidate_2d(XA, Xb, xx, Ab, bb, Lt, K, Rt, logdet_lam, const, an, whole, ptr, PW, LN, Xs, Aw, gz, s2, i, r0, y,
                           mu, best[i], W, E)


@jit(parallel=True)
def set_references(Xs, Aw, gz, best, s2, logdet_lam, const, REF):
    """Make each row's best candidate (:func:`best_pairs_chunk`) its reference."""
    S = Aw.shape[2]
    for i in prange(Xs.shape[0]):
        _set_reference(Xs, i, Aw, gz, int(best[i, 1]), best[i, 2:2 + S], s2, logdet_lam, const, REF)
        REF[i, REF.shape[1] - 1] = best[i, 2 + S]


@jit(parallel=True)
def log_prob_chunk(XA, Xb, xx, Xs, REF, Ab, bb, Sigma, logdet_lam, Aw, gz, an, s2, lo, hi, whole, const, gap,
                   run_max, run_sum, n_skipped, r0, arg, TERM, MOM):
    """Fold one (samples x regions) chunk into each sample's running
    logsumexp (relative to its reference), for any S whose regions are
    whole-space or (S = 1) intervals.

    Serves affine generators (one whole-space region) and the E-step's own
    likelihood pass; the S = 1 and S = 2 models' ``log_prob`` have their own
    kernels. ``run_max``, ``run_sum`` (per sample) and ``REF`` carry the
    state across region chunks; ``arg`` the largest term's pair
    (:func:`_note_top`; ``r0`` the chunk's first region).

    ``TERM`` (n, R_all) and ``MOM`` (n, R_all, S + S^2), unless empty, keep
    what the E-step needs of the rows' pairs (``estep.gather_statistics``):
    ``TERM[i, r0 + r]`` the term of each pair within ``gap`` of the row's
    running log-likelihood (a lower bound on its own; ``-inf`` for the
    others) and ``MOM`` its region's truncated mean and covariance (row
    major). Every pair within ``gap`` of the row's final log-likelihood is
    among them, its term exactly the one the sum took.
    """
    n, R = Xb.shape
    S = Ab.shape[1]
    keep = TERM.shape[0] > 0
    for i in prange(n):
        y = np.empty(S)
        mu = np.empty(S)
        mk = np.empty(S)
        Ck = np.empty((S, S))
        _ensure_reference(XA, Xb, xx, Ab, bb, Sigma, logdet_lam, const, an, lo, hi, whole, Xs, Aw, gz, s2, REF,
                          i, y, mu)
        lref = REF[i, _REF_LK]
        m, s = run_max[i], run_sum[i]
        skipped = 0
        for r in range(R):
            if keep:
                TERM[i, r0 + r] = -math.inf
            lk, err = _kappa_and_mean(XA, Xb, xx, Ab, bb, Sigma, logdet_lam, const, an, i, r, y, mu)
            if lk + err - lref < m - gap:
                skipped += 1
                continue
            term = _rel_log_kappa(Aw, gz, r, mu, s2, logdet_lam, i, REF) + _region_log_mass(mu, Sigma, r, lo, hi, whole)
            if keep and term >= (m + math.log(s) if s > 0.0 else -math.inf) - gap:
                TERM[i, r0 + r] = term
                _truncate(mu, Sigma, r, lo, hi, whole, mk, Ck)
                _put_moments(mk, Ck, MOM, i, r0 + r)
            _note_top(term, m, arg, i, r0 + r, mu, 0.0)
            m, s = _add_term(term, m, s)
        run_max[i], run_sum[i] = m, s
        n_skipped[i] += skipped


@jit(parallel=True)
def log_prob_block_1d(Xw, Xs, G, xx, ab, bb, logdet_lam, const, sig, hl, lo, hi, whole, Aw, gz, an, s2, REF, gap,
                      run_max, run_sum, n_skipped, block, r0, arg, TERM, MOM):
    """:func:`log_prob_chunk` for S = 1 with the GEMM fused in: each thread
    takes ``block`` rows of ``Xw`` at a time and forms their products with the
    region chunk itself, ``Xw[rows] @ G`` with ``G = [A~ | b~]`` (D, 2 R),
    single-threaded BLAS inside (the caller limits it). The first pass (the
    cheap log kappa, its rounding bound and the posterior mean of every pair)
    is written out in scalars, a tight loop the compiler keeps in registers.
    Memory: ``block * 2 R`` per thread.

    Region arrays as 1-D vectors: ``ab = A~^T b~``, ``bb = |b~|^2``, ``sig``
    the posterior variance ``Sigma = 1 / Lambda`` and ``hl = Lambda / 2`` (the
    tail bound needs no division or square root). The first pass also forms
    each pair's upper bound ``log kappa + log Q(d)``, so the second visits the
    best bound first and passes over the negligible pairs with one compare.
    ``r0``, ``arg``, ``TERM``, ``MOM``: as in :func:`log_prob_chunk` (a kept
    pair's term takes the exact relative ``log kappa`` where the sum may take
    the cheap one, and its moments are ``interval_moments``')."""
    n = Xw.shape[0]
    R = ab.shape[0]
    keep = TERM.shape[0] > 0
    for bk in prange((n + block - 1) // block):
        i0 = bk * block
        i1 = min(n, i0 + block)
        P = np.dot(Xw[i0:i1], G)
        lk = np.empty(R)
        er = np.empty(R)
        ub = np.empty(R)
        mus = np.empty(R)
        mu = np.empty(1)
        for i in range(i0, i1):
            li = i - i0
            xi = xx[i]
            sx = math.sqrt(xi)
            emax = 0.0
            for r in range(R):
                y = P[li, r] - ab[r]
                mu0 = sig[r] * y
                mus[r] = mu0
                # in the order of _kappa_and_mean (the posterior's), rounding alike
                xb = P[li, R + r]
                t = const - 0.5 * (logdet_lam[r] + (xi - 2.0 * xb + bb[r] - y * mu0))
                e = an[r, 1] * (xi + 2.0 * abs(xb) + bb[r] + abs(y * mu0)
                                + 2.0 * abs(mu0) * an[r, 0] * (sx + math.sqrt(bb[r])))
                lk[r] = t
                er[r] = e
                emax = max(emax, e)
                ub[r] = t + e + _log_mass_bound(lo[r], hi[r], mu0, hl[r])
            best = np.argmax(ub)
            if not (REF[i, _REF_LK] == REF[i, _REF_LK]):
                # the best bound on a term, the exact log kappa deciding where the
                # cheap one's rounding bound exceeds a nat (see _best_candidate)
                top = -math.inf
                ref = best
                for r in range(R):
                    if not (ub[r] > top):
                        continue
                    # (not ub - er: with a large rounding bound that difference
                    # would lose the term itself)
                    cand = lk[r]
                    if er[r] > 1.0:
                        mu[0] = mus[r]
                        cand = _exact_log_kappa(Xs, i, Aw, gz, r, mu, s2, logdet_lam, const)
                    cand += _log_mass_bound(lo[r], hi[r], mus[r], hl[r])
                    if cand > top:
                        top = cand
                        ref = r
                mu[0] = mus[ref]
                _set_reference(Xs, i, Aw, gz, ref, mu, s2, logdet_lam, const, REF)
            lref = REF[i, _REF_LK]
            m, s = run_max[i], run_sum[i]
            if m > -math.inf and ub[best] - lref > m + _REBASE:
                # This chunk's best term may lie far above everything so far (the
                # reference came from an earlier chunk): if it does, it becomes
                # the reference and the running sum moves onto it. The earlier
                # terms then lie > _REBASE nats below the maximum, so the
                # rounding of that move (eps |log kappa_ref|) cannot show.
                mu[0] = mus[best]
                nb = _exact_log_kappa(Xs, i, Aw, gz, best, mu, s2, logdet_lam, const)
                if not whole[best]:
                    nb += interval_log_mass(lo[best], hi[best], mus[best], math.sqrt(sig[best]))
                if nb - lref > m + _REBASE:
                    _set_reference(Xs, i, Aw, gz, best, mu, s2, logdet_lam, const, REF)
                    m -= REF[i, _REF_LK] - lref
                    lref = REF[i, _REF_LK]
                    if keep:  # the earlier chunks' terms lie > _REBASE below this one: none is kept
                        for q in range(r0):
                            TERM[i, q] = -math.inf
            # A term whose bound lies this far below the running maximum may be
            # taken from the cheap form: its rounding (at most emax) changes the
            # sum by below 2^-60 of it (the exact form costs O(D) a pair).
            cheap_below = _CHEAP_GAP + math.log(emax) if emax > 0.0 else 0.0
            skipped = 0
            for k in range(R):
                r = _best_first(k, best)
                if keep:
                    TERM[i, r0 + r] = -math.inf
                if lk[r] + er[r] - lref < m - gap:
                    skipped += 1
                    continue
                # kept: pairs within gap of the running log-likelihood (<= the row's)
                low = (m + math.log(s) if s > 0.0 else -math.inf) - gap if keep else math.inf
                if ub[r] - lref < m - _NEGLIGIBLE and ub[r] - lref < low:  # cannot change the sum (as for S = 2)
                    continue
                mu[0] = mus[r]
                cheap = ub[r] - lref < m - cheap_below
                if cheap:
                    rel = lk[r] - lref
                else:
                    rel = _rel_log_kappa(Aw, gz, r, mu, s2, logdet_lam, i, REF)
                if whole[r]:
                    lm = 0.0
                else:
                    lm = interval_log_mass(lo[r], hi[r], mus[r], math.sqrt(sig[r]))
                if keep and ub[r] - lref >= low:
                    term = (_rel_log_kappa(Aw, gz, r, mu, s2, logdet_lam, i, REF) if cheap else rel) + lm
                    if term >= low:
                        TERM[i, r0 + r] = term
                        if whole[r]:
                            MOM[i, r0 + r, 0] = mus[r]
                            MOM[i, r0 + r, 1] = sig[r]
                        else:
                            _, MOM[i, r0 + r, 0], MOM[i, r0 + r, 1] = interval_moments(lo[r], hi[r], mus[r],
                                                                                       math.sqrt(sig[r]))
                _note_top(rel + lm, m, arg, i, r0 + r, mu, 0.0)
                m, s = _add_term(rel + lm, m, s)
            run_max[i], run_sum[i] = m, s
            n_skipped[i] += skipped


@jit
def _truncate(mu, Sigma, r, lo, hi, whole, mean, cov):
    """N(mu, Sigma_r) restricted to region r (whole space, or an S = 1
    interval): writes its mean (S,) and covariance (S, S), returns log Phi_r."""
    S = mean.shape[0]
    if whole[r]:
        for s in range(S):
            mean[s] = mu[s]
            for t in range(S):
                cov[s, t] = Sigma[r, s, t]
        return 0.0
    lm, m, v = interval_moments(lo[r], hi[r], mu[0], math.sqrt(Sigma[r, 0, 0]))
    mean[0] = m
    cov[0, 0] = v
    return lm


@jit(parallel=True)
def posterior_chunk(XA, Xb, xx, Xs, REF, Ab, bb, Sigma, logdet_lam, Aw, gz, an, s2, lo, hi, whole, const, terms,
                    means, covs):
    """Every pair's term and the region's truncated posterior moments.

    Writes ``terms[i, r]`` (log kappa + log Phi, relative to row i's
    reference ``REF[i, 0]``), ``means[i, r]`` (S,) and ``covs[i, r]`` (S, S):
    the mean and covariance of N(mu, Sigma_r) restricted to region r.
    """
    n, R = Xb.shape
    S = Ab.shape[1]
    for i in prange(n):
        y = np.empty(S)
        mu = np.empty(S)
        _ensure_reference(XA, Xb, xx, Ab, bb, Sigma, logdet_lam, const, an, lo, hi, whole, Xs, Aw, gz, s2, REF,
                          i, y, mu)
        for r in range(R):
            _kappa_and_mean(XA, Xb, xx, Ab, bb, Sigma, logdet_lam, const, an, i, r, y, mu)
            rel = _rel_log_kappa(Aw, gz, r, mu, s2, logdet_lam, i, REF)
            terms[i, r] = rel + _truncate(mu, Sigma, r, lo, hi, whole, means[i, r], covs[i, r])


# ----------------------------------------------------------------------------- S = 2
@jit
def _kappa_and_mean_2d(XA, Xb, xx, Ab, bb, Lt, K, Rt, logdet_lam, const, an, i, r, y, mu):
    """:func:`_kappa_and_mean` for S = 2, in the orthonormal basis ``Q`` of
    ``A~ = Q Rq`` (``XA`` holds ``Q^T x~``, ``Ab`` ``Q^T b~``, ``Rt[r]`` is
    ``(r11, r12, r22)``): ``y' = Q^T (x~ - b~)``, ``mu = K y'`` (``K`` of norm
    at most ``sigma_z / 2``, see ``CPAModel._region_params``) and the cheap
    quadratic form ``|x~ - b~|^2 - |y'|^2 + |y' - Rq mu|^2 + |mu|^2 /
    sigma_z^2``. Fills ``y`` with ``y'``."""
    y0 = XA[i, r, 0] - Ab[r, 0]
    y1 = XA[i, r, 1] - Ab[r, 1]
    mu[0] = K[r, 0, 0] * y0 + K[r, 0, 1] * y1
    mu[1] = K[r, 1, 0] * y0 + K[r, 1, 1] * y1
    y[0] = y0
    y[1] = y1
    e0 = y0 - (Rt[r, 0] * mu[0] + Rt[r, 1] * mu[1])
    e1 = y1 - Rt[r, 2] * mu[1]
    mm = mu[0] * mu[0] + mu[1] * mu[1]
    yy = y0 * y0 + y1 * y1
    quad = xx[i] - 2.0 * Xb[i, r] + bb[r] - yy + (e0 * e0 + e1 * e1) + Rt[r, 3] * mm
    err = _prune_slack(xx[i], Xb[i, r], bb[r], yy, yy, an[r])
    return const - 0.5 * (logdet_lam[r] + quad), err


@jit
def _best_candidate_2d(XA, Xb, xx, Ab, bb, Lt, K, Rt, logdet_lam, const, an, whole, ptr, PW, LN, Xs, Aw, gz, s2, i, r0, y,
                       mu, best, W, E):
    """:func:`_best_candidate` for S = 2: the polygon's tail bound at its
    distance from the pair's posterior mean (``W``, ``E`` scratch)."""
    R = Xb.shape[1]
    first = 0  # the largest cheap bound first: it settles most of the others
    top = -math.inf
    for r in range(R):
        lk, err = _kappa_and_mean_2d(XA, Xb, xx, Ab, bb, Lt, K, Rt, logdet_lam, const, an, i, r, y, mu)
        if lk + err > top:
            top = lk + err
            first = r
    for k in range(R):
        r = _best_first(k, first)
        lk, err = _kappa_and_mean_2d(XA, Xb, xx, Ab, bb, Lt, K, Rt, logdet_lam, const, an, i, r, y, mu)
        if not (lk + err > best[0]):
            continue
        if err > 1.0:
            lk = _exact_log_kappa(Xs, i, Aw, gz, r, mu, s2, logdet_lam, const)
            if not (lk > best[0]):
                continue
        nv = ke = 0
        if not whole[r]:
            nv = _whiten_polygon(ptr, PW, LN, r, mu, Lt, W)
            ke = edge_table(W, nv, E)[0] if nv > 0 else 0
            if ke > 0:
                lk += log_tail_bound(E, ke)
        if lk > best[0]:
            best[0] = lk
            best[1] = r0 + r
            best[2] = mu[0]
            best[3] = mu[1]
            best[4] = 0.0
            if ke > 0 and far_distance2(E, ke) > _FAR2:
                # the reference at the far polygon's nearest point, where its term's
                # energy is taken (_polygon_term_2d), not at a peak far outside it
                _, px, py, k1, k2 = far_log_mass_at(E, ke)
                _far_point_2d(ptr, LN, Lt, r, mu, W, nv, E, k1, k2, px, py, best[2:4])
                best[4] = 1.0


@jit
def _ensure_reference_2d(XA, Xb, xx, Ab, bb, Lt, K, Rt, logdet_lam, const, an, whole, ptr, PW, LN, Xs, Aw, gz, s2, REF, i,
                         y, mu, W, E):
    """:func:`_ensure_reference` for S = 2."""
    if REF[i, _REF_LK] == REF[i, _REF_LK]:
        return
    best = np.full(5, -math.inf)
    best[4] = 0.0
    _best_candidate_2d(XA, Xb, xx, Ab, bb, Lt, K, Rt, logdet_lam, const, an, whole, ptr, PW, LN, Xs, Aw, gz, s2, i, 0, y, mu,
                       best, W, E)
    if not (best[0] > -math.inf):  # no finite candidate: any pair will do
        _kappa_and_mean_2d(XA, Xb, xx, Ab, bb, Lt, K, Rt, logdet_lam, const, an, i, 0, y, mu)
        best[1] = 0.0
        best[2:4] = mu
    _set_reference(Xs, i, Aw, gz, int(best[1]), best[2:4], s2, logdet_lam, const, REF)
    REF[i, REF.shape[1] - 1] = best[4]


@jit
def _whiten_polygon(ptr, PW, LN, r, mu, Lt, W):
    """Region r's boundary in the frame u = L^T (z - mu) of its posterior
    (``Lt[r] = (l11, l21, l22)``, ``L L^T`` the precision): rows
    ``(x, y, w, lx, ly, loff)`` as ``kernels._polygon`` takes them. ``PW``
    holds ``L^T v`` (ideal points: the unit direction), ``LN`` each edge's
    line ``(n1, n2, o)`` in z and its normal in u; returns the point count."""
    sx = Lt[r, 0] * mu[0] + Lt[r, 1] * mu[1]
    sy = Lt[r, 2] * mu[1]
    n = ptr[r + 1] - ptr[r]
    for k in range(n):
        v = ptr[r] + k
        w = PW[v, 2]
        W[k, 0] = PW[v, 0] - sx * w
        W[k, 1] = PW[v, 1] - sy * w
        W[k, 2] = w
        W[k, 3] = LN[v, 3]
        W[k, 4] = LN[v, 4]
        if LN[v, 3] == 0.0 and LN[v, 4] == 0.0:
            W[k, 5] = 0.0
        else:
            W[k, 5] = LN[v, 2] + LN[v, 0] * mu[0] + LN[v, 1] * mu[1]
    return n


@jit
def polygon_cap(ptr):
    """Rows of scratch a chunk's polygons (``ptr``: their point ranges) need:
    the most points of any, at least 8."""
    cap = 8
    for r in range(len(ptr) - 1):
        cap = max(cap, ptr[r + 1] - ptr[r])
    return cap


@jit
def _scratch(cap):
    """Per-thread work arrays of the S = 2 kernels for polygons of up to ``cap``
    points: the whitened polygon, its edge table, the section rule's buffers,
    and the anchored copy (two clip buffers, its lines, its frame), and the
    fan record of the last polygon's log-mass (``std_polygon_log_mass``)."""
    return (np.empty((cap, 6)), np.empty((cap, 6)), np.empty((cap + 8, 6)), np.empty((cap + 8, 6)),
            np.empty((cap + 8, 7)), np.empty(cap + 8), np.empty((2 * cap + 4, 6)), np.empty((2 * cap + 4, 6)),
            np.empty((cap, 4)), np.empty(3), np.full(4, -1.0))


@jit
def _anchored_region(fptr, FN, FO, FU, Lt, r, mu, nv, sc):
    """Region r's polygon in a frame anchored at its boundary point nearest
    the pair's posterior mean (whitened), for the section rule: each facet's
    offset at the anchor ``z_a = mu + M u_a`` comes from exact products, so
    a thin region far from the mean keeps its width (the anchor's own
    rounding only moves the whole polygon). ``sc`` is :func:`_scratch`'s
    tuple with the whitened polygon in ``sc[0]``; returns ``(points, n,
    n_lines)``, the points in ``sc[6]`` or ``sc[7]``, the lines in ``sc[8]``
    and the frame ``(centre, det M)`` in ``sc[9]``; ``n = -1`` where the
    anchored copy is lost to rounding (the caller keeps the plain frame)."""
    W, E, P, Q, LM, G = sc[0], sc[1], sc[6], sc[7], sc[8], sc[9]
    ke = edge_table(W, nv, E)[0]
    if ke == 0:
        return P, -1, 0
    _, px, py = nearest_point(E, ke)
    l11 = Lt[r, 0]
    l21 = Lt[r, 1]
    l22 = Lt[r, 2]
    # z = mu + M u, M = (L^T)^-1 = [[1/l11, -l21/(l11 l22)], [0, 1/l22]]
    za0 = mu[0] + (px / l11 - l21 * py / (l11 * l22))
    za1 = mu[1] + py / l22
    n = whole_plane(P)
    nl = 0
    for k in range(fptr[r], fptr[r + 1]):
        a = FN[k, 0]
        b = FN[k, 1]
        n = clip_halfplane(P, n, FU[k, 0], FU[k, 1], offset_at(FO[k], a, za0, b, za1), Q)
        P, Q = Q, P
        LM[nl, 0] = FU[k, 0]
        LM[nl, 1] = FU[k, 1]
        LM[nl, 2] = a
        LM[nl, 3] = b
        nl += 1
        if n == 0:
            return P, -1, 0
    G[0] = -px
    G[1] = -py
    G[2] = 1.0 / (l11 * l22)
    return P, n, nl


@jit
def _polygon_log_mass_2d(ptr, PW, LN, fptr, FN, FO, FU, Lt, r, mu, floor, sc):
    """log N(mu, Sigma_r)-mass of S = 2 region r (``floor``: see
    ``std_polygon_log_mass``); the section rule, where it serves, integrates
    the region anchored on itself (:func:`_anchored_region`). Whitens the
    polygon into ``sc[0]`` (:func:`_polygon_term_2d` reads it)."""
    W, E, B1, B2, V, Y = sc[0], sc[1], sc[2], sc[3], sc[4], sc[5]
    nv = _whiten_polygon(ptr, PW, LN, r, mu, Lt, W)
    lm = std_polygon_log_mass(W, nv, E, B1, B2, V, Y, floor, W, -1, _G0, _LM0, 0, sc[10])
    if lm == lm:
        return lm
    A, nA, nl = _anchored_region(fptr, FN, FO, FU, Lt, r, mu, nv, sc)
    if nA < 0:
        return std_polygon_log_mass(W, nv, E, B1, B2, V, Y, floor, W, nv, _G0, _LM0, 0, sc[10])
    return std_polygon_log_mass(W, nv, E, B1, B2, V, Y, floor, A, nA, sc[9], sc[8], nl, sc[10])


@jit
def _edge_line(W, nv, E, k):
    """The row of the whitened polygon ``W[0:nv]`` whose line gave edge ``k``
    of its edge table (``edge_table``'s own arithmetic, compared exactly);
    -1 if none."""
    for j in range(nv):
        lx = W[j, 3]
        ly = W[j, 4]
        q = math.sqrt(lx * lx + ly * ly)
        if q > 0.0 and ly / q == E[k, 0] and -lx / q == E[k, 1] and -W[j, 5] / q == E[k, 2]:
            return j
    return -1


@jit
def _far_point_2d(ptr, LN, Lt, r, mu, W, nv, E, k1, k2, px, py, zs):
    """The whitened point ``(px, py)`` of region r's polygon (the frame of
    :func:`_whiten_polygon` about ``mu``) in z, into ``zs``, then moved onto
    the region's facet lines through it (edges ``k1`` and, ``k2 >= 0``, ``k2``
    of the edge table ``E``): ``mu + M u`` carries the rounding of ``mu``,
    which may lie far from the polygon; each line's value there comes from
    exact products (``offset_at``), so the point ends within the rounding of
    its own coordinates of the lines."""
    l11 = Lt[r, 0]
    l21 = Lt[r, 1]
    l22 = Lt[r, 2]
    zs[0] = mu[0] + (px / l11 - l21 * py / (l11 * l22))
    zs[1] = mu[1] + py / l22
    j1 = _edge_line(W, nv, E, k1)
    j2 = _edge_line(W, nv, E, k2) if k2 >= 0 else -1
    if j1 < 0:
        return
    a1 = LN[ptr[r] + j1, 0]
    b1 = LN[ptr[r] + j1, 1]
    f1 = offset_at(LN[ptr[r] + j1, 2], a1, zs[0], b1, zs[1])
    if j2 < 0:  # onto the line (unit normal): the exponent's slope along it is small or 0
        zs[0] -= f1 * a1
        zs[1] -= f1 * b1
        return
    a2 = LN[ptr[r] + j2, 0]
    b2 = LN[ptr[r] + j2, 1]
    f2 = offset_at(LN[ptr[r] + j2, 2], a2, zs[0], b2, zs[1])
    det = a1 * b2 - a2 * b1
    if det != 0.0:  # onto both: the vertex
        zs[0] -= (f1 * b2 - f2 * b1) / det
        zs[1] -= (a1 * f2 - a2 * f1) / det


# The moment series (kernels._polygon_series) serves a pair where its proven error is
# below these: the mass relative to itself, the covariance relative to its smaller
# eigenvalue (the E-step's moments are asked for to 1e-10: a bound, the errors measured are ~1e-14).
SERIES_MASS_TOL = 1e-12
SERIES_COV_TOL = 1e-10
# Weight in its sample's posterior below which a pair's moment tolerances widen (by
# _SLACK_WEIGHT / weight): its error then weighs at most what a pair of this weight may.
_SLACK_WEIGHT = 1e-3
# In the E-step, a pair whose weight is at most w+ < _SLACK_SHARE takes the series' mass
# to SERIES_MASS_TOL * _SLACK_SHARE / w+ (at most _SERIES_TOL_MAX): see _series_term.
_SLACK_SHARE = 1e-3
_LOG_SLACK_SHARE = math.log(_SLACK_SHARE)
_SERIES_TOL_MAX = 1e-4
# The moments' derivatives are summed to the degree whose truncation bound is this share
# of their tolerance (the rest for F's own error, times the covariance's conditioning
# max(h_j^2 / C_jj) / (1 - |corr|), 14 x 32 of it), and at most _DERIV_TRUNC_MAX (the
# first-order error propagation of _series_term holds there).
_DERIV_SHARE = 1.0 / (14.0 * 32.0)
_DERIV_TRUNC_MAX = 1e-5


@jit(parallel=True)
def series_tables(ptr, B, Lt, SC, SM):
    """Each region's moment-series table (``kernels._polygon_series.series_table``)
    from the boundary points ``B`` (rows ``(x, y, w)``, ``w = 0`` for ideal
    points) and the factors ``Lt``: ``SM`` (flat: region r's table at ``r *
    SERIES_WIDTH``), and ``SC[r]`` (``SERIES_COLS``) = the centroid (2), the
    frame's map ``R`` and its inverse (4 each, row major), ``h`` (``inf`` where
    the rule does not serve: an unbounded or large polygon), ``h1``, ``h2``,
    ``teps``, ``pe``, ``series_growth(h)`` and ``log M_00 + 2 e`` (``e`` =
    1.001 ``teps``, M_00's rounding relative to it: ``log(1 / (1 - e)) <= 2 e``
    for ``e <= 1/2``; ``inf`` where that does not hold), which bound the pairs'
    weights before their series is summed (:func:`_series_term`)."""
    R = len(ptr) - 1
    nb = min(R, 64)
    for blk in prange(nb):
        J = np.empty(SERIES_N + 1)
        P1 = np.empty(SERIES_N + 1)
        P2 = np.empty(SERIES_N + 1)
        acc = np.empty(SERIES_WIDTH)
        out = np.empty(11)
        for r in range(blk, R, nb):
            a, b = ptr[r], ptr[r + 1]
            bounded = b > a
            for v in range(a, b):
                if B[v, 2] != 1.0:
                    bounded = False
            for k in range(SERIES_COLS):
                SC[r, k] = 0.0
            SC[r, 10] = math.inf
            if bounded:
                row = SM[r * SERIES_WIDTH:(r + 1) * SERIES_WIDTH]
                h1, h2, h, teps, pe = series_table(B[a:b], b - a, Lt[r, 0], Lt[r, 1], Lt[r, 2], row, J, P1, P2, acc,
                                                   out)
                for k in range(10):
                    SC[r, k] = out[k]
                SC[r, 10] = h
                SC[r, 11] = h1
                SC[r, 12] = h2
                SC[r, 13] = teps
                SC[r, 14] = pe
                if h <= SERIES_H:  # (else the table is not formed)
                    SC[r, 15] = series_growth(h)
                    m00 = row[0]  # (its terms are positive)
                    m00_err = 1.001 * teps
                    SC[r, 16] = math.log(m00) + 2.0 * m00_err if m00 > 0.0 and m00_err <= 0.5 else math.inf


@jit
def _series_term(SC, SM, r, mu, grad, ser, pw, lw, mlw):
    """log N(mu, Sigma_r)-mass of region r by the moment series, or NaN where
    its error bound (the series' own, ``series_error``, measured a posteriori,
    plus the rounding of ``g`` and ``|g|^2 / 2``, times ``|d log Phi / d g| <= h
    + |g|``) exceeds
    its tolerance: ``SERIES_MASS_TOL``, widened for a light pair (below).
    ``ser[0]``: 1 (the rule served) or 0; with ``grad``, the
    truncated mean and covariance in z in ``ser[1:6]`` (mean, then cov 00, 01, 11)
    where their bound is within ``SERIES_COV_TOL`` of the covariance's smaller
    eigenvalue, widened for a light pair (below), else ``ser[0] = 2`` (the
    moments are there all the same, and ``ser[6]`` holds that bound, ``inf``
    where the covariance is not positive). ``pw``: scratch (``SERIES_SCRATCH``).

    ``lw``: the pair's ``log kappa`` less the log of its sample's likelihood
    or of a lower bound on it (``+inf``: no widening). Since ``|g . u| <=
    rho`` on the polygon, ``F <= e^rho M_00``, so the pair's weight in its
    sample's posterior is at most ``w+ = exp(lw + log M_00 + rho - |g|^2 / 2)
    / 2 pi`` (``M_00`` within its table's rounding) before the series is
    summed; below ``_SLACK_SHARE`` the mass's tolerance is ``SERIES_MASS_TOL
    * _SLACK_SHARE / w+`` (at most ``_SERIES_TOL_MAX``). Such a pair's weight
    then errs by at most ``_SLACK_SHARE * SERIES_MASS_TOL`` (1e-15), while
    far, light pairs, which the full accuracy refuses (``e^rho`` in the
    rounding, a degree beyond ``SERIES_K``), are summed in a few dozen terms
    instead of by the edge formulas. (The E-step uses it; ``log_prob`` keeps
    every term at full accuracy.)

    ``mlw``: as ``lw``, for the moments alone (``+inf``: full accuracy). Once F
    gives the pair's weight ``w``, the moments' tolerance below
    ``_SLACK_WEIGHT`` widens by ``_SLACK_WEIGHT / w`` (as the callers
    weigh it), and the derivatives are summed to the degree that tolerance
    needs (their truncation bound, ``_DERIV_SHARE`` of it), not to the mass's:
    the E-step's light pairs, most of them in the dense regime, take a few
    terms. Where that bound fails the derivatives are summed again to the
    mass's degree."""
    ser[0] = 0.0
    h = SC[r, 10]
    h1 = SC[r, 11]
    h2 = SC[r, 12]
    d1 = mu[0] - SC[r, 0]
    d2 = mu[1] - SC[r, 1]
    a1 = SC[r, 2] * d1
    b1 = SC[r, 3] * d2
    a2 = SC[r, 4] * d1
    b2 = SC[r, 5] * d2
    g1 = a1 + b1
    g2 = a2 + b2
    rho = abs(g1) * h1 + abs(g2) * h2
    gg = 0.5 * (g1 * g1 + g2 * g2)
    tol = SERIES_MASS_TOL
    trunc = SERIES_TRUNC
    off = r * SERIES_WIDTH  # the tables come flat (a view per pair would share a reference count)
    if lw < math.inf:
        lwu = lw + SC[r, 16] + rho - gg - LOG_2PI_PS  # (SC[r, 16] >= log M_00: see series_tables)
        if lwu < _LOG_SLACK_SHARE:
            tol = min(_SERIES_TOL_MAX, SERIES_MASS_TOL * math.exp(_LOG_SLACK_SHARE - lwu))
            trunc = max(SERIES_TRUNC, 0.25 * tol)
    growth = SC[r, 15]
    K = series_degree(rho, growth, trunc)
    if K < 0:
        return math.nan
    F = series_eval(SM, off, g1, g2, K, pw)
    erho = math.exp(rho)
    teps = SC[r, 13]
    pe = SC[r, 14]
    # the rounding's bound from B's a priori bound; B itself is summed only where that
    # is too loose (for the mass here, for the moments below)
    exact = False
    err = series_error(F, series_abs_bound(SM, off, erho), erho, K, teps, pe, trunc)
    gn = math.hypot(g1, g2)
    frame = (h + gn) * 3.0 * _EPS * (abs(a1) + abs(b1) + abs(a2) + abs(b2)) + 2.0 * _EPS * gn * gn
    if not (err + frame <= tol):
        err = series_error(F, series_abs_sum(SM, off, K, pw), erho, K, teps, pe, trunc)
        exact = True
        if not (err + frame <= tol):
            return math.nan
    lm = math.log(F) - gg - LOG_2PI_PS
    ser[0] = 1.0
    if not grad:
        return lm
    slack = max(1.0, _SLACK_WEIGHT * math.exp(-(mlw + lm))) if mlw < math.inf else 1.0
    tol_d = SERIES_COV_TOL * slack
    trunc_d = max(trunc, min(_DERIV_TRUNC_MAX, tol_d * _DERIV_SHARE))
    Kd = series_degree(rho, growth, trunc_d)
    if Kd < 0 or Kd > K:
        Kd = K
        trunc_d = trunc
    while True:
        F1, F2, F11, F12, F22 = series_derivatives(SM, off, Kd, pw)
        m1 = F1 / F
        m2 = F2 / F
        c00 = F11 / F - m1 * m1
        c01 = F12 / F - m1 * m2
        c11 = F22 / F - m2 * m2
        # |error of C_jk| <= e h_j h_k (E[u u^T] within 2 err, E[u] within 2 err, the
        # difference's rounding 4 eps, in units of h_j h_k; the derivatives' truncation
        # at Kd is trunc_d, F's own error err), so relative to C itself at most
        # 2 e max(h_j^2 / C_jj) / (1 - |correlation|)
        cond = math.inf
        if c00 > 0.0 and c11 > 0.0:
            corr = abs(c01) / math.sqrt(c00 * c11)
            if corr < 1.0:
                cond = 2.0 * max(h1 * h1 / c00, h2 * h2 / c11) / (1.0 - corr)
        bound = 7.0 * (err + trunc_d + _EPS) * cond
        if not (bound <= tol_d) and not exact and cond < math.inf:  # B itself may be tight enough
            err = series_error(F, series_abs_sum(SM, off, K, pw), erho, K, teps, pe, trunc)
            exact = True
            bound = 7.0 * (err + trunc_d + _EPS) * cond
        if bound <= tol_d or Kd == K:
            break
        Kd = K  # the cheap degree's bound did not hold: the mass's degree
        trunc_d = trunc
    ser[6] = bound
    if not (bound <= tol_d):
        ser[0] = 2.0
    if bound < math.inf:  # z = c + R^-1 u
        i11 = SC[r, 6]
        i12 = SC[r, 7]
        i21 = SC[r, 8]
        i22 = SC[r, 9]
        ser[1] = SC[r, 0] + (i11 * m1 + i12 * m2)
        ser[2] = SC[r, 1] + (i21 * m1 + i22 * m2)
        t11 = i11 * c00 + i12 * c01
        t12 = i11 * c01 + i12 * c11
        t21 = i21 * c00 + i22 * c01
        t22 = i21 * c01 + i22 * c11
        ser[3] = t11 * i11 + t12 * i12
        ser[4] = 0.5 * ((t11 * i21 + t12 * i22) + (t21 * i11 + t22 * i12))
        ser[5] = t21 * i21 + t22 * i22
    return lm


@jit
def _polygon_term_2d(ptr, PW, LN, fptr, FN, FO, FU, Lt, Aw, gz, s2, logdet_lam, REF, i, r, mu, rel, floor, sc, zs, SC,
                     SM, grad, ser, pw, level, mlevel):
    """Pair (i, r)'s term ``log kappa_r - log kappa_ref + log Phi_r`` from its
    relative ``log kappa`` ``rel`` (taken at ``mu``), for a region with a
    boundary; a term whose mass lies below ``floor`` may be its bound.
    ``zs`` gets the point whose energy the term took, and ``zs[2]`` 1 where
    that is a far polygon's nearest point (else 0).

    A polygon beyond ``_FAR2`` whitened sd from ``mu`` holds its mass within
    ``1/d`` of its nearest point ``p``: its term is the energy at ``p``
    itself (:func:`_rel_log_kappa` there, a residual next to the region) plus
    the log-mass relative to the density at ``p`` (``far_log_mass_at``). The
    peak at ``mu`` minus ``d^2 / 2`` would subtract two numbers of the size of
    the term, each rounded in its own way (``mu``'s fitted point extrapolated
    far from the region; ``d`` from the whitening of ``mu`` itself).

    A polygon small next to its Gaussian (region table ``SC``, ``SM``) takes the
    moment series where its error bound allows (:func:`_series_term`; ``ser[0]``
    says so, and with ``grad`` holds the moments); the polygon is then not
    whitened into ``sc[0]``. ``level``: the sample's log-likelihood relative
    to the reference, or a lower bound on it (``-inf``: none), against which
    the series weighs a light pair's tolerance; ``mlevel``: the same for the
    moments alone (with ``grad``). ``sc[10]`` ends with the fan record of this
    pair's polygon where its log-mass was integrated, else ``-1``."""
    sc[10][0] = -1.0
    if SC[r, 10] <= SERIES_H:
        lm = _series_term(SC, SM, r, mu, grad, ser, pw, rel - level, rel - mlevel)
        if lm == lm:
            zs[0] = mu[0]
            zs[1] = mu[1]
            zs[2] = 0.0
            return rel + lm
    ser[0] = 0.0
    lm = _polygon_log_mass_2d(ptr, PW, LN, fptr, FN, FO, FU, Lt, r, mu, floor - rel, sc)
    W, E = sc[0], sc[1]
    nv = ptr[r + 1] - ptr[r]
    # (a far polygon's log-mass is below -d^2 / 2: no edge table for the others)
    K = edge_table(W, nv, E)[0] if floor - rel < lm < 1.0 - 0.5 * _FAR2 else 0
    if K > 0 and far_distance2(E, K) > _FAR2:
        return _far_term_2d(ptr, LN, Lt, Aw, gz, s2, logdet_lam, REF, i, r, mu, W, nv, E, K, zs)
    zs[0] = mu[0]
    zs[1] = mu[1]
    zs[2] = 0.0
    return rel + lm


@jit
def _far_term_2d(ptr, LN, Lt, Aw, gz, s2, logdet_lam, REF, i, r, mu, W, nv, E, K, zs):
    """The term of pair (i, r) whose polygon (whitened ``W[0:nv]``, edge table
    ``E[0:K]``) lies beyond ``_FAR2``: the energy at its nearest point, put
    in ``zs`` (marked ``zs[2] = 1``), plus the log-mass relative to the
    density there (:func:`_polygon_term_2d`)."""
    lr, px, py, k1, k2 = far_log_mass_at(E, K)
    _far_point_2d(ptr, LN, Lt, r, mu, W, nv, E, k1, k2, px, py, zs)
    zs[2] = 1.0
    return _rel_log_kappa(Aw, gz, r, zs[:2], s2, logdet_lam, i, REF) + lr


@jit
def _kept_moments_2d(Sigma, whole, SC, SM, r, mu, rel, term, level, sc, ser, pw, MOM, i, q):
    """The truncated mean and covariance in z of pair (i, r), whose term ``term``
    :func:`_polygon_term_2d` has just formed (with ``grad``: ``ser`` and ``sc``
    as it left them; ``rel``: the relative ``log kappa`` at ``mu``), into ``MOM[i, q]
    = (mean (2), cov (2 x 2, row major))``. ``level``: the sample's log-likelihood
    relative to the reference, or a lower bound on it: below ``_SLACK_WEIGHT``
    of it the tolerances widen as in ``estep._term_and_moments_2d``'s, by
    ``_SLACK_WEIGHT / w`` with ``w <= exp(term - level)``, the pair's weight or
    a bound above it. The moments come from the series where its bound allows
    (the term's own, or for a light pair whose term the series refused at full
    accuracy, the series at its weight's tolerance); the others are marked for
    the accurate path, which :func:`deferred_moments_2d` takes after the pass
    (``MOM[i, q, 0]`` NaN, then the term's fan record in ``MOM[i, q, 2:6]``)."""
    if whole[r]:
        for a in range(2):
            MOM[i, q, a] = mu[a]
            for b in range(2):
                MOM[i, q, 2 + 2 * a + b] = Sigma[r, a, b]
        return
    slack = max(1.0, _SLACK_WEIGHT * math.exp(level - term))
    whitened = ser[0] == 0.0
    if whitened and slack > 1.0 and SC[r, 10] <= SERIES_H:
        _series_term(SC, SM, r, mu, True, ser, pw, rel - level, rel - level)
    if ser[0] == 1.0 or (ser[0] == 2.0 and ser[6] <= SERIES_COV_TOL * slack):
        MOM[i, q, 0] = ser[1]
        MOM[i, q, 1] = ser[2]
        MOM[i, q, 2] = ser[3]
        MOM[i, q, 3] = ser[4]
        MOM[i, q, 4] = ser[4]
        MOM[i, q, 5] = ser[5]
        return
    # the accurate path waits for the end of the pass (deferred_moments_2d): NaN marks
    # the pair, then its fan record where its term integrated the polygon (-1: not whitened)
    MOM[i, q, 0] = math.nan
    for a in range(4):
        MOM[i, q, 2 + a] = sc[10][a] if whitened else -1.0


@jit(parallel=True)
def deferred_moments_2d(XA, Xb, xx, Ab, bb, Lt, K, Rt, logdet_lam, const, an, ptr, PW, LN, fptr, FN, FO, FU, r0, level,
                        floor, TERM, MOM):
    """The kept pairs' moments that :func:`_kept_moments_2d` left to the accurate
    path (``MOM[i, q, 0]`` NaN), for one region chunk (its arrays, from ``r0``)
    once the pass is over: ``level`` each row's log-likelihood relative to its
    reference, ``floor`` where the E-step cuts (``estep.gather_statistics``).
    A pair below ``floor`` gets no moments (its ``TERM`` becomes ``-inf``); the
    others' tolerances widen by the weight that the final ``level`` gives them
    (as in :func:`_kept_moments_2d`, which saw a running level below it), and
    the edge formulas start from the fan record their term left.

    Apart from the hot pass, the section rule and the edge formulas' moments,
    rare but long, do not weigh on how the compiler treats the series there
    (inlined into it they cost the pass about a quarter of its time)."""
    n, R = Xb.shape
    cap = polygon_cap(ptr)
    for i in prange(n):
        y = np.empty(2)
        mu = np.empty(2)
        mean = np.empty(2)
        cov = np.empty((2, 2))
        sc = _scratch(cap)
        for r in range(R):
            q = r0 + r
            t = TERM[i, q]
            if not (t > -math.inf) or MOM[i, q, 0] == MOM[i, q, 0]:
                continue
            if not (t >= floor[i]):
                TERM[i, q] = -math.inf
                continue
            _kappa_and_mean_2d(XA, Xb, xx, Ab, bb, Lt, K, Rt, logdet_lam, const, an, i, r, y, mu)
            nv = _whiten_polygon(ptr, PW, LN, r, mu, Lt, sc[0])
            for a in range(4):
                sc[10][a] = MOM[i, q, 2 + a]
            if sc[10][0] >= 0.0:  # the record's edge table, as std_polygon_log_mass left it
                edge_table(sc[0], nv, sc[1])
            slack = max(1.0, _SLACK_WEIGHT * math.exp(level[i] - t))
            _truncate_whitened_2d(fptr, FN, FO, FU, Lt, r, mu, nv, True, slack, sc, mean, cov)
            _put_moments(mean, cov, MOM, i, q)


@jit
def _put_moments(mean, cov, MOM, i, q):
    """``MOM[i, q] = (mean (S), cov (S x S, row major))`` (indices, not a view of
    ``MOM``: a view per pair costs its reference counting, shared across threads)."""
    S = mean.shape[0]
    for a in range(S):
        MOM[i, q, a] = mean[a]
        for b in range(S):
            MOM[i, q, S + S * a + b] = cov[a, b]


# the section rule in the whitened frame itself (no anchor, no input normals)
_G0 = np.array([0.0, 0.0, 1.0])
_LM0 = np.empty((0, 4))


@jit(parallel=True)
def log_prob_chunk_2d(XA, Xb, xx, Xs, REF, Ab, bb, Sigma, logdet_lam, Aw, gz, an, s2, whole, ptr, PW, LN, fptr, FN, FO,
                      FU, Lt, K, Rt, SC, SM, const, gap, run_max, run_sum, n_skipped, r0, arg, TERM, MOM):
    """:func:`log_prob_chunk` for S = 2: region masses over polygons. The
    region arrays cover the chunk's regions; ``ptr``, ``PW``, ``LN``, ``Lt``
    are indexed by the same (chunk-local) region numbers. ``TERM``, ``MOM``:
    as in :func:`log_prob_chunk` (a kept pair's moments by
    :func:`_kept_moments_2d`; those it leaves to the accurate path are marked,
    for :func:`deferred_moments_2d` once the pass is over)."""
    n, R = Xb.shape
    keep = TERM.shape[0] > 0
    cap = polygon_cap(ptr)
    for i in prange(n):
        y = np.empty(2)
        mu = np.empty(2)
        lk = np.empty(R)
        er = np.empty(R)
        mus = np.empty((R, 2))  # each pair's mu, for the second loop
        sc = _scratch(cap)
        zs = np.empty(3)
        ser = np.empty(8)
        pw = np.empty(SERIES_SCRATCH)
        _ensure_reference_2d(XA, Xb, xx, Ab, bb, Lt, K, Rt, logdet_lam, const, an, whole, ptr, PW, LN, Xs, Aw, gz, s2,
                             REF, i, y, mu, sc[0], sc[1])
        lref = REF[i, _REF_LK]
        emax = 0.0
        for r in range(R):
            lk[r], er[r] = _kappa_and_mean_2d(XA, Xb, xx, Ab, bb, Lt, K, Rt, logdet_lam, const, an, i, r, y, mu)
            mus[r, 0] = mu[0]
            mus[r, 1] = mu[1]
            emax = max(emax, er[r])
        best = np.argmax(lk)
        cheap_below = _CHEAP_GAP + math.log(emax) if emax > 0.0 else 0.0  # see log_prob_block_1d
        m, s = run_max[i], run_sum[i]
        if m > -math.inf and lk[best] + er[best] - lref > m + _REBASE:  # as in log_prob_block_1d
            _kappa_and_mean_2d(XA, Xb, xx, Ab, bb, Lt, K, Rt, logdet_lam, const, an, i, best, y, mu)
            nb = _rel_log_kappa(Aw, gz, best, mu, s2, logdet_lam, i, REF)
            zs[0] = mu[0]
            zs[1] = mu[1]
            zs[2] = 0.0
            if not whole[best]:
                nb = _polygon_term_2d(ptr, PW, LN, fptr, FN, FO, FU, Lt, Aw, gz, s2, logdet_lam, REF, i, best, mu, nb,
                                      -math.inf, sc, zs, SC, SM, False, ser, pw, -math.inf, -math.inf)
            if nb > m + _REBASE:
                _set_reference(Xs, i, Aw, gz, best, zs[:2], s2, logdet_lam, const, REF)
                REF[i, REF.shape[1] - 1] = zs[2]
                m -= REF[i, _REF_LK] - lref
                lref = REF[i, _REF_LK]
                if keep:  # the earlier chunks' terms lie > _REBASE below this one: none is kept
                    for q in range(r0):
                        TERM[i, q] = -math.inf
        skipped = 0
        for k in range(R):
            r = _best_first(k, best)
            if keep:
                TERM[i, r0 + r] = -math.inf
            if lk[r] + er[r] - lref < m - gap:
                skipped += 1
                continue
            mu[0] = mus[r, 0]
            mu[1] = mus[r, 1]
            if lk[r] + er[r] - lref < m - cheap_below:
                rel = lk[r] - lref
            else:
                rel = _rel_log_kappa(Aw, gz, r, mu, s2, logdet_lam, i, REF)
            term = rel
            zs[0] = mu[0]
            zs[1] = mu[1]
            zs[2] = 0.0
            # below m - _NEGLIGIBLE a term cannot change the sum: a bound suffices there, and
            # below level - gap for a kept pair (level: the running log-likelihood, <= the row's)
            level = m + math.log(s) if s > 0.0 else -math.inf
            floor = min(m - _NEGLIGIBLE, level - gap) if keep else m - _NEGLIGIBLE
            if not whole[r]:
                term = _polygon_term_2d(ptr, PW, LN, fptr, FN, FO, FU, Lt, Aw, gz, s2, logdet_lam, REF, i, r, mu, rel,
                                        floor, sc, zs, SC, SM, keep, ser, pw, -math.inf, level)
            if keep and term >= level - gap:
                TERM[i, r0 + r] = term
                _kept_moments_2d(Sigma, whole, SC, SM, r, mu, rel, term, level, sc, ser, pw, MOM, i, r0 + r)
            _note_top(term, m, arg, i, r0 + r, zs, zs[2])
            m, s = _add_term(term, m, s)
        run_max[i], run_sum[i] = m, s
        n_skipped[i] += skipped


@jit
def _truncate_2d(ptr, PW, LN, fptr, FN, FO, FU, Lt, whole, Sigma, r, mu, careful, sc, mean, cov):
    """:func:`_truncate` for S = 2: region r's polygon whitened, its moments
    (``careful``: the accurate path, see ``std_polygon_moments``, with the
    section rule on the region anchored on itself) mapped back to z. Returns
    log Phi_r; a negligible pair (``careful=False``) whose edge formulas
    cancel completely gets the untruncated Gaussian's moments."""
    if whole[r]:
        for a in range(2):
            mean[a] = mu[a]
            for b in range(2):
                cov[a, b] = Sigma[r, a, b]
        return 0.0
    nv = _whiten_polygon(ptr, PW, LN, r, mu, Lt, sc[0])
    sc[10][0] = -1.0  # a fresh polygon: no log-mass of it recorded
    return _truncate_whitened_2d(fptr, FN, FO, FU, Lt, r, mu, nv, careful, 1.0, sc, mean, cov)


@jit
def _truncate_whitened_2d(fptr, FN, FO, FU, Lt, r, mu, nv, careful, slack, sc, mean, cov):
    """:func:`_truncate_2d` of region r's polygon already whitened into
    ``sc[0]`` (``nv`` points); leaves its edge table in ``sc[1]``. ``slack``:
    as in ``std_polygon_moments``; ``sc[10]``: its fan record, where the
    caller integrated this polygon's log-mass just before (else ``-1``)."""
    W, E, B1, B2, V, Y = sc[0], sc[1], sc[2], sc[3], sc[4], sc[5]
    rule = _small_rule(W, nv, mu, Lt, r) if careful else 0
    if rule == 8:
        lm, ux, uy, c00, c01, c11 = small_polygon_moments(W, nv, _GL8_U, _GL8_V)
    elif rule == 10:
        lm, ux, uy, c00, c01, c11 = small_polygon_moments(W, nv, _GL10_U, _GL10_V)
    else:
        lm, ux, uy, c00, c01, c11 = std_polygon_moments(W, nv, E, B1, B2, V, Y, careful, W, -1, _G0, _LM0, 0, slack,
                                                        sc[10])
    if careful and not (lm == lm):
        A, nA, nl = _anchored_region(fptr, FN, FO, FU, Lt, r, mu, nv, sc)
        if nA < 0:
            lm, ux, uy, c00, c01, c11 = std_polygon_moments(W, nv, E, B1, B2, V, Y, True, W, nv, _G0, _LM0, 0,
                                                            slack, sc[10])
        else:  # (the anchoring wrote the same edge table into E: the record still holds)
            lm, ux, uy, c00, c01, c11 = std_polygon_moments(W, nv, E, B1, B2, V, Y, True, A, nA, sc[9], sc[8], nl,
                                                            slack, sc[10])
    if not (c00 == c00):
        ux = uy = c01 = 0.0
        c00 = c11 = 1.0
    # z = mu + M u with M = (L^T)^-1 = [[1/l11, -l21/(l11 l22)], [0, 1/l22]]
    l11 = Lt[r, 0]
    l21 = Lt[r, 1]
    l22 = Lt[r, 2]
    m00 = 1.0 / l11
    m01 = -l21 / (l11 * l22)
    m11 = 1.0 / l22
    mean[0] = mu[0] + m00 * ux + m01 * uy
    mean[1] = mu[1] + m11 * uy
    a01 = m11 * (m00 * c01 + m01 * c11)
    cov[0, 0] = m00 * m00 * c00 + 2.0 * m00 * m01 * c01 + m01 * m01 * c11
    cov[0, 1] = a01
    cov[1, 0] = a01
    cov[1, 1] = m11 * m11 * c11
    return lm


# Small polygons (the whitened exponent varies by at most _SMALL_NU over them) take the
# product Gauss-Legendre rule of small_polygon_moments: against 30-digit mpmath on random
# polygons (diameters 3e-3..1, 0.1..20 sd out, twice the area at least 0.1 of the bounding
# box's diagonal squared) the mass, mean and covariance (relative to its smaller
# eigenvalue) agree to 1e-13 with 8 nodes per direction for nu <= 1 and with 10 for nu <= 4
# (8 nodes at nu <= 4: 5e-13). The covariance's error grows like (diagonal^2 / area)^2 eps
# (the scatter is gathered about the first vertex, in the whitened axes): 6e-13 at 0.05,
# 2e-10 at 0.003, so thinner polygons keep the section rule. So do those where the
# whitening's rounding (eps of the whitened points and of the mean, which may be far larger
# than the polygon: a steep region's posterior) could move the mass by more than 1e-11 of
# itself, through the boundary (``frame x perimeter / area``) or the polygon as a whole
# (``frame |p|``): the section rule integrates those in a frame anchored on the polygon. In
# the dense regime 98% of the small polygons are within that (86% within 1e-12).
_SMALL_NU = 4.0
_SMALL_FRAME = 1e-11
_SMALL_ASPECT = 0.1


@jit
def _small_rule(W, nv, mu, Lt, r):
    """The node count (8 or 10) of ``small_polygon_moments`` for region r's
    whitened polygon ``W[0:nv]`` (about ``mu``), or 0 where it does not serve."""
    if nv < 3:
        return 0
    x0 = x1 = W[0, 0]
    y0 = y1 = W[0, 1]
    area = 0.0
    per = 0.0
    big = 0.0
    for k in range(nv):
        if W[k, 2] != 1.0:
            return 0
        q = k + 1 if k + 1 < nv else 0
        x0 = min(x0, W[k, 0])
        x1 = max(x1, W[k, 0])
        y0 = min(y0, W[k, 1])
        y1 = max(y1, W[k, 1])
        area += (W[k, 0] - W[0, 0]) * (W[q, 1] - W[0, 1]) - (W[q, 0] - W[0, 0]) * (W[k, 1] - W[0, 1])
        per += math.hypot(W[q, 0] - W[k, 0], W[q, 1] - W[k, 1])
        big = max(big, abs(W[k, 0]) + abs(W[k, 1]))
    diam2 = (x1 - x0) ** 2 + (y1 - y0) ** 2
    nu = math.hypot(W[0, 0], W[0, 1]) * math.sqrt(diam2) + 0.5 * diam2
    if not (nu <= _SMALL_NU and area >= _SMALL_ASPECT * diam2):
        return 0
    # whitened points are L^T v - L^T mu: rounded at eps of both
    frame = 4.0 * _EPS * (big + abs(Lt[r, 0] * mu[0]) + abs(Lt[r, 1] * mu[1]) + abs(Lt[r, 2] * mu[1]))
    if not (frame * (per + math.hypot(W[0, 0], W[0, 1]) * area) <= _SMALL_FRAME * area):
        return 0
    return 8 if nu <= 1.0 else 10


@jit
def _term_and_moments_2d(ptr, PW, LN, fptr, FN, FO, FU, Lt, Aw, gz, s2, logdet_lam, REF, i, r, mu, rel, floor, logp,
                         sc, zs, SC, SM, ser, pw, mean, cov):
    """Pair (i, r) of a region with a boundary: its term exactly as
    ``log_prob`` forms it (:func:`_polygon_term_2d`; ``rel`` its relative
    ``log kappa`` at ``mu``), and, where that is at or above ``floor``, the
    truncated mean and covariance in z: from the moment series where the term
    came from it and their bound allows, else on the accurate path from the
    whitened polygon (:func:`_truncate_whitened_2d`). The same term keeps
    each sample's E-step weights summing to 1 with ``log_prob``'s likelihood
    (the moments' own log-mass differs by its rounding, which far out, ``eps
    d^2``, is not small): to the bit, except that a light pair's series term
    may take a tolerance relative to its weight (:func:`_series_term`), which
    moves the weights' sum by at most ``R * 1e-15``. Returns the term (below
    ``floor`` it may be a bound, and the moments are not computed).

    The moments' tolerances are relative to the pair's weight ``w = exp(term
    - logp)`` in its sample's posterior (``logp``: the sample's log p(x),
    relative to the same reference): below ``_SLACK_WEIGHT`` they are widened
    by ``_SLACK_WEIGHT / w``, so every pair's moments err by at most what a
    pair of weight ``_SLACK_WEIGHT`` may, times its weight: the sample's
    posterior moments keep their accuracy, while the light pairs, most of
    them in the dense regime, are not integrated by sections."""
    term = _polygon_term_2d(ptr, PW, LN, fptr, FN, FO, FU, Lt, Aw, gz, s2, logdet_lam, REF, i, r, mu, rel, floor, sc, zs,
                            SC, SM, True, ser, pw, logp, logp)
    if term >= floor:
        slack = max(1.0, _SLACK_WEIGHT * math.exp(logp - term))
        if ser[0] == 1.0 or (ser[0] == 2.0 and ser[6] <= SERIES_COV_TOL * slack):
            mean[0] = ser[1]
            mean[1] = ser[2]
            cov[0, 0] = ser[3]
            cov[0, 1] = ser[4]
            cov[1, 0] = ser[4]
            cov[1, 1] = ser[5]
        else:
            if ser[0] == 2.0:  # the series gave the term only: the polygon is not whitened yet
                _whiten_polygon(ptr, PW, LN, r, mu, Lt, sc[0])
            _truncate_whitened_2d(fptr, FN, FO, FU, Lt, r, mu, ptr[r + 1] - ptr[r], True, slack, sc, mean, cov)
    return term


@jit(parallel=True)
def posterior_chunk_2d(XA, Xb, xx, Xs, REF, Ab, bb, Sigma, logdet_lam, Aw, gz, an, s2, whole, ptr, PW, LN, fptr, FN, FO,
                       FU, Lt, K, Rt, SC, SM, const, terms, means, covs, gap=40.0):
    """:func:`posterior_chunk` for S = 2 (polygon moments, mapped back to z).

    Every term within ``gap`` nats of the chunk row's best is exact (accurate
    log-mass, relative to the row's reference); below that a region's mass
    may be its tail bound ``log Q(d)``: such a term weighs less than
    ``exp(-gap)`` relative (below ``MIN_REGION_PROB`` for the default gap)
    and the bound keeps clear of the whitened geometry of a region far from
    a needle-thin Gaussian, where the exact log-mass can come out NaN. The
    row's best candidate (largest cheap ``log kappa``) is evaluated first so
    the level is known early. The moments take the careful path only for
    pairs within ``gap`` nats of the best term; the others get the edge
    formulas as they are (or, where those cancel completely, the untruncated
    Gaussian's)."""
    n, R = Xb.shape
    cap = polygon_cap(ptr)
    for i in prange(n):
        y = np.empty(2)
        mu = np.empty(2)
        sc = _scratch(cap)
        zs = np.empty(3)
        ser = np.empty(8)
        pw = np.empty(SERIES_SCRATCH)
        _ensure_reference_2d(XA, Xb, xx, Ab, bb, Lt, K, Rt, logdet_lam, const, an, whole, ptr, PW, LN, Xs, Aw, gz, s2,
                             REF, i, y, mu, sc[0], sc[1])
        best = 0
        lbest = -math.inf
        for r in range(R):
            lk = _kappa_and_mean_2d(XA, Xb, xx, Ab, bb, Lt, K, Rt, logdet_lam, const, an, i, r, y, mu)[0]
            if lk > lbest:
                lbest = lk
                best = r
        top = -math.inf
        for k in range(R):
            r = _best_first(k, best)
            _kappa_and_mean_2d(XA, Xb, xx, Ab, bb, Lt, K, Rt, logdet_lam, const, an, i, r, y, mu)
            lk = _rel_log_kappa(Aw, gz, r, mu, s2, logdet_lam, i, REF)
            if not whole[r]:
                lk = _polygon_term_2d(ptr, PW, LN, fptr, FN, FO, FU, Lt, Aw, gz, s2, logdet_lam, REF, i, r, mu, lk,
                                      top - gap, sc, zs, SC, SM, False, ser, pw, -math.inf, -math.inf)
            terms[i, r] = lk
            top = max(top, lk)
        for r in range(R):
            _kappa_and_mean_2d(XA, Xb, xx, Ab, bb, Lt, K, Rt, logdet_lam, const, an, i, r, y, mu)
            _truncate_2d(ptr, PW, LN, fptr, FN, FO, FU, Lt, whole, Sigma, r, mu, terms[i, r] >= top - gap, sc,
                         means[i, r], covs[i, r])
