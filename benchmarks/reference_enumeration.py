"""Slow-but-right reference enumeration of the affine regions of a CPA generator.

This is a deliberately plain baseline, written the way research code usually
does it: a breadth-first search over sign codes that solves small linear
programs with ``scipy.optimize.linprog(method="highs")``. It is used as
ground truth in tests and as the "before" number in benchmarks. It is not
part of the ``fastcpa`` package and does not import it.

Conventions
-----------
* ``weights[l]`` has shape ``(out, in)``, ``biases[l]`` shape ``(out,)``.
  The last layer is the affine output layer; every earlier layer is hidden
  and applies ``act(u) = u if u >= 0 else eta * u`` with per-unit ``eta``
  (``slopes[l]``, an array or a scalar). ReLU is ``eta = 0``, leaky ReLU
  ``0 < eta < 1``, absolute value ``eta = -1``.
* A unit with ``eta == 1`` is linear: it never splits space and does not
  appear in codes or constraints. All other units are *switching* units.
* A code is a boolean vector over the switching units, in layer order
  (``on`` means pre-activation ``u >= 0``). The region of a code is the set of
  ``z`` whose forward pass produces that code; it is the convex polyhedron
  ``{z : s_k (a_k . z + beta_k) >= 0}`` where ``(a_k, beta_k)`` is unit ``k``'s
  pre-activation as an affine function of ``z`` under the code's masks of the
  earlier layers and ``s_k = +1`` (on) or ``-1`` (off).

Algorithm
---------
1. Start at the code of ``z = 0`` (or of a nearby random point if ``z = 0``
   lies on a boundary).
2. For each dequeued code: build its affine maps, solve one Chebyshev-centre
   LP (maximise ``t`` subject to ``s_k(a_k z + beta_k) >= t ||a_k||``,
   ``t <= 1``) to confirm it is full-dimensional (``t* > tol``) and to get a
   strictly interior point, and record ``A``, ``b``.
3. For every switching unit ``k`` of the region, solve one more LP: the
   Chebyshev centre of the candidate facet ``F_k = region ∩ {a_k z + beta_k = 0}``
   (the other constraints kept with margin ``t``). ``t* > tol`` means the
   facet is ``(S-1)``-dimensional, i.e. not redundant. Step from that facet
   point a short distance across the hyperplane, take the code there by a
   plain forward pass (so deeper-layer bits are re-derived, not guessed),
   check that the new code's region has the facet point in its closure
   (otherwise halve the step), and enqueue the code if unseen.

Every full-dimensional region is connected to every other one through
facets, so the search is complete (up to LP tolerances) when the queue runs
dry. Cost: ``1 + n_units`` LPs per region.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np
from scipy.optimize import linprog

__all__ = ["enumerate_regions_lp", "forward", "forward_codes", "affine_maps"]


# ---------------------------------------------------------------------------
# network helpers
# ---------------------------------------------------------------------------

def _prepare(weights, biases, slopes):
    weights = [np.asarray(W, dtype=np.float64) for W in weights]
    biases = [np.asarray(c, dtype=np.float64).reshape(-1) for c in biases]
    if len(weights) < 1 or len(weights) != len(biases):
        raise ValueError("need as many bias vectors as weight matrices (>= 1)")
    n_hidden = len(weights) - 1
    if len(slopes) != n_hidden:
        raise ValueError(f"need {n_hidden} slope arrays (one per hidden layer), got {len(slopes)}")
    etas = []
    for l in range(n_hidden):
        W, c = weights[l], biases[l]
        if W.ndim != 2 or c.shape[0] != W.shape[0]:
            raise ValueError(f"layer {l}: bad shapes {W.shape}, {c.shape}")
        if weights[l + 1].shape[1] != W.shape[0]:
            raise ValueError(f"layer {l + 1}: input width {weights[l + 1].shape[1]} != {W.shape[0]}")
        eta = np.broadcast_to(np.asarray(slopes[l], dtype=np.float64), (W.shape[0],)).copy()
        etas.append(eta)
    if weights[-1].shape[0] != biases[-1].shape[0]:
        raise ValueError("output layer: bad bias shape")
    return weights, biases, etas


def forward(weights, biases, slopes, Z):
    """Plain forward pass. ``Z`` is ``(N, S)`` (or ``(S,)``); returns ``(N, D)``."""
    weights, biases, etas = _prepare(weights, biases, slopes)
    H = np.atleast_2d(np.asarray(Z, dtype=np.float64))
    for l in range(len(weights) - 1):
        U = H @ weights[l].T + biases[l]
        H = np.where(U >= 0, U, etas[l] * U)
    return H @ weights[-1].T + biases[-1]


def forward_codes(weights, biases, slopes, Z):
    """Sign codes (``u >= 0``) of the switching units at points ``Z`` ``(N, S)``."""
    weights, biases, etas = _prepare(weights, biases, slopes)
    H = np.atleast_2d(np.asarray(Z, dtype=np.float64))
    parts = []
    for l in range(len(weights) - 1):
        U = H @ weights[l].T + biases[l]
        on = U >= 0
        parts.append(on[:, etas[l] != 1.0])
        H = np.where(on, U, etas[l] * U)
    if not parts:
        return np.zeros((H.shape[0], 0), dtype=bool)
    return np.concatenate(parts, axis=1)


def _affine_maps(weights, biases, etas, switch_idx, code):
    """Pre-activation rows of all switching units and the final map for ``code``.

    Returns ``(a, beta, layer_of_unit, A, b)`` with ``a`` ``(n_units, S)``.
    """
    S = weights[0].shape[1]
    M = np.eye(S)
    c = np.zeros(S)
    a_rows, beta_rows, layer_of = [], [], []
    pos = 0
    for l in range(len(weights) - 1):
        pre_a = weights[l] @ M
        pre_b = weights[l] @ c + biases[l]
        idx = switch_idx[l]
        a_rows.append(pre_a[idx])
        beta_rows.append(pre_b[idx])
        layer_of.append(np.full(idx.size, l))
        factor = np.ones(pre_b.shape[0])
        bits = code[pos:pos + idx.size]
        factor[idx] = np.where(bits, 1.0, etas[l][idx])
        pos += idx.size
        M = factor[:, None] * pre_a
        c = factor * pre_b
    A = weights[-1] @ M
    b = weights[-1] @ c + biases[-1]
    if a_rows:
        a = np.concatenate(a_rows, axis=0)
        beta = np.concatenate(beta_rows)
        layer_of = np.concatenate(layer_of)
    else:
        a = np.zeros((0, S))
        beta = np.zeros(0)
        layer_of = np.zeros(0, dtype=int)
    return a, beta, layer_of, A, b


def affine_maps(weights, biases, slopes, code):
    """Public wrapper: ``(a, beta, A, b)`` for a code over the switching units."""
    weights, biases, etas = _prepare(weights, biases, slopes)
    switch_idx = [np.flatnonzero(e != 1.0) for e in etas]
    a, beta, _, A, b = _affine_maps(weights, biases, etas, switch_idx,
                                    np.asarray(code, dtype=bool))
    return a, beta, A, b


# ---------------------------------------------------------------------------
# LPs
# ---------------------------------------------------------------------------

def _chebyshev(G, h, S, radius, eq=None):
    """Maximise t s.t. G z + h >= t (rows of G unit-norm), t <= 1, optional box
    |z_i| <= radius - t and optional equality eq = (g, h0): g.z + h0 = 0.

    Returns (t*, z*). The LP is always feasible (t is unbounded below).
    """
    m = G.shape[0]
    rows = [np.hstack([-G, np.ones((m, 1))])]
    rhs = [h]
    if radius is not None:
        I = np.eye(S)
        rows.append(np.hstack([I, np.ones((S, 1))]))
        rows.append(np.hstack([-I, np.ones((S, 1))]))
        rhs.append(np.full(2 * S, float(radius)))
    A_ub = np.vstack(rows)
    b_ub = np.concatenate(rhs)
    cost = np.zeros(S + 1)
    cost[-1] = -1.0
    kw = {}
    if eq is not None:
        g, h0 = eq
        kw["A_eq"] = np.append(g, 0.0)[None, :]
        kw["b_eq"] = np.array([-h0])
    if A_ub.shape[0] == 0:
        A_ub = b_ub = None
    bounds = [(None, None)] * S + [(None, 1.0)]
    res = linprog(cost, A_ub=A_ub, b_ub=b_ub, bounds=bounds, method="highs", **kw)
    if res.status != 0 or res.x is None:
        return -np.inf, None
    return float(res.x[-1]), np.asarray(res.x[:S], dtype=np.float64)


# ---------------------------------------------------------------------------
# enumeration
# ---------------------------------------------------------------------------

def enumerate_regions_lp(weights, biases, slopes, *, max_regions=None, radius=None,
                         tol=1e-9, seed=0, time_budget=None):
    """Enumerate all full-dimensional regions by BFS with one LP per region and
    one LP per (region, switching unit) facet candidate.

    Parameters
    ----------
    weights, biases, slopes : see module docstring.
    max_regions : stop once this many regions have been recorded.
    radius : if given, only regions meeting the open box ``|z_i| < radius``.
    tol : a region (facet) is full-dimensional iff its Chebyshev radius ``t* > tol``.
    time_budget : optional wall-clock budget in seconds (checked per region).

    Returns
    -------
    dict with ``codes`` (R, n_units) bool, ``A`` (R, D, S), ``b`` (R, D),
    ``interior`` (R, S) strictly interior points (Chebyshev centres),
    ``inradius`` (R,) the Chebyshev radius (capped at 1), ``units`` (n_units, 2)
    ``(layer, index)`` of each code bit, ``complete`` bool, ``n_lp`` int,
    ``seconds`` float.
    """
    t_start = time.perf_counter()
    weights, biases, etas = _prepare(weights, biases, slopes)
    S = weights[0].shape[1]
    D = weights[-1].shape[0]
    switch_idx = [np.flatnonzero(e != 1.0) for e in etas]
    units = np.array([(l, j) for l, idx in enumerate(switch_idx) for j in idx],
                     dtype=int).reshape(-1, 2)
    n_units = units.shape[0]
    rng = np.random.default_rng(seed)
    n_lp = 0

    def code_at(z):
        return forward_codes(weights, biases, etas, z[None, :])[0]

    def constraints(code):
        a, beta, layer_of, A, b = _affine_maps(weights, biases, etas, switch_idx, code)
        s = np.where(code, 1.0, -1.0)
        norms = np.linalg.norm(a, axis=1)
        # rows with a_k == 0 are constant in z; their sign is fixed by the code
        # (codes come from forward passes, so they are consistent) -> drop them.
        active = norms > 1e-12 * (1.0 + np.abs(beta))
        G = np.zeros_like(a)
        h = np.zeros_like(beta)
        G[active] = (s[active, None] * a[active]) / norms[active, None]
        h[active] = s[active] * beta[active] / norms[active]
        return G, h, active, A, b

    def in_closure(code, z, scale):
        G, h, active, _, _ = constraints(code)
        slack = G[active] @ z + h[active]
        return bool(np.all(slack >= -1e-7 * scale))

    # --- starting region ---------------------------------------------------
    z0 = np.zeros(S)
    start = None
    for attempt in range(50):
        code = code_at(z0)
        G, h, active, _, _ = constraints(code)
        t, zc = _chebyshev(G[active], h[active], S, radius)
        n_lp += 1
        if t > tol:
            start = code
            break
        z0 = rng.normal(scale=1e-3 * (1 + attempt), size=S)
        if radius is not None:
            z0 = np.clip(z0, -0.5 * radius, 0.5 * radius)
    if start is None:
        raise RuntimeError("could not find a full-dimensional starting region")

    def key(code):
        return np.packbits(code).tobytes()

    seen = {key(start)}
    queue = deque([start])
    codes_out, A_out, b_out, int_out, rad_out = [], [], [], [], []
    complete = True

    while queue:
        if max_regions is not None and len(codes_out) >= max_regions:
            complete = False
            break
        if time_budget is not None and time.perf_counter() - t_start > time_budget:
            complete = False
            break
        code = queue.popleft()
        G, h, active, A, b = constraints(code)
        Ga, ha = G[active], h[active]
        t, zc = _chebyshev(Ga, ha, S, radius)
        n_lp += 1
        if not t > tol:
            # lower-dimensional code (should not happen: enqueued codes are
            # checked); ignore it.
            continue
        codes_out.append(code.copy())
        A_out.append(A)
        b_out.append(b)
        int_out.append(zc)
        rad_out.append(t)

        act_idx = np.flatnonzero(active)
        Gn = np.hstack([Ga, ha[:, None]])  # oriented, normalised hyperplanes
        for r, k in enumerate(act_idx):
            # constraints sharing unit k's hyperplane (same orientation) would
            # force t <= 0 on the facet; they are crossed together with k.
            same = np.all(np.abs(Gn - Gn[r]) <= 1e-9 * (1 + np.abs(Gn[r])), axis=1)
            keep = ~same
            t_f, zf = _chebyshev(Ga[keep], ha[keep], S, radius, eq=(Ga[r], ha[r]))
            n_lp += 1
            if not t_f > tol:
                continue  # redundant / lower-dimensional facet
            direction = -Ga[r]  # unit normal pointing out of the region
            scale = 1.0 + np.linalg.norm(zf)
            eps = 0.5 * t_f
            new = None
            for _ in range(60):
                zp = zf + eps * direction
                cand = code_at(zp)
                if cand[k] != code[k] and in_closure(cand, zf, scale):
                    new = cand
                    break
                eps *= 0.5
                if eps < 1e-13 * scale:
                    break
            if new is None:
                continue
            kk = key(new)
            if kk in seen:
                continue
            seen.add(kk)
            queue.append(new)

    R = len(codes_out)
    return {
        "codes": np.array(codes_out, dtype=bool).reshape(R, n_units),
        "A": np.array(A_out, dtype=np.float64).reshape(R, D, S),
        "b": np.array(b_out, dtype=np.float64).reshape(R, D),
        "interior": np.array(int_out, dtype=np.float64).reshape(R, S),
        "inradius": np.array(rad_out, dtype=np.float64),
        "units": units,
        "complete": bool(complete),
        "n_lp": int(n_lp),
        "seconds": time.perf_counter() - t_start,
    }


# ---------------------------------------------------------------------------
# timing entry point
# ---------------------------------------------------------------------------

def torch_like_init(widths, rng, eta=0.0):
    """uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) weights and biases (torch Linear default)."""
    Ws, bs = [], []
    for fin, fout in zip(widths[:-1], widths[1:]):
        bound = 1.0 / np.sqrt(fin)
        Ws.append(rng.uniform(-bound, bound, size=(fout, fin)))
        bs.append(rng.uniform(-bound, bound, size=fout))
    slopes = [np.full(w, float(eta)) for w in widths[1:-1]]
    return Ws, bs, slopes


def _main():
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-regions", type=int, default=None)
    p.add_argument("--time-budget", type=float, default=50.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    cases = {
        "(a) S=1, 3x64 ReLU": [1, 64, 64, 64, 2],
        "(b) S=2, 1x64 ReLU": [2, 64, 2],
    }
    for name, widths in cases.items():
        W, c, e = torch_like_init(widths, rng)
        out = enumerate_regions_lp(W, c, e, max_regions=args.max_regions,
                                   time_budget=args.time_budget)
        R = out["codes"].shape[0]
        print(f"{name}: {R} regions in {out['seconds']:.2f} s "
              f"({R / out['seconds']:.1f} regions/s, {out['n_lp']} LPs, "
              f"complete={out['complete']})")


if __name__ == "__main__":
    _main()
