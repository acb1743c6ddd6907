"""Exact, monotone EM for CPA generators (DESIGN 2.5).

One iteration sweeps the blocks of parameters in turn, each from a fresh
exact E-step (:meth:`CPAModel.sufficient_stats`):

1. every hidden layer ``k``: the frozen-mask block update
   (:class:`fastcpa.mstep.FrozenLayer`). Moving ``W_k`` moves the partition,
   so the proposal is a surrogate: the exact log-likelihood of the new
   generator is computed and the step is halved (up to ``max_backtracks``
   times) until it does not decrease; if none qualifies, the layer is kept;
2. the output layer (:func:`fastcpa.mstep.output_layer_update`) and the
   noise (:meth:`SufficientStats.noise_update`): exact M-steps (the
   partition does not move), checked the same way all the same.

So ``history_`` (mean exact log-likelihood after each iteration) never
decreases, by construction rather than by EM's theory alone; ``backtracks_``
records how many halvings each iteration needed.
"""

import sys

import numpy as np

from ._validation import check_count, check_real
from .generator import Generator

__all__ = ["fit", "log_likelihood_gradient"]


def _with_layer(gen, k, W, c):
    """A copy of ``gen`` with layer k's weights and bias replaced."""
    Ws = [w.copy() for w in gen.weights]
    cs = [b.copy() for b in gen.biases]
    Ws[k], cs[k] = W, c
    return Generator(Ws, cs, activation=gen.activations, slope=[np.asarray(e) for e in gen.slopes])


def _mean_log_lik(model, X):
    return float(np.mean(model.log_prob(X)))


