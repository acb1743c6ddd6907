"""``CPAModel`` with a 2-D latent (S = 2): exact log p(x), posterior and moments against
oracles that do not use fastcpa's sums.

The main oracle is adaptive latent quadrature in log space (``Quad2D``), written from the
forward pass alone. The log-integrand ``f(z) = log N(z; 0, sigma_z^2 I) + log N(x; g(z), Sigma_x)``
is continuous and, wherever g is affine, a concave quadratic; g can only kink on the
partition's facet lines (geometry, used here only as candidate breakpoints). A quadtree over
a box 40 prior sd wide is refined cell by cell:

* each cell is cut by the candidate lines crossing it into convex pieces, and each piece is
  *certified* affine from the forward pass (``Net.affine_at``: every unit keeps its sign at
  all the piece's vertices, so no kink can hide inside, whatever the partition says). On a
  certified piece f is exactly ``f(p) + grad . d - d^T H d / 2`` about an interior point p;
* a cell is dropped when the exact max of that concave quadratic over its pieces (or a
  global Lipschitz bound, for cells crossed by many lines or holding an uncertified piece)
  lies 60 nats below the best value seen; the dropped mass and the box's outside are
  bounded and checked a posteriori (< 1e-13 of the result);
* a cell becomes a leaf once f varies by at most ~20 nats over each piece (no peak can hide
  between nodes); leaves are integrated with collapsed Gauss-Legendre rules on the pieces'
  fan triangles, 24 and 16 points per direction, which must agree to 1e-11 (spectral
  convergence: the integrand is smooth on each piece); the quadratic is spot-checked
  against the plain forward pass at random points;
* the quadtree runs in the plain frame, or (if that needs too many pieces: a sliver-shaped
  posterior on a rank-deficient region) in a frame whitened at the best point found.

Other oracles: the closed-form Gaussian of an affine generator (probabilistic PCA), a 1-D
mpmath integral for a one-unit ReLU net (its regions' maps have rank 1 and 0), Monte Carlo
with stated standard errors, and quadrature in x of ``exp(log_prob)``.
"""

import math
import time

import numpy as np
import pytest
import scipy.integrate
import scipy.special
import scipy.stats

import fastcpa
from reference import init_layers

ETA = {"relu": 0.0, "abs": -1.0}


class Net:
    """The generator written out again (weights, biases, one slope): forward pass, Jacobian, and a
    certificate that it is affine on a convex polygon."""

    def __init__(self, Ws, cs, activation, slope):
        self.Ws, self.cs = [np.asarray(W, float) for W in Ws], [np.asarray(c, float) for c in cs]
        self.eta = ETA.get(activation, slope)
        self.lip = math.prod(np.linalg.norm(W, 2) for W in self.Ws) * max(1.0, abs(self.eta)) ** (len(Ws) - 1)

    def __call__(self, Z):
        h = np.asarray(Z, float)
        for W, c in zip(self.Ws[:-1], self.cs[:-1]):
            u = h @ W.T + c
            h = np.where(u >= 0, u, self.eta * u)
        return h @ self.Ws[-1].T + self.cs[-1]

    def affine_at(self, P, V, tol=1e-9):
        """g(P) and its Jacobian at points P (n, 2), and whether that affine map is g on the whole
        convex hull of V (n, k, 2): every unit's pre-activation, continued with P's masks, keeps
        P's sign at every vertex (by induction over layers, then, g is that affine map there)."""
        h, hv = P, V
        J = np.broadcast_to(np.eye(2), (len(P), 2, 2))
        ok = np.ones(len(P), bool)
        for W, c in zip(self.Ws[:-1], self.cs[:-1]):
            u, uv = h @ W.T + c, hv @ W.T + c
            on = u >= 0
            slack = tol * (np.abs(hv) @ np.abs(W).T + np.abs(c))
            ok &= np.all(np.where(on[:, None, :], uv >= -slack, uv <= slack), axis=(1, 2))
            s = np.where(on, 1.0, self.eta)
            h, hv = u * s, uv * s[:, None, :]
            J = (W @ J) * s[:, :, None]
        return h @ self.Ws[-1].T + self.cs[-1], self.Ws[-1] @ J, ok


def make_net(rng, sizes, activation="relu", slope=0.15, scale="normal"):
    Ws, cs = init_layers(rng, sizes, scale=scale)
    return Net(Ws, cs, activation, slope), fastcpa.Generator(Ws, cs, activation=activation, slope=slope)


def candidate_lines(model):
    """Unique lines n . z + o = 0 carrying the partition's facets (the only places f can kink)."""
    part = model.partition
    n, o = part.facet_normal, part.facet_offset
    flip = np.where((n[:, 0] < 0) | ((n[:, 0] == 0) & (n[:, 1] < 0)), -1.0, 1.0)
    L = np.unique(np.round(np.column_stack([n * flip[:, None], o * flip]), 12), axis=0)
    return L[:, :2].copy(), L[:, 2].copy()


def _gl01(n):
    t, w = np.polynomial.legendre.leggauss(n)
    return 0.5 * (t + 1.0), 0.5 * w


def _split(V, nv, n, o):
    """Cut convex polygons (V (P, K, 2) padded by repeating the last vertex, nv (P,) vertex
    counts) by one line each (n (P, 2), o (P,)): the parts on either side, same layout."""
    P, K = V.shape[:2]
    rows = np.arange(P)[:, None]
    k = np.arange(K)[None, :]
    valid = k < nv[:, None]
    d = V[..., 0] * n[:, 0, None] + V[..., 1] * n[:, 1, None] + o[:, None]
    nxt = (k + 1) % nv[:, None]
    Vn, dn = V[rows, nxt], d[rows, nxt]
    cross = valid & (((d > 0) & (dn < 0)) | ((d < 0) & (dn > 0)))
    t = np.divide(d, d - dn, out=np.zeros_like(d), where=cross)
    Q = V + t[..., None] * (Vn - V)
    out = []
    for side in (1.0, -1.0):
        keep = valid & (side * d >= 0)
        emit = keep.astype(np.int64) + cross
        start = np.cumsum(emit, 1) - emit
        cnt = emit.sum(1)
        Wd = np.zeros((P, max(int(cnt.max()), 1), 2))
        r, c = np.nonzero(keep)
        Wd[r, start[r, c]] = V[r, c]
        r, c = np.nonzero(cross)
        Wd[r, start[r, c] + keep[r, c]] = Q[r, c]
        last = Wd[np.arange(P), np.maximum(cnt - 1, 0)]
        pad = np.arange(Wd.shape[1])[None, :] >= cnt[:, None]
        Wd[pad] = np.broadcast_to(last[:, None, :], Wd.shape)[pad]
        out.append((Wd, cnt))
    return out


