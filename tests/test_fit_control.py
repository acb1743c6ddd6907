"""Controlling a fit: verbose logging, Ctrl-C, stopping callbacks, and the noise floor on
degenerate data (one sample, constant data, a constant column).

The fitted likelihoods are checked against a fresh exact ``log_prob`` of the returned
model, and the floors against the data's variance computed here with NumPy.
"""

import logging
import re

import numpy as np
import pytest

import fastcpa
import fastcpa.mstep


def wave(rng, n):
    t = rng.normal(size=n)
    return np.c_[t, np.cos(1.4 * t)] + 0.1 * rng.normal(size=(n, 2))


def small_model(rng, S=1, sigma=1.0):
    gen = fastcpa.Generator([rng.normal(size=(6, S)), 0.3 * rng.normal(size=(2, 6))],
                            [rng.normal(size=6), np.zeros(2)], activation="leaky_relu", slope=0.1)
    return fastcpa.CPAModel(gen, sigma_x=sigma)


def snapshot(model):
    return [w.copy() for w in model.generator.weights], [c.copy() for c in model.generator.biases], \
        np.copy(model.sigma_x)


def assert_same_parameters(model, snap):
    Ws, cs, sx = snap
    for a, b in zip(model.generator.weights + model.generator.biases, Ws + cs):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model.sigma_x, sx)


# ----------------------------------------------------------------------------- verbose
@pytest.mark.parametrize("method", ["em", "gradient"])
def test_verbose_logs_one_line_per_iteration(rng, caplog, method):
    X = wave(rng, 80)
    caplog.set_level(logging.INFO, logger="fastcpa")
    model = small_model(rng).fit(X, n_iter=3, tol=-np.inf, method=method, progress=False, verbose=True)
    lines = [r.getMessage() for r in caplog.records if r.name == "fastcpa"]
    # after the first iteration, its time and an estimate for the other two
    est = re.fullmatch(r"  (\S+) s per iteration: about (\S+) s for the other 2 \(n_iter=3\)", lines.pop(1))
    assert est and float(est.group(1)) == pytest.approx(model.fit_time_[0], rel=1e-2)
    assert float(est.group(2)) == pytest.approx(2 * model.fit_time_[0], rel=1e-2)
    assert len(lines) == 3, lines
    for i, line in enumerate(lines, 1):
        m = re.search(r"iteration (\d+): mean log-likelihood (\S+) \((\S+)\), (\d+) halvings, (\d+) regions, (\S+) s",
                      line)
        assert m, line
        assert int(m.group(1)) == i
        assert float(m.group(2)) == pytest.approx(model.history_[i], rel=1e-7)
        assert int(m.group(4)) == model.backtracks_[i - 1]
        assert float(m.group(6)) >= 0.0
    # the last line's likelihood is the returned model's exact likelihood
    assert float(re.search(r"log-likelihood (\S+)", lines[-1]).group(1)) == pytest.approx(
        model.log_prob(X).mean(), rel=1e-7)


def test_verbose_2_adds_a_line_per_block(rng, caplog):
    caplog.set_level(logging.INFO, logger="fastcpa")
    small_model(rng).fit(wave(rng, 60), n_iter=2, tol=-np.inf, progress=False, verbose=2)
    lines = [r.getMessage() for r in caplog.records if r.name == "fastcpa"]
    # per iteration: the hidden layer, the output layer and noise, the summary; and the estimate
    assert len(lines) == 7 and sum("iteration" in s for s in lines) == 3, lines
    assert sum("layer 0" in s for s in lines) == 2 and sum("output layer" in s for s in lines) == 2


def test_verbose_reaches_stderr_without_logging_configuration(rng, capsys, monkeypatch):
    # no handler on the way up: what an unconfigured application has (pytest configures the root)
    monkeypatch.setattr(logging.getLogger("fastcpa"), "propagate", False)
    small_model(rng).fit(wave(rng, 60), n_iter=2, tol=-np.inf, progress=False, verbose=True)
    err = capsys.readouterr().err
    assert err.count("EM iteration") == 2, err
    assert not logging.getLogger("fastcpa").handlers  # the temporary handler is gone again


