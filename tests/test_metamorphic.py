"""Metamorphic tests of ``CPAModel.log_prob``: exact identities, no oracle needed.

Each identity holds exactly in real arithmetic; in floating point the two sides may
differ only by what input rounding allows. The tolerances are derived from the
problem's conditioning (the project's testing rules), never a fixed absolute:

* ``G = (||x - g(z^)|| + sqrt(D) sigma) / sigma^2`` bounds ``|grad_x log p|`` (``z^`` the
  latent point whose image is nearest x on a grid, ``sigma`` the smallest noise sd),
* an input perturbation of size ``delta`` moves log p by at most about ``G delta``,
* ``tol = C eps (scale * G + |log p| + D (1 + |log sigma_x|)) + C (eps scale / sigma)^2 / 2``
  with ``C = 32`` and ``scale`` the size of the numbers that were rounded (stated per
  identity), including g's own rounding at ``z^``: ``L |g|_abs(z^)`` (the forward pass
  in absolute values, :func:`forward_rounding_scale`), which is what perturbing the
  weights by eps implies there and far exceeds ``|g|`` on steep deep nets whose
  forward pass cancels; the square term covers roundings larger than sigma_x.

Identities: translation of output bias and data by B; power-of-two scaling of the
output layer, data and sigma_x (log p shifts by exactly ``-D k log 2``); latent
rescaling (first layer / c against sigma_z * c); hidden-unit permutation; unit
duplication with halved outgoing weights; rotation of the latent space and (with
isotropic noise) of the data space; additive S = 2 nets (block-diagonal) whose
p(x) factorises into two S = 1 models; the affine generator's closed form
(``oracles.linear_log_prob_mp``, 40 digits).

Case classes: "ordinary" (weight scale 0.3-3, sigma_x 0.01-1, points within 5 sigma_x
of the manifold, depth <= 4) must hold; "hard" (weight scale 1e-6..1e4, sigma_x
1e-4..1e3, up to 1e6 sigma_x off, depth up to 12 for S = 1, leaky slopes up to 100,
PReLU) and "deep" (S = 2, 4-12 hidden layers of width up to 6, ordinary scales) must hold
too. Sizes: ``FASTCPA_METAMORPHIC_EXAMPLES``
examples per test (default 12; the ``slow`` run uses 40x that). A self-test checks
that each identity catches a log p perturbed by 1e-8 relative.
"""

import dataclasses
import math
import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastcpa
from oracles import cpa_forward, linear_log_prob_mp

EPS = 2.0**-52
C_TOL = 32.0
N_EXAMPLES = int(os.environ.get("FASTCPA_METAMORPHIC_EXAMPLES", "12"))


# --------------------------------------------------------------------------- cases
@dataclasses.dataclass
class Case:
    weights: list
    biases: list
    activation: list
    slope: list
    sigma_x: object
    sigma_z: float
    X: np.ndarray
    desc: str = ""

    @property
    def S(self):
        return self.weights[0].shape[1]

    @property
    def D(self):
        return self.weights[-1].shape[0]

    def slopes(self):
        out = []
        for act, s, W in zip(self.activation, self.slope, self.weights[:-1]):
            eta = {"relu": 0.0, "abs": -1.0, "linear": 1.0}.get(act, s)
            out.append(np.broadcast_to(np.asarray(eta, float), (W.shape[0],)).copy())
        return out

    def model(self):
        gen = fastcpa.Generator(self.weights, self.biases, activation=self.activation, slope=self.slope)
        return fastcpa.CPAModel(gen, sigma_x=self.sigma_x, sigma_z=self.sigma_z)

    def replace(self, **kw):
        return dataclasses.replace(self, **kw)


