"""Exact, monotone EM for CPA generators (docs/mathematics.md, section 8).

With ``schedule="layerwise"`` (the default for S = 1), one iteration sweeps
the blocks of parameters in turn, each from a fresh exact E-step
(:meth:`CPAModel.sufficient_stats`):

1. every hidden layer ``k``: the frozen-mask block update
   (:class:`fastcpa.mstep.FrozenLayer`). Moving ``W_k`` moves the partition,
   so the proposal is a surrogate: the exact log-likelihood of the new
   generator is computed and the step shortened (up to ``max_backtracks``
   times) until it does not decrease; if none qualifies, the layer is kept.
   A rejected step ``s`` is followed by the maximum of the parabola through
   the start (its slope along the step the exact gradient, by Fisher's
   identity) and that trial, kept within ``[s/16, s/2]`` (:func:`_next_step`);
2. the output layer (:func:`fastcpa.mstep.output_layer_update`) and the
   noise (:meth:`SufficientStats.noise_update`): exact M-steps (the
   partition does not move), checked the same way all the same.

With ``schedule="joint"`` (the default for S = 2) one E-step serves every
block of an iteration and the whole proposal is checked once (``fit``).

So ``history_`` (mean exact log-likelihood after each iteration) never
decreases, by construction rather than by EM's theory alone; ``backtracks_``
records how many rejected trial steps ("halvings") each iteration had.
"""

import contextlib
import functools
import logging
import math
import sys
import time


import numpy as np

from ._threads import blas_single_threaded
from ._validation import check_count, check_real
from .generator import Generator

__all__ = ["fit", "log_likelihood_gradient", "noise_variance_floor"]

_log = logging.getLogger("fastcpa")


def _with_layer(gen, k, W, c):
    """A copy of ``gen`` with layer k's weights and bias replaced."""
    Ws = [w.copy() for w in gen.weights]
    cs = [b.copy() for b in gen.biases]
    Ws[k], cs[k] = W, c
    return Generator(Ws, cs, activation=gen.activations, slope=[np.asarray(e) for e in gen.slopes])


# Weights from which a preconditioned hidden layer's "auto" CG stops after 2 iterations (fit's cg_maxiter).
_WIDE_LAYER = 1 << 19


def _losing(base):
    """A stop rule for a trial's likelihood pass (``estep._statistics_kept``): true once
    the rows done so far put the trial's total below that of the accepted model, whose
    log p per row is ``base`` (the same rows, in order), beyond reasonable doubt: their
    mean change plus three standard errors (with the finite-population factor) is below 0.

    Such a trial would almost surely be refused by the whole pass; stopping it there
    saves the rest of a pass (about three quarters of one at N = 1000). ``fit`` takes
    the rows in an interleaved order (every fourth first), so the first rows are a
    sample of the data even where it is sorted. A refused trial only shortens the
    step: the likelihood still never falls. After a stop, ``stop.change`` holds the
    rows' mean change, an estimate of the whole pass's, and ``stop.sure`` whether it
    lies six standard errors below 0 (then good to within about a sixth of itself)."""
    N = len(base)

    def stop(log_p, done):
        if done < 64 or done >= N:
            return False
        d = log_p[:done] - base[:done]
        stop.change = float(d.mean())  # the estimate of the mean change, for the next step's size
        se = d.std(ddof=1) * math.sqrt((1.0 - done / N) / done)
        stop.sure = bool(stop.change + 6.0 * se < 0.0)  # within a fifth of itself or so
        return bool(stop.change + 3.0 * se < 0.0)

    return stop