def test_quiet_by_default(rng, caplog):
    caplog.set_level(logging.DEBUG, logger="fastcpa")
    small_model(rng).fit(wave(rng, 60), n_iter=2, progress=False)
    assert not [r for r in caplog.records if r.name == "fastcpa"]


# ----------------------------------------------------------------------------- stopping
@pytest.mark.parametrize("value", [np.True_, np.bool_(True), 1])
def test_callback_returning_a_true_value_stops(rng, value):
    X = wave(rng, 60)
    calls = []

    def cb(i, ll, fit):
        calls.append(i)
        return value if i == 2 else np.False_

    model = small_model(rng).fit(X, n_iter=10, tol=-np.inf, progress=False, callback=cb)
    assert calls == [1, 2]
    assert len(model.history_) == 3 and not model.interrupted_


@pytest.mark.parametrize("method", ["em", "gradient"])
def test_ctrl_c_in_the_callback_keeps_the_fit_and_reraises(rng, caplog, method):
    """KeyboardInterrupt raised at iteration 2: the model holds the parameters after
    iteration 2 (those the callback saw), the history up to there, and the interrupt
    propagates after a warning."""
    X = wave(rng, 80)
    seen = {}

    def cb(i, ll, fit):
        seen[i] = (snapshot(fit), ll)
        if i == 2:
            raise KeyboardInterrupt

    model = small_model(rng)
    start = snapshot(model)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, n_iter=10, tol=-np.inf, method=method, progress=False, callback=cb)
    assert sorted(seen) == [1, 2]
    assert_same_parameters(model, seen[2][0])
    with pytest.raises(AssertionError):
        assert_same_parameters(model, start)  # it did train
    assert model.interrupted_
    assert len(model.history_) == 3 and len(model.backtracks_) == 2
    assert model.history_[1] == seen[1][1] and model.history_[2] == seen[2][1]
    assert np.all(np.diff(model.history_) >= 0)
    # independent of the fit's bookkeeping: the exact likelihood of what it kept
    assert model.log_prob(X).mean() == pytest.approx(model.history_[-1], rel=1e-12)
    warn = [r for r in caplog.records if r.name == "fastcpa" and r.levelno == logging.WARNING]
    assert len(warn) == 1 and "interrupted" in warn[0].getMessage() and "iteration 2" in warn[0].getMessage()


def test_ctrl_c_inside_an_iteration_keeps_the_accepted_updates(rng, monkeypatch):
    """Interrupted in iteration 3 after its hidden-layer update, before the output layer's:
    the model keeps everything accepted so far, and its exact likelihood is history_[-1]."""
    X = wave(rng, 80)
    real = fastcpa.mstep.output_layer_update
    calls = []

    def interrupting(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(fastcpa.mstep, "output_layer_update", interrupting)
    model = small_model(rng)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, n_iter=10, tol=-np.inf, progress=False)
    assert model.interrupted_
    assert len(model.history_) in (3, 4)  # a 4th entry where iteration 3's layer update was taken
    assert len(model.backtracks_) == len(model.history_) - 1
    assert np.all(np.diff(model.history_) >= 0)
    assert model.log_prob(X).mean() == pytest.approx(model.history_[-1], rel=1e-12)