def random_case(rng, S=1, regime="ordinary", n_points=3, D=None, depth=None):
    """A random CPA model and points near / off its manifold (numpy rng: reproducible)."""
    hard = regime == "hard"
    deep = regime == "deep"  # S = 2 only: 4-12 hidden layers of width <= 6 (32 units), ordinary scales
    if deep and S != 2:
        raise ValueError("the deep regime is for S = 2 (S = 1's other regimes reach depth 12)")
    if depth is None:
        if deep:
            depth = int(rng.integers(4, 13))
        else:
            depth = int(rng.integers(1, 13 if hard else 5)) if S == 1 else int(rng.integers(1, 4))
    max_w = 32 if S == 1 else (6 if deep else 8)
    widths = [int(rng.integers(1, max_w + 1)) for _ in range(depth)]
    if S == 2:  # keep the partition quick: at most ~16 units (32 deep)
        while sum(widths) > (32 if deep else 16):
            widths[int(np.argmax(widths))] -= 1
    if D is None:
        D = int(rng.integers(1, 11))
    scale = 10 ** rng.uniform(-6, 4) if hard else 10 ** rng.uniform(-0.5, 0.5)
    sizes = [S, *widths, D]
    Ws = [rng.normal(size=(b, a)) * scale / math.sqrt(a) for a, b in zip(sizes[:-1], sizes[1:])]
    cs = [rng.normal(size=b) * scale for b in sizes[1:]]
    acts, slopes = [], []
    for w in widths:
        act = str(rng.choice(["relu", "leaky_relu", "abs", "prelu"]))
        if act == "leaky_relu":
            s = float(rng.choice([0.01, 0.1, 0.5, 2.0] + ([10.0, 100.0] if hard else [])))
        elif act == "prelu":
            s = rng.uniform(-3, 3, size=w)
        else:
            s = 0.01
        acts.append(act)
        slopes.append(s)
    sx = 10 ** rng.uniform(-4, 3) if hard else 10 ** rng.uniform(-2, 0)
    if rng.random() < 0.3:  # diagonal noise
        sx = sx * 10 ** rng.uniform(-1, 1, size=D)
    sz = float(10 ** rng.uniform(-1, 1)) if rng.random() < 0.3 else 1.0
    case = Case(Ws, cs, acts, slopes, sx, sz, np.zeros((0, D)))
    Z = sz * rng.normal(size=(n_points, S))
    X = cpa_forward(Ws, cs, case.slopes(), Z)
    offs = rng.choice([0.0, 1.0, 5.0, 15.0, 30.0, 1e3, 1e6] if hard else [0.0, 1.0, 5.0], size=n_points)
    u = rng.normal(size=X.shape)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    X = X + offs[:, None] * np.max(sx) * u
    case.X = X
    case.desc = (f"S={S} sizes={sizes} acts={acts} scale={scale:.3g} sigma_x={np.round(np.atleast_1d(sx), 6).tolist()} "
                 f"sigma_z={sz:.3g} offs={offs.tolist()}")
    return case


def _nearest_latent(case):
    """Per row: ``(z^, g(z^))`` with ``z^`` the grid point whose image is nearest x."""
    S = case.S
    if S == 1:  # (a posterior 10 sd out happens: a point 1e3 sigma_x off a steep net)
        Z = np.linspace(-12, 12, 6001)[:, None] * case.sigma_z
    else:
        t = np.linspace(-12, 12, 201) * case.sigma_z
        Z = np.stack(np.meshgrid(t, t), -1).reshape(-1, 2)
    G = cpa_forward(case.weights, case.biases, case.slopes(), Z)
    d2 = ((case.X[:, None, :] - G[None]) ** 2 / np.atleast_1d(case.sigma_x) ** 2).sum(-1)
    i = np.argmin(d2, axis=1)
    return Z[i], G[i]


def forward_rounding_scale(case, Z):
    """Per row: ``L |g|_abs(z)``, with ``|g|_abs`` the forward pass in absolute values
    (``a_l = |eta| (|W_l| a_l-1 + |c_l|)``, ``a_0 = |z|``) and L the number of layers.

    Perturbing every weight, bias and z by eps relative moves g(z) by at most about
    ``eps L |g|_abs(z)`` (the standard bound for a product of affine maps): what the
    inputs' own rounding implies for g there. It exceeds ``|g(z)|`` where the forward
    pass cancels (steep, deep nets), and then so does every float evaluation of g."""
    a = np.abs(Z)
    for W, c, eta in zip(case.weights[:-1], case.biases[:-1], case.slopes()):
        a = (a @ np.abs(W).T + np.abs(c)) * np.maximum(1.0, np.abs(eta))
    a = a @ np.abs(case.weights[-1]).T + np.abs(case.biases[-1])
    return len(case.weights) * np.linalg.norm(a, axis=1)


def _energy(case, Z):
    """Per row: the posterior energy ``|x - g(z)|^2 / sigma_x^2 + |z|^2 / sigma_z^2`` at z (N, S) and
    what g's rounding there (:func:`forward_rounding_scale`) can move it by."""
    G = cpa_forward(case.weights, case.biases, case.slopes(), Z)
    sx = np.atleast_1d(case.sigma_x)
    E = (((case.X - G) / sx) ** 2).sum(-1) + (Z**2).sum(-1) / case.sigma_z**2
    F = forward_rounding_scale(case, Z)
    r = np.linalg.norm((case.X - G) / sx, axis=1)
    return E, EPS * F / sx.min() * (2.0 * r + EPS * F / sx.min()), F


_RS_CACHE = {}


def residual_scale(case):
    """Memoised :func:`_residual_scale` (each identity asks for it twice per case)."""
    hit = _RS_CACHE.get(id(case))
    if hit is not None and hit[0] is case:
        return hit[1]
    if len(_RS_CACHE) > 16:
        _RS_CACHE.clear()
    out = _residual_scale(case)
    _RS_CACHE[id(case)] = (case, out)
    return out


