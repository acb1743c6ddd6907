"""The probabilistic model ``z ~ N(0, sigma_z^2 I)``, ``x = g(z) + N(0, Sigma_x)``, exactly.

``CPAModel`` sums over the regions of the generator's partition (docs/mathematics.md, sections 3-4):
``log p(x) = logsumexp_r (log kappa_r(x) + log Phi_r(x))``, streamed over
(sample, region) chunks so no N x R matrix is formed, with the certified
pruning described in ``fastcpa.kernels.cpu.pairs``.
"""

import math

import numpy as np
import scipy.sparse
import scipy.stats

from ._threads import blas_single_threaded
from ._validation import as_float64, check_backend, check_chunk, check_count, check_gap, check_scale
from .generator import Generator
from .partition import partition

__all__ = ["AccuracyWarning", "CPAModel", "Posterior"]


class AccuracyWarning(RuntimeWarning):
    """float64 cannot determine a result to a few significant digits for these inputs.

    Issued by :meth:`CPAModel.log_prob` for rows whose log-likelihood moves by more
    than ``UNDETERMINED`` (1e-3) of ``max(1, |log p|)`` when the inputs (data,
    weights, biases, noise scales) are perturbed by their own rounding, ``eps``
    relative: the problem itself, not the algorithm, is that ill-conditioned
    there (a point far from the model relative to ``sigma_x``, or a steep net
    whose forward pass cancels near the posterior). The estimate per row is in
    ``CPAModel.last_log_prob_uncertainty_`` (a first-order estimate at the posterior, not a bound).
    """

#: Default pruning gap (nats): pairs whose evidence bound is this far below a
#: sample's best term are skipped; log p is then low by at most R * exp(-gap).
PRUNE_GAP = 40.0
# Largest row block (rows per thread and GEMM) of the S = 1 likelihood kernel.
_ROW_BLOCK = 256
# Rows the S = 1 likelihood whitens at a time, at most (memory: this many rows
# of X and of their reference pairs; fewer for wide outputs).
_S1_ROWS = 16384
# Rows per product block of the reference pass (see CPAModel._new_reference).
_REF_ROWS = 512
# A row's best term this far (nats) above its first-chunk reference: redone with
# the best reference over all chunks (see CPAModel.log_prob).
_REF_SLACK = 64.0
#: Region probabilities below this are left out of ``Posterior.region_probs``.
MIN_REGION_PROB = 1e-15
#: A row's log p counts as not determined by float64 (AccuracyWarning) when its
#: rounding-implied uncertainty exceeds this fraction of max(1, |log p|).
UNDETERMINED = 1e-3
_EPS = 2.220446049250313e-16


