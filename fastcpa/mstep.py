"""Closed-form M-step pieces of exact EM (DESIGN 2.5).

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

__all__ = ["hidden_maps", "output_layer_update"]


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
    S = generator.latent_dim
    R = partition.n_regions
    G = np.broadcast_to(np.eye(S), (R, S, S))
    g = np.zeros((R, S))
    bits = partition.code_bits() if generator.n_layers > 1 else None
    start = 0
    for W, c, eta in zip(generator.weights[:-1], generator.biases[:-1], generator.slopes):
        width = W.shape[0]
        on = bits[:, start:start + width]
        start += width
        q = np.where(on, 1.0, eta)  # the unit's slope in each region
        G = q[:, :, None] * np.matmul(W, G)
        g = q * (g @ W.T + c)
    return np.ascontiguousarray(G), g


def output_layer_update(stats, generator, partition, *, ridge=0.0):
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
    G, g = hidden_maps(generator, partition)
    R, H, S = G.shape
    Gh = np.zeros((R, H + 1, S + 1))
    Gh[:, :H, :S] = G
    Gh[:, :H, S] = g
    Gh[:, H, S] = 1.0
    Zh = np.empty((R, S + 1, S + 1))
    Zh[:, :S, :S] = stats.T2
    Zh[:, :S, S] = stats.T1
    Zh[:, S, :S] = stats.T1
    Zh[:, S, S] = stats.T0
    P = np.matmul(Gh, Zh)  # (R, H+1, S+1)
    M = np.einsum("rhs,rks->hk", P, Gh)
    M = 0.5 * (M + M.T)
    XZ = np.concatenate([stats.Txz, stats.Tx[:, :, None]], axis=2)  # (R, D, S+1)
    C = np.einsum("rds,rhs->dh", XZ, Gh)
    if ridge > 0:
        M[:H, :H] += ridge * np.eye(H)
    theta = scipy.linalg.lstsq(M, C.T, cond=None, lapack_driver="gelsd")[0].T  # M symmetric
    return theta[:, :H], theta[:, H]
