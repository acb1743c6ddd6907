"""The exact E-step: per-region sufficient statistics of the posterior (docs/mathematics.md, section 8).

For samples ``x_n`` and regions ``w`` with posterior weights ``m0_nw = p(w | x_n)``
and truncated moments ``m1_nw = m0_nw E[z | x_n, w]``, ``m2_nw = m0_nw E[z z^T | x_n, w]``:

    T0_w = sum_n m0_nw        T1_w = sum_n m1_nw        T2_w = sum_n m2_nw
    Tx_w = sum_n x_n m0_nw    Txz_w = sum_n x_n m1_nw^T

plus ``sum_n x_n**2`` per dimension. Everything an EM step needs is a function of
these alone, so their memory is O(R (D S + S^2)) whatever N is.

They are streamed over (sample, region) chunks like ``log_prob``: one pass for
the exact ``log p(x_n)`` (``log_prob``'s own, with each row's reference pair;
EM hands over the one its accepted step already made), a second in which a fused
kernel (``fastcpa.kernels.cpu.estep``) forms each pair's weight and truncated
moments and adds them straight into its region's ``T0``, ``T1``, ``T2``;
``Tx`` and ``Txz`` are GEMMs of the chunk's weights with its samples. Where no
likelihood rows are handed over, one pass does both: the likelihood pass keeps
each pair's term and moments for a block of rows (``R (2 + 2 S + S^2)`` floats a
row, blocks of at most ~64 MiB) until the rows' log p is known, then weighs them
in (:func:`_statistics_kept`). With 1,000 samples, on ``[2, 64, 64, 10]`` (8,257
regions) that is 5.8-6.5 s against 7.4-7.9 s for the two passes (the masses
alone: 2.6-2.9 s; of the rest, ~1 s is the moment series' derivatives and ~1.7 s
the section rule for the ~340 pairs a sample whose series covariance bound
misses 1e-10); on ``[1, 256, 256, 256, 64]`` (767 regions) 0.10 s against 0.14 s.
A pair whose
term lies more than ``gap`` nats below ``log p(x_n)`` has weight below
``exp(-gap)`` and is left out (without its region's moments being computed
where the bound ``log kappa`` shows it): each row's weights then sum to 1
within ``R exp(-gap)`` (``R * 4.2e-18`` for the default ``gap = 40``), and, for
S = 2, the ``R * 1e-15`` that light pairs' terms may err by (their series
tolerance is relative to their weight; docs/mathematics.md, section 8).
"""

import dataclasses
import math

import numpy as np

from ._threads import blas_single_threaded, matmul, matmul_tn

__all__ = ["NOISE_FLOOR", "SufficientStats", "sufficient_statistics"]

#: The noise update keeps each variance at or above this fraction of the data's
#: variance: the likelihood is unbounded as sigma_x -> 0.
NOISE_FLOOR = 1e-6