def _residual_scale(case):
    """Per row: ``(||x - g(z^)||, g's rounding scale near the posterior, ||x||)`` with ``z^`` the
    grid point whose image is nearest x and the scale of :func:`forward_rounding_scale`.

    The posterior can lie far out along a direction that a steep net nearly does not map
    (1e6 sigma_z out, where ``|g|_abs`` is 1e6 times its value near the origin), beyond any grid.
    The code's reference pairs' means, those of the rows' largest terms (the reference is chosen
    by bounds before the terms are known) and the posterior means (a largest term's Gaussian can
    peak far outside its region) are therefore taken as further candidates: one counts
    where its energy is within rounding of the grid point's or below (by this module's own forward
    pass, so a wrong mean cannot widen the tolerance), and the scale is then the largest of them."""
    Z, G = _nearest_latent(case)
    r = np.linalg.norm(case.X - G, axis=1)
    F = forward_rounding_scale(case, Z)
    cands = []
    try:  # the rows' reference pairs' means, their largest terms', the posterior means
        model = case.model()
        with np.errstate(all="ignore"):
            Xw, xx, Xs = model._whiten(case.X)
            top, lsum, REF, arg = model._log_prob_rows(Xw, xx, Xs, 40.0, 1024, np.zeros(len(Xw), np.int64))
        V = model._region_params()["V"]
        for Zp in (REF[:, 2:2 + case.S], arg[:, 2:2 + case.S]):
            cands.append(Zp @ V[0].T if V is not None else Zp)
    except Exception:  # the identities report the failure themselves
        pass
    E0, dE0, _ = _energy(case, Z)
    best = E0
    for Zp in cands:
        if np.all(np.isfinite(Zp)):
            Ep, dEp, Fp = _energy(case, Zp)
            F = np.where(Ep - E0 <= dE0 + dEp, np.maximum(F, Fp), F)
            best = np.minimum(best, Ep)
    if cands:
        # rows whose candidates all lie far above the posterior's energy (about -2 (log kappa_ref +
        # the code's relative sum)): the posterior mean too (slow on deep nets, so only there)
        far = np.flatnonzero(best > 1.01 * np.abs(2.0 * (REF[:, 0] + top + lsum)) + 1e3)
        if far.size:
            try:
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", fastcpa.AccuracyWarning)
                    Zp = model.posterior(case.X[far]).mean
                sub = case.replace(X=case.X[far])
                Ep, dEp, Fp = _energy(sub, Zp)
                F[far] = np.where(Ep - E0[far] <= dE0[far] + dEp, np.maximum(F[far], Fp), F[far])
            except Exception:
                pass
    return r, np.maximum(np.linalg.norm(G, axis=1), F), np.linalg.norm(case.X, axis=1)


def tolerance(case, lp, scale):
    """``C eps (scale G + |log p| + D (1 + |log sigma_x|))``, per row (module docstring)."""
    sig = float(np.min(case.sigma_x))
    r, _, _ = residual_scale(case)
    G = (r + math.sqrt(case.D) * sig) / sig**2
    logs = float(np.max(np.abs(np.log(np.atleast_1d(case.sigma_x)))))
    # second order: a rounding of more than sigma itself moves |x - g|^2 / 2 by its square
    second = 0.5 * (EPS * np.asarray(scale) / sig) ** 2
    return C_TOL * (EPS * (scale * G + np.abs(lp) + case.D * (1 + logs + abs(math.log(case.sigma_z)))) + second)


def _lp(log_prob, case):
    # the hard regime is ill-conditioned on purpose: its AccuracyWarnings are expected
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastcpa.AccuracyWarning)
        return np.asarray(log_prob(case.model(), case.X), float)


def default_log_prob(model, X):
    return model.log_prob(X)


# --------------------------------------------------------------------------- identities
# Each returns (err, tol) per row; err = inf where a side is not finite.
def _errs(a, b, tol):
    err = np.where(np.isfinite(a) & np.isfinite(b), np.abs(a - b), np.inf)
    return err, tol


def check_translation(case, rng, log_prob=default_log_prob):
    """log p unchanged when the output bias and the data move by B (|B| up to 1e4 x the data scale)."""
    B = rng.normal(size=case.D) * 10 ** rng.uniform(-2, 4) * (1 + np.abs(case.X).max())
    lp = _lp(log_prob, case)
    moved = case.replace(biases=case.biases[:-1] + [case.biases[-1] + B], X=case.X + B)
    lp2 = _lp(log_prob, moved)
    _, g, x = residual_scale(case)
    # rounded: x + B and c + B (each by eps |x + B|), g's own rounding at z^ (forward_rounding_scale)
    scale = np.linalg.norm(B) + x + g
    return _errs(lp, lp2, tolerance(case, np.maximum(np.abs(lp), np.abs(lp2)), scale))