class CPAModel:
    """Exact likelihood and posterior of a CPA generator with Gaussian latent and noise.

    Parameters
    ----------
    generator : Generator
    sigma_x : float or array_like of shape (D,)
        Noise standard deviation: isotropic (a scalar) or per output
        dimension (diagonal covariance). Must be finite and > 0, with
        ``sigma_x**2`` a normal float64 (``sigma_x`` in [1.5e-154, 1.3e154]).
        Copied: editing the caller's array later changes nothing here.
    sigma_z : float, default 1.0
        Standard deviation of the isotropic Gaussian prior on z (same range).

    Notes
    -----
    The partition of latent space is computed on first use and kept
    (``model.partition``). Exact inference currently covers latent dimension
    S = 1, and affine generators (no switching unit) of any S; S = 2
    polygons are the next step.

    Examples
    --------
    >>> import numpy as np, fastcpa
    >>> rng = np.random.default_rng(0)
    >>> gen = fastcpa.Generator([rng.normal(size=(8, 1)), rng.normal(size=(3, 8))],
    ...                         [rng.normal(size=8), rng.normal(size=3)])
    >>> model = fastcpa.CPAModel(gen, sigma_x=0.1)
    >>> X = model.sample(4, seed=1)
    >>> model.log_prob(X).shape
    (4,)
    >>> post = model.posterior(X)
    >>> post.mean.shape, post.cov.shape
    ((4, 1), (4, 1, 1))
    """

    def __init__(self, generator, sigma_x, sigma_z=1.0):
        self._partition = None
        self._params = None
        self.generator = generator
        self.sigma_x = sigma_x
        self.sigma_z = sigma_z

    # The parameters are properties so that every assignment is validated and
    # drops the cached partition / region parameters built from the old values.
    @property
    def generator(self):
        """The :class:`Generator` (assigning a new one drops the cached partition)."""
        return self._generator

    @generator.setter
    def generator(self, generator):
        if not isinstance(generator, Generator):
            raise TypeError(f"CPAModel takes a fastcpa.Generator, got {type(generator).__name__}.")
        if hasattr(self, "_sigma_x") and np.ndim(self._sigma_x) == 1 and len(self._sigma_x) != generator.output_dim:
            raise ValueError(f"the generator's output dimension {generator.output_dim} does not match sigma_x's "
                             f"length {len(self._sigma_x)}; set a matching sigma_x first.")
        self._generator = generator
        self._partition = None
        self._params = None

    @property
    def sigma_x(self):
        """Noise standard deviation: a float, or a read-only array (D,) (assign a new value to change it)."""
        return self._sigma_x

    @sigma_x.setter
    def sigma_x(self, sigma_x):
        D = self.generator.output_dim
        sx = as_float64(sigma_x, "sigma_x", copy=True)  # a copy: the caller's array may change later
        if sx.ndim > 1 or (sx.ndim == 1 and sx.shape[0] != D):
            raise ValueError(f"sigma_x must be a scalar or have shape ({D},) (one per output dimension), got {sx.shape}.")
        check_scale(sx, "sigma_x")
        sx.setflags(write=False)
        self._sigma_x = float(sx) if sx.ndim == 0 else sx
        self._params = None

    @property
    def sigma_z(self):
        """Standard deviation of the latent prior (a float)."""
        return self._sigma_z

    @sigma_z.setter
    def sigma_z(self, sigma_z):
        sz = as_float64(sigma_z, "sigma_z")
        if sz.ndim != 0 or sz <= 0:
            raise ValueError(f"sigma_z must be a positive scalar, got {sigma_z!r}.")
        check_scale(sz, "sigma_z")
        self._sigma_z = float(sz)
        self._params = None

    def __repr__(self):
        sx = self.sigma_x if np.ndim(self.sigma_x) == 0 else f"<{len(self.sigma_x)} values>"
        return f"CPAModel({self.generator!r}, sigma_x={sx}, sigma_z={self.sigma_z})"

    # ------------------------------------------------------------------ regions
    @property
    def partition(self):
        """The generator's exact partition (computed on first access)."""
        if self._partition is None:
            self._partition = partition(self.generator)
        return self._partition

    @property
    def _noise_var(self):
        return np.broadcast_to(np.asarray(self.sigma_x, float) ** 2, (self.generator.output_dim,))

    def _region_params(self):
        """Per-region quantities of docs/mathematics.md, section 3, that do not depend on x (computed once)."""
        if self._params is not None:
            return self._params
        part = self.partition
        S, D = self.generator.latent_dim, self.generator.output_dim
        whole = part.facet_ptr[1:] == part.facet_ptr[:-1]
        if S > 2 and not whole.all():
            raise NotImplementedError(
                f"exact inference for S = {S} needs Gaussian integrals over polytopes, which are not implemented "
                "yet; S = 1 and S = 2 generators and affine generators of any S are supported.")
        R = len(part.A)
        # the data side centred on g(0) and whitened: x~ = (x - c) / sigma_x,
        # A~ = A / sigma_x, b~ = (b - c) / sigma_x (see kernels.cpu.pairs)
        sx = np.broadcast_to(np.asarray(self.sigma_x, float), (D,))
        centre = self.generator(np.zeros((1, S)))[0]
        A = part.A / sx[None, :, None]
        b = (part.b - centre) / sx
        # each region's anchor and its whitened image, for the exact residuals:
        # not centred (a centre far from both would add its own rounding, eps |c|)
        Za, Ga = part.anchors
        _check_representable(A, b, Ga / sx, self.sigma_z)
        s = 1.0 / self.sigma_z**2
        V = None
        if S > 2:
            # An affine generator (one whole-space region), worked in the frame of
            # A~'s right singular vectors, w = V^T z (the prior is isotropic): there
            # A~ V = U diag(sv) has orthogonal columns and Lambda is diagonal, so
            # mu_i = sv_i u_i . (x~ - b~) / (s + sv_i^2) carries the GEMM's rounding
            # (eps sv_i |x~|) at most times sigma_z / 2. Through Sigma = Lambda^-1
            # in z, an inverse as ill-conditioned as |A~|^2 sigma_z^2 (1e12 for a
            # steep map at small sigma_x) put its rounding into mu times |A~ x~|:
            # millions of nats. Results are rotated back (z = V w).
            U, sv, Vt = np.linalg.svd(A)
            k = sv.shape[1]
            A = np.zeros((R, D, S))
            A[:, :, :k] = U[:, :, :k] * sv[:, None, :]
            V = Vt.transpose(0, 2, 1)
            Za = np.einsum("rs,rst->rt", Za, V)
        gz = np.ascontiguousarray(np.concatenate([Ga / sx, Za], axis=1))
        if S == 2:
            # Lambda = s I + A~^T A~ = s I + Rq^T Rq; its Cholesky factor from Rq
            # needs no subtraction (the Schur complement is a sum of positive terms).
            Bw = A
            if D == 1:
                Bw = np.concatenate([Bw, np.zeros((R, 1, 2))], axis=1)
            Qb, Rq = np.linalg.qr(Bw)
            r11, r12, r22 = Rq[:, 0, 0], Rq[:, 0, 1], Rq[:, 1, 1]
            l11 = np.sqrt(s + r11**2)
            l21 = r11 * r12 / l11
            l22 = np.sqrt(s + r22**2 + r12**2 * s / (s + r11**2))
            Lt = np.ascontiguousarray(np.stack([l11, l21, l22], axis=1))
            Lam = np.empty((R, 2, 2))
            Lam[:, 0, 0], Lam[:, 0, 1], Lam[:, 1, 0], Lam[:, 1, 1] = l11**2, l11 * l21, l11 * l21, l21**2 + l22**2
            # Sigma = L^-T L^-1 from the factor's inverse (through det = (l11 l22)^2
            # it overflowed for sigma_z below ~2^-256 and gave Sigma = 0)
            i11, i22 = 1.0 / l11, 1.0 / l22
            i21 = -(l21 * i11) * i22
            Sigma = np.empty((R, 2, 2))
            Sigma[:, 0, 0], Sigma[:, 1, 1] = i11**2 + i21**2, i22**2
            Sigma[:, 0, 1] = Sigma[:, 1, 0] = i21 * i22
            logdet_lam = 2.0 * np.log(l11 * l22)
        elif V is not None:  # diagonal in the singular frame
            lam = np.full((R, S), s)
            lam[:, :k] += sv**2
            Lam, Sigma = lam[:, :, None] * np.eye(S), (1.0 / lam)[:, :, None] * np.eye(S)
            logdet_lam = np.log(lam).sum(axis=1)
        else:  # S = 1
            Lam = s + np.einsum("rds,rdt->rst", A, A)
            Sigma = 1.0 / Lam
            logdet_lam = np.log(Lam[:, 0, 0])
        # per region: |A~|_F, and the rounding factor of the expanded quadratic
        # form's sums of length D (kernels.cpu.pairs._prune_slack)
        an = np.empty((R, 2))
        an[:, 0] = np.sqrt(np.einsum("rds,rds->r", A, A))
        an[:, 1] = 2.0 * (D + S + 8) * 1.1102230246251565e-16
        params = dict(
            PA_T=np.ascontiguousarray(A.transpose(1, 0, 2).reshape(D, R * S)),
            Pb_T=np.ascontiguousarray(b.T),
            Ab=np.ascontiguousarray(np.einsum("rds,rd->rs", A, b)),
            bb=np.einsum("rd,rd->r", b, b),
            Aw=np.ascontiguousarray(A), gz=gz, an=an, s2=s, centre=centre, isx=1.0 / sx,
            Sigma=np.ascontiguousarray(Sigma), logdet_lam=logdet_lam, whole=whole, V=V,
            # The kernels work without the normalising constant (const = 0) and it is
            # added once to each result (log_norm): a rescaling of data, noise and
            # output layer by a power of two then changes no rounding inside them.
            const=0.0,
            log_norm=-0.5 * D * math.log(2 * math.pi) - np.log(sx).sum() - S * math.log(self.sigma_z),
        )
        if S == 1:
            params["lo"] = np.ascontiguousarray(part.intervals[:, 0])
            params["hi"] = np.ascontiguousarray(part.intervals[:, 1])
            # the S = 1 kernel's folded region arrays (see pairs.log_prob_block_1d)
            params["ab1"] = np.ascontiguousarray(params["Ab"][:, 0])
            params["sig1"] = np.ascontiguousarray(Sigma[:, 0, 0])
            params["hl1"] = 0.5 * Lam[:, 0, 0]
        elif S == 2:
            params.update(Lt=Lt, **_whitened_boundaries(part, Lt), **_series_tables(part, Lt),
                          boundary=np.ascontiguousarray(part.boundary))
            # The S = 2 kernels take their products in the orthonormal basis Q of
            # A~ = Q Rq: y' = Q^T (x~ - b~) and mu = K y', K = (s I + Rq^T Rq)^-1 Rq^T
            # (from the QR factors of [Rq; sqrt(s) I]), whose norm is at most
            # sigma_z / 2. Through A~^T (x~ - b~) and Sigma instead, the GEMM's
            # rounding (eps |A~| |x~|) would reach mu amplified by |A~| sigma_z
            # along a nearly unmapped direction.
            Q = np.ascontiguousarray(Qb[:, :D, :])
            st = np.concatenate([Rq, np.broadcast_to(np.sqrt(s) * np.eye(2), (R, 2, 2))], axis=1)
            Q2, R2 = np.linalg.qr(st)
            K = np.linalg.solve(R2, np.swapaxes(Q2[:, :2, :], 1, 2))
            params.update(
                PA_T=np.ascontiguousarray(Q.transpose(1, 0, 2).reshape(D, R * 2)),
                Ab=np.ascontiguousarray(np.einsum("rds,rd->rs", Q, b)), Q=Q, K=np.ascontiguousarray(K),
                Rt=np.ascontiguousarray(np.stack([r11, r12, r22, np.full(R, s)], axis=1)))
            params["an"][:, 0] = math.sqrt(2.0)
        self._params = params
        return params

    def _check_X(self, X):
        X = as_float64(X, "X")
        D = self.generator.output_dim
        if X.ndim == 1 and D > 1 and X.shape[0] == D:
            raise ValueError(f"X must have shape (N, {D}); for one sample pass X[None, :].")
        if X.ndim == 1 and D == 1:
            X = X[:, None]
        if X.ndim != 2 or X.shape[1] != D:
            raise ValueError(f"X must have shape (N, {D}) (one sample per row), got {X.shape}.")
        return X

    def _whiten(self, X):
        """Rows of X centred on g(0) and whitened (``x~``, see :meth:`_region_params`), ``|x~|^2``,
        and the rows whitened only (``x / sigma_x``: the exact residuals take them with the
        regions' anchors, see the fitted point in ``kernels.cpu.pairs``)."""
        p = self._region_params()
        Xw = (X - p["centre"]) * p["isx"]
        return Xw, np.einsum("nd,nd->n", Xw, Xw), X * p["isx"]

    def _new_reference(self, Xw, xx, Xs, region_chunk, search=True):
        """Per-row reference pairs for the kernels (``kernels.cpu.pairs``).

        A row's reference is its pair with the best upper bound on the term
        (``log kappa`` plus the tail bound of the region's mass). With one
        region chunk the kernels pick it themselves (NaN rows here); with
        several, a first pass over the chunks does, so that every term is
        taken relative to a near-best one: a poor reference (a large
        residual, or a tiny mass) would leave ``log p`` as the difference of
        two large numbers. ``search=False`` leaves the choice to the kernels
        (the best in the first chunk; ``log_prob`` redoes the rows whose
        reference that left far from their best term)."""
        from fastcpa.kernels.cpu import pairs

        p = self._region_params()
        S, D = self.generator.latent_dim, self.generator.output_dim
        n = len(Xw)
        REF = np.full((n, pairs.reference_width(S, D)), np.nan)
        slices = self._region_slices(region_chunk)
        if search and len(slices) > 1:
            best = np.full((n, 3 + S), -np.inf)
            best[:, -1] = 0.0
            for a in range(0, n, _REF_ROWS):  # (rows x regions) products of bounded size
                rows = slice(a, min(n, a + _REF_ROWS))
                for rs in slices:
                    XA, Xb = self._products(Xw[rows], rs)
                    head = (XA, Xb, xx[rows], p["Ab"][rs], p["bb"][rs])
                    tail = (Xs[rows], p["Aw"][rs], p["gz"][rs], p["s2"])
                    if "Lt" in p:
                        pairs.best_pairs_chunk_2d(*head, p["Lt"][rs], p["K"][rs], p["Rt"][rs], p["logdet_lam"][rs],
                                                  p["const"], p["an"][rs],
                                                  p["whole"][rs], p["ptr"][rs.start:rs.stop + 1], p["PW"], p["LN"],
                                                  *tail, rs.start, best[rows])
                    else:
                        lo, hi = (p["lo"][rs], p["hi"][rs]) if "lo" in p else (np.zeros(0), np.zeros(0))
                        pairs.best_pairs_chunk(*head, p["Sigma"][rs], p["logdet_lam"][rs], p["const"], p["an"][rs],
                                               lo, hi, p["whole"][rs], *tail, rs.start, best[rows])
            if not np.all(best[:, 0] > -np.inf):
                raise FloatingPointError("internal error: no finite candidate reference pair; please report this "
                                         "with the model and data.")
            pairs.set_references(Xs, p["Aw"], p["gz"], best, p["s2"], p["logdet_lam"], p["const"], REF)
        return REF

    def _region_slices(self, region_chunk):
        """Consecutive slices of at most ``region_chunk`` regions."""
        R = len(self._region_params()["bb"])
        return [slice(r0, min(R, r0 + region_chunk)) for r0 in range(0, R, region_chunk)]

    def _products(self, Xw, rs):
        """The GEMM products ``XA = x~ A~`` (n, r, S) and ``Xb = x~ . b~`` (n, r) of rows and a region slice."""
        p = self._region_params()
        S = self.generator.latent_dim
        XA = (Xw @ p["PA_T"][:, rs.start * S:rs.stop * S]).reshape(len(Xw), rs.stop - rs.start, S)
        return XA, np.ascontiguousarray(Xw @ p["Pb_T"][:, rs])

    def _pair_moments(self, X, sample_chunk, region_chunk, refs=None):
        """Yield ``(rows, regions, terms, means, covs, REF)`` per chunk: every
        pair's term ``log kappa + log Phi`` relative to its row's reference
        ``REF[:, 0]`` (``REF`` is shared by a block of rows; ``refs``: given
        references for all rows) and its region's truncated posterior mean
        and covariance."""
        _, posterior_chunk, _, region_args = self._pair_kernels()
        S = self.generator.latent_dim
        for a in range(0, len(X), sample_chunk):
            rows = slice(a, min(len(X), a + sample_chunk))
            Xw, xx, Xs = self._whiten(X[rows])
            REF = self._new_reference(Xw, xx, Xs, region_chunk) if refs is None else refs[rows].copy()
            for rs in self._region_slices(region_chunk):
                XA, Xb = self._products(Xw, rs)
                n, rc = Xb.shape
                terms, means, covs = np.empty((n, rc)), np.empty((n, rc, S)), np.empty((n, rc, S, S))
                posterior_chunk(XA, Xb, xx, Xs, REF, *region_args(rs), terms, means, covs)
                yield rows, rs, terms, means, covs, REF

    def _log_prob_rows(self, Xw, xx, Xs, gap, region_chunk, skipped, search=True, REF=None, keep=False, pool=None):
        """log p of one block of whitened rows over the generic chunk kernels,
        relative to the rows' references: ``(top, log_sum, REF, arg)`` with
        ``log_p = REF[:, 0] + top + log_sum`` and ``arg`` each row's largest
        term's pair (``search``: see :meth:`_new_reference`; ``REF`` given:
        those references); with ``keep``, also ``(TERM, MOM)``, the pairs the
        E-step needs (``pairs.log_prob_chunk``; in ``pool``'s buffers where
        given, see :func:`_kept_arrays`)."""
        log_prob_chunk, _, _, region_args = self._pair_kernels()
        n = len(Xw)
        S = self.generator.latent_dim
        if REF is None:
            REF = self._new_reference(Xw, xx, Xs, region_chunk, search)
        run_max = np.full(n, -np.inf)
        run_sum = np.zeros(n)
        arg = np.zeros((n, 3 + S))
        R = len(self._region_params()["bb"])
        kept = _kept_arrays(n, R, S, keep, pool)
        slices = self._region_slices(region_chunk)
        for rs in slices:
            XA, Xb = self._products(Xw, rs)
            log_prob_chunk(XA, Xb, xx, Xs, REF, *region_args(rs), gap, run_max, run_sum, skipped, rs.start, arg,
                           *kept)
        lsum = np.log(run_sum)
        if keep and S == 2 and "Lt" in self._region_params():
            self._deferred_moments(Xw, xx, slices, run_max + lsum, run_max + lsum - gap, *kept)
        return (run_max, lsum, REF, arg) + (kept if keep else ())

    def _deferred_moments(self, Xw, xx, slices, level, floor, TERM, MOM):
        """The S = 2 kept pairs' moments that the likelihood pass left to the
        accurate path (``pairs.deferred_moments_2d``), once each row's
        log-likelihood ``level`` (relative to its reference) is known;
        ``floor``: where the E-step cuts (as ``estep.gather_statistics``)."""
        from fastcpa.kernels.cpu import pairs

        p = self._region_params()
        for rs in slices:
            XA, Xb = self._products(Xw, rs)
            pairs.deferred_moments_2d(XA, Xb, xx, *(p[k][rs] for k in ("Ab", "bb", "Lt", "K", "Rt", "logdet_lam")),
                                      p["const"], p["an"][rs], p["ptr"][rs.start:rs.stop + 1], p["PW"], p["LN"],
                                      p["fptr"][rs.start:rs.stop + 1], p["FN"], p["FO"], p["FU"], rs.start, level,
                                      floor, TERM, MOM)

    def _rebased(self, rows_log_prob, Xw, xx, Xs, skipped, search):
        """``rows_log_prob(Xw, xx, Xs, skipped, search, REF)`` -> ``(top, log_sum,
        REF, arg, ...)`` (arrays of a row each), with the rows whose largest term came out far above their
        reference done again with that term's pair as the reference.

        A reference is chosen by bounds (the first region chunk's, or all of
        them with ``search``) before the terms are known: where the bound
        misleads (a later chunk's best term; a generator whose values are so
        large that the cheap and the exact ``log kappa`` differ by more than
        their rounding bound says), ``log p = log kappa_ref + top`` would be a
        difference of large numbers and keep only ``eps |log kappa_ref|``."""
        out = rows_log_prob(Xw, xx, Xs, skipped, search, None)
        top, arg = out[0], out[3]
        redo = np.flatnonzero(top > _REF_SLACK)
        if redo.size:
            REF2 = self._references_at(Xs[redo], arg[redo])
            skr = np.zeros(redo.size, np.int64)
            for a, b in zip(out, rows_log_prob(Xw[redo], xx[redo], Xs[redo], skr, search, REF2)):
                a[redo] = b
            skipped[redo] = skr
        return out

    def _references_at(self, Xs, arg):
        """References for rows ``Xs`` (whitened only) at the pairs ``arg`` (rows
        ``(term, region, mu)``, as the log_prob kernels record their largest terms)."""
        from fastcpa.kernels.cpu import pairs

        p = self._region_params()
        REF = np.full((len(Xs), pairs.reference_width(self.generator.latent_dim, self.generator.output_dim)), np.nan)
        pairs.set_references(Xs, p["Aw"], p["gz"], arg, p["s2"], p["logdet_lam"], p["const"], REF)
        return REF

    def _pair_kernels(self):
        """The (log_prob, posterior, E-step) chunk kernels for this latent
        dimension, and a function giving their region arguments for a chunk
        of regions."""
        from fastcpa.kernels.cpu import estep, pairs

        p = self._region_params()
        head = ("Ab", "bb", "Sigma", "logdet_lam", "Aw", "gz", "an")

        def region(rs):
            return (*(p[k][rs] for k in head), p["s2"])

        if self.generator.latent_dim == 2 and "Lt" in p:
            def args(rs):
                ptr = p["ptr"][rs.start:rs.stop + 1]
                fptr = p["fptr"][rs.start:rs.stop + 1]
                return (*region(rs), p["whole"][rs], ptr, p["PW"], p["LN"], fptr, p["FN"], p["FO"], p["FU"],
                        p["Lt"][rs], p["K"][rs], p["Rt"][rs], p["SC"][rs], _chunk_series_table(p, rs), p["const"])

            return pairs.log_prob_chunk_2d, pairs.posterior_chunk_2d, estep.estep_chunk_2d, args
        if self.generator.latent_dim > 1:  # affine generator: one whole-space region
            def args(rs):
                zero = np.zeros(rs.stop - rs.start)
                return (*region(rs), zero, zero, p["whole"][rs], p["const"])

            return pairs.log_prob_chunk, pairs.posterior_chunk, estep.estep_chunk, args

        def args(rs):
            return (*region(rs), p["lo"][rs], p["hi"][rs], p["whole"][rs], p["const"])

        return pairs.log_prob_chunk, pairs.posterior_chunk, estep.estep_chunk, args

    # ------------------------------------------------------------------ likelihood
    def log_prob(self, X, *, prune=True, sample_chunk=1024, region_chunk=1024, backend="auto"):
        """Exact log p(x) of each row of X.

        Parameters
        ----------
        X : array_like, shape (N, D)
        prune : bool, default True
            Skip pairs whose evidence bound is more than ``PRUNE_GAP`` (40)
            nats below the row's best term: the result is then low by at most
            ``R * exp(-40)`` relative (R regions), i.e. ``R * 4.2e-18`` nats.
        sample_chunk, region_chunk : int
            Chunk sizes (integers >= 1) of the (sample, region) stream; memory is
            O(sample_chunk * region_chunk * S), independent of N and R. (For
            S = 1 the kernel forms its products in blocks of up to 256 rows
            per thread, and ``sample_chunk`` is not used.)
        backend : {"auto", "cpu", "gpu"}

        Returns
        -------
        ndarray, shape (N,)

        Warns
        -----
        AccuracyWarning
            For rows whose log p float64 does not determine: perturbing the inputs by
            their own rounding (eps relative) would move it by more than 1e-3 of
            ``max(1, |log p|)``. ``last_log_prob_uncertainty_`` holds that estimate for
            every row (see ``_rounding_uncertainty``); ``last_pairs_skipped_`` the pairs
            the pruning skipped.
        """
        check_backend(backend, "CPAModel")
        sample_chunk = check_chunk(sample_chunk, "sample_chunk")
        region_chunk = check_chunk(region_chunk, "region_chunk")
        X = self._check_X(X)
        p = self._region_params()
        N = len(X)
        out = np.empty(N)
        spread = np.empty(N)
        skipped = np.zeros(N, np.int64)
        gap = PRUNE_GAP if prune else np.inf
        S, D = self.generator.latent_dim, self.generator.output_dim
        for rows, lp, top, lsum, REF, sk in self._likelihood_blocks(X, gap, sample_chunk, region_chunk):
            out[rows] = lp
            skipped[rows] = sk
            mu, f, e = REF[:, 2:2 + S], REF[:, 2 + S:2 + S + D], REF[:, 2 + S + D:2 + S + 2 * D]
            if p["V"] is not None:  # the singular frame (affine, S > 2): back to z
                mu = mu @ p["V"][0].T
            # where the reference's term lies far above log p (its region holds little of
            # its Gaussian), its mean says little of where the posterior is: the bound stays
            own = top + lsum >= -_REF_SLACK
            spread[rows] = self._rounding_uncertainty(X[rows], mu, f, e, lp, own, REF[:, -1] == 1.0)
        self.last_pairs_skipped_ = int(skipped.sum())
        self.last_log_prob_uncertainty_ = spread
        _checked_log_prob(out)
        _warn_undetermined(out, spread)
        return out

    def _likelihood_blocks(self, X, gap, sample_chunk, region_chunk, keep=False):
        """Yield ``(rows, log_p, top, log_sum, REF, skipped)`` per block of rows of the
        checked ``X``: each row's exact log p as :meth:`log_prob` returns it, its
        reference pair and the running maximum and log-sum relative to it (what
        the E-step's moments are normalised by), and the pairs the pruning
        skipped. Each row's values do not depend on the blocking. With ``keep``,
        also ``(TERM, MOM)``: the pairs the E-step needs (``pairs.log_prob_chunk``;
        blocks of ``sample_chunk`` rows for S = 1 too)."""
        import numba

        from fastcpa.kernels.cpu import pairs

        p = self._region_params()
        N = len(X)
        # one block's kept pairs at a time: their buffers serve every block (a fresh
        # array of this size would be paged in, zeroed by the kernel, for each); the
        # rows done again with new references (_rebased) get their own
        pool = {}
        with blas_single_threaded():
            if "lo" in p:  # S = 1: the GEMM fused into the kernel
                R = len(p["bb"])
                # equal region chunks (no thin remainder: a narrow GEMM still reads all rows)
                width = -(-R // -(-R // region_chunk))
                blocks = [(slice(r0, min(R, r0 + width)),) for r0 in range(0, R, width)]
                blocks = [(rs, np.ascontiguousarray(np.hstack([p["PA_T"][:, rs], p["Pb_T"][:, rs]])))
                          for (rs,) in blocks]

                def rows_log_prob(Xw, xx, Xs, skipped, search, REF):
                    n = len(Xw)
                    if REF is None:
                        REF = self._new_reference(Xw, xx, Xs, width, search)
                    run_max, run_sum = np.full(n, -np.inf), np.zeros(n)
                    arg = np.zeros((n, 4))
                    kept = _kept_arrays(n, R, 1, keep, pool if REF is None else None)
                    # large row blocks keep the GEMM efficient; at least ~4 per thread
                    block = int(min(_ROW_BLOCK, max(16, -(-n // (4 * numba.get_num_threads())))))
                    for rs, G in blocks:
                        pairs.log_prob_block_1d(Xw, Xs, G, xx, p["ab1"][rs], p["bb"][rs], p["logdet_lam"][rs],
                                                p["const"], *(p[k][rs] for k in ("sig1", "hl1", "lo", "hi", "whole")),
                                                p["Aw"][rs], p["gz"][rs], p["an"][rs], p["s2"], REF, gap, run_max,
                                                run_sum, skipped, block, rs.start, arg, *kept)
                    return (run_max, np.log(run_sum), REF, arg) + (kept if keep else ())

                # rows whitened at a time, with their reference rows (2 D + 3 floats each): ~4 MiB
                D = self.generator.output_dim
                step = int(max(256, min(_S1_ROWS, 500_000 // (3 * D + 3))))
                if keep:  # the caller's rows: the kept pairs' memory
                    step = sample_chunk
            else:
                def rows_log_prob(Xw, xx, Xs, skipped, search, REF):
                    return self._log_prob_rows(Xw, xx, Xs, gap, region_chunk, skipped, search, REF, keep,
                                               pool if REF is None else None)

                step = sample_chunk
            for a in range(0, N, step):
                rows = slice(a, min(N, a + step))
                Xw, xx, Xs = self._whiten(X[rows])
                sk = np.zeros(len(Xw), np.int64)
                # the kernels take each row's reference in the first region chunk and move
                # it onto a later chunk's best term when that lies far above everything
                # before; a row whose largest term still came out far above its reference
                # is done again with that term as the reference (see _rebased)
                top, lsum, REF, _, *kept = self._rebased(rows_log_prob, Xw, xx, Xs, sk, False)
                yield (rows, _assemble(p["log_norm"], REF[:, 0], top + lsum), top, lsum, REF, sk, *kept)

    def _likelihood_rows(self, X, gap=PRUNE_GAP, sample_chunk=1024, region_chunk=1024):
        """:meth:`_likelihood_blocks` gathered over all rows of the checked ``X``:
        ``(log_p, top, log_sum, REF)``, arrays of N rows (what
        :func:`fastcpa.estep.sufficient_statistics` takes as ``rows``)."""
        N = len(X)
        log_p, top, lsum = np.empty(N), np.empty(N), np.empty(N)
        from fastcpa.kernels.cpu import pairs

        REF = np.empty((N, pairs.reference_width(self.generator.latent_dim, self.generator.output_dim)))
        for rows, lp, t, ls, ref, _ in self._likelihood_blocks(X, gap, sample_chunk, region_chunk):
            log_p[rows], top[rows], lsum[rows], REF[rows] = lp, t, ls, ref
        _checked_log_prob(log_p)
        return log_p, top, lsum, REF

    def _rounding_uncertainty(self, X, mu, f, e, log_p, own=True, at=None):
        """Per row, an estimate of how far log p moves when every input is perturbed by
        its own rounding (``eps`` relative, worst signs), near the row's posterior: g's
        rounding at the reference point ``mu`` (:meth:`_point_uncertainty`), and for rows
        ``at`` (the reference point is a far polygon's nearest point: the posterior sits
        on boundaries, see ``kernels.cpu.pairs._polygon_term_2d``) the bound for every
        activation pattern there and the boundaries' own rounding
        (:meth:`_boundary_uncertainty`)."""
        if at is None or not np.any(at):
            return self._point_uncertainty(X, mu, f, e, log_p, own)
        # on a boundary the neighbouring regions' maps (whose terms may take over once the
        # inputs move) are as near as the reference's: the bound through the forward pass in
        # absolute values holds for every activation pattern at mu; back-propagation along
        # one pattern does not (a point 1e6 sigma_x off a net of weights 5e3, all units off
        # in the reference region: 0.03 nats by that pattern, 5e12 under eps perturbations)
        out = self._point_uncertainty(X, mu, f, e, log_p, np.broadcast_to(own, at.shape) & ~at)
        b = np.flatnonzero(at)
        out[b] += self._boundary_uncertainty(mu[b], e[b])
        return out

    def _point_uncertainty(self, X, mu, f, e, log_p, own=True):
        """:meth:`_rounding_uncertainty` from g's rounding at a point: a first-order
        estimate of how far log p moves when every input is perturbed by its own rounding (``eps`` relative, worst signs), near the
        row's posterior: at ``mu``, with the whitened fitted point ``f`` and residual ``e =
        x / sigma - f`` there (the reference pair's, see ``kernels.cpu.pairs``).

        ``log p ~ -|e|^2 / 2 + ...`` near the posterior, so a perturbation ``dg`` of g
        moves it by ``e . dg / sigma + |dg / sigma|^2 / 2``; the second-order term is
        bounded through ``|dg_d| <= eps (|x_d| + |g|_abs(mu)_d)`` throughout. First, for every row, the bound through the
        forward pass in absolute values, ``|g|_abs(mu) = M |mu| + m`` (``M``, ``m``
        precomputed: ``|W_L| diag(max(1, |eta|)) ... |W_1|`` times L, and the biases'
        share)::

            eps (sum_d |e_d| (|x_d| + |g|_abs(mu)_d) / sigma_d + |e|^2 + D + |mu|^2 / sigma_z^2
                 + S + |log p|)

        (the data's, the weights', the scales' and the result's own rounding). It
        overestimates a steep net's cancelling forward pass by up to 1e7 (against
        50-digit evaluations of perturbed inputs), so where it is not negligible
        (above ``1e-9 max(1, |log p|)``) the weights' share is replaced by
        back-propagation through the net at ``mu`` (pre-activations ``u_l``, outputs
        ``h_l``, ``h_0 = mu``; ``v_l`` the gradient of ``e / sigma . g`` at layer l's
        pre-activation, ``b_l`` at its output): ``eps (sum_l |v_l| . (|W_l| |h_(l-1)| +
        |c_l|) + sum_l |b_l| . |eta_l u_l| [u_l < 0])``, unless the activation pattern
        at ``mu`` is not the reference region's (``g(mu) != f``: the bound stays)."""
        p = self._region_params()
        g = self.generator
        D, L = g.output_dim, g.n_layers
        if "abs_map" not in p:
            a, m = np.eye(g.latent_dim), np.zeros(g.latent_dim)
            for W, c, eta in zip(g.weights[:-1], g.biases[:-1], g.slopes):
                grow = np.maximum(1.0, np.abs(eta))[:, None]
                a, m = grow * (np.abs(W) @ a), grow[:, 0] * (np.abs(W) @ m + np.abs(c))
            p["abs_map"] = (L * (np.abs(g.weights[-1]) @ a), L * (np.abs(g.weights[-1]) @ m + np.abs(g.biases[-1])))
        Mabs, mabs = p["abs_map"]
        out = np.empty(len(X))
        with np.errstate(over="ignore", invalid="ignore"):
            # eps taken in early (as sqrt(eps) on both factors of a square): |e|^2 of a
            # row 1e154 sigma_x off would overflow where eps |e|^2 does not
            h = math.sqrt(_EPS)
            he, hm = h * e, h * mu
            gabs = (np.abs(mu) @ Mabs.T + mabs) * p["isx"]
            tot = ((np.abs(he) * np.abs(h * X) * p["isx"]).sum(axis=1) + (he * he).sum(axis=1)
                   + (hm * hm).sum(axis=1) * p["s2"] + _EPS * (D + mu.shape[1] + np.abs(log_p)))
            bound = (np.abs(he) * (h * gabs)).sum(axis=1)
            # second order, |dg|^2 / 2: it dominates where the residual is smaller than
            # g's own rounding (a row whose e came out exactly 0 on a net with values
            # of 1e23 is not determined to 1e-15)
            xs = np.abs(X) * p["isx"]
            dg = _EPS * (xs + gabs)
            second = 0.5 * (dg * dg).sum(axis=1)
            out[:] = tot + second + bound
            rows = np.flatnonzero(~(out <= 1e-9 * np.maximum(1.0, np.abs(log_p))) & np.broadcast_to(own, out.shape))
            if rows.size == 0:
                return out
            mu, e = mu[rows], e[rows]
            hs, us = [mu], []
            a = np.abs(mu)  # the forward pass in absolute values along mu's own pattern
            for W, c, eta in zip(g.weights[:-1], g.biases[:-1], g.slopes):
                u = hs[-1] @ W.T + c
                us.append(u)
                hs.append(np.where(u >= 0, u, eta * u))
                a = (a @ np.abs(W).T + np.abs(c)) * np.where(u >= 0, 1.0, np.abs(eta))
            gmu = (hs[-1] @ g.weights[-1].T + g.biases[-1]) * p["isx"]
            # each layer's rounding reaches g through at most that pass: |dg| <= L eps a_L
            dg = _EPS * (xs[rows] + L * (a @ np.abs(g.weights[-1]).T + np.abs(g.biases[-1])) * p["isx"])
            v = _EPS * e * p["isx"]
            jac = np.zeros(len(rows))
            for ell in range(L - 1, -1, -1):
                W, c = g.weights[ell], g.biases[ell]
                jac += (np.abs(v) * (np.abs(hs[ell]) @ np.abs(W).T + np.abs(c))).sum(axis=1)
                if ell == 0:
                    break
                b = v @ W
                u, eta = us[ell - 1], g.slopes[ell - 1]
                neg = u < 0
                jac += (np.abs(b) * np.where(neg, np.abs(eta * u), 0.0)).sum(axis=1)
                v = b * np.where(neg, eta, 1.0)
            # mu off its region (the reference Gaussian's mean may lie outside it): the
            # pattern at mu is not the region's, and the bound stays
            same = np.all(np.abs(gmu - f[rows]) <= 16.0 * _EPS * (gabs[rows] + np.abs(f[rows])), axis=1)
            out[rows] = np.where(same, tot[rows] + jac + 0.5 * (dg * dg).sum(axis=1), out[rows])
        return out

    def _boundary_uncertainty(self, z, e):
        """Rows whose posterior sits on region boundaries at ``z`` (a far polygon's nearest
        point), with the whitened residual ``e`` there: how far log p moves as the
        boundaries move by their own rounding.

        The term's energy ``E`` is taken at ``z``, its maximum over the region, which the
        region's facets through ``z`` hold there: ``grad E = sum_j lambda_j grad u_j``
        over those units' pre-activations ``u_j`` (zero at ``z``), and moving facet j to
        ``u_j = delta_j`` moves the maximum by ``lambda_j delta_j``. With ``|delta_j| <= L
        eps a_j`` (``a_j`` the forward pass in absolute values up to the unit), the
        estimate is ``sum_j |lambda_j| L eps a_j``. A far polygon's energy has a large
        gradient (``d`` whitened sd times the posterior's precision), so this can dominate
        everything else. The facets through ``z`` are the units with ``|u_j| <= 1024 L eps
        a_j`` (the nearest one if none is that near)."""
        g = self.generator
        p = self._region_params()
        L = g.n_layers
        n, S = z.shape
        h, a = z, np.abs(z)
        T = np.broadcast_to(np.eye(S), (n, S, S))  # d h / d z, (n, width, S)
        us, abs_u, grads = [], [], []
        for W, c, eta in zip(g.weights[:-1], g.biases[:-1], g.slopes):
            u = h @ W.T + c
            au = a @ np.abs(W).T + np.abs(c)
            J = np.einsum("hk,nks->nhs", W, T)
            us.append(u)
            abs_u.append(au)
            grads.append(J)
            q = np.where(u >= 0, 1.0, eta)
            h, a, T = q * u, np.abs(q) * au, q[:, :, None] * J
        A = np.einsum("dk,nks->nds", g.weights[-1], T) * p["isx"][:, None]  # whitened Jacobian of g
        gradE = np.einsum("nds,nd->ns", A, e) - p["s2"] * z
        U, AU, G = np.concatenate(us, axis=1), np.concatenate(abs_u, axis=1), np.concatenate(grads, axis=1)
        delta = L * _EPS * AU
        out = np.zeros(n)
        for i in range(n):
            norm = np.sqrt((G[i] * G[i]).sum(axis=1))
            ok = norm > 0
            act = np.flatnonzero(ok & (np.abs(U[i]) <= 1024.0 * delta[i]))
            if act.size == 0 and ok.any():
                dist = np.where(ok, np.abs(U[i]) / np.where(ok, norm, 1.0), np.inf)
                act = np.array([int(np.argmin(dist))])
            if act.size == 0:
                continue
            lam = np.linalg.lstsq(G[i, act].T, gradE[i], rcond=None)[0]
            out[i] = float(np.abs(lam) @ delta[i, act])
        return out

    def _posterior_rows(self, X, sample_chunk, region_chunk, refs=None):
        """The posterior pass of :meth:`posterior` over rows X (``refs``: see
        :meth:`_pair_moments`): per row the running log-weight max M (relative
        to its reference, whose log kappa is in lref), the weight sum W, mean
        and scatter, and the (row, region, term) candidates for the region
        probabilities."""
        N, S = len(X), self.generator.latent_dim
        # running mixture state per row: log-weight max M (relative to the row's
        # reference, log kappa_ref in lref), weight sum W, mean, scatter
        M = np.full(N, -np.inf)
        W = np.zeros(N)
        lref = np.empty(N)
        mean = np.zeros((N, S))
        scat = np.zeros((N, S, S))
        kept_rows, kept_cols, kept_terms = [], [], []
        for rows, rs, terms, means, covs, REF in self._pair_moments(X, sample_chunk, region_chunk, refs):
            cm = terms.max(axis=1)
            w = np.exp(terms - cm[:, None])
            cw = w.sum(axis=1)
            cmean = np.einsum("nr,nrs->ns", w, means) / cw[:, None]
            d = means - cmean[:, None, :]
            cscat = np.einsum("nr,nrst->nst", w, covs + d[..., :, None] * d[..., None, :])
            # merge (chunk weight cw at scale cm) into the running state (W at scale M)
            newM = np.maximum(M[rows], cm)
            a_ = W[rows] * np.exp(M[rows] - newM)
            a_[W[rows] == 0] = 0.0
            c = cw * np.exp(cm - newM)
            tot = a_ + c
            delta = cmean - mean[rows]
            frac = (c / tot)[:, None]
            scat[rows] = (scat[rows] * np.exp(M[rows] - newM)[:, None, None] * (W[rows] > 0)[:, None, None]
                          + cscat * np.exp(cm - newM)[:, None, None]
                          + (a_ * c / tot)[:, None, None] * delta[:, :, None] * delta[:, None, :])
            mean[rows] = mean[rows] + frac * delta
            M[rows], W[rows] = newM, tot
            # region-probability candidates: anything within reach of the final threshold
            keep = terms >= (newM[:, None] + math.log(MIN_REGION_PROB))
            i, j = np.nonzero(keep)
            kept_rows.append(i + rows.start)
            kept_cols.append(j + rs.start)
            kept_terms.append(terms[i, j])
            lref[rows] = REF[:, 0]
        return M, W, lref, mean, scat, tuple(
            np.concatenate(v) if v else np.empty(0, dt) for v, dt in
            zip((kept_rows, kept_cols, kept_terms), (np.int64, np.int64, float)))

    # ------------------------------------------------------------------ posterior
    def posterior(self, X, *, sample_chunk=256, region_chunk=1024, backend="auto"):
        """The exact posterior p(z | x) of each row of X: a mixture of truncated Gaussians.

        Parameters
        ----------
        X : array_like, shape (N, D)
        sample_chunk, region_chunk : int
            Chunk sizes, integers >= 1 (memory is O(sample_chunk * region_chunk * S^2)).
        backend : {"auto", "cpu", "gpu"}

        Returns
        -------
        Posterior
        """
        check_backend(backend, "CPAModel")
        sample_chunk = check_chunk(sample_chunk, "sample_chunk")
        region_chunk = check_chunk(region_chunk, "region_chunk")
        X = self._check_X(X)
        if len(X) == 0:  # nothing to stream: empty results of the right shapes
            S, R = self.generator.latent_dim, self.partition.n_regions
            return Posterior(self, X, np.zeros(0), np.zeros((0, S)), np.zeros((0, S, S)),
                             scipy.sparse.csr_array((0, R)))
        p = self._region_params()
        N, R = len(X), len(p["bb"])
        with blas_single_threaded():  # no spinning BLAS workers between the kernels
            M, W, lref, mean, scat, kept = self._posterior_rows(X, sample_chunk, region_chunk)
            # a row whose largest term lies far above its reference: again, with that
            # term's pair as the reference (as log_prob does; see _rebased)
            redo = np.flatnonzero(M > _REF_SLACK)
            if redo.size:
                Xw, xx, Xs = self._whiten(X[redo])
                arg = self._log_prob_rows(Xw, xx, Xs, PRUNE_GAP, region_chunk, np.zeros(redo.size, np.int64))[3]
                REF2 = self._references_at(Xs, arg)
                M[redo], W[redo], lref[redo], mean[redo], scat[redo], k2 = self._posterior_rows(
                    X[redo], sample_chunk, region_chunk, REF2)
                again = np.zeros(N, bool)
                again[redo] = True
                first = ~again[kept[0]]
                kept = tuple(np.concatenate([v[first], w]) for v, w in zip(kept, (redo[k2[0]], k2[1], k2[2])))
        log_p = _checked_log_prob(_assemble(p["log_norm"], lref, M + np.log(W)))
        cov = scat / W[:, None, None]
        if p["V"] is not None:  # from the singular frame back to z = V w (one region)
            V = p["V"][0]
            mean, cov = mean @ V.T, V @ cov @ V.T
        i, j, t = kept
        # t - M is exact for the terms that matter (M + log W as one number would round at |M|)
        prob = np.exp((t - M[i]) - np.log(W[i]))
        sel = prob >= MIN_REGION_PROB
        probs = scipy.sparse.csr_array((prob[sel], (i[sel], j[sel])), shape=(N, R))
        return Posterior(self, X, log_p, mean, cov, probs)

    # ------------------------------------------------------------------ EM
    def fit(self, X, *, n_iter=50, tol=1e-6, diagonal=None, layers=True, ridge=0.0, max_backtracks=8,
            cg_maxiter="auto", precondition="auto", progress=None, method="em", lr=1e-2, callback=None,
            verbose=False, max_time=None, schedule="auto"):
        """Fit the generator and noise to X by exact, monotone EM (in place).

        See :func:`fastcpa.em.fit` for the parameters (``verbose=True``
        logs a line per iteration; Ctrl-C keeps the fit so far, then
        re-raises). After the call, ``history_`` holds the mean exact
        log-likelihood at the start and after every iteration (never
        decreasing), ``backtracks_`` the step halvings each iteration needed,
        ``fit_time_`` each iteration's seconds and ``stopped_by_time_``
        whether ``max_time`` (a wall-clock budget in seconds, checked
        between iterations) ended it.

        Returns
        -------
        CPAModel
            ``self``.

        Examples
        --------
        >>> import numpy as np, fastcpa
        >>> rng = np.random.default_rng(0)
        >>> t = rng.normal(size=200)
        >>> X = np.c_[t, np.cos(1.4 * t)] + 0.1 * rng.normal(size=(200, 2))
        >>> gen = fastcpa.Generator([rng.normal(size=(6, 1)), 0.3 * rng.normal(size=(2, 6))],
        ...                         [rng.normal(size=6), np.zeros(2)], activation="leaky_relu", slope=0.1)
        >>> model = fastcpa.CPAModel(gen, sigma_x=1.0).fit(X, n_iter=5, progress=False)
        >>> bool(np.all(np.diff(model.history_) >= 0))
        True
        """
        from .em import fit

        return fit(self, X, n_iter=n_iter, tol=tol, diagonal=diagonal, layers=layers, ridge=ridge,
                   max_backtracks=max_backtracks, cg_maxiter=cg_maxiter, precondition=precondition,
                   progress=progress, method=method, lr=lr, callback=callback, verbose=verbose, max_time=max_time,
                   schedule=schedule)

    # ------------------------------------------------------------------ E-step
    def sufficient_stats(self, X, *, gap=PRUNE_GAP, sample_chunk=256, region_chunk=1024, backend="auto"):
        """Exact E-step statistics of X: per-region posterior weights and moments.

        See :func:`fastcpa.estep.sufficient_statistics`; memory is
        O(R (D S + S^2)) for the statistics, independent of N.

        Parameters
        ----------
        X : array_like, shape (N, D)
        gap : float, default 40
            Pairs lying this far below ``log p(x_n)`` (weight < ``exp(-gap)``) are left out.
            Must be > 0; ``inf`` keeps every pair.
        sample_chunk, region_chunk : int
            Chunk sizes, integers >= 1.
        backend : {"auto", "cpu", "gpu"}

        Returns
        -------
        fastcpa.estep.SufficientStats
        """
        from .estep import sufficient_statistics

        check_backend(backend, "CPAModel")
        gap = check_gap(gap, "gap")
        sample_chunk = check_chunk(sample_chunk, "sample_chunk")
        region_chunk = check_chunk(region_chunk, "region_chunk")
        return sufficient_statistics(self, X, gap=gap, sample_chunk=sample_chunk, region_chunk=region_chunk)

    # ------------------------------------------------------------------ generative side
    def sample(self, n, seed=None, *, return_latent=False):
        """Draw ``n`` samples x = g(z) + noise from the model.

        Parameters
        ----------
        n : int
        seed : int or numpy.random.Generator, optional
        return_latent : bool, default False
            Also return the latent draws.

        Returns
        -------
        X : ndarray, shape (n, D)
        Z : ndarray, shape (n, S), only with ``return_latent=True``
        """
        n = check_count(n, "n")
        rng = np.random.default_rng(seed)
        Z = self.sigma_z * rng.standard_normal((int(n), self.generator.latent_dim))
        X = self.generator(Z) + np.sqrt(self._noise_var) * rng.standard_normal((int(n), self.generator.output_dim))
        return (X, Z) if return_latent else X

    def marginal_moments(self):
        """Exact mean (D,) and covariance (D, D) of x under the model.

        Sums over regions of the prior's truncated moments (centred per region,
        so nothing cancels): ``Cov = sum_r P_r [A_r C_r A_r^T + d_r d_r^T] + Sigma_x``
        with ``d_r = A_r m_r + b_r - E[x]``.
        """
        from .gaussian import interval_moments

        part = self.partition
        S = self.generator.latent_dim
        whole = part.facet_ptr[1:] == part.facet_ptr[:-1]
        A, b = part.A, part.b
        if S == 1:
            r = interval_moments(part.intervals[:, 0], part.intervals[:, 1], 0.0, self.sigma_z)
            P, m, C = np.exp(r.log_mass), r.mean[:, None], r.var[:, None, None]
        elif whole.all():
            P, m, C = np.ones(len(A)), np.zeros((len(A), S)), np.broadcast_to(self.sigma_z**2 * np.eye(S), (len(A), S, S))
        else:  # S = 2: the prior's moments over each region's polygon (facets padded with vacuous rows)
            from .gaussian import polygon_moments

            normals, offsets = _padded_facets(part)
            r = polygon_moments(normals, offsets, np.zeros(2), self.sigma_z**2 * np.eye(2))
            P, m, C = np.exp(r.log_mass), r.mean, r.cov
            # a region whose prior mass underflows adds exactly nothing (its moments may be NaN)
            m, C = np.where(P[:, None] > 0, m, 0.0), np.where(P[:, None, None] > 0, C, 0.0)
        mu_r = np.einsum("rds,rs->rd", A, m) + b
        mean = P @ mu_r
        d = mu_r - mean
        cov = np.einsum("r,rds,rst,ret->de", P, A, C, A) + np.einsum("r,rd,re->de", P, d, d)
        return mean, cov + np.diag(self._noise_var)


class Posterior:
    """Exact posterior p(z | x) for a batch of samples (see :meth:`CPAModel.posterior`).

    Attributes
    ----------
    log_prob : ndarray, shape (N,)
        log p(x) (every pair evaluated; for S = 2 a region more than 40 nats below the
        row's best term may enter by its tail bound, so it can be high by R exp(-40)
        relative at most, as ``CPAModel.log_prob``'s pruning is low).
    mean : ndarray, shape (N, S)
    cov : ndarray, shape (N, S, S)
    region_probs : scipy.sparse.csr_array, shape (N, R)
        p(region r | x), entries below ``MIN_REGION_PROB`` (1e-15) left out.
    """

    def __init__(self, model, X, log_prob, mean, cov, region_probs):
        self.model, self.X = model, X
        self.log_prob, self.mean, self.cov, self.region_probs = log_prob, mean, cov, region_probs

    def _region_gaussians(self, rows, regions):
        """Mean and covariance of each (row, region)'s Gaussian on z before truncation."""
        p = self.model._region_params()
        part = self.model.partition
        A, b = part.A[regions], part.b[regions]
        Sigma = p["Sigma"][regions]
        r = (self.X[rows] - b) * p["isx"]
        if "K" in p:  # S = 2 polygons: through the orthonormal basis, as the kernels do
            y = np.einsum("nds,nd->ns", p["Q"][regions], r)
            return np.einsum("nst,nt->ns", p["K"][regions], y), Sigma
        y = np.einsum("nds,nd->ns", p["Aw"][regions], r)
        mu = np.einsum("nst,nt->ns", Sigma, y)
        if p["V"] is not None:  # the singular frame (affine, S > 2): z = V w
            V = p["V"][regions]
            return np.einsum("nst,nt->ns", V, mu), V @ Sigma @ np.swapaxes(V, 1, 2)
        return mu, Sigma

    def _whole_factors(self, regions, Sigma):
        """Factors L with L L^T = Sigma of whole-space regions' Gaussians (for sampling): in the
        singular frame ``V sqrt(Lambda^-1)`` (a Cholesky factorisation of the rotated-back Sigma can
        fail where Sigma is as ill-conditioned as (|A~| sigma_z)^2)."""
        p = self.model._region_params()
        if p["V"] is not None:
            return p["V"][regions] * np.sqrt(np.diagonal(p["Sigma"][regions], axis1=1, axis2=2))[:, None, :]
        return np.linalg.cholesky(Sigma)

    def sample(self, k, seed=None):
        """Exact draws z ~ p(z | x): a region by its probability, then the truncated Gaussian.

        Parameters
        ----------
        k : int
            Draws per sample.
        seed : int or numpy.random.Generator, optional

        Returns
        -------
        ndarray, shape (N, k, S)
        """
        k = check_count(k, "k")
        rng = np.random.default_rng(seed)
        N, S = self.mean.shape
        probs = self.region_probs
        regions = np.empty((N, k), np.int64)
        for n in range(N):
            lo, hi = probs.indptr[n], probs.indptr[n + 1]
            w = probs.data[lo:hi]
            regions[n] = probs.indices[lo:hi][rng.choice(hi - lo, size=k, p=w / w.sum())]
        rows = np.repeat(np.arange(N), k)
        reg = regions.reshape(-1)
        mu, Sigma = self._region_gaussians(rows, reg)
        part = self.model.partition
        whole = (part.facet_ptr[1:] == part.facet_ptr[:-1])[reg]
        out = np.empty((N * k, S))
        if whole.any():
            L = self._whole_factors(reg[whole], Sigma[whole])
            out[whole] = mu[whole] + np.einsum("nst,nt->ns", L, rng.standard_normal((int(whole.sum()), S)))
        if (~whole).any() and S == 1:  # intervals: scipy's truncnorm is exact and tail-safe
            sd = np.sqrt(Sigma[~whole, 0, 0])
            m = mu[~whole, 0]
            lo, hi = part.intervals[reg[~whole]].T
            out[~whole, 0] = scipy.stats.truncnorm.rvs((lo - m) / sd, (hi - m) / sd, loc=m, scale=sd,
                                                       random_state=rng)
        elif (~whole).any():  # polygons: exact rejection sampling, one (sample, region) pair at a time
            idx = np.flatnonzero(~whole)
            key = rows[idx] * part.n_regions + reg[idx]
            order = np.argsort(key, kind="stable")
            bounds = np.flatnonzero(np.diff(key[order])) + 1
            for grp in np.split(idx[order], bounds):
                j = grp[0]
                out[grp] = _sample_polygon(rng, len(grp), part, reg[j], mu[j], Sigma[j])
        return out.reshape(N, k, S)

    def log_density(self, Z):
        """log p(z | x) at given latent points: one per sample (N, S) or k per sample (N, k, S)."""
        Z = as_float64(Z, "Z")
        N, S = self.mean.shape
        single = Z.ndim == 2
        Zk = Z[:, None, :] if single else Z
        if Zk.ndim != 3 or Zk.shape[0] != N or Zk.shape[2] != S:
            raise ValueError(f"Z must have shape ({N}, {S}) or ({N}, k, {S}), got {Z.shape}.")
        model = self.model
        k = Zk.shape[1]
        G = model.generator(Zk.reshape(-1, S)).reshape(N, k, -1)
        var = model._noise_var
        lx = -0.5 * (((self.X[:, None, :] - G) ** 2 / var).sum(-1) + np.log(2 * np.pi * var).sum())
        lz = -0.5 * ((Zk**2).sum(-1) / model.sigma_z**2 + S * math.log(2 * math.pi * model.sigma_z**2))
        out = lz + lx - self.log_prob[:, None]
        return out[:, 0] if single else out


def _check_representable(A, b, G, sigma_z):
    """A clear error where the generator's affine pieces, whitened by sigma_x, leave float64:
    a slope, offset or anchor value that is inf or NaN (the weights' product across layers
    overflows), or a slope ``|A~| sigma_z`` beyond ``SCALE_RANGE``'s top, whose square (the
    posterior precision ``I / sigma_z^2 + A~^T A~``) overflows."""
    from ._validation import SCALE_RANGE

    with np.errstate(over="ignore", invalid="ignore"):
        finite = np.isfinite(A).all() and np.isfinite(b).all() and np.isfinite(G).all()
        slope = 0.0
        if finite and A.size:  # max_r |A~_r|_F sigma_z, scaled so that the squares do not overflow
            m = np.abs(A).max(axis=(1, 2))
            m = np.where(m > 0, m, 1.0)
            slope = float((m * np.sqrt(np.einsum("rds,rds->r", A / m[:, None, None], A / m[:, None, None]))).max())
            slope *= sigma_z
    if not finite:
        raise ValueError(
            "the generator's affine pieces overflow float64 (a region's slope or offset, the product of the "
            "weights across layers, divided by sigma_x, is inf or NaN): exact inference needs them representable. "
            "Rescale the weights (or the data and sigma_x) so that the generator's slopes stay far below 1e308.")
    if not slope <= SCALE_RANGE[1]:
        raise ValueError(
            f"the generator is too steep for float64: a region's slope |A| sigma_z / sigma_x reaches {slope:.3g}, "
            f"and its square (the posterior precision) overflows above {SCALE_RANGE[1]:.3g}. Rescale the weights "
            "(or sigma_z) so that the slopes stay below that.")


def _kept_arrays(n, R, S, keep, pool=None):
    """``(TERM (n, R), MOM (n, R, S + S^2))`` for a likelihood kernel's kept pairs, empty
    without ``keep``; views of the buffers in ``pool`` (a dict, grown as needed) where
    given, so that a pass's blocks reuse one allocation. The kernels write every entry
    they are read at (``TERM`` for every pair, ``MOM`` for the kept ones)."""
    if not keep:
        return np.empty((0, 0)), np.empty((0, 0, 0))
    if pool is None:
        return np.empty((n, R)), np.empty((n, R, S + S * S))
    if pool.get("rows", -1) < n:
        pool["rows"] = n
        pool["TERM"] = np.empty((n, R))
        pool["MOM"] = np.empty((n, R, S + S * S))
    return pool["TERM"][:n], pool["MOM"][:n]


def _assemble(log_norm, lref, rel):
    """``log p = log_norm + log kappa_ref + rel`` per row; ``-inf`` where the reference's
    ``log kappa`` is ``-inf`` (its whitened residual's square overflows: a row ~1e154
    sigma_x or more from the model, whose terms relative to it are then inf - inf), so
    that such rows get :func:`_checked_log_prob`'s error, not NaN."""
    with np.errstate(invalid="ignore"):
        # the normalising constant last: where log kappa_ref and the relative sum nearly cancel,
        # a power-of-two rescaling (which changes only log_norm) then changes no other rounding
        return np.where(lref == -np.inf, -np.inf, log_norm + (lref + rel))


def _warn_undetermined(log_p, spread):
    """An :class:`AccuracyWarning` naming the rows whose log p float64 does not determine."""
    import warnings

    with np.errstate(invalid="ignore"):
        bad = ~(spread <= UNDETERMINED * np.maximum(1.0, np.abs(log_p)))
    if bad.any():
        rows = np.flatnonzero(bad)
        worst = rows[np.argmax(spread[rows] / np.maximum(1.0, np.abs(log_p[rows])))]
        warnings.warn(
            f"log p(x) of row(s) {rows[:10].tolist()}{' ...' if len(rows) > 10 else ''} is not determined by float64: "
            f"rounding the inputs (eps relative) can move it by about {spread[worst]:.3g} nats (row {worst}: "
            f"log p = {log_p[worst]:.6g}): the model itself is that ill-conditioned there (points far from the "
            "model relative to sigma_x, or a steep generator whose forward pass cancels near their posterior). "
            "Per-row estimates: model.last_log_prob_uncertainty_.", AccuracyWarning, stacklevel=3)


def _checked_log_prob(log_p):
    """``log_p``, or an error naming the rows whose log-likelihood float64 cannot hold."""
    if np.isnan(log_p).any() or (log_p == np.inf).any():
        rows = np.flatnonzero(~(log_p < np.inf) & ~(log_p == -np.inf))
        raise FloatingPointError(f"internal error: log p(x) is NaN or +inf for row(s) {rows[:10].tolist()}; please "
                                 "report this with the model and data.")
    bad = ~np.isfinite(log_p)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise FloatingPointError(
            f"log p(x) of row(s) {rows[:10].tolist()}{' ...' if len(rows) > 10 else ''} is below the float64 range "
            f"(about -1.8e308): these points lie too far from the model, relative to sigma_x, for their "
            "log-likelihood to be represented.")
    return log_p


def _whitened_boundaries(part, Lt):
    """Each S = 2 region's boundary in its posterior's whitened frame (up to the
    per-sample shift): points ``L^T v`` (ideal points: the unit direction
    ``L^T d``), and per edge its line ``n . z + o >= 0`` with ``n`` mapped to
    ``M^T n``, ``M = (L^T)^-1`` (zeros for arcs at infinity), as the pair
    kernels take them."""
    ptr, B, EU = part.boundary_ptr, part.boundary, part.boundary_unit
    reg = np.repeat(np.arange(part.n_regions), np.diff(ptr))
    l11, l21, l22 = Lt[reg, 0], Lt[reg, 1], Lt[reg, 2]
    PW = np.empty((len(B), 3))
    PW[:, 0] = l11 * B[:, 0] + l21 * B[:, 1]
    PW[:, 1] = l22 * B[:, 1]
    PW[:, 2] = B[:, 2]
    ideal = B[:, 2] == 0.0
    PW[ideal, :2] /= np.hypot(PW[ideal, 0], PW[ideal, 1])[:, None]
    # the facet carrying each edge (consecutive edges on one unit share it)
    from .partition import _facet_starts

    keep = _facet_starts(ptr, EU)
    facet = np.where(keep, np.cumsum(keep) - 1, -1)
    prev = np.arange(-1, len(EU) - 1)
    prev[ptr[:-1]] = ptr[1:] - 1
    cont = (EU >= 0) & ~keep
    facet[cont] = facet[prev[cont]]
    LN = np.zeros((len(B), 5))
    on = facet >= 0
    n = part.facet_normal[facet[on]]
    LN[on, 0], LN[on, 1], LN[on, 2] = n[:, 0], n[:, 1], part.facet_offset[facet[on]]
    LN[on, 3] = n[:, 0] / l11[on]
    LN[on, 4] = (n[:, 1] - l21[on] * n[:, 0] / l11[on]) / l22[on]
    # each facet with its normal in the whitened frame, for anchoring a region on itself
    freg = np.repeat(np.arange(part.n_regions), np.diff(part.facet_ptr))
    FN = np.ascontiguousarray(part.facet_normal)
    FU = np.empty_like(FN)
    FU[:, 0] = FN[:, 0] / Lt[freg, 0]
    FU[:, 1] = (FN[:, 1] - Lt[freg, 1] * FN[:, 0] / Lt[freg, 0]) / Lt[freg, 2]
    return {"ptr": np.ascontiguousarray(ptr), "PW": PW, "LN": LN, "fptr": np.ascontiguousarray(part.facet_ptr),
            "FN": FN, "FO": np.ascontiguousarray(part.facet_offset), "FU": FU}


# Memory the S = 2 regions' moment-series tables may take at once (bytes): 10.6 kB a region,
# so up to ~25,000 regions keep theirs; beyond, each region chunk's are formed as a pass needs them.
_SERIES_BYTES = 256 << 20


def _series_tables(part, Lt, chunk=1024):
    """Each S = 2 region's moment-series table (``kernels.cpu.pairs.series_tables``):
    ``SC`` (R, ``SERIES_COLS``) and ``SM`` (R ``SERIES_WIDTH``, flat), or, where the
    tables of every region would pass ``_SERIES_BYTES``, ``SM = None`` (the pair
    kernels' region chunks then form theirs, :func:`_chunk_series_table`; ``SC`` is
    kept, formed chunk by chunk)."""
    from fastcpa.kernels.cpu.pairs import SERIES_COLS, SERIES_WIDTH, series_tables

    R = part.n_regions
    ptr, B = np.ascontiguousarray(part.boundary_ptr), np.ascontiguousarray(part.boundary)
    SC = np.empty((R, SERIES_COLS))
    if 8 * R * SERIES_WIDTH <= _SERIES_BYTES:
        SM = np.empty(R * SERIES_WIDTH)  # flat: region r's table at r * SERIES_WIDTH
        series_tables(ptr, B, Lt, SC, SM)
        return {"SC": SC, "SM": SM}
    SM = np.empty(min(R, chunk) * SERIES_WIDTH)
    for a in range(0, R, chunk):
        rs = slice(a, min(R, a + chunk))
        series_tables(ptr[rs.start:rs.stop + 1], B, Lt[rs], SC[rs], SM[:(rs.stop - rs.start) * SERIES_WIDTH])
    return {"SC": SC, "SM": None}


def _chunk_series_table(p, rs):
    """Region chunk ``rs``'s series tables (flat), from those kept or formed again (the
    same numbers: :func:`_series_tables` with ``SM = None``)."""
    from fastcpa.kernels.cpu.pairs import SERIES_WIDTH, series_tables

    if p["SM"] is not None:
        return p["SM"][rs.start * SERIES_WIDTH:rs.stop * SERIES_WIDTH]
    SM = np.empty((rs.stop - rs.start) * SERIES_WIDTH)
    series_tables(p["ptr"][rs.start:rs.stop + 1], p["boundary"], p["Lt"][rs], np.empty_like(p["SC"][rs]), SM)
    return SM


def _padded_facets(part):
    """Each region's facets as ``(normals (R, K, S), offsets (R, K))``, padded with vacuous rows."""
    counts = np.diff(part.facet_ptr)
    K = max(int(counts.max()), 1) if len(counts) else 1
    normals = np.zeros((part.n_regions, K, part.latent_dim))
    offsets = np.zeros((part.n_regions, K))
    reg = np.repeat(np.arange(part.n_regions), counts)
    slot = np.arange(len(reg)) - part.facet_ptr[reg]
    normals[reg, slot] = part.facet_normal
    offsets[reg, slot] = part.facet_offset
    return normals, offsets


def _sample_polygon(rng, k, part, r, mu, Sigma):
    """k exact draws of N(mu, Sigma) restricted to S = 2 region r, by rejection.

    In the whitened frame the proposal is a product of two truncated normals
    over the polygon's bounding rectangle aligned with one of its edges, the
    edge whose rectangle has the least Gaussian mass (for a convex polygon
    some edge-aligned rectangle has at most twice its area). Draws inside the
    polygon are kept: exactly the truncated Gaussian.
    """
    from .gaussian import interval_moments

    L = np.linalg.cholesky(Sigma)
    Linv = np.linalg.inv(L)
    verts, rays = part.polygon(r)
    V = (verts - mu) @ Linv.T
    dirs = np.array([d for _, d in rays]).reshape(-1, 2) @ Linv.T
    normals, offsets = part.facets(r)[:2]
    Nu = normals @ L  # n . z + o = (L^T n) . u + (n . mu + o)
    Ou = offsets + normals @ mu
    frames = Nu / np.hypot(Nu[:, 0], Nu[:, 1])[:, None]
    best = None
    for nx, ny in frames:
        axes = np.array([[ny, -nx], [nx, ny]])  # along the edge, across it
        lo = (V @ axes.T).min(axis=0) if len(V) else np.full(2, -np.inf)
        hi = (V @ axes.T).max(axis=0) if len(V) else np.full(2, np.inf)
        if len(dirs):
            proj = dirs @ axes.T
            lo = np.where((proj < 0).any(axis=0), -np.inf, lo)
            hi = np.where((proj > 0).any(axis=0), np.inf, hi)
        lm = interval_moments(lo, hi).log_mass.sum()
        if best is None or lm < best[0]:
            best = (lm, axes, lo, hi)
    _, axes, lo, hi = best
    out = np.empty((0, 2))
    batch = 2 * k + 16
    while len(out) < k:
        a = scipy.stats.truncnorm.rvs(lo[0], hi[0], size=batch, random_state=rng)
        c = scipy.stats.truncnorm.rvs(lo[1], hi[1], size=batch, random_state=rng)
        U = np.outer(a, axes[0]) + np.outer(c, axes[1])
        inside = (U @ Nu.T + Ou >= 0).all(axis=1)
        out = np.concatenate([out, U[inside]])
        rate = max(inside.mean(), 1.0 / batch)
        batch = min(int(1.2 * (k - len(out)) / rate) + 16, 1 << 22)
    return mu + out[:k] @ L.T