def _mean_log_lik(model, X, stats=False, against=None):
    """Mean exact log p over the rows of ``X`` (already checked), as ``log_prob``
    gives it (without its accuracy estimate: trial steps can be far worse
    conditioned than the fit, and a user's own ``log_prob`` of the fitted model
    still warns). The pass's rows stay with ``model`` for its E-step
    (:func:`_stats`): an accepted step's likelihood pass is the next E-step's first.
    With ``stats`` (a trial likely to be taken), the pass forms the E-step's
    statistics as well (``estep._statistics_and_rows``): the moments cost less
    than the whole pass again in a separate E-step. With ``stats``, ``against`` (the
    accepted model, whose pass left its rows) lets the pass stop early where the
    trial is clearly below it (:func:`_losing`): the value returned is then the
    accepted model's plus the rows' mean change, below it and an estimate of the
    trial's, for the next step's size (:func:`_next_step`)."""
    if stats:
        from .estep import _statistics_and_rows

        rows = getattr(against, "_fit_rows", None)
        stop = _losing(rows[1][0]) if rows is not None and rows[0] is X else None
        out = _statistics_and_rows(model, X, stop=stop)
        if out is None:
            model._stopped_early = not stop.sure
            return float(np.mean(rows[1][0])) + stop.change
        st, rows = out
        model._fit_stats = (X, st)
    else:
        rows = model._likelihood_rows(X)
    model._fit_rows = (X, rows)
    return float(np.mean(rows[0]))


def _stats(model, X):
    """``model.sufficient_stats(X)``, reusing what :func:`_mean_log_lik` made: the
    statistics themselves, or its likelihood pass."""
    from .estep import sufficient_statistics

    cached = getattr(model, "_fit_stats", None)
    if cached is not None and cached[0] is X:
        return cached[1]
    cached = getattr(model, "_fit_rows", None)
    rows = cached[1] if cached is not None and cached[0] is X else None
    return sufficient_statistics(model, X, likelihood_rows=rows)


def _single_threaded_blas(f):
    """Run ``f`` with BLAS single-threaded: its wide products are split across Numba's
    threads instead (``fastcpa._threads.matmul``), so no idle OpenBLAS worker is left
    spinning on the cores the likelihood kernels run on next (``kernels/cpu/gemm.py``)."""
    @functools.wraps(f)
    def call(*args, **kwargs):
        with blas_single_threaded():
            return f(*args, **kwargs)

    return call