def _areas(V):
    """Areas of polygons padded by repeating the last vertex."""
    x, y = V[..., 0], V[..., 1]
    return 0.5 * np.abs((x * np.roll(y, -1, 1) - y * np.roll(x, -1, 1)).sum(1))


def _cut_cells(V, area, lines_idx, n_lines, normals, offsets):
    """Convex quadrilaterals V (M, 4, 2) (CCW, of the given area) cut by their crossing lines
    (indices ``lines_idx`` (M, L), the first ``n_lines`` of each row valid) into convex pieces:
    (vertices padded by repeating the last, vertex counts, owning row)."""
    nv = np.full(len(V), 4, np.int64)
    owner = np.arange(len(V))
    tiny = 1e-13 * area
    for j in range(lines_idx.shape[1]):
        act = n_lines[owner] > j
        if not act.any():
            break
        li = lines_idx[owner[act], j]
        parts = _split(V[act], nv[act], normals[li], offsets[li])
        Vs, nvs, ows = [V[~act]], [nv[~act]], [owner[~act]]
        for Wd, cnt in parts:
            ok = (cnt >= 3) & (_areas(Wd) > tiny)
            Vs.append(Wd[ok])
            nvs.append(cnt[ok])
            ows.append(owner[act][ok])
        K = max(x.shape[1] for x in Vs)
        V = np.concatenate([np.concatenate([x, np.repeat(x[:, -1:], K - x.shape[1], 1)], 1) for x in Vs])
        nv, owner = np.concatenate(nvs), np.concatenate(ows)
    return V, nv, owner


def _max_concave_on_polygon(dV, nv, g, H, peak):
    """max over each convex polygon (vertices dV (n, k, 2) about p, CCW, padded by repeating the
    last) of q(d) = g . d - d^T H d / 2 (H positive definite; ``peak = H^-1 g``)."""
    E = np.roll(dV, -1, axis=1)
    E[np.arange(len(nv)), nv - 1] = dV[:, 0]
    e = E - dV  # edges
    He = e @ H
    eHe = (e * He).sum(-1)
    slope = (e * g[:, None, :]).sum(-1) - (dV * He).sum(-1)
    t = np.clip(np.divide(slope, eHe, out=np.zeros_like(slope), where=eHe > 0), 0.0, 1.0)
    d = dV + t[..., None] * e
    best = ((d * g[:, None, :]).sum(-1) - 0.5 * (d * (d @ H)).sum(-1)).max(1)
    # the unconstrained peak, where it lies inside (on the left of every edge)
    rel = peak[:, None, :] - dV
    inside = np.all(e[..., 0] * rel[..., 1] - e[..., 1] * rel[..., 0] >= 0, axis=1)
    return np.where(inside, np.maximum(best, 0.5 * (g * peak).sum(1)), best)


class _OverBudget(Exception):
    pass


