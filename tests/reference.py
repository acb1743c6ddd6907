"""Naive reference implementations used as test oracles.

Nothing here calls fastcpa's kernels: the oracles are plain NumPy / SciPy.
"""

import numpy as np
from scipy.optimize import linprog


def init_layers(rng, sizes, scale="torch"):
    """Random weights/biases for layer sizes [S, h1, ..., D] (torch's default uniform init)."""
    Ws, cs = [], []
    for a, b in zip(sizes[:-1], sizes[1:]):
        if scale == "torch":
            k = 1.0 / np.sqrt(a)
            Ws.append(rng.uniform(-k, k, size=(b, a)))
            cs.append(rng.uniform(-k, k, size=b))
        else:
            Ws.append(rng.normal(size=(b, a)))
            cs.append(rng.normal(size=b))
    return Ws, cs


def forward_codes(weights, biases, slopes, Z):
    """Sign codes (u >= 0) of every switching hidden unit at the rows of Z, by a plain forward pass."""
    h = np.asarray(Z, float)
    out = []
    for W, c, eta in zip(weights[:-1], biases[:-1], slopes):
        u = h @ W.T + c
        out.append((u >= 0) & (eta != 1.0))
        h = np.where(u >= 0, u, eta * u)
    return np.concatenate(out, axis=1) if out else np.zeros((len(h), 0), bool)


def sample_latent(rng, S, n, radii=(1.0, 3.0, 10.0, 1e2, 1e3, 1e4, 1e5)):
    """Points spread over R^S from the origin out to large radii (Gaussian shells and directions)."""
    parts = [rng.normal(size=(n, S)) * r for r in radii]
    dirs = rng.normal(size=(n, S))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    parts += [dirs * r for r in radii]
    return np.concatenate(parts)


def unique_codes(codes):
    """Set of code rows as bytes."""
    return {row.tobytes() for row in np.packbits(codes, axis=1)}


def facet_is_nonredundant(normals, offsets, f):
    """LP oracle: facet f of {z : N z + o >= 0} is non-redundant iff some point on its
    hyperplane satisfies every other inequality strictly (Chebyshev-style margin t > 0)."""
    n, S = normals.shape
    others = [g for g in range(n) if g != f]
    # variables (z, t): maximise t  s.t.  -(N_g z + o_g) + t <= 0,  N_f z + o_f = 0,  t <= 1
    c = np.zeros(S + 1)
    c[-1] = -1.0
    A_ub = np.hstack([-normals[others], np.ones((len(others), 1))]) if others else None
    b_ub = offsets[others] if others else None
    A_eq = np.hstack([normals[f:f + 1], np.zeros((1, 1))])
    b_eq = -offsets[f:f + 1]
    bounds = [(None, None)] * S + [(None, 1.0)]
    res = linprog(c, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=b_eq, bounds=bounds, method="highs")
    return res.status == 0 and -res.fun > 1e-9


def interior_point(part, r):
    """A point strictly inside region r, from its geometry (interval / polygon)."""
    if part.latent_dim == 1:
        lo, hi = part.intervals[r]
        if np.isfinite(lo) and np.isfinite(hi):
            return np.array([0.5 * (lo + hi)])
        if np.isfinite(lo):
            return np.array([lo + 1.0 + abs(lo)])
        if np.isfinite(hi):
            return np.array([hi - 1.0 - abs(hi)])
        return np.array([0.0])
    B = part.boundary[part.boundary_ptr[r]:part.boundary_ptr[r + 1]]
    finite, ideal = B[B[:, 2] == 1.0, :2], B[B[:, 2] == 0.0, :2]
    p = finite.mean(axis=0) if len(finite) else np.zeros(2)
    if len(ideal):
        # the mean ideal direction points into the recession cone (zero for a strip,
        # whose finite points already straddle it)
        scale = 1.0 + (np.abs(finite).max() if len(finite) else 0.0)
        p = p + ideal.mean(axis=0) * scale
    return p