@_single_threaded_blas
def fit(model, X, *, n_iter=50, tol=1e-6, diagonal=None, layers=True, ridge=0.0, max_backtracks=8,
        cg_maxiter="auto", precondition="auto", progress=None, method="em", lr=1e-2, callback=None, verbose=False,
        max_time=None, schedule="auto"):
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
        Shortenings of a hidden layer's step before it is skipped for the
        iteration (``schedule="layerwise"``: each to the maximum of the
        parabola through the start, with the exact gradient's slope, and the
        rejected trial, within 1/16 to 1/2 of that trial; ``"joint"``: halved).
        A layer's first trial step is twice the step it took last (at most 1;
        in the first iteration, twice the previous layer's): where its
        frozen-mask steps overshoot, it does not pay the same rejected
        likelihood passes every iteration.
    cg_maxiter : int or "auto", default "auto"
        Conjugate-gradient iterations per hidden-layer update where the layer
        is too large to solve densely (:meth:`fastcpa.mstep.FrozenLayer.update`):
        ``"auto"`` is 5 when preconditioned (2 for a layer of 2^19 weights or
        more, 1024 x 1024 say), else 50. Every iterate raises the
        frozen-mask Q (CG lowers the quadratic error monotonically from the
        current parameters), so a truncated solve is a generalised EM step.
        Measured from one start (N = 1000, 2 cores, a wall-clock budget):
        on ``[1, 256, 256, 256, 64]``, 30 s reached 74.0 nats with 5 and 69.1
        with 2 (earlier versions: 72.1-72.4 with 5, 70.5-71.0 with 10-20); on
        ``[1, 1024, 1024, 1024, 64]``, the first two iterations took 9.6-9.8 s
        each with 2 against 11.2-12.4 s with 5 and gained as much (21.66 and
        21.64 nats an iteration; earlier versions: 110 s reached 58.3 with 2,
        57.0 with 1 and 56.8 with 5); on the S = 2
        net ``2-64-64-10`` (plain CG, joint schedule), 120 s reached 7.21 nats
        with 15 (13 iterations) against 7.14 with 50 (10), but 50 iterations
        reached 7.70 with 15 against 7.99 with 50: the default keeps 50, for
        the gain of each iteration.
    precondition : bool or "auto", default "auto"
        Precondition those iterations by a Kronecker-factored approximation of
        the operator (:meth:`~fastcpa.mstep.FrozenLayer.kronecker_preconditioner`):
        a few then come close to the frozen-mask optimum, where plain CG steps
        mostly along the operator's largest eigenvectors. ``"auto"``: for
        ``S = 1`` generators only. Measured on this package's benchmark nets
        (N = 1000 and 200, from one start): on ``[1, 256, 256, 256, 64]``, 15
        iterations reached 71.2 nats (5 preconditioned CG iterations) in 35 s
        against 67.2 in 57 s (50 plain ones); on the ``S = 2`` net ``2-64-64-10``
        the preconditioned steps multiplied the regions by 5 (9k to 50k), and
        with them the cost of every later pass, so 3 iterations took 105 s
        against 25-31 s for a similar gain (7.44 against 7.17-7.30 nats).
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
        If it returns a true value (``True``, ``numpy.True_``, ...), training
        stops there (a time budget, say); the fit so far is written back as
        usual. It runs, like the whole fit, with BLAS limited to one thread
        (the fit splits its own wide products across Numba's threads).
    verbose : bool or int, default False
        Log through the :mod:`logging` logger ``"fastcpa"`` (level INFO):
        ``True`` or 1, one line per iteration (iteration, exact mean
        log-likelihood and its gain, step halvings, regions, seconds); 2,
        also one line per block update (each hidden layer, the output layer
        and noise). Where logging is not configured (no handler on the way
        to the root logger), the lines go to stderr for the duration of the
        fit. Independent of ``progress``. After the first iteration, a line
        gives its time and an estimate for the remaining iterations (at
        ``verbose >= 1``; the progress bar shows its own rate).
    max_time : float, optional
        A wall-clock budget in seconds: no iteration starts once the fit has
        run this long, so it ends within one iteration's time of the budget
        (``stopped_by_time_`` says whether it did). Default: no budget.
    schedule : {"auto", "layerwise", "joint"}, default "auto"
        ``"layerwise"``: each hidden layer, then the output layer and noise,
        from a fresh E-step, each checked on its own (the module docstring).
        ``"joint"``: one E-step per iteration; every hidden layer in turn is
        updated from it with the masks frozen (each seeing the layers before
        it already moved, through those masks), the hidden layers' step is
        halved as one, and each trial takes the output layer and noise that
        maximise the frozen-mask Q for its hidden layers; the exact
        likelihood checks every trial as before. An iteration then costs one
        E-step and one exact likelihood pass (plus halvings) where
        ``"layerwise"`` costs one of each per block, but gains less, since
        later blocks see an older posterior. ``"auto"``: ``"joint"`` for
        ``S = 2``, where the E-step's polygon moments dominate an iteration,
        else ``"layerwise"``. Measured from one start (N = 1000, this
        package's benchmark nets, 2 cores): on the S = 2 net ``2-64-64-10``,
        6 joint iterations reached 6.82 nats in 88 s, 2 layerwise ones 6.54
        in 78 s (3: 6.94 in 129 s); on ``[1, 256, 256, 256, 64]``, 10 joint
        iterations reached 53.8 in 11 s, 2 layerwise ones 54.9 in 12 s
        (10: 68.8 in 35 s), the hidden layers' frozen-mask steps there
        needing layer-by-layer step sizes.

    Returns
    -------
    CPAModel
        ``model`` itself, with ``generator`` and ``sigma_x`` fitted,
        ``history_`` (mean exact log-likelihood: at the start, then after
        each iteration), ``backtracks_`` (per iteration), ``fit_time_``
        (seconds per iteration) and ``stopped_by_time_``.

    Raises
    ------
    KeyboardInterrupt
        On Ctrl-C the fit so far is not lost: ``model`` is first given the
        last accepted parameters (the best so far: every accepted update
        raised the exact likelihood), ``history_`` and ``backtracks_`` up to
        there (the interrupted iteration's entry, if some of its updates were
        accepted, holds their likelihood), and ``interrupted_ = True``; a
        warning on the ``"fastcpa"`` logger names the iteration. Then the
        interrupt propagates, so a script stops as Ctrl-C asks; in an
        interactive session the model is ready to use or to fit further.

    Notes
    -----
    The noise variance never falls below ``NOISE_FLOOR`` (1e-6) times the
    data's variance in that dimension (averaged over dimensions for isotropic
    noise). Where that variance is 0 (one sample, constant data, a constant
    column) the floor is 1e-6 times the data's mean variance over the
    dimensions that vary, failing that 1e-6 times the mean of ``x**2``,
    failing that (all-zero data) 1e-6: see :func:`noise_variance_floor`.

    Examples
    --------
    >>> import logging, numpy as np, fastcpa
    >>> rng = np.random.default_rng(0)
    >>> X = np.c_[rng.normal(size=100), rng.normal(size=100) ** 2]
    >>> gen = fastcpa.Generator([rng.normal(size=(4, 1)), rng.normal(size=(2, 4))],
    ...                         [rng.normal(size=4), np.zeros(2)])
    >>> model = fastcpa.CPAModel(gen, sigma_x=1.0)
    >>> model = fastcpa.em.fit(model, X, n_iter=3, progress=False, verbose=True)  # doctest: +SKIP
    EM iteration 1: mean log-likelihood -2.81234 (+0.4321), 0 halvings, 5 regions, 0.02 s
    ...
    >>> stop = lambda i, ll, fit: np.bool_(i >= 2)          # numpy booleans stop too
    >>> len(fastcpa.em.fit(model, X, n_iter=10, progress=False, callback=stop).history_)
    3
    """
    from .model import CPAModel
    from .mstep import FrozenLayer

    if method not in ("em", "gradient"):
        raise ValueError(f"method must be 'em' or 'gradient', got {method!r}.")
    if schedule not in ("auto", "layerwise", "joint"):
        raise ValueError(f"schedule must be 'auto', 'layerwise' or 'joint', got {schedule!r}.")
    if schedule == "auto":
        schedule = "joint" if model.generator.latent_dim == 2 else "layerwise"
    n_iter = check_count(n_iter, "n_iter")
    # -inf: never stop on a small gain (run all n_iter iterations)
    tol = -math.inf if tol == -math.inf else check_real(tol, "tol", allow_inf=True)
    ridge = check_real(ridge, "ridge", low=0.0)
    max_backtracks = check_count(max_backtracks, "max_backtracks")
    if precondition == "auto":
        precondition = model.generator.latent_dim == 1
    elif not isinstance(precondition, (bool, np.bool_)):
        raise TypeError(f"precondition must be True, False or 'auto', got {precondition!r}.")
    auto_cg = isinstance(cg_maxiter, str) and cg_maxiter == "auto"
    if auto_cg:
        cg_maxiter = 5 if precondition else 50
    else:
        cg_maxiter = check_count(cg_maxiter, "cg_maxiter", minimum=1)
    lr = check_real(lr, "lr", low=0.0, low_inclusive=False)
    if max_time is not None:
        max_time = check_real(max_time, "max_time", low=0.0, low_inclusive=False, allow_inf=True)
    X = model._check_X(X)
    if len(X) == 0:
        raise ValueError("fit needs at least one sample; X has 0 rows.")
    # every fourth row first, then the next of each four, ...: a trial's likelihood pass
    # sees a sample of the data first (_losing); nothing else depends on the order
    X = X[np.argsort(np.arange(len(X)) % 4, kind="stable")]
    if diagonal is None:
        diagonal = np.ndim(model.sigma_x) == 1
    if progress is None:
        progress = sys.stderr.isatty()
    level = int(verbose)
    var_floor = noise_variance_floor(X)
    sig_floor = np.sqrt(var_floor if diagonal else var_floor.mean())
    gen, sigma, sz = model.generator, model.sigma_x, model.sigma_z
    cur = CPAModel(gen, sigma, sz)
    ll = _mean_log_lik(cur, X, stats=method == "em")
    history, backtracks = [ll], []
    bar = None
    adam = _Adam(cur, lr, sig_floor) if method == "gradient" else None
    name = "EM" if adam is None else "Adam"
    it, n_back = 0, 0
    times, by_time = [], False
    # each layer's first trial step: twice the step it last took (at most 1), so a layer whose
    # frozen-mask steps overshoot does not pay the same failing likelihood passes every iteration;
    # a layer's first update starts from the step the layer before it took (layers overshoot alike)
    first_step = {}
    last_step = 1.0
    t_start = time.perf_counter()
    best = (cur, ll)  # the last accepted (model, likelihood), stored by one assignment: Ctrl-C-safe
    with _verbose_logging(level):
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n_iter, desc=name, unit="it")
        try:
            for it in range(1, int(n_iter) + 1):
                t_it = time.perf_counter()
                n_back = 0
                if adam is not None:
                    cur, ll, n_back = adam.step(cur, X, ll, max_backtracks)
                    best = (cur, ll)
                elif schedule == "joint":
                    cur, ll, best, n_back, step = _joint_iteration(
                        cur, X, ll, best, first_step.get("joint", 1.0), max_backtracks, diagonal, sig_floor,
                        layers=layers, ridge=ridge, cg_maxiter=cg_maxiter, precondition=bool(precondition),
                        likely=first_step.get("joint taken", 1.0))
                    if step:
                        first_step["joint"] = min(1.0, 2.0 * step)
                        first_step["joint taken"] = step
                    if level >= 2:
                        _log.info("  joint update: %s, mean log-likelihood %.8g",
                                  f"step {step:g} taken" if step is not None else "kept (every step lowered it)", ll)
                elif layers:
                    for k in range(cur.generator.n_layers - 1):
                        st = _stats(cur, X)
                        fl = FrozenLayer(cur.generator, cur.partition, k)
                        wide = auto_cg and precondition and cur.generator.weights[k].size >= _WIDE_LAYER
                        W1, c1, grad = fl.update(st, cur._noise_var, ridge=ridge, maxiter=2 if wide else cg_maxiter,
                                                 precondition=bool(precondition), return_gradient=True)
                        W0, c0 = cur.generator.weights[k], cur.generator.biases[k]
                        slope = (np.sum(grad[:, :-1] * (W1 - W0)) + grad[:, -1] @ (c1 - c0)) / len(X)
                        taken = False
                        step = first_step.get(k, last_step)
                        for a in range(max_backtracks + 1):
                            if a:
                                # a drop estimated loosely from the first rows: a smaller cut at most
                                step = _next_step(step, slope, ll_t - ll,
                                                  4.0 if getattr(trial, "_stopped_early", False) else 16.0)
                            trial = CPAModel(_with_layer(cur.generator, k, W0 + step * (W1 - W0),
                                                         c0 + step * (c1 - c0)), cur.sigma_x, sz)
                            # each pass forms the next block's statistics: for a refused trial
                            # they cost ~40% of a separate E-step (S = 1 intervals' moments)
                            ll_t = _mean_log_lik(trial, X, stats=True, against=cur)
                            if ll_t >= ll:
                                cur, ll = best = (trial, ll_t)
                                taken = True
                                first_step[k] = last_step = min(1.0, 2.0 * step)
                                break
                            n_back += 1
                        if level >= 2:
                            _log.info("  layer %d: %s, mean log-likelihood %.8g", k,
                                      f"step {step:g} taken" if taken else "kept (every step lowered it)", ll)
                if adam is None and schedule == "layerwise":
                    # output layer and noise: exact M-steps on one fresh E-step
                    gen_o, sig = _output_and_noise(_stats(cur, X), cur.generator, cur.partition, diagonal,
                                                   sig_floor, ridge)
                    trial = CPAModel(gen_o, sig, sz)
                    ll_t = _mean_log_lik(trial, X, stats=True, against=cur)  # an exact M-step: mostly taken
                    taken = ll_t >= ll
                    if taken:
                        cur, ll = best = (trial, ll_t)
                    else:
                        n_back += 1
                    if level >= 2:
                        _log.info("  output layer and noise: %s, mean log-likelihood %.8g",
                                  "taken" if taken else "kept (the update lowered it)", ll)
                gain = ll - history[-1]
                history.append(ll)
                backtracks.append(n_back)
                times.append(time.perf_counter() - t_it)
                if level >= 1:
                    _log.info("%s iteration %d: mean log-likelihood %.8g (%+.3g), %d halvings, %d regions, %.3g s",
                              name, it, ll, gain, n_back, cur.partition.n_regions, times[-1])
                    if it == 1 and n_iter > 1:
                        _log.info("  %.3g s per iteration: about %s for the other %d (n_iter=%d%s)", times[0],
                                  _duration(times[0] * (n_iter - 1)), n_iter - 1, n_iter,
                                  "" if max_time is None else f", max_time={max_time:g} s")
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loglik=f"{ll:.6g}", regions=cur.partition.n_regions)
                # any true value stops, numpy's bool included (``is True`` would miss np.True_)
                stop = callback is not None and bool(callback(it, ll, cur))
                if stop or gain < tol:
                    break
                if max_time is not None and it < n_iter and time.perf_counter() - t_start >= max_time:
                    by_time = True
                    if level >= 1:
                        _log.info("%s: stopped after %d iterations, %.3g s (max_time=%g s)", name, it,
                                  time.perf_counter() - t_start, max_time)
                    break
        except KeyboardInterrupt:
            cur, ll = best
            if len(history) == it:  # interrupted inside iteration `it`: keep its accepted updates
                if ll > history[-1]:
                    history.append(ll)
                    backtracks.append(n_back)
            _write_back(model, cur, history, backtracks, times, interrupted=True)
            _log.warning("fit interrupted (KeyboardInterrupt) in iteration %d of %d; the model keeps the last "
                         "accepted parameters: mean log-likelihood %.8g after %d completed iterations",
                         it, int(n_iter), ll, len(history) - 1)
            raise
        finally:
            if bar is not None:
                bar.close()
    _write_back(model, cur, history, backtracks, times, interrupted=False, by_time=by_time)
    return model


class _FrozenCodes:
    """A partition's activation codes beside region offsets ``b`` of another
    generator with the same masks: what :class:`~fastcpa.mstep.FrozenLayer`
    and :func:`~fastcpa.mstep.hidden_maps` read, for a generator whose earlier
    layers a joint sweep has already moved (the masks stay the E-step's)."""

    def __init__(self, partition, b):
        self._partition, self.b = partition, b
        self.n_regions = partition.n_regions

    def code_bits(self, regions=None):
        return self._partition.code_bits(regions)


def _output_and_noise(st, gen, frozen, diagonal, sig_floor, ridge):
    """The output layer and noise maximising the frozen-mask Q for the hidden
    layers of ``gen`` (masks ``frozen``: the partition itself, an exact M-step, or
    the E-step's codes beside moved hidden layers): ``(generator, sigma_x)``."""
    from .mstep import hidden_maps, output_layer_update

    G, g = hidden_maps(gen, frozen)
    W, c = output_layer_update(st, gen, frozen, ridge=ridge, maps=(G, g))
    A, b = _output_maps(G, g, W, c)
    sig = np.maximum(st.noise_update(A, b, diagonal=diagonal), sig_floor)
    return _with_layer(gen, gen.n_layers - 1, W, c), (float(sig) if np.ndim(sig) == 0 else sig)


def _joint_iteration(cur, X, ll, best, s0, max_backtracks, diagonal, sig_floor, *, layers, ridge, cg_maxiter,
                     precondition, likely=1.0):
    """One iteration of ``schedule="joint"`` from one E-step. Every hidden layer
    in turn maximises the frozen-mask Q with the layers before it at their new
    values (their maps through the E-step's masks), so the sweep never lowers
    that Q. The hidden layers' step is then halved as one, each trial taking
    the output layer and noise that maximise the frozen-mask Q for its hidden
    layers (a closed form, no E-step), until the exact likelihood does not
    fall; failing every step, the hidden layers stay and only the output layer
    and noise move (an exact M-step: the partition stays). Returns ``(cur,
    ll, best, halvings, step)`` (``step`` 0 for that last case, None where
    even it lowered the likelihood). A trial step at most ``likely`` (the step the
    last iteration took: larger ones are tries, often refused) forms the next
    E-step's statistics in its likelihood pass (:func:`_mean_log_lik`)."""
    from .mstep import FrozenLayer
    from .model import CPAModel

    st = _stats(cur, X)
    gen0, part = cur.generator, cur.partition
    frozen = _FrozenCodes(part, part.b)
    gen1 = gen0
    if layers:
        for k in range(gen0.n_layers - 1):
            fl = FrozenLayer(gen1, frozen, k)
            W1, c1 = fl.update(st, cur._noise_var, ridge=ridge, maxiter=cg_maxiter, precondition=precondition)
            gen1 = _with_layer(gen1, k, W1, c1)
            frozen = _FrozenCodes(part, fl.maps(np.concatenate([W1, c1[:, None]], axis=1))[1])
    frozen = _FrozenCodes(part, part.b)  # (output_layer_update and hidden_maps read the codes alone)
    n_back = 0
    steps = [s0 * 0.5**a for a in range(max_backtracks + 1)] if layers and gen0.n_layers > 1 else []
    for step in steps + [0.0]:
        Ws = [w0 + step * (w1 - w0) for w0, w1 in zip(gen0.weights[:-1], gen1.weights[:-1])]
        cs = [c0 + step * (c1 - c0) for c0, c1 in zip(gen0.biases[:-1], gen1.biases[:-1])]
        gen = Generator(Ws + [gen0.weights[-1]], cs + [gen0.biases[-1]], activation=gen0.activations,
                        slope=[np.asarray(e) for e in gen0.slopes])
        gen, sig = _output_and_noise(st, gen, frozen, diagonal, sig_floor, ridge)
        trial = CPAModel(gen, sig, cur.sigma_z)
        ll_t = _mean_log_lik(trial, X, stats=step <= likely)
        if ll_t >= ll:
            return trial, ll_t, (trial, ll_t), n_back, step
        n_back += 1
    return cur, ll, best, n_back, None


def _next_step(step, slope, drop, cut=16.0):
    """The next trial step after ``step`` changed the mean log-likelihood by ``drop < 0``:
    the maximum of the parabola through the start (value 0, ``slope``) and that
    trial, kept within [step / cut, step / 2] (halving where the parabola says
    nothing: no positive slope, a NaN). A drop estimated from a trial's first rows
    less than six standard errors below 0 (:func:`_losing`; a few rows far off move
    it a lot) takes ``cut = 4``."""
    if slope > 0 and math.isfinite(drop):
        best = 0.5 * slope * step * step / (slope * step - drop)
        return min(0.5 * step, max(step / cut, best))
    return 0.5 * step


def _duration(seconds):
    """A duration for a log line: seconds, minutes or hours."""
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


def _write_back(model, cur, history, backtracks, times, *, interrupted, by_time=False):
    model.generator, model.sigma_x = cur.generator, cur.sigma_x
    model._partition, model._params = cur._partition, cur._params
    model.history_ = np.array(history)
    model.backtracks_ = np.array(backtracks, dtype=int)
    model.fit_time_ = np.array(times)
    model.interrupted_ = interrupted
    model.stopped_by_time_ = by_time


@contextlib.contextmanager
def _verbose_logging(level):
    """Let ``verbose`` lines reach stderr where the application configured no logging."""
    handler = None
    if level >= 1 and not _log.hasHandlers():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        _log.addHandler(handler)
    old = _log.level
    if level >= 1 and not _log.isEnabledFor(logging.INFO):
        _log.setLevel(logging.INFO)
    try:
        yield
    finally:
        _log.setLevel(old)
        if handler is not None:
            _log.removeHandler(handler)


def noise_variance_floor(X):
    """The smallest noise variance per dimension that :func:`fit` allows on data ``X``.

    The likelihood is unbounded as ``sigma_x -> 0`` (a region can collapse
    onto a sample), so the variance is kept at or above ``NOISE_FLOOR``
    (1e-6) times a data scale: the dimension's own variance; for a dimension
    with none (one sample, a constant column), the mean variance of the
    dimensions that vary; where none vary, the mean of ``x**2``; and for
    all-zero data, 1 (so the floor is 1e-6, in the data's units).

    Parameters
    ----------
    X : array_like, shape (N, D)

    Returns
    -------
    ndarray, shape (D,)
        Positive variances (isotropic noise uses their mean).

    Examples
    --------
    >>> import numpy as np, fastcpa
    >>> fastcpa.em.noise_variance_floor([[0.0, 5.0], [2.0, 5.0]])   # second column constant
    array([1.e-06, 1.e-06])
    >>> fastcpa.em.noise_variance_floor([[3.0, 4.0]])                 # one sample: mean of x**2
    array([1.25e-05, 1.25e-05])
    """
    from .estep import NOISE_FLOOR

    X = np.asarray(X, dtype=float)
    var = X.var(axis=0)
    varies = var > 0
    if varies.any():
        fallback = var[varies].mean()
    else:
        second = float(np.mean(X * X))
        fallback = second if second > 0 else 1.0
    return NOISE_FLOOR * np.where(varies, var, fallback)


def _output_maps(G, g, W, c):
    """Every region's (A, b) from its last hidden layer's map ``(G, g)`` (:func:`~fastcpa.mstep.hidden_maps`)
    and the output layer ``(W, c)``."""
    return np.tensordot(G, W, axes=([1], [1])).transpose(0, 2, 1), g @ W.T + c  # one GEMM, (R, D, S)


def log_likelihood_gradient(model, X):
    """Exact gradient of ``sum_n log p(x_n)`` in every parameter (Fisher's identity; docs/mathematics.md, section 9).

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

    st = _stats(model, X)
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

    def __init__(self, model, lr, sigma_floor=0.0, b1=0.9, b2=0.999, eps=1e-8):
        self.lr, self.b1, self.b2, self.eps, self.t = lr, b1, b2, eps, 0
        self.sigma_floor = sigma_floor
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

    def _unflat(self, model, theta):
        from .model import CPAModel

        gen = model.generator
        Ws, cs, i = [], [], 0
        for W in gen.weights:
            Ws.append(theta[i:i + W.size].reshape(W.shape))
            i += W.size
        for c in gen.biases:
            cs.append(theta[i:i + c.size].copy())
            i += c.size
        s = np.maximum(np.exp(theta[i:]), self.sigma_floor)  # the noise floor, as the EM update keeps it
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