class Quad2D:
    """Adaptive quadrature of exp(f) over R^2 (see the module docstring); ``x=None`` integrates
    the prior alone (for the data-space moments).

    On a certified piece (``Net.affine_at``) f is exactly the quadratic
    ``f(p) + grad . d - d^T H d / 2`` about its interior point p, with f(p), grad and H from
    the forward pass and Jacobian at p; the nodes use that form (a random subset is checked
    against the plain forward pass), so only pieces, not nodes, cost a pass through the net.
    """

    T_DISCARD = 60.0  # cells whose bound is this far below the best value seen are dropped
    V_LEAF = 10.0  # f varies by at most ~2 V_LEAF nats over a leaf's piece
    MAX_LINES = 12  # cells crossed by more lines are split (under a Lipschitz bound) before they are cut
    RULES = (24, 16)  # Gauss-Legendre points per direction on each triangle: result, check
    PIECE_BUDGET = 20000  # pieces a frame may use before the other is tried

    def __init__(self, net, lines, sigma_x, sigma_z=1.0, x=None, box=None):
        self.net, self.lines, self.sz = net, lines, float(sigma_z)
        D = net.Ws[-1].shape[0]
        self.var = np.broadcast_to(np.asarray(sigma_x, float) ** 2, (D,))
        self.x = None if x is None else np.asarray(x, float)
        self.box = 40.0 * self.sz if box is None else box

    def logf(self, Z):
        """The log-integrand, straight from the forward pass."""
        if len(Z) > 32768:  # chunks keep the (n, D) temporaries small
            return np.concatenate([self.logf(Z[i:i + 32768]) for i in range(0, len(Z), 32768)])
        lz = -0.5 * (Z**2).sum(-1) / self.sz**2 - math.log(2 * math.pi * self.sz**2)
        if self.x is None:
            return lz
        r = self.x - self.net(Z)
        return lz - 0.5 * ((r**2 / self.var).sum(-1) + np.log(2 * math.pi * self.var).sum())

    def _quadratic(self, p, g, J):
        """f(p), its gradient and -Hessian on the piece where g = g(p) + J (z - p)."""
        f = -0.5 * (p**2).sum(-1) / self.sz**2 - math.log(2 * math.pi * self.sz**2)
        grad = -p / self.sz**2
        H = np.broadcast_to(np.eye(2) / self.sz**2, (len(p), 2, 2))
        if self.x is not None:
            r = self.x - g
            PJ = J / self.var[None, :, None]
            f = f - 0.5 * ((r**2 / self.var).sum(-1) + np.log(2 * math.pi * self.var).sum())
            grad = grad + (r[:, None, :] @ PJ)[:, 0]
            H = H + np.swapaxes(J, 1, 2) @ PJ
        return f, grad, H

    def _lipschitz_bound(self, C, r):
        """Rigorous max of f over the discs (centre C, radius r), whatever the kinks."""
        f = self.logf(C)
        V = (np.linalg.norm(C, axis=1) + r) / self.sz**2
        if self.x is not None:
            P = 1.0 / self.var
            res = np.linalg.norm((self.x - self.net(C)) * P, axis=1)
            V = V + self.net.lip * (res + P.max() * self.net.lip * r)
        return f + V * r, f

    def _cells_to_pieces(self, cellV, area, cross, cells):
        """Pieces (padded vertex arrays, vertex counts, owning cell) of the given cells."""
        normals, offsets = self.lines
        if len(cells) == 0:
            return np.zeros((0, 4, 2)), np.zeros(0, np.int64), cells
        n_lines = cross[cells].sum(1)
        order = np.argsort(~cross[cells], axis=1, kind="stable")[:, :max(int(n_lines.max()), 1)]
        V, nv, owner = _cut_cells(cellV[cells], area, order, n_lines, normals, offsets)
        return V, nv, cells[owner]

    def _good_value(self):
        """A high value of f (it only sets the pace of the refinement): the best point of a grid,
        polished by Newton steps on the local quadratic."""
        g = np.linspace(-8.0, 8.0, 161) * self.sz
        Z = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
        Z = Z[np.argsort(self.logf(Z))[-32:]]
        for _ in range(20):
            gz, J, _ = self.net.affine_at(Z, Z[:, None, :])
            f, grad, H = self._quadratic(Z, gz, J)
            Z = np.clip(Z + np.linalg.solve(H, grad[:, :, None])[:, :, 0], -self.box, self.box)
        fz = self.logf(Z)
        i = np.argmax(fz)
        gz, J, _ = self.net.affine_at(Z[i:i + 1], Z[i:i + 1, None, :])
        return fz[i], Z[i], self._quadratic(Z[i:i + 1], gz, J)[2][0]

    def _refine(self):
        """Try the plain frame and the whitened one, each with a budget of pieces; else the plain one."""
        for whiten, cap in ((False, self.PIECE_BUDGET), (True, self.PIECE_BUDGET), (False, None)):
            try:
                return self._refine_in_frame(whiten, cap)
            except _OverBudget:
                pass

    def _refine_in_frame(self, whiten, cap):
        normals, offsets = self.lines
        # the quadtree lives in a frame z = zb + L u whitened at the best point found: there a
        # sliver-shaped posterior (a rank-deficient region, prior-wide along one direction) is round
        fbest, zb, Hb = self._good_value()
        lam, Q = np.linalg.eigh(Hb)
        L = Q / np.sqrt(lam) if whiten else np.eye(2)
        if np.linalg.det(L) < 0:
            L[:, 0] *= -1.0
        detL = abs(np.linalg.det(L))
        corners = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
        Bu = np.abs((self.box * corners - zb) @ np.linalg.inv(L).T).max()  # u-box covers the z-box
        spread = np.abs(normals @ L).sum(1)
        r_unit = max(np.linalg.norm(L @ c) for c in corners)  # z-radius of a u-cell of half-side 1
        n0 = 16
        h = Bu / n0
        g = (np.arange(n0) + 0.5) * 2 * h - Bu
        C = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
        discarded = []  # logs of bounds on the discarded mass
        leaves = []
        used = 0
        for level in range(48):
            if len(C) == 0:
                break
            Cz = zb + C @ L.T
            cross = np.abs(Cz @ normals.T + offsets) < h * spread
            many = cross.sum(1) > self.MAX_LINES
            U = np.full(len(C), -np.inf)
            W = np.zeros(len(C))
            few = np.flatnonzero(~many)
            cellV = zb + (C[:, None, :] + h * corners) @ L.T
            V, nv, owner = self._cells_to_pieces(cellV, 4 * h * h * detL, cross, few)
            used += len(nv)
            if cap is not None and used > cap:
                raise _OverBudget
            if len(nv):
                p = (V * (np.arange(V.shape[1]) < nv[:, None])[:, :, None]).sum(1) / nv[:, None]
                gp, J, ok = self.net.affine_at(p, V)
                f, grad, H = self._quadratic(p, gp, J)
                fbest = max(fbest, f.max())
                dV = V - p[:, None, :]
                lin = (dV * grad[:, None, :]).sum(-1)
                # f is a concave quadratic on a certified piece: its max there is exact (QP in 2-D)
                Hinv_g = np.linalg.solve(H, grad[:, :, None])[:, :, 0]
                np.maximum.at(U, owner, f + _max_concave_on_polygon(dV, nv, grad, H, Hinv_g))
                # a Newton step from every piece finds the peaks early (fbest only sets the pace)
                fbest = max(fbest, self.logf(np.clip(p + Hinv_g, -self.box, self.box)).max())
                # how much f varies over the piece (d^T H d is convex: its max is at a vertex)
                np.maximum.at(W, owner, np.abs(lin).max(1) + 0.5 * (dV * (dV @ H)).sum(-1).max(1))
                bad = np.zeros(len(C), bool)
                bad[owner[~ok]] = True
            else:
                bad = np.zeros(len(C), bool)
            lip = many | bad  # no certified concave pieces: the global Lipschitz bound
            if lip.any():
                U[lip], fc = self._lipschitz_bound(Cz[lip], h * r_unit)
                W[lip] = np.inf
                fbest = max(fbest, fc.max())
            drop = U < fbest - self.T_DISCARD
            if drop.any():
                discarded.append(np.log(4 * h * h * detL) + U[drop])
            leaf = ~drop & (W <= self.V_LEAF)
            if len(nv):
                sel = leaf[owner]
                leaves.append((V[sel], nv[sel], p[sel], gp[sel], J[sel], f[sel], grad[sel], H[sel]))
            split = ~drop & ~leaf
            C = C[split]
            h *= 0.5
            C = (C[:, None, :] + h * np.array([[-1, -1], [-1, 1], [1, -1], [1, 1]])[None]).reshape(-1, 2)
        else:
            raise RuntimeError("quadrature oracle: refinement did not terminate (an uncertified piece?)")
        # outside the box: the prior's tail times the largest possible likelihood
        out = math.log(4.0) + scipy.special.log_ndtr(-self.box / self.sz)
        if self.x is not None:
            out -= 0.5 * np.log(2 * math.pi * self.var).sum()
        discarded.append(np.array([out]))
        Kv = max(L[0].shape[1] for L in leaves)
        pad = [np.concatenate([L[0], np.repeat(L[0][:, -1:], Kv - L[0].shape[1], 1)], 1) for L in leaves]
        leaves = [pad] + [[L[j] for L in leaves] for j in range(1, 8)]
        leaves = [np.concatenate(L) for L in leaves]
        return leaves, scipy.special.logsumexp(np.concatenate(discarded))

    @staticmethod
    def _piece_moments(leaves, n):
        """Per piece: the integrals of exp(f - fref) times 1, d, d d^T (d = z - p), by the collapsed
        Gauss-Legendre rule with n x n points on each fan triangle; and fref."""
        V, nv, p, _, _, f, grad, H = leaves
        owner = np.repeat(np.arange(len(nv)), nv - 2)
        j = np.arange(len(owner)) - np.repeat(np.cumsum(nv - 2) - (nv - 2), nv - 2) + 1
        A, B, Cc = V[owner, 0], V[owner, j], V[owner, j + 1]
        u, wu = _gl01(n)
        Uu, Vv = np.meshgrid(u, u, indexing="ij")
        WW = (np.outer(wu, wu) * Uu).ravel()
        Uu, Vv = Uu.ravel(), Vv.ravel()
        det = np.abs((B - A)[:, 0] * (Cc - B)[:, 1] - (B - A)[:, 1] * (Cc - B)[:, 0])
        fref = f.max() + 1.0
        m0, m1, m2 = np.zeros(len(nv)), np.zeros((len(nv), 2)), np.zeros((len(nv), 2, 2))
        step = max(1, 2_000_000 // len(WW))
        for a in range(0, len(owner), step):
            sl = slice(a, a + step)
            o = owner[sl]
            ab, bc = (B - A)[sl][:, None], (Cc - B)[sl][:, None]
            d = (A[sl] - p[o])[:, None] + Uu[None, :, None] * (ab + Vv[None, :, None] * bc)
            Ho = H[o]
            d0, d1 = d[..., 0], d[..., 1]
            q = (f[o][:, None] + d0 * grad[o][:, 0, None] + d1 * grad[o][:, 1, None]
                 - 0.5 * (d0 * d0 * Ho[:, 0, 0, None] + 2 * d0 * d1 * Ho[:, 0, 1, None] + d1 * d1 * Ho[:, 1, 1, None]))
            e = np.exp(q - fref) * (det[sl][:, None] * WW[None])
            np.add.at(m0, o, e.sum(1))
            ed0, ed1 = e * d0, e * d1
            np.add.at(m1, o, np.stack([ed0.sum(1), ed1.sum(1)], -1))
            m2t = np.stack([(ed0 * d0).sum(1), (ed0 * d1).sum(1), (ed1 * d1).sum(1)], -1)
            np.add.at(m2, o, np.stack([m2t[:, [0, 1]], m2t[:, [1, 2]]], 1))
        return fref, m0, m1, m2

    def run(self):
        """Integrate; sets ``log_int`` and the (normalised) moments of z (``mean``, ``cov``) and, for
        ``x=None``, of g(z) (``g_mean``, ``g_cov``). Both rules must agree."""
        t0 = time.perf_counter()
        leaves, log_disc = self._refine()
        V, nv, p, gp, J = leaves[:5]
        out = []
        for n in self.RULES:
            fref, m0, m1, m2 = self._piece_moments(leaves, n)
            tot = m0.sum()
            pos = m0 > 0
            r = {"log_int": fref + math.log(tot)}
            c = p.copy()
            c[pos] += m1[pos] / m0[pos, None]  # each piece's mean
            S = np.zeros_like(m2)
            S[pos] = m2[pos] - m1[pos, :, None] * m1[pos, None, :] / m0[pos, None, None]  # and scatter
            r["mean"] = m0 @ c / tot
            dc = c - r["mean"]
            r["cov"] = (S.sum(0) + np.einsum("n,ni,nj->ij", m0, dc, dc)) / tot
            if self.x is None:
                gc = gp + np.einsum("nds,ns->nd", J, c - p)
                r["g_mean"] = m0 @ gc / tot
                dg = gc - r["g_mean"]
                r["g_cov"] = (np.einsum("nds,nst,net->de", J, S, J) + np.einsum("n,ni,nj->ij", m0, dg, dg)) / tot
            out.append(r)
        hi, lo = out
        self.n_pieces, self.seconds = len(nv), time.perf_counter() - t0
        self.log_discarded = log_disc - hi["log_int"]
        assert self.log_discarded < math.log(1e-13), "quadrature oracle: discarded mass not negligible"
        self.rule_gap = abs(hi["log_int"] - lo["log_int"]) / max(1.0, abs(hi["log_int"]))
        sd = np.sqrt(np.diag(hi["cov"]))
        self.rule_gap_mean = np.max(np.abs(hi["mean"] - lo["mean"]) / sd)
        self.rule_gap_cov = np.max(np.abs(hi["cov"] - lo["cov"]) / np.outer(sd, sd))
        assert max(self.rule_gap, self.rule_gap_mean, self.rule_gap_cov) < 1e-11, "quadrature rules disagree"
        # the quadratic form used at the nodes is the integrand: spot-check it against the forward pass
        rng = np.random.default_rng(0)
        k = rng.integers(0, len(nv), 256)
        w = rng.dirichlet(np.ones(3), 256)
        Z = w[:, 0, None] * V[k, 0] + w[:, 1, None] * V[k, 1 + (nv[k] > 3)] + w[:, 2, None] * V[k, nv[k] - 1]
        d = Z - p[k]
        f, grad, H = leaves[5][k], leaves[6][k], leaves[7][k]
        q = f + (d * grad).sum(1) - 0.5 * np.einsum("nd,nde,ne->n", d, H, d)
        direct = self.logf(Z)
        self.quadratic_gap = np.max(np.abs(q - direct) / np.maximum(1.0, np.abs(direct)))
        assert self.quadratic_gap < 1e-9, "quadrature oracle: the piecewise quadratic is not the integrand"
        for key, val in hi.items():
            setattr(self, key, val)
        return self


def quad(net, model, x, sigma_z=1.0):
    """The quadrature oracle for one x (``x=None``: the prior's moments of g)."""
    return Quad2D(net, candidate_lines(model), model.sigma_x, sigma_z, x).run()


def near_manifold(net, rng, n, k_sigmas, sigma_x, sigma_z=1.0):
    """x = g(z) for prior draws z, pushed ``k`` noise sd off in random directions."""
    X = net(sigma_z * rng.normal(size=(n, 2)))
    u = rng.normal(size=X.shape)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return X + k_sigmas * np.max(sigma_x) * u


def off_manifold(model, rng, n, k_sigmas):
    """Samples from the model pushed ``k`` noise standard deviations off, in a random direction."""
    X = model.sample(n, seed=rng)
    u = rng.normal(size=X.shape)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return X + k_sigmas * np.max(model.sigma_x) * u


def rel_err(a, ref):
    return np.abs(a - ref) / np.maximum(1.0, np.abs(ref))


# ---------------------------------------------------------------------------------- log p(x)
NETS = [("relu", [2, 8, 3]), ("leaky_relu", [2, 6, 6, 4]), ("abs", [2, 10, 16]), ("relu", [2, 10, 16]),
        ("leaky_relu", [2, 8, 8, 64])]
SIGMAS = [0.3, 0.05, 0.02]
# the default run pairs each net with two noise levels; the slow run takes all of them
FAST = {(0, 0.3), (0, 0.02), (1, 0.05), (1, 0.02), (2, 0.3), (2, 0.02), (3, 0.05), (3, 0.02), (4, 0.3), (4, 0.02)}
CASES = [pytest.param(i, sx, marks=() if (i, sx) in FAST else pytest.mark.slow, id=f"{a}-{'x'.join(map(str, s))}-{sx}")
         for i, (a, s) in enumerate(NETS) for sx in SIGMAS]


@pytest.mark.parametrize("net_index,sigma_x", CASES)
def test_log_prob_matches_quadrature(rng, net_index, sigma_x):
    """On the manifold and 5, 15, 30 sigma_x off it; D from 3 to 64."""
    activation, sizes = NETS[net_index]
    net, gen = make_net(rng, sizes, activation)
    model = fastcpa.CPAModel(gen, sigma_x=sigma_x)
    X = np.vstack([near_manifold(net, rng, 1, k, sigma_x) for k in (0.0, 5.0, 15.0, 30.0)])
    lp = model.log_prob(X)
    ref = np.array([quad(net, model, x).log_int for x in X])
    assert np.all(rel_err(lp, ref) <= 1e-7), rel_err(lp, ref)


@pytest.mark.slow
@pytest.mark.parametrize("net_index", range(len(NETS)))
@pytest.mark.parametrize("sigma_x", SIGMAS)
def test_log_prob_sweep(rng, net_index, sigma_x):
    """Three points per distance from the manifold, every net and noise level."""
    activation, sizes = NETS[net_index]
    net, gen = make_net(rng, sizes, activation)
    model = fastcpa.CPAModel(gen, sigma_x=sigma_x)
    X = np.vstack([near_manifold(net, rng, 3, k, sigma_x) for k in (0.0, 5.0, 15.0, 30.0)])
    lp = model.log_prob(X)
    ref = np.array([quad(net, model, x).log_int for x in X])
    assert np.all(rel_err(lp, ref) <= 1e-7), rel_err(lp, ref)


def test_diagonal_noise_and_prior_scale(rng):
    net, gen = make_net(rng, [2, 7, 5], "leaky_relu")
    sx = rng.uniform(0.05, 0.5, size=5)
    model = fastcpa.CPAModel(gen, sigma_x=sx, sigma_z=2.5)
    X = np.vstack([near_manifold(net, rng, 1, k, sx, 2.5) for k in (0.0, 10.0)])
    ref = np.array([quad(net, model, x, sigma_z=2.5).log_int for x in X])
    assert np.all(rel_err(model.log_prob(X), ref) <= 1e-7)


def test_d2_generator_folds(rng):
    """D = S = 2: g can fold the plane over itself, so the posterior has several modes."""
    net, gen = make_net(rng, [2, 12, 2], "abs")
    model = fastcpa.CPAModel(gen, sigma_x=0.05)
    X = np.vstack([near_manifold(net, rng, 2, k, 0.05) for k in (0.0, 15.0)])
    ref = np.array([quad(net, model, x).log_int for x in X])
    assert np.all(rel_err(model.log_prob(X), ref) <= 1e-7)


def test_pruning_is_certified(rng):
    Ws, cs = init_layers(rng, [2, 24, 24, 8], scale="normal")
    gen = fastcpa.Generator(Ws, cs, activation="relu")
    model = fastcpa.CPAModel(gen, sigma_x=0.01)
    X = off_manifold(model, rng, 40, 5.0)
    exact = model.log_prob(X, prune=False)
    assert model.last_pairs_skipped_ == 0
    pruned = model.log_prob(X, region_chunk=37, sample_chunk=16)
    assert model.last_pairs_skipped_ > 0
    bound = math.log1p(model.partition.n_regions * math.exp(-fastcpa.model.PRUNE_GAP))
    assert np.all(pruned <= exact + 1e-12) and np.all(exact - pruned <= bound + 1e-12)


@pytest.mark.parametrize("D", [2, 6, 64])
def test_affine_generator_is_probabilistic_pca(rng, D):
    """No hidden layer: p(x) = N(b, sigma_x^2 I + sigma_z^2 A A^T) exactly, posterior Gaussian."""
    A, b = rng.normal(size=(D, 2)), rng.normal(size=D)
    model = fastcpa.CPAModel(fastcpa.Generator([A], [b]), sigma_x=0.2, sigma_z=1.7)
    X = off_manifold(model, rng, 20, 30.0)
    cov = 0.04 * np.eye(D) + 1.7**2 * A @ A.T
    np.testing.assert_allclose(model.log_prob(X), scipy.stats.multivariate_normal(b, cov).logpdf(X),
                               rtol=1e-10, atol=1e-10)
    post = model.posterior(X)
    Sigma = np.linalg.inv(np.eye(2) / 1.7**2 + A.T @ A / 0.04)
    np.testing.assert_allclose(post.cov, np.broadcast_to(Sigma, (20, 2, 2)), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(post.mean, (X - b) @ A @ Sigma.T / 0.04, rtol=1e-9, atol=1e-12)


def _one_unit_relu():
    """g(z) = w relu(a . z + b) + c: the "on" half-plane's map has rank 1, the "off" one rank 0."""
    a, b = np.array([1.0, 0.5]), 0.3
    w, c = np.array([1.0, -2.0, 0.5]), np.array([0.1, 0.2, -0.3])
    return a, b, w, c, fastcpa.Generator([a[None, :], w[:, None]], [np.array([b]), c], activation="relu")


def _one_unit_reference(a, b, w, c, x, sigma_x):
    """log p(x) for ``_one_unit_relu``: g depends on z only through t = a . z / |a| ~ N(0, 1),
    so p(x) is a 1-D integral (40-digit mpmath, split at the kink and around the peak)."""
    mpmath = pytest.importorskip("mpmath")
    mp = mpmath.mp.clone() if hasattr(mpmath.mp, "clone") else mpmath.mp
    mp.dps = 40
    na = float(np.linalg.norm(a))
    sx = mp.mpf(sigma_x)

    def f(t):
        h = max(na * t + b, 0)
        r2 = sum((mp.mpf(x[d]) - w[d] * h - c[d]) ** 2 for d in range(len(w)))
        return mp.exp(-t * t / 2 - r2 / (2 * sx**2))

    tp = ((x - c) @ w / (w @ w) - b) / na
    I = mp.quad(f, sorted([-40, -b / na, tp - 0.05, tp, tp + 0.05, 40]), maxdegree=12)
    return float(mp.log(I) - 0.5 * mp.log(2 * mp.pi) - len(w) / 2 * mp.log(2 * mp.pi * sx**2))


@pytest.mark.parametrize("sigma_x", [0.3, 0.02, 0.002])
def test_rank_deficient_regions(sigma_x):
    """ReLU regions whose map has rank < 2: the posterior is a sliver (prior-wide along the null direction).
    Checked against a 1-D mpmath reference and the 2-D quadrature oracle."""
    a, b, w, c, gen = _one_unit_relu()
    model = fastcpa.CPAModel(gen, sigma_x=sigma_x)
    X = gen(np.array([[0.1, 0.0], [1.0, 0.3], [2.0, -0.5], [-2.0, 0.0]]))
    ref = np.array([_one_unit_reference(a, b, w, c, x, sigma_x) for x in X])
    if sigma_x >= 0.02:
        net = Net([a[None, :], w[:, None]], [np.array([b]), c], "relu", 0.0)
        q = np.array([quad(net, model, x).log_int for x in X[:2]])
        assert np.all(rel_err(q, ref[:2]) <= 1e-12)  # the two oracles agree
    # what remains at sigma_x = 0.002 (1.3e-10) is the GEMM expansion |x|^2 - 2 x.b + |b|^2 at |x|/sigma_x ~ 1e3
    err = rel_err(model.log_prob(X), ref)
    assert np.all(err <= 1e-9), err


# ---------------------------------------------------------------------------------- posterior
@pytest.mark.parametrize("activation,sizes,sigma_x", [("relu", [2, 10, 6, 4], 0.05), ("leaky_relu", [2, 8, 5], 0.3),
                                                      ("abs", [2, 9, 7, 12], 0.02)])
def test_posterior_against_quadrature(rng, activation, sizes, sigma_x):
    net, gen = make_net(rng, sizes, activation)
    model = fastcpa.CPAModel(gen, sigma_x=sigma_x)
    X = np.vstack([near_manifold(net, rng, 2, 0.0, sigma_x), near_manifold(net, rng, 2, 15.0, sigma_x)])
    post = model.posterior(X)
    np.testing.assert_allclose(post.log_prob, model.log_prob(X), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(post.region_probs.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    for n in range(len(X)):
        q = quad(net, model, X[n])
        sd = np.sqrt(np.diag(q.cov))
        assert rel_err(post.log_prob[n], q.log_int) <= 1e-7
        assert np.all(np.abs(post.mean[n] - q.mean) <= 1e-7 * sd), (post.mean[n] - q.mean) / sd
        assert np.all(np.abs(post.cov[n] - q.cov) <= 1e-7 * np.outer(sd, sd)), (post.cov[n] - q.cov) / np.outer(sd, sd)


def test_posterior_density_integrates_to_one(rng):
    """exp(log_density) on a fine z grid around each posterior (the density is continuous, with kinks);
    one vectorised call for all rows, each with its own grid."""
    net, gen = make_net(rng, [2, 8, 4], "leaky_relu")
    model = fastcpa.CPAModel(gen, sigma_x=0.3)
    X = np.vstack([near_manifold(net, rng, 1, 0.0, 0.3), near_manifold(net, rng, 1, 5.0, 0.3)])
    post = model.posterior(X)
    m = M_DENSITY_GRID
    sd = np.sqrt(np.diagonal(post.cov, axis1=1, axis2=2))
    axes = post.mean[:, :, None] + 12 * sd[:, :, None] * np.linspace(-1.0, 1.0, m)  # (N, 2, m)
    Z = np.stack([np.repeat(axes[:, 0], m, axis=1), np.tile(axes[:, 1], m)], axis=-1)  # (N, m*m, 2)
    dens = np.exp(post.log_density(Z)).reshape(len(X), m, m)
    for n in range(len(X)):
        total = scipy.integrate.trapezoid(scipy.integrate.trapezoid(dens[n], axes[n, 1], axis=1), axes[n, 0])
        assert abs(total - 1.0) <= 1e-6, total


M_DENSITY_GRID = 1201


def test_posterior_samples_match_moments(rng):
    net, gen = make_net(rng, [2, 12, 3], "relu")
    model = fastcpa.CPAModel(gen, sigma_x=0.4)  # broad, multi-region posteriors
    X = near_manifold(net, rng, 3, 0.0, 0.4)
    post = model.posterior(X)
    k = 20000
    Z = post.sample(k, seed=7)
    assert Z.shape == (3, k, 2)
    part = model.partition
    for n in range(3):
        q = quad(net, model, X[n])
        for mean, cov in ((post.mean[n], post.cov[n]), (q.mean, q.cov)):
            d = Z[n] - mean
            se = np.sqrt(np.diag(cov) / k)
            assert np.all(np.abs(d.mean(0)) <= 4 * se), (d.mean(0) / se)
            # covariance entries: standard errors from the draws' own fourth moments
            prod = d[:, :, None] * d[:, None, :]
            se_c = prod.std(0) / math.sqrt(k)
            assert np.all(np.abs(prod.mean(0) - cov) <= 4 * se_c), (prod.mean(0) - cov) / se_c
        # the draws' regions follow region_probs
        probs = post.region_probs[[n]].toarray()[0]
        freq = np.bincount(part.locate(Z[n]), minlength=part.n_regions) / k
        assert np.all(np.abs(freq - probs) <= 4 * np.sqrt(probs * (1 - probs) / k) + 1.0 / k)


# ---------------------------------------------------------------------------------- data space
def test_p_of_x_integrates_to_one_in_2d():
    """D = 2, sigma_x = 0.3: p(x) on a 256 x 256 grid over the support (one vectorised call; p is
    smooth and the grid finer than the noise, so the trapezoid rule converges spectrally)."""
    rng = np.random.default_rng(11)
    net, gen = make_net(rng, [2, 6, 2], "leaky_relu", scale="torch")
    model = fastcpa.CPAModel(gen, sigma_x=0.3)
    r, phi = np.meshgrid(np.linspace(0, 7, 141), np.linspace(0, 2 * np.pi, 361))
    G = net(np.column_stack([(r * np.cos(phi)).ravel(), (r * np.sin(phi)).ravel()]))
    lo, hi = G.min(0) - 12 * 0.3, G.max(0) + 12 * 0.3  # g of the disc |z| <= 7, plus 12 noise sd
    m = 256
    xs = [np.linspace(lo[d], hi[d], m) for d in range(2)]
    assert max(xs[0][1] - xs[0][0], xs[1][1] - xs[1][0]) < 0.3  # finer than the noise: trapezoid is spectral
    XX = np.stack(np.meshgrid(*xs, indexing="ij"), axis=-1).reshape(-1, 2)
    p = np.exp(model.log_prob(XX)).reshape(m, m)
    total = scipy.integrate.trapezoid(scipy.integrate.trapezoid(p, x=xs[1], axis=1), x=xs[0])
    assert abs(total - 1.0) <= 1e-5, total


@pytest.mark.parametrize("activation,sizes", [("abs", [2, 8, 6, 3]),
                                              ("relu", [2, 10, 4]),
                                              ("leaky_relu", [2, 8, 6, 3])])
def test_marginal_moments_against_quadrature(rng, activation, sizes):
    net, gen = make_net(rng, sizes, activation)
    sx = rng.uniform(0.05, 0.2, size=sizes[-1])
    model = fastcpa.CPAModel(gen, sigma_x=sx, sigma_z=1.3)
    mean, cov = model.marginal_moments()
    q = Quad2D(net, candidate_lines(model), sx, 1.3).run()
    scale = np.sqrt(np.diag(q.g_cov) + sx**2)
    assert np.all(np.abs(mean - q.g_mean) <= 1e-8 * scale), (mean - q.g_mean) / scale
    ref_cov = q.g_cov + np.diag(sx**2)
    assert np.all(np.abs(cov - ref_cov) <= 1e-8 * np.outer(scale, scale)), (cov - ref_cov) / np.outer(scale, scale)


# ---------------------------------------------------------------------------------- input checks
def test_bad_input(rng):
    _, gen = make_net(rng, [2, 4, 3])
    model = fastcpa.CPAModel(gen, sigma_x=0.1)
    for call in (model.log_prob, model.posterior):
        with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
            call(np.zeros((2, 4)))
        with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
            call(np.zeros((2, 2)))
        with pytest.raises(ValueError, match=r"X\[None, :\]"):
            call(np.zeros(3))
        with pytest.raises(ValueError, match="NaN or inf"):
            call(np.array([[0.0, 1.0, 2.0], [0.0, np.nan, 1.0]]))
        with pytest.raises(ValueError, match="NaN or inf"):
            call(np.array([[0.0, np.inf, 1.0]]))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        fastcpa.CPAModel(gen, sigma_x=[0.1, 0.2])
    post = model.posterior(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"Z must have shape \(2, 2\)"):
        post.log_density(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"Z must have shape \(2, 2\)"):
        post.log_density(np.zeros((3, 5, 2)))


@pytest.mark.parametrize("S", [1, 2])
def test_all_zero_first_layer_is_a_constant_generator(S):
    """Zero incoming weights: each unit is on iff its bias is >= 0, so g = 1 here
    and p(x) = N(x; 1, sigma_x^2) exactly (S = 2 once gave -48.6 for 1.384:
    at the whole plane's ideal points a constant line is 0 whatever its bias)."""
    gen = fastcpa.Generator([np.zeros((2, S)), np.ones((1, 2))], [np.array([1.0, -1.0]), np.array([0.0])])
    model = fastcpa.CPAModel(gen, sigma_x=0.1)
    x = np.array([[1.0], [1.3], [-40.0]])
    exact = scipy.stats.norm(1.0, 0.1).logpdf(x[:, 0])
    np.testing.assert_allclose(model.log_prob(x), exact, rtol=1e-14, atol=0)
    assert model.partition.n_regions == 1
    assert np.all(model.partition.locate(np.random.default_rng(0).normal(size=(5, S))) == 0)


def test_dead_unit_in_a_deeper_layer_matches_the_net_without_it():
    """A second-layer unit with zero incoming weights is a constant: removing it and
    folding its (activated) bias into the output bias gives the same model."""
    rng = np.random.default_rng(4)
    W0, c0 = rng.normal(size=(4, 2)), rng.normal(size=4)
    W1, c1 = rng.normal(size=(3, 4)), np.array([0.7, -0.4, 0.2])
    W1[1] = 0.0  # unit 1 of layer 2: constant -0.4, off, leaky output -0.04
    W2, c2 = rng.normal(size=(2, 3)), rng.normal(size=2)
    gen = fastcpa.Generator([W0, W1, W2], [c0, c1, c2], activation="leaky_relu", slope=0.1)
    keep = [0, 2]
    folded = c2 + W2[:, 1] * (0.1 * -0.4)
    gen2 = fastcpa.Generator([W0, W1[keep], W2[:, keep]], [c0, c1[keep], folded], activation="leaky_relu",
                             slope=0.1)
    m, m2 = fastcpa.CPAModel(gen, sigma_x=0.2), fastcpa.CPAModel(gen2, sigma_x=0.2)
    X = np.concatenate([m.sample(10, seed=1), m.sample(3, seed=2) + 3.0])
    np.testing.assert_allclose(m.log_prob(X), m2.log_prob(X), rtol=1e-12, atol=1e-12)


def test_unit_with_tiny_weights_beside_ordinary_units():
    """A first-layer unit with weights 1e-16 puts its line ~1e16 from the origin;
    the other lines meet it there, and those far vertices once rounded the near
    ends of the neighbouring edges away (log p off by 0.02 nats). Against the
    converged latent quadrature, which states its own error."""
    from oracles import log_prob_quad

    rng = np.random.default_rng(0)
    W0 = rng.normal(size=(5, 2))
    W0[2] = 1e-16
    Ws, cs = [W0, rng.normal(size=(3, 5))], [rng.normal(size=5), rng.normal(size=3)]
    gen = fastcpa.Generator(Ws, cs, activation="leaky_relu", slope=0.1)
    model = fastcpa.CPAModel(gen, sigma_x=0.1)
    X = model.sample(3, seed=0)
    for x, got in zip(X, model.log_prob(X)):
        ref, err, _ = log_prob_quad(gen.weights, gen.biases, gen.slopes, x, 0.1)
        assert abs(got - ref) <= err + 1e-12 * max(1.0, abs(ref)), (got, ref, err)


def test_thin_region_far_from_the_posterior_mean_keeps_its_term():
    """A strip of width 1e-9 about two posterior standard deviations out: its term
    needs the section rule on the region anchored on itself (unanchored, the
    whitening's rounding is 1e9 times the width's). The model's term against
    a 40-digit log kappa plus the public polygon integral on the region's facets."""
    from oracles import linear_log_prob_mp

    W0 = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    c0 = np.array([-0.8, -(0.8 + 1e-9), 0.5])
    W1 = np.array([[1.0, 0.5, -1.0], [0.2, -2.0, 1.0]])
    gen = fastcpa.Generator([W0, W1], [c0, np.zeros(2)], activation="leaky_relu", slope=0.3)
    model = fastcpa.CPAModel(gen, sigma_x=0.5)
    x = gen(np.array([[0.2, -0.1]]))[0]
    part = model.partition
    lo, hi = part.locate(np.array([[0.8 + 5e-10, 0.7], [0.8 + 5e-10, -0.7]]))
    lp = model.log_prob(x[None])[0]
    probs = model.posterior(x[None]).region_probs.toarray()[0]
    for r in (lo, hi):
        A, b = part.A[r], part.b[r]
        Lam = np.eye(2) + A.T @ A / 0.25
        Sig = np.linalg.inv(Lam)
        Sig = 0.5 * (Sig + Sig.T)
        mu = Sig @ (A.T @ (x - b)) / 0.25
        n, o = part.facets(r)[:2]
        term = float(linear_log_prob_mp(A, b, x, 0.5, 1.0)[0]) + float(fastcpa.polygon_moments(n, o, mu, Sig).log_mass)
        assert probs[r] > 0
        assert abs(math.log(probs[r]) - (term - lp)) <= 1e-10, (r, math.log(probs[r]), term - lp)


def test_series_tables_formed_per_chunk_give_the_same_results(rng, monkeypatch):
    """Past ``_SERIES_BYTES`` the regions' moment-series tables are not kept: each region
    chunk's are formed again as a pass needs them. Same numbers, so log p, the posterior
    and the E-step's statistics agree to the bit with the kept tables."""
    import fastcpa.model as fm

    Ws, cs = init_layers(rng, [2, 12, 10, 3], scale="normal")
    gen = fastcpa.Generator(Ws, cs, activation="leaky_relu", slope=0.2)
    X = fastcpa.CPAModel(gen, sigma_x=0.4).sample(30, seed=3)
    kept = fastcpa.CPAModel(gen, sigma_x=0.4)
    assert kept._region_params()["SM"] is not None
    monkeypatch.setattr(fm, "_SERIES_BYTES", 0)
    chunked = fastcpa.CPAModel(gen, sigma_x=0.4)
    p = chunked._region_params()
    assert p["SM"] is None and kept.partition.n_regions > 40
    np.testing.assert_array_equal(p["SC"], kept._region_params()["SC"])
    np.testing.assert_array_equal(chunked.log_prob(X), kept.log_prob(X))

    def rows(model, region_chunk):
        return np.concatenate([out[1] for out in model._likelihood_blocks(model._check_X(X), 40.0, 256,
                                                                          region_chunk)])

    np.testing.assert_array_equal(rows(chunked, 7), rows(kept, 7))  # chunks of 7 regions
    np.testing.assert_array_equal(chunked.posterior(X).log_prob, kept.posterior(X).log_prob)
    a, b = chunked.sufficient_stats(X), kept.sufficient_stats(X)
    np.testing.assert_array_equal(a.T1, b.T1)
    np.testing.assert_array_equal(a.T2, b.T2)