@dataclasses.dataclass
class SufficientStats:
    """Per-region E-step statistics of a sample (see the module docstring).

    Attributes
    ----------
    T0 : ndarray, shape (R,)
        Posterior weight of each region, summed over samples.
    T1 : ndarray, shape (R, S)
        Weighted first moments of z.
    T2 : ndarray, shape (R, S, S)
        Weighted second moments of z (raw, not centred).
    Tx : ndarray, shape (R, D)
        Weighted sums of the samples.
    Txz : ndarray, shape (R, D, S)
        Weighted sums of ``x z^T``.
    xx : ndarray, shape (D,)
        ``sum_n x_n**2`` per dimension.
    log_likelihood : float
        ``sum_n log p(x_n)``, exact.
    n : int
        Number of samples.
    shift : ndarray, shape (D,)
        The samples' mean ``m``; ``Tx_c``, ``Txz_c`` and ``xx_c`` are ``Tx``,
        ``Txz`` and ``xx`` of the centred samples ``x_n - m``. Residuals are
        formed from these: through the raw sums, data with a large mean
        would leave them as differences of numbers of size ``|m|^2``.
    Tx_c, Txz_c, xx_c : ndarray
        Shapes as ``Tx``, ``Txz``, ``xx``.
    """

    T0: np.ndarray
    T1: np.ndarray
    T2: np.ndarray
    Tx: np.ndarray
    Txz: np.ndarray
    xx: np.ndarray
    log_likelihood: float
    n: int
    shift: np.ndarray = None
    Tx_c: np.ndarray = None
    Txz_c: np.ndarray = None
    xx_c: np.ndarray = None

    def __post_init__(self):
        if self.shift is None:  # built from raw sums only: centred on 0
            self.shift = np.zeros(self.Tx.shape[1])
            self.Tx_c, self.Txz_c, self.xx_c = self.Tx, self.Txz, self.xx

    def squared_residuals(self, A, b):
        """Expected squared residual per dimension, ``sum_n E[(x_nd - (A_w z + b_w)_d)^2]``.

        Parameters
        ----------
        A : ndarray, shape (R, D, S)
        b : ndarray, shape (R, D)
            The region maps to score (the model's own, or an update's).

        Returns
        -------
        ndarray, shape (D,)
            ``xx - 2 (A Txz + b Tx) + A T2 A^T + 2 b (A T1) + b^2 T0``,
            per dimension, summed over regions (docs/mathematics.md, section
            8), evaluated on the centred sums with ``b - shift`` (the same
            value, without the cancellation of a large data mean).
        """
        b = b - self.shift
        cross = np.einsum("rds,rds->d", A, self.Txz_c) + np.einsum("rd,rd->d", b, self.Tx_c)
        quad = np.einsum("rds,rst,rdt->d", A, self.T2, A)
        lin = np.einsum("rd,rds,rs->d", b, A, self.T1)
        return self.xx_c - 2.0 * cross + quad + 2.0 * lin + np.einsum("rd,r->d", b * b, self.T0)

    def noise_update(self, A, b, *, diagonal=False, floor=NOISE_FLOOR):
        """Closed-form M-step for the noise: the maximiser of
        :meth:`expected_complete_log_likelihood` over ``sigma_x`` for maps ``(A, b)``.

        ``sigma_x^2 = sum_d r_d / (N D)`` (isotropic) or ``r_d / N`` per
        dimension (diagonal), with ``r`` the :meth:`squared_residuals`; the
        likelihood is unbounded as ``sigma_x -> 0`` (a region can collapse
        onto a sample), so each variance is kept at or above ``floor`` times
        the data's own variance (per dimension; averaged over them for the
        isotropic case).

        Parameters
        ----------
        A : ndarray, shape (R, D, S)
        b : ndarray, shape (R, D)
        diagonal : bool, default False
        floor : float, default ``NOISE_FLOOR`` (1e-6)

        Returns
        -------
        float or ndarray of shape (D,)
            The new ``sigma_x`` (a standard deviation, as ``CPAModel`` takes it).
        """
        res = np.maximum(self.squared_residuals(A, b), 0.0)  # rounding can leave -eps for an exact fit
        mean = self.Tx_c.sum(axis=0) / self.n  # ~0: the centred samples' mean
        data_var = np.maximum(self.xx_c / self.n - mean * mean, 0.0)
        if diagonal:
            return np.sqrt(np.maximum(res / self.n, floor * data_var))
        return float(math.sqrt(max(res.sum() / (self.n * len(res)), floor * data_var.mean())))

    def expected_complete_log_likelihood(self, A, b, noise_var, sigma_z):
        """``Q = sum_n E[log p(x_n, z) | x_n]`` for region maps ``(A, b)``.

        Parameters
        ----------
        A : ndarray, shape (R, D, S)
        b : ndarray, shape (R, D)
        noise_var : ndarray, shape (D,)
            Per-dimension noise variances (an isotropic model repeats one).
        sigma_z : float

        Returns
        -------
        float
        """
        D, S = A.shape[1], A.shape[2]
        resid = self.squared_residuals(A, b)
        log_lik_x = -0.5 * np.sum(resid / noise_var) - 0.5 * self.n * (D * math.log(2 * math.pi)
                                                                        + np.log(noise_var).sum())
        zz = np.einsum("rss->", self.T2)
        log_prior = -0.5 * zz / sigma_z**2 - 0.5 * self.n * S * math.log(2 * math.pi * sigma_z**2)
        return float(log_lik_x + log_prior)


def sufficient_statistics(model, X, *, gap=40.0, sample_chunk=256, region_chunk=1024, likelihood_rows=None):
    """Exact E-step statistics of ``model`` on ``X`` (see the module docstring).

    Parameters
    ----------
    model : CPAModel
    X : array_like, shape (N, D)
    gap : float, default 40
        Pairs whose bound lies this far below ``log p(x_n)`` are left out
        (weight below ``exp(-gap)`` each).
    sample_chunk, region_chunk : int
        Chunk sizes; memory is O(sample_chunk * region_chunk * S) beside
        the statistics themselves.
    likelihood_rows : tuple, optional
        ``CPAModel._likelihood_rows(X, gap)`` of this model and ``X``, where
        the caller has it already (EM's accepted trial step): the likelihood
        pass is then not repeated.

    Returns
    -------
    SufficientStats

    Examples
    --------
    >>> import numpy as np, fastcpa
    >>> gen = fastcpa.Generator([np.array([[1.0]]), np.array([[1.0], [-0.5]])],
    ...                         [np.array([0.0]), np.array([0.0, 0.2])])
    >>> model = fastcpa.CPAModel(gen, sigma_x=0.3)
    >>> stats = model.sufficient_stats(model.sample(50, seed=0))
    >>> round(float(stats.T0.sum()), 12)  # each sample's region weights sum to 1
    50.0
    """
    return _statistics_and_rows(model, X, gap, sample_chunk, region_chunk, likelihood_rows)[0]