def check_scaling(case, rng, log_prob=default_log_prob):
    """Output layer, data and sigma_x times 2^k: log p shifts by exactly -D k log 2."""
    k = int(rng.integers(-20, 21))
    f = 2.0**k
    lp = _lp(log_prob, case)
    sc = case.replace(weights=case.weights[:-1] + [case.weights[-1] * f], biases=case.biases[:-1] + [case.biases[-1] * f],
                      X=case.X * f, sigma_x=np.asarray(case.sigma_x) * f)
    lp2 = _lp(log_prob, sc) + case.D * k * math.log(2)
    tol = C_TOL * EPS * (np.abs(lp) + case.D * abs(k) * math.log(2) + case.D * (1 + np.abs(np.log(np.min(case.sigma_x)))))
    return _errs(lp, lp2, tol)


def check_latent_rescale(case, rng, log_prob=default_log_prob):
    """First layer / c with sigma_z * c (c = 2^j): log p unchanged."""
    j = int(rng.integers(-10, 11))
    c = 2.0**j
    lp = _lp(log_prob, case)
    sc = case.replace(weights=[case.weights[0] / c] + case.weights[1:], sigma_z=case.sigma_z * c)
    lp2 = _lp(log_prob, sc)
    tol = C_TOL * EPS * (np.abs(lp) + case.S * abs(j) * math.log(2) + case.D)
    return _errs(lp, lp2, tol)


def _forward_abs_scale(case):
    """Size of the numbers summed in the forward pass at z^ (for reordering errors)."""
    S = case.S
    Z = np.zeros((1, S))
    h = Z
    tot = 0.0
    for W, c, eta in zip(case.weights[:-1], case.biases[:-1], case.slopes()):
        tot = max(tot, float(np.abs(W).sum(1).max() * (np.abs(h).max() + 1) + np.abs(c).max()))
        u = h @ W.T + c
        h = np.where(u >= 0, u, eta * u)
    return max(tot, float(np.abs(case.weights[-1]).sum(1).max() * (np.abs(h).max() + 1) + np.abs(case.biases[-1]).max()))


def _hidden_layers(case):
    return [l for l in range(len(case.weights) - 1)]


def check_permutation(case, rng, log_prob=default_log_prob):
    """Permuting the units of a hidden layer (rows of W_l, c_l, slopes; columns of W_l+1): unchanged."""
    layers = _hidden_layers(case)
    if not layers:
        return np.zeros(len(case.X)), np.ones(len(case.X))
    l = int(rng.choice(layers))
    w = case.weights[l].shape[0]
    perm = rng.permutation(w)
    if w > 1 and perm[0] == 0:
        perm = np.roll(perm, 1)
    Ws, cs = list(case.weights), list(case.biases)
    Ws[l], cs[l] = Ws[l][perm], cs[l][perm]
    Ws[l + 1] = Ws[l + 1][:, perm]
    slope = list(case.slope)
    if np.ndim(slope[l]):
        slope[l] = np.asarray(slope[l])[perm]
    lp = _lp(log_prob, case)
    lp2 = _lp(log_prob, case.replace(weights=Ws, biases=cs, slope=slope))
    _, g, _ = residual_scale(case)  # summing in another order: g's rounding at z^
    scale = np.maximum(len(case.weights) * _forward_abs_scale(case), g)
    return _errs(lp, lp2, tolerance(case, np.abs(lp), scale))


def _random_rotation(rng, n):
    """A random n x n rotation (orthogonal, det +1), from the QR factors of a normal matrix."""
    Q, R = np.linalg.qr(rng.normal(size=(n, n)))
    Q = Q * np.sign(np.diag(R))
    if np.linalg.det(Q) < 0:
        Q[:, 0] = -Q[:, 0]
    return Q


def check_rotation(case, rng, log_prob=default_log_prob):
    """Rotations: of the latent space (first layer W_1 -> W_1 Q^T; the prior is isotropic) and, with
    isotropic noise, of the data space (output layer and data -> Q W_L, Q c_L, Q x): unchanged.
    S = 1 and D = 1 take the reflections -1."""
    Ws, cs, X = list(case.weights), list(case.biases), case.X
    Qz = _random_rotation(rng, case.S) if case.S > 1 else -np.ones((1, 1))
    Ws[0] = Ws[0] @ Qz.T
    if np.ndim(case.sigma_x) == 0 or np.ptp(case.sigma_x) == 0:
        Qx = _random_rotation(rng, case.D) if case.D > 1 else -np.ones((1, 1))
        Ws[-1], cs[-1], X = Qx @ Ws[-1], Qx @ cs[-1], X @ Qx.T
    lp = _lp(log_prob, case)
    lp2 = _lp(log_prob, case.replace(weights=Ws, biases=cs, X=X))
    _, g, x = residual_scale(case)
    # each rotated entry is a sum of D (or S) rounded products: eps sqrt(n) of the data, of g at z^,
    # and of the first layer's pre-activations (what the forward pass carries onward)
    n = math.sqrt(max(case.D, case.S))
    scale = n * (x + np.maximum(len(case.weights) * _forward_abs_scale(case), g))
    return _errs(lp, lp2, tolerance(case, np.maximum(np.abs(lp), np.abs(lp2)), scale))


