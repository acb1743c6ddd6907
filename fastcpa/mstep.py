"""Closed-form M-step pieces of exact EM (docs/mathematics.md, section 8).

With the E-step's activation patterns frozen, the output layer ``(W, c)`` enters
every region's map linearly: ``x = W h + c`` with ``h = G_w z + g_w`` the last
hidden layer in region ``w``. The expected complete-data log-likelihood is then
a least-squares objective in ``[W c]`` whose normal equations need only the
sufficient statistics::

    [W c] M = C,   M = sum_w Gh_w Zh_w Gh_w^T,   C = sum_w [Txz_w  Tx_w] Gh_w^T

with ``Gh_w = [[G_w, g_w], [0, 1]]`` and ``Zh_w = [[T2_w, T1_w], [T1_w^T, T0_w]]``.
Each output dimension has the same ``M`` whatever its noise variance, so the
update is the same for isotropic and diagonal noise. The hidden layers do not
change, so neither does the partition: the update is an exact M-step and EM
stays monotone.
"""

import numpy as np
import scipy.linalg

__all__ = ["FrozenLayer", "hidden_maps", "output_layer_update"]


def hidden_maps(generator, partition):
    """The last hidden layer's affine map in every region.

    Parameters
    ----------
    generator : Generator
    partition : Partition
        The generator's partition (its regions' activation codes).

    Returns
    -------
    G : ndarray, shape (R, H, S)
    g : ndarray, shape (R, H)
        ``h(z) = G[w] z + g[w]`` in region ``w`` (``H = S`` and the identity
        for a generator without hidden layers).
    """
    return _input_maps(generator, _unit_slopes(generator, partition), partition.n_regions, generator.n_layers - 1)


def _unit_slopes(generator, partition):
    """Each hidden layer's unit slopes in every region, [(R, H_j)], from the activation codes."""
    bits = partition.code_bits() if generator.n_layers > 1 else None
    q, start = [], 0
    for W, eta in zip(generator.weights[:-1], generator.slopes):
        q.append(np.where(bits[:, start:start + W.shape[0]], 1.0, eta))
        start += W.shape[0]
    return q


def _input_maps(generator, q, R, k):
    """Layer k's input ``h_{k-1} = G z + g`` in every region (``z`` itself for k = 0)."""
    S = generator.latent_dim
    # unit-major (H, R, S): one GEMM a layer (a broadcast matmul over R regions took 9 s at 1024 x 1024)
    GT = np.broadcast_to(np.eye(S)[:, None, :], (S, R, S))
    g = np.zeros((R, S))
    for j in range(k):
        W, c = generator.weights[j], generator.biases[j]
        GT = (W @ GT.reshape(W.shape[1], R * S)).reshape(W.shape[0], R, S) * q[j].T[:, :, None]
        g = q[j] * (g @ W.T + c)
    return np.ascontiguousarray(GT.transpose(1, 0, 2)), g


def output_layer_update(stats, generator, partition, *, ridge=0.0, maps=None):
    """The output layer maximising the expected complete-data log-likelihood (frozen masks).

    Parameters
    ----------
    stats : SufficientStats
        From :meth:`CPAModel.sufficient_stats` under the current parameters.
    generator : Generator
    partition : Partition
    ridge : float, default 0
        Precision of a zero-mean Gaussian prior on the weights (not the bias):
        adds ``ridge * sigma_x^2``-free shrinkage ``ridge * I`` to ``M``. Off
        by default.
    maps : tuple, optional
        ``hidden_maps(generator, partition)``, where the caller has them.

    Returns
    -------
    W : ndarray, shape (D, H)
    c : ndarray, shape (D,)

    Notes
    -----
    ``M`` is singular when a hidden unit is off (slope 0) in every region with
    weight: its column of ``W`` does not change the likelihood, and the
    least-squares solution of smallest norm is returned for it.
    """
    G, g = hidden_maps(generator, partition) if maps is None else maps
    R, H, S = G.shape
    Gh = np.zeros((R, H + 1, S + 1))
    Gh[:, :H, :S] = G
    Gh[:, :H, S] = g
    Gh[:, H, S] = 1.0
    P = np.matmul(Gh, _zh_sums(stats))  # (R, H+1, S+1)
    M = np.tensordot(P, Gh, axes=([0, 2], [0, 2]))  # sum_r P_r Gh_r^T, one GEMM (einsum loops: 1 s at 256 x 767)
    M = 0.5 * (M + M.T)
    # the centred samples' sums: the bias comes out relative to their mean (no |mean|-sized rounding in W)
    XZ = np.concatenate([stats.Txz_c, stats.Tx_c[:, :, None]], axis=2)  # (R, D, S+1)
    C = np.tensordot(XZ, Gh, axes=([0, 2], [0, 2]))
    if ridge > 0:
        M[:H, :H] += ridge * np.eye(H)
    theta = scipy.linalg.lstsq(M, C.T, cond=None, lapack_driver="gelsd")[0].T  # M symmetric
    return theta[:, :H], theta[:, H] + stats.shift