def fit(model, X, *, n_iter=50, tol=1e-6, diagonal=None, layers=True, ridge=0.0, max_backtracks=8,
        cg_maxiter=50, progress=None, method="em", lr=1e-2, callback=None):
    """Fit ``model`` (in place) to ``X`` by exact, monotone EM; see the module docstring.

    Parameters
    ----------
    model : CPAModel
    X : array_like, shape (N, D)
    n_iter : int, default 50
        Largest number of iterations.
    tol : float, default 1e-6
        Stop when an iteration raises the mean log-likelihood by less than this.
    diagonal : bool, optional
        Diagonal noise (one sigma per dimension); default: as the model has it.
    layers : bool, default True
        Also update the hidden layers (False: output layer and noise only).
    ridge : float, default 0
        Precision of a zero-mean Gaussian prior on the weights (off by default).
    max_backtracks : int, default 8
        Halvings of a hidden layer's step before it is skipped for the iteration.
    cg_maxiter : int, default 50
        Conjugate-gradient iterations per hidden-layer update where the layer
        is too large to solve densely (:meth:`fastcpa.mstep.FrozenLayer.update`).
        Every iterate raises the frozen-mask Q (CG lowers the quadratic
        error monotonically from the current parameters), so a truncated
        solve is a generalised EM step; most of the gain comes in the first
        iterations of these ill-conditioned systems.
    progress : bool, optional
        A tqdm bar (iteration, log-likelihood, regions); default: on when
        stderr is a terminal.
    method : {"em", "gradient"}, default "em"
        ``"gradient"``: Adam on the exact log-likelihood with the exact
        gradient (:func:`log_likelihood_gradient`), in the weights, biases
        and ``log sigma_x``; a step that would lower the likelihood is
        halved like an EM step (``ridge`` and ``layers`` do not apply).
    lr : float, default 1e-2
        Adam's learning rate (``method="gradient"``).
    callback : callable, optional
        Called as ``callback(iteration, mean_log_likelihood, model)`` after
        each iteration (``model``: the current fit, not yet written back).
        If it returns ``True``, training stops there (a time budget, say);
        the fit so far is written back as usual.

    Returns
    -------
    CPAModel
        ``model`` itself, with ``generator`` and ``sigma_x`` fitted,
        ``history_`` (mean exact log-likelihood: at the start, then after
        each iteration) and ``backtracks_`` (per iteration).
    """
    from .model import CPAModel
    from .mstep import FrozenLayer, output_layer_update

    if method not in ("em", "gradient"):
        raise ValueError(f"method must be 'em' or 'gradient', got {method!r}.")
    n_iter = check_count(n_iter, "n_iter")
    tol = check_real(tol, "tol", allow_inf=True)
    ridge = check_real(ridge, "ridge", low=0.0)
    max_backtracks = check_count(max_backtracks, "max_backtracks")
    if cg_maxiter is not None:
        cg_maxiter = check_count(cg_maxiter, "cg_maxiter", minimum=1)
    lr = check_real(lr, "lr", low=0.0, low_inclusive=False)
    X = model._check_X(X)
    if len(X) == 0:
        raise ValueError("fit needs at least one sample; X has 0 rows.")
    if diagonal is None:
        diagonal = np.ndim(model.sigma_x) == 1
    if progress is None:
        progress = sys.stderr.isatty()
    gen, sigma, sz = model.generator, model.sigma_x, model.sigma_z
    cur = CPAModel(gen, sigma, sz)
    ll = _mean_log_lik(cur, X)
    history, backtracks = [ll], []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_iter, desc="EM", unit="it")
    adam = _Adam(cur, lr) if method == "gradient" else None
    for _ in range(int(n_iter)):
        n_back = 0
        if adam is not None:
            cur, ll, n_back = adam.step(cur, X, ll, max_backtracks)
        elif layers:
            for k in range(cur.generator.n_layers - 1):
                st = cur.sufficient_stats(X)
                fl = FrozenLayer(cur.generator, cur.partition, k)
                W1, c1 = fl.update(st, cur._noise_var, ridge=ridge, maxiter=cg_maxiter)
                W0, c0 = cur.generator.weights[k], cur.generator.biases[k]
                for a in range(max_backtracks + 1):
                    step = 0.5**a
                    trial = CPAModel(_with_layer(cur.generator, k, W0 + step * (W1 - W0), c0 + step * (c1 - c0)),
                                     cur.sigma_x, sz)
                    ll_t = _mean_log_lik(trial, X)
                    if ll_t >= ll:
                        cur, ll = trial, ll_t
                        break
                    n_back += 1
        if adam is None:
            # output layer and noise: exact M-steps on one fresh E-step
            st = cur.sufficient_stats(X)
            L = cur.generator.n_layers
            W, c = output_layer_update(st, cur.generator, cur.partition, ridge=ridge)
            gen_o = _with_layer(cur.generator, L - 1, W, c)
            A, b = _maps(cur, W, c)
            sig = st.noise_update(A, b, diagonal=diagonal)
            trial = CPAModel(gen_o, sig, sz)
            ll_t = _mean_log_lik(trial, X)
            if ll_t >= ll:
                cur, ll = trial, ll_t
            else:
                n_back += 1
        gain = ll - history[-1]
        history.append(ll)
        backtracks.append(n_back)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loglik=f"{ll:.6g}", regions=cur.partition.n_regions)
        stop = callback is not None and callback(len(history) - 1, ll, cur) is True
        if stop or gain < tol:
            break
    if bar is not None:
        bar.close()
    model.generator, model.sigma_x = cur.generator, cur.sigma_x
    model._partition, model._params = cur._partition, cur._params
    model.history_ = np.array(history)
    model.backtracks_ = np.array(backtracks, dtype=int)
    return model


def _maps(model, W, c):
    """Every region's (A, b) with the output layer replaced (the partition does not move)."""
    from .mstep import hidden_maps

    G, g = hidden_maps(model.generator, model.partition)
    return np.matmul(W, G), g @ W.T + c