def check_duplication(case, rng, log_prob=default_log_prob):
    """Duplicating a hidden unit with its outgoing weights halved: unchanged (act is positively homogeneous)."""
    layers = _hidden_layers(case)
    if not layers:
        return np.zeros(len(case.X)), np.ones(len(case.X))
    l = int(rng.choice(layers))
    j = int(rng.integers(case.weights[l].shape[0]))
    Ws, cs = list(case.weights), list(case.biases)
    Ws[l] = np.vstack([Ws[l], Ws[l][j:j + 1]])
    cs[l] = np.append(cs[l], cs[l][j])
    Wn = Ws[l + 1].copy()
    Wn[:, j] *= 0.5
    Ws[l + 1] = np.hstack([Wn, Wn[:, j:j + 1]])
    slope = list(case.slope)
    if np.ndim(slope[l]):
        slope[l] = np.append(slope[l], np.asarray(slope[l])[j])
    lp = _lp(log_prob, case)
    lp2 = _lp(log_prob, case.replace(weights=Ws, biases=cs, slope=slope))
    _, g, _ = residual_scale(case)
    scale = np.maximum(len(case.weights) * _forward_abs_scale(case), g)
    return _errs(lp, lp2, tolerance(case, np.abs(lp), scale))


def additive_case(c1, c2):
    """The S = 2 net of two S = 1 nets of equal depth on separate latent axes and outputs."""
    Ws, cs, acts, slopes = [], [], [], []
    for l, (W1, W2) in enumerate(zip(c1.weights, c2.weights)):
        W = np.zeros((W1.shape[0] + W2.shape[0], W1.shape[1] + W2.shape[1]))
        W[:W1.shape[0], :W1.shape[1]] = W1
        W[W1.shape[0]:, W1.shape[1]:] = W2
        Ws.append(W)
        cs.append(np.concatenate([c1.biases[l], c2.biases[l]]))
    for e1, e2 in zip(c1.slopes(), c2.slopes()):
        acts.append("prelu")
        slopes.append(np.concatenate([e1, e2]))
    sx = np.concatenate([np.broadcast_to(c1.sigma_x, (c1.D,)), np.broadcast_to(c2.sigma_x, (c2.D,))])
    X = np.hstack([c1.X, c2.X])
    return Case(Ws, cs, acts, slopes, sx, c1.sigma_z, X, desc=f"additive of [{c1.desc}] and [{c2.desc}]")


def random_additive(rng, regime="ordinary"):
    depth = int(rng.integers(1, 3 if regime == "ordinary" else 4))
    n = 3
    c1 = random_case(rng, 1, regime, n, D=int(rng.integers(1, 6)), depth=depth)
    c2 = random_case(rng, 1, regime, n, D=int(rng.integers(1, 6)), depth=depth)
    for c in (c1, c2):  # keep the S = 2 partition small
        for l in range(depth):
            keep = min(c.weights[l].shape[0], 6)
            c.weights[l] = c.weights[l][:keep]
            c.biases[l] = c.biases[l][:keep]
            c.weights[l + 1] = c.weights[l + 1][:, :keep]
            if np.ndim(c.slope[l]):
                c.slope[l] = np.asarray(c.slope[l])[:keep]
        c.sigma_z = 1.0
        c.X = cpa_forward(c.weights, c.biases, c.slopes(), rng.normal(size=(n, 1)))
        c.X += rng.choice([0.0, 1.0, 5.0] if regime == "ordinary" else [0.0, 5.0, 30.0, 1e3], size=(n, 1)) * \
            np.max(c.sigma_x) * rng.normal(size=c.X.shape) / math.sqrt(c.D)
    return c1, c2


def check_additive(c1, c2, log_prob=default_log_prob):
    """p(x1, x2) of the block-diagonal S = 2 net = p1(x1) p2(x2)."""
    both = additive_case(c1, c2)
    lp = _lp(log_prob, both)
    lp12 = _lp(log_prob, c1) + _lp(log_prob, c2)
    _, g, x = residual_scale(both)
    return _errs(lp, lp12, tolerance(both, np.abs(lp12), x + g))


