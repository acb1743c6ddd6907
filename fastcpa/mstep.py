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

from ._threads import matmul, matmul_tn

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
    lv = _Levels(generator, partition)
    L, S = generator.n_layers, generator.latent_dim
    T = lv.to_regions(_input_maps(generator, lv, L - 1), L - 2)  # (R, S+1, H)
    return np.ascontiguousarray(T[:, :S, :].transpose(0, 2, 1)), np.ascontiguousarray(T[:, S, :])


class _Levels:
    """A partition's regions sorted by activation pattern and grouped layer by layer.

    Sorted lexicographically (layer 0's units first), the regions that share the
    patterns of layers ``0..j`` form a run, for every ``j``: the level-j groups. A
    quantity that depends on those layers' patterns only (the map to ``h_j``, a
    product pushed through layers ``k..j``) is the same across a level-j group, so
    it is computed once per group: on ``[1, 1024, 1024, 1024, 64]`` there are
    1,025, 2,064 and 3,120 groups at levels 0, 1, 2, so the 1024 x 1024 products
    of the layers after the first act on a third and two thirds of the regions.
    Going to a finer level repeats a group's rows (:meth:`expand`); the adjoint
    sums runs of rows (:meth:`reduce`). Level -1 is one group, every region;
    level ``L - 1`` (``L`` layers) is the regions themselves, in sorted order
    (``order[i]`` is the partition's index of sorted region ``i``).
    """

    def __init__(self, generator, partition):
        R, L = partition.n_regions, generator.n_layers
        self.R, self.L = R, L
        bits = partition.code_bits() if L > 1 else np.zeros((R, 0), dtype=bool)
        if bits.shape[1] and R > 1:
            packed = np.ascontiguousarray(np.packbits(bits, axis=1))
            # a void scalar compares as bytes: one sort of the packed codes, not one per byte
            self.order = np.argsort(packed.view(np.dtype((np.void, packed.shape[1]))).ravel(), kind="stable")
        else:
            self.order = np.arange(R)
        sb = bits[self.order]
        self._gid = {-1: np.zeros(R, dtype=np.int64), L - 1: np.arange(R)}
        self.q = {}  # level j: layer j's unit slopes per group, (G_j, H_j)
        new = np.zeros(max(R - 1, 0), dtype=bool)
        start = 0
        for j, (W, eta) in enumerate(zip(generator.weights[:-1], generator.slopes)):
            H = W.shape[0]
            new |= np.any(sb[1:, start:start + H] != sb[:-1, start:start + H], axis=1)
            self._gid[j] = np.concatenate([[0], np.cumsum(new)])
            self.q[j] = np.where(sb[np.flatnonzero(np.concatenate([[True], new])), start:start + H], 1.0, eta)
            start += H
        self._up, self._runs, self._qat, self._runcache = {}, {}, {}, {}

    def size(self, j):
        """Number of groups at level ``j``."""
        return int(self._gid[j][-1]) + 1 if self.R else 0

    def up(self, a, b):
        """For each level-b group (``b > a``), the level-a group that holds it."""
        if (a, b) not in self._up:
            g = self._gid[b]
            first = np.flatnonzero(np.concatenate([[True], g[1:] != g[:-1]]))
            self._up[a, b] = self._gid[a][first]
        return self._up[a, b]

    def expand(self, X, a, b):
        """Rows per level-a group (axis 0) -> rows per level-b group: ``X`` itself
        where nothing splits (``b <= a``, or as many groups)."""
        if b <= a or self.size(a) == self.size(b):
            return X
        return X[self.up(a, b)]

    def reduce(self, X, b, a):
        """Rows per level-b group -> their sums per level-a group (``a < b``; ``X``
        itself where nothing merges)."""
        if b <= a or self.size(a) == self.size(b):
            return X
        if self.size(a) == 1:
            return X.sum(axis=0, keepdims=True)
        from fastcpa.kernels.cpu.runs import sum_runs

        if (a, b) not in self._runs:
            u = self.up(a, b)
            self._runs[a, b] = np.concatenate([[0], np.flatnonzero(u[1:] != u[:-1]) + 1, [len(u)]]).astype(np.int64)
        out = np.empty((self.size(a),) + X.shape[1:])
        sum_runs(np.ascontiguousarray(X).reshape(len(X), -1), self._runs[a, b], out.reshape(len(out), -1))
        return out

    def sum_rows(self, X, off):
        """``X[off[i]:off[i + 1]].sum(axis=0)`` for each i (``off`` int64, from 0 to ``len(X)``)."""
        from fastcpa.kernels.cpu.runs import sum_runs

        out = np.empty((len(off) - 1,) + X.shape[1:])
        sum_runs(np.ascontiguousarray(X).reshape(len(X), -1), off, out.reshape(len(out), -1))
        return out

    def runs(self, j):
        """Level j's groups as runs along which a product changes by a few columns, or None.

        Within a level-(j-1) group, the level-j groups' inputs ``q_g * a`` (``a`` their
        parent's pre-activations) differ from the previous group's in the units whose
        slope changed: on an S = 1 net each boundary flips one unit, so ``M (q_g * a)``
        is the previous product plus one column of ``M`` per flip
        (``kernels.cpu.runs``). A run starts at an anchor, whose product is a GEMM row:
        a parent's first group, a group where more than 1/8 of the units changed, and
        every ``_RUN_LENGTH``-th group (each step adds a rounding of the size of its
        terms, so chains stay short). None where runs would save under a quarter of
        the GEMM rows.
        """
        if j not in self._runcache:
            q = self.q[j]
            G, H = q.shape
            par = self.up(j - 1, j) if self.size(j - 1) < G else np.arange(G)
            d = q[1:] - q[:-1]
            cheap = (par[1:] == par[:-1]) & (np.count_nonzero(d, axis=1) * 8 <= H)
            anchor = np.ones(G, dtype=bool)
            anchor[1:] = ~cheap
            since = 0
            for g in range(G):  # chains at most _RUN_LENGTH long
                since = 0 if anchor[g] else since + 1
                if since >= _RUN_LENGTH:
                    anchor[g], since = True, 0
            start = np.flatnonzero(anchor)
            if len(start) > 0.75 * G:
                self._runcache[j] = None
            else:
                d[anchor[1:]] = 0.0
                rows, unit = np.nonzero(d)
                ptr = np.zeros(G + 1, dtype=np.int64)
                np.add.at(ptr, rows + 2, 1)  # group rows + 1 changes: counts into ptr[g + 1]
                ptr = np.cumsum(ptr)
                rp = par[start]
                self._runcache[j] = dict(
                    start=start.astype(np.int64), end=np.append(start[1:], G).astype(np.int64), ptr=ptr,
                    unit=unit.astype(np.int64), dq=d[rows, unit], parent=par.astype(np.int64),
                    rows=np.append(start, G).astype(np.int64),
                    parents=np.concatenate([[0], np.flatnonzero(rp[1:] != rp[:-1]) + 1, [len(rp)]]).astype(np.int64))
        return self._runcache[j]

    def q_at(self, j, level):
        """Layer j's unit slopes per group of a level ``>= j``."""
        if (j, level) not in self._qat:
            self._qat[j, level] = self.expand(self.q[j], j, level)
        return self._qat[j, level]

    def to_regions(self, X, a):
        """Rows per level-a group -> rows per region, in the partition's order."""
        Y = self.expand(X, a, self.L - 1)
        out = np.empty_like(Y)
        out[self.order] = Y
        return out