def _zh_sums(stats):
    """Per-region sums of ``E[zh zh^T]``, ``zh = (z, 1)``: (R, S+1, S+1)."""
    S = stats.T1.shape[1]
    Zh = np.empty((len(stats.T0), S + 1, S + 1))
    Zh[:, :S, :S] = stats.T2
    Zh[:, :S, S] = stats.T1
    Zh[:, S, :S] = stats.T1
    Zh[:, S, S] = stats.T0
    return Zh


# ----------------------------------------------------------------------------- inner layers
class FrozenLayer:
    """Layer ``k``'s parameters ``V = [W_k c_k]`` as they enter every region's map with the
    activation patterns frozen (docs/mathematics.md, section 8): ``x = F_w V Gh_w zh + f_w`` in region ``w``,
    with ``zh = (z, 1)``, ``Gh_w`` the map to the layer's input ``(h_{k-1}, 1)`` and ``F_w``
    the masked product of the layers after it. Nothing of size ``R x D x H`` is stored:
    ``F_w`` and ``F_w^T`` are applied to all regions at once, layer by layer.

    Parameters
    ----------
    generator : Generator
    partition : Partition
        The generator's partition: its activation codes are the frozen masks.
    k : int
        A layer, ``0 <= k < generator.n_layers`` (the output layer, ``F_w = I``,
        is served too, for its gradient; its update has a closed form,
        :func:`output_layer_update`).
    """

    def __init__(self, generator, partition, k):
        L = generator.n_layers
        if not 0 <= k < L:
            raise ValueError(f"k = {k} is not a layer of this {L}-layer generator (0 <= k < {L}).")
        self.generator, self.k = generator, k
        S = generator.latent_dim
        R = partition.n_regions
        self.q = _unit_slopes(generator, partition)  # each hidden layer's unit slopes per region
        self.qT = [np.ascontiguousarray(q.T) for q in self.q]  # (H_j, R): unit-major
        self._GhT = None
        G, g = _input_maps(generator, self.q, R, k)  # Gh: (z, 1) -> (h_{k-1}, 1)
        H = G.shape[1]
        self.Gh = np.zeros((R, H + 1, S + 1))
        self.Gh[:, :H, :S] = G
        self.Gh[:, :H, S] = g
        self.Gh[:, H, S] = 1.0
        self.V0 = np.concatenate([generator.weights[k], generator.biases[k][:, None]], axis=1)
        # F_w V0 Gh_w, unit-major (D, R, S+1): the part of every region's map that moves with
        # layer k; its constant column gives the downstream offsets f, and it is the normal
        # equations' product at V0 (the solve's first, the gradient's only one)
        self._M0 = self._F(self._VG(self.V0))
        self.f = partition.b - self._M0[:, :, S].T

    # The products run unit-major, (units, R, m): each layer is then one GEMM over all
    # regions, where a batched (R, H, m) matmul makes R small products.
    def _F(self, U):
        """``F_w U_w`` unit-major: U (H_k, R, m) -> (D, R, m)."""
        gen, k = self.generator, self.k
        _, R, m = U.shape
        if k < gen.n_layers - 1:
            U = self.qT[k][:, :, None] * U
        for j in range(k + 1, gen.n_layers):
            U = (gen.weights[j] @ U.reshape(U.shape[0], R * m)).reshape(-1, R, m)
            if j < gen.n_layers - 1:
                U *= self.qT[j][:, :, None]
        return U

    def _FT(self, Y):
        """``F_w^T Y_w`` unit-major: Y (D, R, m) -> (H_k, R, m)."""
        gen, k = self.generator, self.k
        _, R, m = Y.shape
        for j in range(gen.n_layers - 1, k, -1):
            Y = (gen.weights[j].T @ Y.reshape(Y.shape[0], R * m)).reshape(-1, R, m)
            Y *= self.qT[j - 1][:, :, None]
        return Y

    def _VG(self, V):
        """``V Gh_w`` for all regions, unit-major: (H_k, R, S+1)."""
        if self._GhT is None:  # (C, R * m), formed once
            R, C, m = self.Gh.shape
            self._GhT = np.ascontiguousarray(self.Gh.transpose(1, 0, 2)).reshape(C, R * m)
        return (V @ self._GhT).reshape(-1, self.Gh.shape[0], self.Gh.shape[2])

    def apply_F(self, U):
        """``F_w U_w`` for all regions: U (R, H_k, m) -> (R, D, m)."""
        return self._F(np.ascontiguousarray(U.transpose(1, 0, 2))).transpose(1, 0, 2)

    def apply_FT(self, Y):
        """``F_w^T Y_w`` for all regions: Y (R, D, m) -> (R, H_k, m)."""
        return self._FT(np.ascontiguousarray(Y.transpose(1, 0, 2))).transpose(1, 0, 2)

    def maps(self, V):
        """Every region's ``(A, b)`` with layer k's parameters set to ``V`` (masks frozen)."""
        M = self._F(self._VG(V)).transpose(1, 0, 2)
        S = self.Gh.shape[2] - 1
        return M[:, :, :S], M[:, :, S] + self.f

    def update(self, stats, noise_var, *, ridge=0.0, solver="auto", rtol=1e-10, maxiter=None, precondition=True,
               return_gradient=False):
        """The ``V`` maximising the expected complete-data log-likelihood with the masks frozen.

        Solves ``sum_w F_w^T P F_w V N_w = sum_w F_w^T P (E[x zh^T]_w - f_w E[zh^T]_w) Gh_w^T``
        (``P`` the noise precision, ``N_w = Gh_w E[zh zh^T]_w Gh_w^T``) for the step from the
        current ``V``: by conjugate gradients applying the operator region by region (never
        forming it), or, for small layers, densely.

        Parameters
        ----------
        stats : SufficientStats
        noise_var : ndarray, shape (D,)
        ridge : float, default 0
            Precision of a zero-mean Gaussian prior on ``W_k`` (not ``c_k``).
        solver : {"auto", "cg", "dense"}, default "auto"
            ``"dense"`` forms the ``n x n`` matrix (``n`` = the layer's parameter
            count) as ``sum_w N_w (x) F_w^T P F_w`` and takes the least-squares
            step; ``"auto"`` does so where that costs less than about 2e8
            multiply-adds and 64 MiB (an 8 x 8 layer: a few milliseconds,
            where conjugate gradients on an ill-conditioned system take
            hundreds of operator applications), and uses ``"cg"`` otherwise.
        rtol : float
            Conjugate gradients' relative residual.
        maxiter : int, optional
            Conjugate gradients' largest number of iterations (default ``10 n``).
        precondition : bool, default True
            Precondition conjugate gradients with a Kronecker-factored
            approximation of the operator (:meth:`kronecker_preconditioner`):
            a few iterations then come close to the frozen-mask optimum, where
            plain conjugate gradients take a step mostly along the operator's
            largest eigenvectors. Every iterate still raises Q.

        return_gradient : bool, default False
            Also return ``dQ/dV`` at the current ``V`` (as :meth:`gradient`),
            which the solve forms anyway: the exact gradient of
            ``sum_n log p(x_n)`` in ``[W c]`` where ``stats`` are the current
            parameters' (Fisher's identity), for a line search along the step.

        Returns
        -------
        W : ndarray, shape (H_k, H_{k-1})
        c : ndarray, shape (H_k,)
        grad : ndarray, shape (H_k, H_{k-1} + 1)
            Only with ``return_gradient``.
        """
        import scipy.linalg
        import scipy.sparse.linalg

        if solver not in ("auto", "cg", "dense"):
            raise ValueError(f"solver must be 'auto', 'cg' or 'dense', got {solver!r}.")
        op, rhs = self._normal_equations(stats, noise_var, ridge)
        shape = self.V0.shape
        n = rhs.size
        if solver == "dense" or (solver == "auto" and self._dense_is_cheap()):
            # the step from V0 of least norm: V0 stays where the data do not pin it (as CG from V0)
            M = self._dense_operator(stats, noise_var, ridge)
            step = scipy.linalg.lstsq(M, (rhs - op(self.V0)).ravel(), cond=None, lapack_driver="gelsd")[0]
            V = self.V0 + step.reshape(shape)
        else:
            A = scipy.sparse.linalg.LinearOperator((n, n), matvec=lambda v: op(v.reshape(shape)).ravel(),
                                                   dtype=float)
            Mi = self.kronecker_preconditioner(stats, noise_var, ridge) if precondition else None
            v, info = scipy.sparse.linalg.cg(A, rhs.ravel(), x0=self.V0.ravel(), rtol=rtol, atol=0.0,
                                             maxiter=maxiter or 10 * n, M=Mi)
            V = v.reshape(shape)
        if return_gradient:  # op(V0): kept from the solve's first product
            return V[:, :-1].copy(), V[:, -1].copy(), rhs - op(self.V0)
        return V[:, :-1].copy(), V[:, -1].copy()

    def kronecker_preconditioner(self, stats, noise_var, ridge=0.0):
        """The inverse of a Kronecker-factored approximation of the normal equations' operator.

        The operator is ``sum_w N_w (x) K_w`` with ``K_w = F_w^T P F_w``
        (:meth:`update`). It is approximated by ``Nbar (x) Kbar``:
        ``Nbar = sum_w N_w`` and ``Kbar`` the mean of the ``K_w`` weighted by
        ``trace N_w``, with the layers after k at their weighted mean unit
        slopes and layer k's own slopes through their weighted second moments:
        ``Kbar = (Fbar^T P Fbar) * sum_w s_w q_w q_w^T``. Both factors are
        ``H x H``-sized (no region dimension), so building it costs two
        symmetric eigendecompositions and applying it four GEMMs; it is exact
        where every region with weight has the same pattern (a ridge enters as
        ``ridge I``, the bias included, where the operator leaves the bias out).

        Parameters
        ----------
        stats : SufficientStats
        noise_var : ndarray, shape (D,)
        ridge : float, default 0

        Returns
        -------
        scipy.sparse.linalg.LinearOperator
            ``V.ravel() -> (Kbar^-1 V Nbar^-1).ravel()``, the Kronecker product's
            inverse with its eigenvalues ``kbar_i nbar_j`` raised by 1e-10 of the
            largest (a positive definite preconditioner where a factor is singular:
            a unit off in every region, say).
        """
        import scipy.sparse.linalg

        gen, k = self.generator, self.k
        L = gen.n_layers
        prec = 1.0 / np.asarray(noise_var, float)
        P = np.matmul(self.Gh, _zh_sums(stats))  # (R, C, S+1)
        Nbar = np.tensordot(P, self.Gh, axes=([0, 2], [0, 2]))
        Nbar = 0.5 * (Nbar + Nbar.T)
        s = np.einsum("rcs,rcs->r", P, self.Gh)  # trace N_w
        s = s / s.sum() if s.sum() > 0 else np.full(len(s), 1.0 / len(s))
        Fbar = gen.weights[L - 1] if k < L - 1 else np.eye(len(prec))  # the output layer: F_w = I
        for j in range(L - 2, k, -1):  # the layers after k at their weighted mean slopes
            Fbar = (Fbar * (s @ self.q[j])[None, :]) @ gen.weights[j]
        Kbar = (Fbar.T * prec[None, :]) @ Fbar
        if k < L - 1:
            Kbar *= (self.q[k] * s[:, None]).T @ self.q[k]
        Kbar = 0.5 * (Kbar + Kbar.T)
        a, U = np.linalg.eigh(Nbar)
        b, Vk = np.linalg.eigh(Kbar)
        # the factors' eigenvectors diagonalise Kbar (x) Nbar + ridge I: the ridge as if the bias had it too
        den = np.outer(np.maximum(b, 0.0), np.maximum(a, 0.0)) + ridge
        top = den.max()
        den += 1e-10 * top if top > 0 else 1.0
        shape = self.V0.shape

        def apply(r):
            return (Vk @ ((Vk.T @ r.reshape(shape) @ U) / den) @ U.T).ravel()

        n = self.V0.size
        return scipy.sparse.linalg.LinearOperator((n, n), matvec=apply, dtype=float)

    def _dense_is_cheap(self):
        R, C = self.Gh.shape[0], self.Gh.shape[1]
        H, D = self.V0.shape[0], len(self.f[0])
        return R * H * H * C * C <= 2e8 and 8 * (R * D * H + (H * C) ** 2) <= 64 * 2**20

    def _dense_operator(self, stats, noise_var, ridge=0.0):
        """The normal equations' operator as a matrix on ``V.ravel()``:
        ``M[(h, k), (g, j)] = sum_w (F_w^T P F_w)[h, g] N_w[j, k]``."""
        H = self.V0.shape[0]
        prec = 1.0 / np.asarray(noise_var, float)
        F = self.apply_F(np.broadcast_to(np.eye(H), (len(self.Gh), H, H)))  # (R, D, H)
        K = np.einsum("rdh,d,rdg->rhg", F, prec, F)
        N = np.matmul(np.matmul(self.Gh, _zh_sums(stats)), np.swapaxes(self.Gh, 1, 2))
        C = N.shape[1]
        M = np.einsum("rhg,rjk->hkgj", K, N).reshape(H * C, H * C)
        if ridge > 0:
            idx = (np.arange(H)[:, None] * C + np.arange(C - 1)[None, :]).ravel()
            M[idx, idx] += ridge
        return M

    def _normal_equations(self, stats, noise_var, ridge=0.0):
        """``(op, rhs)``: the frozen-mask Q's normal equations ``op(V) = rhs`` in V,
        ``op(V) = sum_w F_w^T P F_w V N_w (+ ridge W)``, ``dQ/dV = rhs - op(V)``."""
        prec = 1.0 / np.asarray(noise_var, float)
        ZG = np.matmul(_zh_sums(stats), np.swapaxes(self.Gh, 1, 2))  # (R, S+1, H_{k-1}+1)

        R, m = ZG.shape[0], ZG.shape[1]
        ZG = ZG.reshape(R * m, -1)

        at_v0 = []  # op(V0), once: CG's residual from V0 and the gradient's product

        def op(V):
            current = np.array_equal(V, self.V0)
            if current and at_v0:
                return at_v0[0].copy()
            if current:  # F_w V0 Gh_w was formed with the layer
                Y = self._M0 * prec[:, None, None]
            else:
                Y = self._F(self._VG(V))
                Y *= prec[:, None, None]
            out = self._FT(Y).reshape(len(V), R * m) @ ZG
            if ridge > 0:
                out[:, :-1] += ridge * V[:, :-1]
            if current:
                at_v0.append(out.copy())
            return out

        t = np.concatenate([stats.T1, stats.T0[:, None]], axis=1)  # E[zh]_w
        # sum_n E[(x - f_w) zh^T], from the centred sums: (x - m) - (f_w - m)
        XZ = (np.concatenate([stats.Txz_c, stats.Tx_c[:, :, None]], axis=2)
              - (self.f - stats.shift)[:, :, None] * t[:, None, :])
        XZ = np.ascontiguousarray((XZ * prec[None, :, None]).transpose(1, 0, 2))
        rhs = self._FT(XZ).reshape(-1, R * m) @ np.swapaxes(self.Gh, 1, 2).reshape(R * m, -1)
        return op, rhs

    def gradient(self, stats, noise_var):
        """``dQ/dV`` at the current parameters: by Fisher's identity the exact
        gradient of ``sum_n log p(x_n)`` in layer k's ``[W c]`` (docs/mathematics.md, section 9).

        Returns
        -------
        dW : ndarray, shape (H_k, H_{k-1})
        dc : ndarray, shape (H_k,)
        """
        op, rhs = self._normal_equations(stats, noise_var)
        G = rhs - op(self.V0)
        return G[:, :-1], G[:, -1]