def random_linear(rng, regime="ordinary"):
    S = int(rng.integers(1, 3))
    D = int(rng.integers(1, 11))
    scale = 10 ** rng.uniform(-6, 4) if regime == "hard" else 10 ** rng.uniform(-0.5, 0.5)
    A, b = rng.normal(size=(D, S)) * scale, rng.normal(size=D) * scale
    sx = 10 ** rng.uniform(-4, 3) if regime == "hard" else 10 ** rng.uniform(-2, 0)
    n = 3
    X = rng.normal(size=(n, S)) @ A.T + b
    off = rng.choice([0.0, 5.0, 30.0, 1e3, 1e6] if regime == "hard" else [0.0, 1.0, 5.0], size=(n, 1))
    u = rng.normal(size=X.shape)
    X = X + off * sx * u / np.linalg.norm(u, axis=1, keepdims=True)
    if rng.random() < 0.5:  # the affine map as a generator with a "linear" hidden layer
        W1 = rng.normal(size=(3, S))
        Ws = [W1, np.linalg.lstsq(W1.T, A.T, rcond=None)[0].T]
        A = Ws[1] @ W1  # the exact composite (as floats)
        cs = [np.zeros(3), b]
        acts = ["linear"]
    else:
        Ws, cs, acts = [A], [b], []
    return Case(Ws, cs, acts, [0.01] * len(acts), sx, 1.0, X, desc=f"linear S={S} D={D} scale={scale:.3g} sigma_x={sx:.3g}"), A


def check_linear(case, A, log_prob=default_log_prob):
    """Affine generator: log p = log N(x; b, sigma_x^2 I + sigma_z^2 A A^T) (40-digit closed form)."""
    lp = _lp(log_prob, case)
    Wl = case.weights
    # composite map evaluated in the oracle from the layers themselves (exact in mpmath)
    ref = []
    for x in case.X:
        if len(Wl) == 1:
            ref.append(float(linear_log_prob_mp(Wl[0], case.biases[0], x, case.sigma_x, case.sigma_z)[0]))
        else:
            import mpmath

            with mpmath.workdps(60):
                W1 = mpmath.matrix(Wl[0].tolist())
                W2 = mpmath.matrix(Wl[1].tolist())
                Am = W2 * W1
                bm = W2 * mpmath.matrix(case.biases[0].tolist()) + mpmath.matrix(case.biases[1].tolist())
                # the composite's entries to 60 digits, passed as strings
                A_s = [[mpmath.nstr(Am[i, j], 50) for j in range(Am.cols)] for i in range(Am.rows)]
                b_s = [mpmath.nstr(bm[i], 50) for i in range(bm.rows)]
            ref.append(float(_linear_mp_str(A_s, b_s, x, case.sigma_x, case.sigma_z)))
    ref = np.array(ref)
    _, g, x = residual_scale(case)
    return _errs(lp, ref, tolerance(case, np.abs(ref), x + g))


def _linear_mp_str(A_s, b_s, x, sigma_x, sigma_z):
    import mpmath

    with mpmath.workdps(80):
        D = len(A_s)
        Am = mpmath.matrix([[mpmath.mpf(v) for v in row] for row in A_s])
        sx = np.broadcast_to(np.asarray(sigma_x, float), (D,))
        C = mpmath.mpf(sigma_z) ** 2 * Am * Am.T
        for i in range(D):
            C[i, i] += mpmath.mpf(sx[i]) ** 2
        r = mpmath.matrix([mpmath.mpf(float(xi)) - mpmath.mpf(bi) for xi, bi in zip(x, b_s)])
        L = mpmath.cholesky(C)
        y = mpmath.lu_solve(L, r)
        return -(D * mpmath.log(2 * mpmath.pi) + 2 * mpmath.fsum(mpmath.log(L[i, i]) for i in range(D))
                 + mpmath.fsum(v * v for v in y)) / 2


CHECKS = {
    "translation": check_translation,
    "scaling": check_scaling,
    "latent_rescale": check_latent_rescale,
    "permutation": check_permutation,
    "duplication": check_duplication,
    "rotation": check_rotation,
}


def run_class(name, seed, log_prob=default_log_prob):
    """One case of class ``name`` ("<identity>-S<1|2>-<regime>", "additive-<regime>",
    "linear-<regime>"): returns (err, tol, description)."""
    rng = np.random.default_rng(seed)
    parts = name.split("-")
    regime = parts[-1]
    if parts[0] == "additive":
        c1, c2 = random_additive(rng, regime)
        err, tol = check_additive(c1, c2, log_prob)
        return err, tol, additive_case(c1, c2)
    if parts[0] == "linear":
        case, A = random_linear(rng, regime)
        err, tol = check_linear(case, A, log_prob)
        return err, tol, case
    S = int(parts[1][1])
    case = random_case(rng, S, regime)
    err, tol = CHECKS[parts[0]](case, rng, log_prob)
    return err, tol, case


def assert_class(name, seed, log_prob=default_log_prob):
    try:
        err, tol, case = run_class(name, seed, log_prob)
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as e:  # an exception is a failure too
        raise AssertionError(f"{name} seed={seed}: raised {e!r}") from e
    bad = ~(err <= tol)
    assert not bad.any(), (f"{name} seed={seed}: err/tol = {np.max(err / tol):.3g} (err={err.tolist()}, "
                           f"tol={tol.tolist()})\n  case: {case.desc}\n  X={case.X.tolist()}")