def _statistics_and_rows(model, X, gap=40.0, sample_chunk=256, region_chunk=1024, likelihood_rows=None, stop=None):
    """:func:`sufficient_statistics` and the likelihood pass's rows ``(log_p, top,
    log_sum, REF)`` it normalised them by (``likelihood_rows``, where given). Without
    them one pass forms both (:func:`_statistics_kept`); ``stop(log_p, done)``,
    asked after each block of rows, may end it early: then None is returned."""
    from .model import _checked_log_prob

    X = model._check_X(X)
    N = len(X)
    p = model._region_params()
    S, D = model.generator.latent_dim, model.generator.output_dim
    R = len(p["bb"])
    T0 = np.zeros(R)
    T1 = np.zeros((R, S))
    T2 = np.zeros((R, S, S))
    Tx = np.zeros((R, D))
    Txz = np.zeros((R, D, S))
    shift = X.mean(axis=0) if N else np.zeros(D)
    # each row's exact log p(x_n) and its reference pair, as log_prob forms them: the
    # moments below take each pair's term relative to the same reference, so each
    # sample's weights sum to 1 to rounding
    if likelihood_rows is None:
        likelihood_rows = _statistics_kept(model, X, p, gap, sample_chunk, region_chunk, shift, T0, T1, T2, Tx, Txz,
                                           stop)
        if likelihood_rows is None:
            return None
    else:
        _, TOP, LSUM, REFS = likelihood_rows
        if "lo" in p:  # S = 1: the GEMM fused into the kernel (as the likelihood's)
            _statistics_1d(model, X, p, TOP, LSUM, REFS, gap, sample_chunk, region_chunk, shift, T0, T1, T2, Tx, Txz)
        else:
            _statistics_chunks(model, X, p, TOP, LSUM, REFS, gap, sample_chunk, region_chunk, shift, T0, T1, T2, Tx,
                               Txz)
    log_p = likelihood_rows[0]
    _checked_log_prob(log_p)
    if p["V"] is not None:  # from the singular frame back to z = V w (affine, S > 2)
        V = p["V"]
        T1 = np.einsum("rst,rt->rs", V, T1)
        T2 = V @ T2 @ np.swapaxes(V, 1, 2)
        Txz = Txz @ np.swapaxes(V, 1, 2)
    Xc = X - shift
    return SufficientStats(T0=T0, T1=T1, T2=T2, Tx=Tx + T0[:, None] * shift,
                           Txz=Txz + shift[None, :, None] * T1[:, None, :], xx=np.einsum("nd,nd->d", X, X),
                           log_likelihood=float(log_p.sum()), n=N, shift=shift, Tx_c=Tx, Txz_c=Txz,
                           xx_c=np.einsum("nd,nd->d", Xc, Xc)), likelihood_rows


# Memory of the pairs one block of rows keeps in :func:`_statistics_kept` (bytes, about).
_KEPT_BYTES = 64 << 20