# ----------------------------------------------------------------------------- noise floor
def test_noise_variance_floor_by_hand():
    X = np.array([[1.0, 5.0, 0.0], [3.0, 5.0, 2.0], [2.0, 5.0, 7.0]])
    v0, v2 = np.var([1.0, 3.0, 2.0]), np.var([0.0, 2.0, 7.0])
    np.testing.assert_allclose(fastcpa.em.noise_variance_floor(X), 1e-6 * np.array([v0, (v0 + v2) / 2, v2]),
                               rtol=1e-15)
    np.testing.assert_allclose(fastcpa.em.noise_variance_floor([[3.0, -4.0]]), [12.5e-6, 12.5e-6], rtol=1e-15)
    np.testing.assert_allclose(fastcpa.em.noise_variance_floor(np.ones((4, 2)) * [2.0, 0.0]), [2e-6, 2e-6],
                               rtol=1e-15)
    np.testing.assert_array_equal(fastcpa.em.noise_variance_floor(np.zeros((5, 2))), [1e-6, 1e-6])


@pytest.mark.parametrize("method", ["em", "gradient"])
@pytest.mark.parametrize("case", ["one sample", "constant data", "all zero", "constant column"])
def test_degenerate_data_fits_above_the_floor(rng, method, case):
    if case == "one sample":
        X = np.array([[0.7, -1.3]])
    elif case == "constant data":
        X = np.tile([0.7, -1.3], (20, 1))
    elif case == "all zero":
        X = np.zeros((10, 2))
    else:
        X = np.c_[rng.normal(size=40), np.full(40, 3.0)]
    diag = case == "constant column"
    # the floor, by hand: the data's variance, else the mean square, else 1 (all-zero data)
    var = X.var(axis=0)
    if var.any():
        floor = 1e-6 * np.where(var > 0, var, var[var > 0].mean())
    elif (X != 0).any():
        floor = np.full(2, 1e-6 * np.mean(X**2))
    else:
        floor = np.full(2, 1e-6)
    model = small_model(rng, sigma=np.ones(2) if diag else 1.0)
    model.fit(X, n_iter=8, tol=-np.inf, method=method, progress=False)
    sx = np.asarray(model.sigma_x)
    assert np.all(np.isfinite(sx))
    if diag:
        assert np.all(sx**2 >= floor * (1 - 1e-12)), (sx**2, floor)
    else:
        assert sx**2 >= floor.mean() * (1 - 1e-12)
    assert np.all(np.diff(model.history_) >= 0)
    assert model.log_prob(X).mean() == pytest.approx(model.history_[-1], rel=1e-10)


# ----------------------------------------------------------------------------- time budget
def test_max_time_stops_between_iterations(rng, caplog):
    """A budget already spent after the first iteration stops the fit there (it is checked
    between iterations); a generous one lets every iteration run. ``fit_time_`` holds each
    iteration's seconds, and the history stays the exact likelihood of what was kept."""
    X = wave(rng, 60)
    caplog.set_level(logging.INFO, logger="fastcpa")
    model = small_model(rng).fit(X, n_iter=5, tol=-np.inf, progress=False, verbose=True, max_time=1e-9)
    assert model.stopped_by_time_ and len(model.history_) == 2 and len(model.fit_time_) == 1
    assert model.fit_time_[0] > 0
    assert model.history_[-1] == pytest.approx(model.log_prob(X).mean(), rel=1e-12)
    assert any("max_time=1e-09 s" in r.getMessage() and "stopped after 1 iterations" in r.getMessage()
               for r in caplog.records)
    free = small_model(rng).fit(X, n_iter=3, tol=-np.inf, progress=False, max_time=1e6)
    assert not free.stopped_by_time_ and len(free.history_) == 4 and len(free.fit_time_) == 3


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), "10"])
def test_max_time_must_be_positive(rng, bad):
    with pytest.raises((ValueError, TypeError), match="max_time"):
        small_model(rng).fit(wave(rng, 20), n_iter=2, progress=False, max_time=bad)


@pytest.mark.parametrize("S, precondition, cg_maxiter, expect", [
    (1, "auto", "auto", (True, 5)), (2, "auto", "auto", (False, 50)),
    (2, True, "auto", (True, 5)), (1, False, 7, (False, 7))])