# --------------------------------------------------------------------------- tests
def _settings(factor=1):
    return settings(max_examples=N_EXAMPLES * factor, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


SEEDS = st.integers(0, 2**32 - 1)
ORDINARY = [f"{k}-S{S}-ordinary" for k in CHECKS for S in (1, 2)] + ["additive-ordinary", "linear-ordinary"]
HARD = [f"{k}-S{S}-hard" for k in CHECKS for S in (1, 2)] + ["additive-hard", "linear-hard"]
DEEP = [f"{k}-S2-deep" for k in CHECKS]
# classes that fail on the current code (issue 12); strict: they must flip once fixed
_I12 = "issue 12"
XFAIL = {
}


def _param(name):
    if name in XFAIL:
        return pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=XFAIL[name]))
    return name


@pytest.mark.parametrize("name", [_param(n) for n in ORDINARY])
@_settings()
@given(seed=SEEDS)
def test_ordinary(name, seed):
    assert_class(name, seed)


@pytest.mark.parametrize("name", [_param(n) for n in HARD])
@_settings()
@given(seed=SEEDS)
def test_hard(name, seed):
    assert_class(name, seed)


@pytest.mark.parametrize("name", [_param(n) for n in DEEP])
@_settings()
@given(seed=SEEDS)
def test_deep(name, seed):
    assert_class(name, seed)


@pytest.mark.slow
@pytest.mark.parametrize("name", [_param(n) for n in ORDINARY + HARD + DEEP])
@_settings(40)
@given(seed=SEEDS)
def test_many(name, seed):
    assert_class(name, seed)


def _perturbed(model, X):
    """A deliberately wrong log p: off by 1e-8 relative, by an amount that depends on the
    model and data (so that it does not cancel between the two sides of an identity)."""
    lp = model.log_prob(X)
    g = model.generator
    h = sum(float(W.ravel()[0]) for W in g.weights) + float(np.sum(X, axis=1).mean()) + model.sigma_z \
        + float(np.mean(model.sigma_x)) + 0.1 * g.latent_dim + 0.37 * g.n_units
    return lp + 1e-8 * (np.abs(lp) + 1) * np.sin(h)


@pytest.mark.parametrize("name", ORDINARY)
def test_identities_can_fail(name):
    """Every identity rejects a log p that is 1e-8 relative wrong (on most seeds)."""
    caught = 0
    for seed in range(6):
        err, tol, _ = run_class(name, seed, _perturbed)
        caught += bool(np.any(err > tol))
    assert caught >= 4, f"{name}: a 1e-8 relative error went unnoticed on {6 - caught} of 6 seeds"