def _statistics_kept(model, X, p, gap, sample_chunk, region_chunk, shift, T0, T1, T2, Tx, Txz, stop=None):
    """The likelihood pass and the statistics in one: per block of rows, the pass keeps
    each pair within ``gap`` of its row's running log-likelihood, its term and
    moments (``pairs.log_prob_chunk``, ``log_prob_chunk_2d``, ``log_prob_block_1d``), and once the rows' log p is known,
    :func:`~fastcpa.kernels.cpu.estep.gather_statistics` weighs them into ``T0`` ...
    ``Txz``. Rows per block: ``sample_chunk``, fewer where the kept pairs (``R (2 +
    2 S + S^2)`` floats a row) would pass ``_KEPT_BYTES``. Returns the likelihood
    rows ``(log_p, top, log_sum, REF)``, or None where ``stop(log_p, rows done)``
    (asked after each block) ended the pass."""
    from fastcpa.kernels.cpu import pairs
    from fastcpa.kernels.cpu.estep import gather_statistics

    N = len(X)
    S, D = model.generator.latent_dim, model.generator.output_dim
    R = len(p["bb"])
    step = int(max(1, min(sample_chunk, _KEPT_BYTES // (8 * R * (2 + 2 * S + S * S)))))
    log_p, TOP, LSUM = np.empty(N), np.empty(N), np.empty(N)
    REFS = np.empty((N, pairs.reference_width(S, D)))
    with blas_single_threaded():
        for rows, lp, top, lsum, REF, _, TERM, MOM in model._likelihood_blocks(X, gap, step, region_chunk, keep=True):
            log_p[rows], TOP[rows], LSUM[rows], REFS[rows] = lp, top, lsum, REF
            if stop is not None and stop(log_p, rows.stop):
                return None
            n = len(lp)
            Wt, Mt = np.empty((n, R)), np.empty((n, R, S))
            gather_statistics(TERM, MOM, top, lsum, top + lsum - gap, T0, T1, T2, Wt.T, Mt.transpose(1, 2, 0))
            Xc = X[rows] - shift
            Tx += matmul_tn(Wt, Xc)
            Txz += matmul_tn(Mt.reshape(n, R * S), Xc).reshape(R, S, D).transpose(0, 2, 1)
    return log_p, TOP, LSUM, REFS


def _row_chunks(model, X, TOP, LSUM, REFS, gap, sample_chunk, shift):
    """Per chunk of ``sample_chunk`` rows: the whitened rows ``(Xw, xx, Xs)``, their
    likelihood pass's ``top``, ``lsum`` and references, the cut-off ``floor`` and the rows
    centred by ``shift``."""
    for a in range(0, len(X), sample_chunk):
        rows = slice(a, min(len(X), a + sample_chunk))
        Xw, xx, Xs = model._whiten(X[rows])
        top, lsum = TOP[rows], LSUM[rows]
        yield Xw, xx, Xs, top, lsum, REFS[rows].copy(), top + lsum - gap, X[rows] - shift


def _statistics_1d(model, X, p, TOP, LSUM, REFS, gap, sample_chunk, region_chunk, shift, T0, T1, T2, Tx, Txz):
    """The S = 1 statistics by :func:`~fastcpa.kernels.cpu.estep.estep_block_1d`, added into
    ``T0`` ... ``Txz`` (region chunks of at most ``region_chunk``, row chunks of ``sample_chunk``)."""
    from fastcpa.kernels.cpu.estep import ROWS_1D, estep_block_1d

    slices = model._region_slices(region_chunk)
    G = [np.ascontiguousarray(np.hstack([p["PA_T"][:, rs], p["Pb_T"][:, rs]])) for rs in slices]
    with blas_single_threaded():
        for Xw, xx, _, top, lsum, REF, floor, Xc in _row_chunks(model, X, TOP, LSUM, REFS, gap, sample_chunk, shift):
            n = len(Xw)
            nb = -(-n // ROWS_1D)
            for rs, Gs in zip(slices, G):
                rc = rs.stop - rs.start
                sums = np.zeros((3, nb, rc))
                Wt = np.empty((rc, n))
                Mt = np.empty((rc, 1, n))
                estep_block_1d(Xw, Gs, xx, *(p[k][rs] for k in ("ab1", "bb", "logdet_lam")), p["const"],
                               *(p[k][rs] for k in ("sig1", "hl1", "lo", "hi", "whole", "Aw", "gz", "an")), p["s2"],
                               REF, top, lsum, floor, sums[0], sums[1], sums[2], Wt, Mt)
                sums = sums.sum(axis=1)  # the row blocks in order: independent of the thread count
                T0[rs] += sums[0]
                T1[rs, 0] += sums[1]
                T2[rs, 0, 0] += sums[2]
                Tx[rs] += matmul(Wt, Xc)
                Txz[rs, :, 0] += matmul(Mt[:, 0, :], Xc)


def _statistics_chunks(model, X, p, TOP, LSUM, REFS, gap, sample_chunk, region_chunk, shift, T0, T1, T2, Tx, Txz):
    """The statistics by the generic chunk kernels (S = 2 polygons, whole-space regions),
    added into ``T0`` ... ``Txz``."""
    from fastcpa.kernels.cpu.estep import region_major

    S = model.generator.latent_dim
    D = model.generator.output_dim
    _, _, estep_chunk, region_args = model._pair_kernels()
    with blas_single_threaded():
        for Xw, xx, Xs, top, lsum, REF, floor, Xc in _row_chunks(model, X, TOP, LSUM, REFS, gap, sample_chunk, shift):
            for rs in model._region_slices(region_chunk):
                XA, Xb = model._products(Xw, rs)
                n, rc = Xb.shape
                Wt = np.empty((rc, n))
                Mt = np.empty((rc, S, n))
                estep_chunk(*region_major(XA, Xb), xx, Xs, REF, *region_args(rs), top, lsum, floor,
                            T0[rs], T1[rs], T2[rs], Wt, Mt)
                Tx[rs] += Wt @ Xc
                Txz[rs] += (Mt.reshape(rc * S, n) @ Xc).reshape(rc, S, D).transpose(0, 2, 1)