def test_precondition_and_cg_maxiter_defaults(rng, monkeypatch, S, precondition, cg_maxiter, expect):
    """``precondition="auto"`` preconditions the hidden layers' CG for S = 1 generators only, and
    ``cg_maxiter="auto"`` is 5 preconditioned iterations or 50 plain ones."""
    seen = []
    update = fastcpa.mstep.FrozenLayer.update

    def spy(self, *args, **kwargs):
        seen.append((kwargs["precondition"], kwargs["maxiter"]))
        return update(self, *args, **kwargs)

    monkeypatch.setattr(fastcpa.mstep.FrozenLayer, "update", spy)
    model = small_model(rng, S=S)
    model.fit(model.sample(30, seed=1), n_iter=1, progress=False, precondition=precondition,
              cg_maxiter=cg_maxiter)
    assert seen and set(seen) == {expect}


@pytest.mark.parametrize("cg_maxiter, expect", [("auto", [5, 2, 5]), (4, [4, 4, 4])])
def test_auto_cg_takes_two_iterations_on_wide_layers(rng, monkeypatch, cg_maxiter, expect):
    """``cg_maxiter="auto"``, preconditioned: 2 iterations for a layer of 2^19 weights or more
    (1024 x 512 here), 5 for the others; a number given is used everywhere."""
    seen = []
    update = fastcpa.mstep.FrozenLayer.update

    def spy(self, *args, **kwargs):
        seen.append(kwargs["maxiter"])
        return update(self, *args, **kwargs)

    monkeypatch.setattr(fastcpa.mstep.FrozenLayer, "update", spy)
    sizes = [1, 1024, 512, 3, 2]
    Ws = [rng.uniform(-1, 1, size=(b, a)) / np.sqrt(a) for a, b in zip(sizes[:-1], sizes[1:])]
    cs = [rng.uniform(-1, 1, size=b) / np.sqrt(a) for a, b in zip(sizes[:-1], sizes[1:])]
    model = fastcpa.CPAModel(fastcpa.Generator(Ws, cs, activation="leaky_relu", slope=0.1), sigma_x=0.3)
    model.fit(model.sample(40, seed=1), n_iter=1, progress=False, cg_maxiter=cg_maxiter)
    assert seen == expect


def test_a_trial_clearly_below_stops_early_and_the_fit_stays_monotone(rng, monkeypatch):
    """A trial's pass stops once its first rows put it clearly below the accepted model
    (em._losing): the stop rule on made-up rows, then a fit in which some trials stop
    early: its history never falls and ends at the fitted model's log_prob."""
    from fastcpa.em import _losing

    base = rng.normal(size=1000)
    stop = _losing(base)
    worse = base - 1.0 + 0.1 * rng.normal(size=1000)
    assert not stop(worse, 32)  # too few rows to judge
    assert stop(worse, 256) and abs(stop.change + 1.0) < 0.05
    assert not stop(base + 0.01, 256)  # better: never stopped
    assert not stop(worse, 1000)  # every row done: the pass decides itself
    noisy = base - 0.01 + rng.normal(size=1000)  # below on the whole, but not clearly from 256 rows
    assert not stop(noisy, 256)

    from fastcpa import estep

    calls = []
    full = estep._statistics_and_rows

    def spy(model, X, *args, stop=None, **kwargs):
        out = full(model, X, *args, stop=stop, **kwargs)
        calls.append(out is None)
        return out

    monkeypatch.setattr(estep, "_statistics_and_rows", spy)
    model = small_model(rng, S=1)
    X = model.sample(600, seed=2) + 0.3 * rng.normal(size=(600, model.generator.output_dim))
    model.sigma_x = 0.1
    before = model.log_prob(X).mean()
    model.fit(X, n_iter=4, progress=False, tol=-np.inf)
    h = np.asarray(model.history_)
    assert np.all(np.diff(h) >= 0) and h[-1] > before
    np.testing.assert_allclose(h[-1], model.log_prob(X).mean(), rtol=1e-12, atol=1e-12)
    assert any(calls), "no trial was stopped early: the check has no teeth"