# Longest chain of products derived from an anchor's (_Levels.runs).
_RUN_LENGTH = 32


def _input_maps(generator, levels, k):
    """Layer k's input per level-(k-1) group: ``T`` (G, S+1, H_{k-1}) with ``T[g, :S]``
    the slope and ``T[g, S]`` the offset of ``h_{k-1} = T[g, :S]^T z + T[g, S]``
    (``z`` itself for k = 0). Group-major, so each layer is one GEMM over the groups."""
    return _input_and_pre(generator, levels, k)[0]


def _input_and_pre(generator, levels, k):
    """``(T, pre)``: :func:`_input_maps`, and for k >= 1 layer k-1's pre-activation maps
    per level-(k-2) group, ``T = q_{k-1} * pre`` (None for k = 0)."""
    S = generator.latent_dim
    T = np.eye(S + 1)[None, :, :S]
    pre = None
    for j in range(k):
        G = T.shape[0]
        pre = matmul(T.reshape(G * (S + 1), -1), generator.weights_t[j]).reshape(G, S + 1, -1)
        pre[:, S, :] += generator.biases[j]
        T = levels.expand(pre, j - 1, j) * levels.q[j][:, None, :]
    return np.ascontiguousarray(T), pre


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
    D = stats.Tx_c.shape[1]
    # Gh_r^T, (R, S+1, H+1): the sums over regions below are each one product of
    # R (S+1) rows (einsum loops took 1 s at 256 x 767; tensordot copied both operands)
    GhT = np.zeros((R, S + 1, H + 1))
    GhT[:, :S, :H] = G.transpose(0, 2, 1)
    GhT[:, S, :H] = g
    GhT[:, S, H] = 1.0
    P = np.matmul(_zh_sums(stats), GhT)  # Zh_r Gh_r^T (Zh_r symmetric)
    M = matmul_tn(GhT.reshape(R * (S + 1), H + 1), P.reshape(R * (S + 1), H + 1))  # sum_r Gh_r Zh_r Gh_r^T
    M = 0.5 * (M + M.T)
    # the centred samples' sums: the bias comes out relative to their mean (no |mean|-sized rounding in W)
    XZ = np.empty((R, S + 1, D))  # (E[(x - m) zh^T] per region)^T
    XZ[:, :S, :] = stats.Txz_c.transpose(0, 2, 1)
    XZ[:, S, :] = stats.Tx_c
    C = matmul_tn(XZ.reshape(R * (S + 1), D), GhT.reshape(R * (S + 1), H + 1))  # sum_r XZ_r^T Gh_r^T
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
    ``F_w`` and ``F_w^T`` are applied to all regions at once, layer by layer, each
    product once per group of regions that shares it (:class:`_Levels`).

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
        self.levels = lv = _Levels(generator, partition)
        self._buffers = {}  # the products' outputs, reused (_gemm)
        # layer k's input per level-(k-1) group, and the pre-activations it masks
        self._T, self._pre = _input_and_pre(generator, lv, k)
        self.V0 = np.concatenate([generator.weights[k], generator.biases[k][:, None]], axis=1)
        # F_w V0 Gh_w per region (sorted, (R, S+1, D)): the part of every region's map that
        # moves with layer k; its constant row gives the downstream offsets f, and it is the
        # normal equations' product at V0 (the solve's first, the gradient's only one)
        self._M0 = self._F(self._VG(self.V0), k - 1).copy()  # (the output layer's may be a buffer)
        self._f = np.asarray(partition.b)[lv.order] - self._M0[:, S, :]

    # Products run group-major, (groups, S+1, units): each layer is one GEMM over the groups
    # of regions that share its input (a batched (R, H, m) matmul makes R small products).
    def _F(self, X, level):
        """``F_w U_w``: U given per level-``level`` group, (G, m, H_k) -> per sorted region (R, m, D),
        ``level`` either ``k - 1`` or ``L - 1`` (per region). U is overwritten."""
        gen, k, lv = self.generator, self.k, self.levels
        L = gen.n_layers
        if level < L - 1:  # per group: each product along runs (_masked)
            for j in range(k + 1, L):
                X = self._masked(j - 1, X, gen.weights_t[j], ("F", j) if j < L - 1 else None)
            return lv.expand(X, L - 2, L - 1)
        if k < L - 1:
            X *= lv.q_at(k, level)[:, None, :]
        for j in range(k + 1, L):
            G, m, H = X.shape
            # the last product (D columns) is the caller's; the wide ones reuse their buffers
            X = (self._gemm(("F", j), X.reshape(G * m, H), gen.weights_t[j]) if j < L - 1 else
                 matmul(X.reshape(G * m, H), gen.weights_t[j])).reshape(G, m, -1)
            if j < L - 1:
                X *= lv.q_at(j, level)[:, None, :]
        return X

    def _FT(self, Y, level):
        """``F_w^T Y_w``: Y per sorted region (R, m, D) -> summed over each level-``level``
        group, (G, m, H_k), ``level`` either ``k - 1`` or ``L - 1`` (per region)."""
        gen, k, lv = self.generator, self.k, self.levels
        L = gen.n_layers
        if level < L - 1:  # sum what W_j^T and the later masks treat alike, before the product
            X, at = Y, L - 1
            for j in range(L - 1, k, -1):
                X = self._masked_T(j - 1, lv.reduce(X, at, j - 1), gen.weights_t[j], ("FT", j))
                at = j - 2
            return lv.reduce(X, at, level)
        X = Y
        for j in range(L - 1, k, -1):
            G, m, H = X.shape
            X = self._gemm(("FT", j), X.reshape(G * m, H), gen.weights[j]).reshape(G, m, -1)
            X *= lv.q_at(j - 1, level)[:, None, :]
        return X

    def _masked(self, j, A, Mt, key):
        """``(q_j * A_parent) @ Mt`` per level-j group, from ``A`` (G_{j-1}, m, h) per level-(j-1)
        group (level -1: one); along runs where :meth:`_Levels.runs` has them."""
        lv = self.levels
        q, run = lv.q[j], lv.runs(j)
        if run is None:
            X = lv.expand(A, j - 1, j) * q[:, None, :]
            G, m, h = X.shape
            X = X.reshape(G * m, h)
            return (matmul(X, Mt) if key is None else self._gemm(key, X, Mt)).reshape(G, m, -1)
        a = run["start"]
        m, h = A.shape[1], A.shape[2]
        Ya = matmul((A[run["parent"][a]] * q[a][:, None, :]).reshape(-1, h), Mt).reshape(len(a), m, -1)
        Y = np.empty((len(q),) + Ya.shape[1:]) if key is None else self._buffer(key, (len(q),) + Ya.shape[1:])
        Y[a] = Ya
        from fastcpa.kernels.cpu.runs import run_products

        run_products(Y, a, run["end"], run["ptr"], run["unit"], run["dq"], run["parent"], np.ascontiguousarray(A),
                     np.ascontiguousarray(Mt))
        return Y

    def _masked_T(self, j, X, Mt, key):
        """The adjoint of :meth:`_masked`: ``sum_g q_j,g * (X_g @ Mt^T)`` over the level-j groups
        ``g`` of each level-(j-1) group, X (G_j, m, n) -> (G_{j-1}, m, h)."""
        lv = self.levels
        q, run = lv.q[j], lv.runs(j)
        G, m, n = X.shape
        if run is None:
            Z = self._gemm(key, X.reshape(G * m, n), Mt.T).reshape(G, m, -1)
            Z *= q[:, None, :]
            return lv.reduce(Z, j, j - 1)
        from fastcpa.kernels.cpu.runs import run_products_adjoint

        X = np.ascontiguousarray(X)
        a = run["start"]
        Z = matmul(lv.sum_rows(X, run["rows"]).reshape(-1, n), Mt.T).reshape(len(a), m, -1)
        Z *= q[a][:, None, :]
        run_products_adjoint(X, a, run["end"], run["ptr"], run["unit"], run["dq"], np.ascontiguousarray(Mt), Z)
        return Z if len(a) == lv.size(j - 1) else lv.sum_rows(Z, run["parents"])

    def _VG(self, V):
        """``V Gh_w`` per level-(k-1) group: (G, S+1, H_k)."""
        if self._pre is not None:
            U = self._masked(self.k - 1, self._pre, np.ascontiguousarray(V[:, :-1].T), "VG")
        else:
            T = self._T
            G, m, Hin = T.shape
            U = self._gemm("VG", T.reshape(G * m, Hin), V[:, :-1].T).reshape(G, m, -1)
        U[:, -1, :] += V[:, -1]
        return U

    def _buffer(self, key, shape):
        out = self._buffers.get(key)
        if out is None or out.shape != shape:
            out = self._buffers[key] = np.empty(shape)
        return out

    def _gemm(self, key, A, B):
        """``A @ B`` into this layer's buffer ``key``: a wide product written into fresh
        memory took 20-40% longer here (the pages are mapped on first write)."""
        return matmul(A, B, out=self._buffer(key, (A.shape[0], B.shape[1])))

    def _contract(self, X):
        """``sum_g X_g^T Gh_g^T`` over the level-(k-1) groups: X (G, m, H_k) -> (H_k, H_{k-1} + 1)."""
        T = self._T
        G, m, H = X.shape
        out = np.empty((H, T.shape[2] + 1))
        out[:, -1] = X[:, m - 1, :].sum(axis=0)
        run = self.levels.runs(self.k - 1) if self._pre is not None else None
        if run is None:
            out[:, :-1] = matmul_tn(X.reshape(G * m, H), T.reshape(G * m, -1))
            return out
        from fastcpa.kernels.cpu.runs import run_contract

        # T_g = q_g * pre_parent: the anchors' rows by a GEMM, the changes along each run after
        X = np.ascontiguousarray(X)
        a = run["start"]
        out[:, :-1] = matmul_tn(self.levels.sum_rows(X, run["rows"]).reshape(-1, H), T[a].reshape(-1, T.shape[2]))
        corr = np.zeros((T.shape[2], H))
        run_contract(X, a, run["end"], run["ptr"], run["unit"], run["dq"], run["parent"], self._pre, corr)
        out[:, :-1] += corr.T
        return out

    def _sorted(self, A):
        """Per-region rows (axis 0) in the groups' order."""
        return A[self.levels.order]

    def _unsorted(self, A):
        out = np.empty_like(A)
        out[self.levels.order] = A
        return out

    def apply_F(self, U):
        """``F_w U_w`` for all regions: U (R, H_k, m) -> (R, D, m)."""
        U = np.ascontiguousarray(self._sorted(np.asarray(U, float)).transpose(0, 2, 1))
        return self._unsorted(self._F(U, self.levels.L - 1).transpose(0, 2, 1))

    def apply_FT(self, Y):
        """``F_w^T Y_w`` for all regions: Y (R, D, m) -> (R, H_k, m)."""
        Y = np.ascontiguousarray(self._sorted(np.asarray(Y, float)).transpose(0, 2, 1))
        return self._unsorted(self._FT(Y, self.levels.L - 1).transpose(0, 2, 1))

    def maps(self, V):
        """Every region's ``(A, b)`` with layer k's parameters set to ``V`` (masks frozen)."""
        M = self._F(self._VG(V), self.k - 1)
        S = M.shape[1] - 1
        return (self._unsorted(np.ascontiguousarray(M[:, :S, :].transpose(0, 2, 1))),
                self._unsorted(M[:, S, :] + self._f))

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
            a unit off in every region, say). Two factors' inverses damped each on
            its own (two Cholesky factorisations, two products an application)
            made worse steps at width 1024: more of them were refused.
        """
        import scipy.sparse.linalg

        gen, k, lv = self.generator, self.k, self.levels
        L = gen.n_layers
        prec = 1.0 / np.asarray(noise_var, float)
        Zh = self._sorted(_zh_sums(stats))
        T = self._T
        G, m, Hin = T.shape
        # Nbar = sum_w Gh_w Zh_w Gh_w^T: Gh is the same across a level-(k-1) group
        Zg = lv.reduce(Zh, L - 1, k - 1)
        TZ = np.matmul(Zg, T)  # (G, m, Hin)
        Nbar = np.empty((Hin + 1, Hin + 1))
        Nbar[:Hin, :Hin] = matmul_tn(T.reshape(G * m, Hin), TZ.reshape(G * m, Hin))
        Nbar[:Hin, Hin] = Nbar[Hin, :Hin] = TZ[:, m - 1, :].sum(axis=0)
        Nbar[Hin, Hin] = Zg[:, m - 1, m - 1].sum()
        Nbar = 0.5 * (Nbar + Nbar.T)
        B = np.matmul(T, T.transpose(0, 2, 1))  # Gh_g^T Gh_g
        B[:, m - 1, m - 1] += 1.0
        s = np.einsum("rij,rij->r", Zh, lv.expand(B, k - 1, L - 1))  # trace N_w
        s = s / s.sum() if s.sum() > 0 else np.full(len(s), 1.0 / len(s))

        def weighted_slopes(j):  # sum_w s_w q_j,w over the level-j groups
            return lv.reduce(s[:, None], L - 1, j)[:, 0] @ lv.q[j]

        Fbar = gen.weights[L - 1] if k < L - 1 else np.eye(len(prec))  # the output layer: F_w = I
        for j in range(L - 2, k, -1):  # the layers after k at their weighted mean slopes
            Fbar = matmul(Fbar * weighted_slopes(j)[None, :], gen.weights[j])
        Kbar = matmul_tn(Fbar * prec[:, None], Fbar)
        if k < L - 1:
            sk = lv.reduce(s[:, None], L - 1, k)[:, 0]
            Kbar *= (lv.q[k] * sk[:, None]).T @ lv.q[k]
        Kbar = 0.5 * (Kbar + Kbar.T)
        a, U = np.linalg.eigh(Nbar)
        b, Vk = np.linalg.eigh(Kbar)
        # the factors' eigenvectors diagonalise Kbar (x) Nbar + ridge I: the ridge as if the bias had it too
        den = np.outer(np.maximum(b, 0.0), np.maximum(a, 0.0)) + ridge
        top = den.max()
        den += 1e-10 * top if top > 0 else 1.0
        shape = self.V0.shape

        def apply(r):
            return matmul(matmul(Vk, matmul(matmul_tn(Vk, r.reshape(shape)), U) / den), U.T).ravel()

        n = self.V0.size
        return scipy.sparse.linalg.LinearOperator((n, n), matvec=apply, dtype=float)

    def _dense_is_cheap(self):
        R, C = self.levels.R, self._T.shape[2] + 1
        H, D = self.V0.shape[0], self._f.shape[1]
        return R * H * H * C * C <= 2e8 and 8 * (R * D * H + (H * C) ** 2) <= 64 * 2**20

    def _region_Gh(self):
        """Every region's ``Gh_w`` (R, H_{k-1} + 1, S + 1), in the partition's order."""
        T = self.levels.to_regions(self._T, self.k - 1)
        R, m, Hin = T.shape
        Gh = np.zeros((R, Hin + 1, m))
        Gh[:, :Hin, :] = T.transpose(0, 2, 1)
        Gh[:, Hin, m - 1] = 1.0
        return Gh

    def _dense_operator(self, stats, noise_var, ridge=0.0):
        """The normal equations' operator as a matrix on ``V.ravel()``:
        ``M[(h, k), (g, j)] = sum_w (F_w^T P F_w)[h, g] N_w[j, k]``."""
        H = self.V0.shape[0]
        prec = 1.0 / np.asarray(noise_var, float)
        F = self.apply_F(np.broadcast_to(np.eye(H), (self.levels.R, H, H)))  # (R, D, H)
        K = np.einsum("rdh,d,rdg->rhg", F, prec, F)
        Gh = self._region_Gh()
        N = np.matmul(np.matmul(Gh, _zh_sums(stats)), np.swapaxes(Gh, 1, 2))
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
        k = self.k
        Zh = self._sorted(_zh_sums(stats))  # (R, S+1, S+1)
        at_v0 = []  # op(V0), once: CG's residual from V0 and the gradient's product

        def op(V):
            current = np.array_equal(V, self.V0)
            if current and at_v0:
                return at_v0[0].copy()
            # F_w V0 Gh_w was formed with the layer
            Y = (self._M0 if current else self._F(self._VG(V), k - 1)) * prec
            # sum_w F_w^T P F_w V Gh_w Zh_w Gh_w^T: Zh_w folded in per region, Gh_w per group
            out = self._contract(self._FT(np.matmul(Zh, Y), k - 1))
            if ridge > 0:
                out[:, :-1] += ridge * V[:, :-1]
            if current:
                at_v0.append(out.copy())
            return out

        S = Zh.shape[1] - 1
        # sum_n E[(x - f_w) zh^T], from the centred sums: (x - m) - (f_w - m); rows: zh's entries
        XZ = np.empty((len(Zh), S + 1, self._f.shape[1]))
        XZ[:, :S, :] = self._sorted(stats.Txz_c).transpose(0, 2, 1)
        XZ[:, S, :] = self._sorted(stats.Tx_c)
        XZ -= Zh[:, :, S, None] * (self._f - stats.shift)[:, None, :]
        XZ *= prec
        rhs = self._contract(self._FT(XZ, k - 1))
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