def log_likelihood_gradient(model, X):
    """Exact gradient of ``sum_n log p(x_n)`` in every parameter (Fisher's identity, DESIGN 2.5).

    The posterior is exact, so ``grad log p(x) = E[grad log p(x, z) | x]``: the
    gradient of the expected complete-data log-likelihood at the current
    parameters, a function of the E-step statistics alone.

    Parameters
    ----------
    model : CPAModel
    X : array_like, shape (N, D)

    Returns
    -------
    dict
        ``"weights"``: list of arrays shaped like ``generator.weights``;
        ``"biases"``: likewise; ``"sigma_x"``: a float (isotropic) or an
        array (D,) (diagonal), the derivative in the standard deviation.

    Examples
    --------
    >>> import numpy as np, fastcpa
    >>> rng = np.random.default_rng(0)
    >>> gen = fastcpa.Generator([rng.normal(size=(4, 1)), rng.normal(size=(2, 4))], [rng.normal(size=4), np.zeros(2)])
    >>> model = fastcpa.CPAModel(gen, sigma_x=0.3)
    >>> grad = fastcpa.em.log_likelihood_gradient(model, model.sample(20, seed=1))
    >>> [w.shape for w in grad["weights"]]
    [(4, 1), (2, 4)]
    """
    from .mstep import FrozenLayer

    st = model.sufficient_stats(X)
    gen, part = model.generator, model.partition
    var = model._noise_var
    dW, dc = [], []
    for k in range(gen.n_layers):
        w, c = FrozenLayer(gen, part, k).gradient(st, var)
        dW.append(w)
        dc.append(c)
    # Q's noise part: -E_d / (2 v_d) - N log(v_d) / 2 per dimension; d/dsigma = 2 sigma d/dv
    dv = 0.5 * (st.squared_residuals(part.A, part.b) / var - st.n) / var
    sigma = np.sqrt(var)
    ds = 2.0 * sigma * dv
    return {"weights": dW, "biases": dc, "sigma_x": float(ds.sum()) if np.ndim(model.sigma_x) == 0 else ds}


class _Adam:
    """Adam on the exact log-likelihood (mean over samples) in the weights, biases and log sigma_x."""

    def __init__(self, model, lr, b1=0.9, b2=0.999, eps=1e-8):
        self.lr, self.b1, self.b2, self.eps, self.t = lr, b1, b2, eps, 0
        self.m = None
        self.v = None

    @staticmethod
    def _flat(model, grad=None):
        gen = model.generator
        if grad is None:
            parts = [*gen.weights, *gen.biases, np.log(np.atleast_1d(model.sigma_x))]
        else:  # d/dlog sigma = sigma d/dsigma
            parts = [*grad["weights"], *grad["biases"], np.atleast_1d(grad["sigma_x"]) * np.atleast_1d(model.sigma_x)]
        return np.concatenate([np.ravel(p) for p in parts])

    @staticmethod
    def _unflat(model, theta):
        from .model import CPAModel

        gen = model.generator
        Ws, cs, i = [], [], 0
        for W in gen.weights:
            Ws.append(theta[i:i + W.size].reshape(W.shape))
            i += W.size
        for c in gen.biases:
            cs.append(theta[i:i + c.size].copy())
            i += c.size
        s = np.exp(theta[i:])
        sigma = float(s[0]) if np.ndim(model.sigma_x) == 0 else s
        new = Generator(Ws, cs, activation=gen.activations, slope=[np.asarray(e) for e in gen.slopes])
        return CPAModel(new, sigma, model.sigma_z)

    def step(self, model, X, ll, max_backtracks):
        g = self._flat(model, log_likelihood_gradient(model, X)) / len(X)
        if self.m is None:
            self.m, self.v = np.zeros_like(g), np.zeros_like(g)
        self.t += 1
        self.m = self.b1 * self.m + (1 - self.b1) * g
        self.v = self.b2 * self.v + (1 - self.b2) * g * g
        d = (self.m / (1 - self.b1**self.t)) / (np.sqrt(self.v / (1 - self.b2**self.t)) + self.eps)
        theta = self._flat(model)
        for a in range(max_backtracks + 1):
            trial = self._unflat(model, theta + self.lr * 0.5**a * d)  # ascent
            ll_t = _mean_log_lik(trial, X)
            if ll_t >= ll:
                return trial, ll_t, a
        return model, ll, max_backtracks + 1