# Cases found by larger runs of benchmarks/exactness.py (seeds beyond the default sizes).
@pytest.mark.parametrize("name, seed", [
    ("translation-S2-hard", 1010),  # a far polygon's nearest point on an edge not facing the mean: NaN
    ("scaling-S2-hard", 1010),
    ("permutation-S2-hard", 1010),
    # the normalising constant inside the kernels rounded differently under 2^k scaling, and the S = 1
    # reference was chosen by ub - er + (exact - cheap), which lost the term when er was ~1e33: log p 0.011 off
    ("scaling-S1-hard", 1066),
    # a steep region far from the origin: residuals through the extrapolated offset b and a centre at g(0) (~1e8;
    # the data ~7e3) were 7e-6 nats off; then an S = 2 anchor one rounding past a kink was evaluated on the
    # neighbouring piece (3.5e-7 off); now within 2e-10 of mpmath, which is what the inputs' rounding allows
    ("additive-hard", 1045),
    # a point 1e6 sigma_x off a steep S = 2 net (|A| ~ 1e14 per unit z in its region): the posterior lies
    # |z| ~ 3e5 (1e6 sigma_z) out along a direction the region's map nearly does not take, where the forward
    # pass in absolute values is 1e22 and eps-perturbed weights move g by ~1e6 (sigma_x ~ 0.03): log p is not
    # determined there (the grid's z^ near the origin had put g's rounding at 1e17 and flagged 1.4x)
    ("translation-S2-hard", 102933),
    # an affine S = 2 generator with D = 1 (weights ~150, sigma_x 1.2e-4) was 57-2543 nats from the closed form:
    # its posterior mean went through Sigma = Lambda^-1 (condition number ~1e12); now the orthonormal-basis form
    ("linear-hard", 200565),
    # found by the 102,000-case run (--cases 3000 --seed 700000), not yet fixed:
    # a steep 12-layer S = 1 net (g ~ 2e23 in constant regions, sigma_x 547), a point on the manifold:
    # the row's reference (a constant region, log kappa -9.4e9) lies far from log p (-16.55), so log p =
    # log kappa_ref + (a sum ~ +9.4e9) keeps only ~1e-6 absolute. Adding the normalising constant last
    # made 2^k scaling bitwise equivariant; latent rescaling (which changes log det Lambda) still shows it
    ("scaling-S1-hard", 701241),
    # latent rescaling moves log det Lambda, and with it the rounding of the far reference: 2.4e-6 apart.
    # (The cheap and exact log kappa there differ by 4.6e10 nats, far beyond the cheap form's rounding bound:
    # g's values at the anchors and in the regions' maps are different roundings of 2e23.) Now a row whose
    # largest term lies far above its reference is done again with that term's pair as the reference
    ("latent_rescale-S1-hard", 701241),
    # S = 2, steep (6.7e3 per layer), a point 1e3 sigma_x off: posterior sds of 1e-18 in z, so a region's
    # mean lies within its own rounding (eps |z|) of a vertex, thousands of sds in whitened units. The
    # section rule scaled its weights by exp(d^2 / 2) with d from the whitened polygon, while the anchored
    # copy it integrates (lines rounded by more than d there) came nearer: exp overflowed, log p was +inf.
    # Now the box and scale follow the anchored polygon, and the sums rescale where a section comes nearer
    ("scaling-S2-hard", 701704),
    ("translation-S2-hard", 701500),
    # found by the run at --seed 800000: an S = 1 region where every first-layer unit is off (map exactly 0)
    # beside regions of slope 1e16 got |A| ~ 8 from the prefix sum of slope changes; at sigma_x 0.053 its
    # posterior moved 4.7e4 sd out and log p by 90% between two unit orders. Maps are now per-pattern products
    ("permutation-S1-hard", 802078),
    ("duplication-S1-hard", 802078),
    # found by the run at --seed 900000: a point 1e5 sigma_x off an S = 2 net; neither the grid nor the
    # reference's or largest term's Gaussian mean (which peaks far outside its region) came near the
    # posterior (energy 9.5e11 and 3e15 against 2e11), so the tolerance took g's rounding at |z| ~ 10
    # where the posterior lies at |z| ~ 600 (35x more): 3.7x over. The posterior mean is now a candidate
    ("permutation-S2-hard", 901735),
    ("rotation-S2-hard", 901735),
    # found by the run at --seed 1000000: a point 1e7 off an S = 2 net whose posterior sits on a
    # vertex of regions whose Gaussians peak 4.8e7 sd away; the far polygons' terms were the peak
    # minus d^2 / 2 and moved 36 eps |log p| when a unit was duplicated (tests/test_conditioning.py)
    ("duplication-S2-hard", 1001666),
])
def test_cases_found_by_larger_runs(name, seed):
    assert_class(name, seed)


def test_section_rule_steps_past_an_ulp():
    """S = 2 hard case 1001954 (found when the harness began to take posterior means): a panel
    between two section breakpoints one ulp apart (at 711 whitened sd) got a step of 1e-14, below
    half an ulp, and the section rule never advanced: posterior() hung. It must finish and agree
    with log_prob within the stated uncertainty."""
    rng = np.random.default_rng(1001954)
    case = random_case(rng, 2, "hard")
    model = case.model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastcpa.AccuracyWarning)
        lp = model.log_prob(case.X)
        post = model.posterior(case.X)
    assert np.all(np.abs(post.log_prob - lp) <= np.maximum(model.last_log_prob_uncertainty_, 1e-12 * np.abs(lp)))
    assert np.allclose(post.region_probs.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.all(np.isfinite(post.mean)) and np.all(np.isfinite(post.cov))


def test_undetermined_rows_say_so_and_paths_agree_within_it():
    """The 12-layer net of latent_rescale-S1-hard 701241 (g ~ 2e23, sigma_x 547): g's values in
    the regions' maps and at their anchors are different roundings (65536 apart, whitened), so
    log kappa is undetermined by ~1e10 nats, although rows 0 and 1 have a residual of exactly 0
    at their reference (the first-order estimate alone said 4e-15). Every row must warn, and
    log_prob, posterior and the E-step may differ only within the stated uncertainty; row 2, whose
    largest term lay 5.6e10 nats above the first reference, agrees once rebased."""
    rng = np.random.default_rng(701241)
    case = random_case(rng, 1, "hard")
    model = case.model()
    with pytest.warns(fastcpa.AccuracyWarning):
        lp = model.log_prob(case.X)
    spread = model.last_log_prob_uncertainty_
    assert np.all(spread > 1e6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastcpa.AccuracyWarning)
        post = model.posterior(case.X)
        stats = model.sufficient_stats(case.X)
    assert np.all(np.abs(post.log_prob - lp) <= spread)
    assert abs(stats.log_likelihood - lp.sum()) <= spread.sum()
    assert abs(post.log_prob[2] - lp[2]) <= 1e-12 * abs(lp[2])
    assert np.allclose(post.region_probs.sum(axis=1), 1.0, rtol=0, atol=1e-12)
