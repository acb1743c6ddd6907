"""Exact EM against a VAE with the same decoder, at equal wall-clock budgets.

This is the headline comparison of Balestriero et al., "Analytical probability
distributions and EM-learning for deep generative networks": fit the same
piecewise-affine decoder by exact EM (``fastcpa.CPAModel.fit``) and as the
decoder of a VAE, and score both with the *exact* log-likelihood.

Commands::

    python benchmarks/em_vs_vae.py                  # full run (~33 min; --jobs 2: ~17 min)
    python benchmarks/em_vs_vae.py --jobs 2         # two runs at a time (needs 2 idle cores)
    python benchmarks/em_vs_vae.py --quick --jobs 2 # smoke run, ~1 minute
    python benchmarks/em_vs_vae.py --check          # the exact-ELBO self-check only
    python benchmarks/em_vs_vae.py --datasets wave --seeds 5 --budget-scale 2

Protocol
--------
Model: ``z ~ N(0, 1)`` (S = 1, sigma_z = 1), ``x = g(z) + N(0, sigma_x^2 I)``
with a learned scalar ``sigma_x``; decoders ``g`` of sizes ``[1, 8, D]`` and
``[1, 8, 8, D]``, leaky ReLU (slope 0.1).

Data (``fastcpa.cli.make_data``, 1000 rows per seed: the first 500 train, the
other 500 held out): ``wave`` (t ~ N(0, 1), x = (t, cos 1.4t) + N(0, 0.1^2)),
``circle`` (uniform angle, unit circle + N(0, 0.1^2)) and ``digits``
(scikit-learn's 8x8 digits / 16, D = 64, a permutation drawn from the seed).

Seed ``s``: ``rng = numpy.random.default_rng(s)`` draws the data, then the
initial decoder with ``fastcpa.cli.initial_generator`` (weights
N(0, 1/fan_in), biases N(0, 0.1^2), the output layer scaled to the data's
spread with its bias at the data mean): the same initial decoder and the same
initial ``sigma_x`` (the training data's overall standard deviation) for EM
and for every VAE learning rate. The VAE's encoder, minibatch order and
reparameterisation noise come from ``torch.manual_seed(s)``.

EM: ``CPAModel(g0, sigma_x0).fit(train, n_iter=10**9, tol=0)``; its callback
notes (wall time, exact train mean log-likelihood) after every iteration and
stops the fit once the budget is spent. VAE (PyTorch, CPU, float64): encoder
D-32-32-2 (ReLU) giving the mean and log-variance of q(z|x) = N(m, s^2),
decoder ``nn.Sequential`` of ``nn.Linear`` / ``nn.LeakyReLU(0.1)`` initialised
with g0's weights, a learned ``log sigma_x``; loss = minus the ELBO with one
reparameterised sample per point for the reconstruction term and the KL to
N(0, 1) in closed form; Adam, batch 50, learning rate 5e-3, 1e-3 or 1e-4
(separate runs), until the budget is spent.

Equal compute: every run is one process pinned to one thread
(``NUMBA_NUM_THREADS``, ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and
``MKL_NUM_THREADS`` = 1, set in this module before NumPy is imported, which
spawned workers inherit; ``torch.set_num_threads(1)`` in each worker).
``--jobs k`` runs k such processes at once; keep k at most the number of idle
physical cores (on a 2-vCPU virtual machine ``--jobs 2`` made step counts
fluctuate up to 2x between runs: use ``--jobs 1`` there; the table reports the
spread of VAE throughput so such interference shows). Each worker compiles fastcpa's kernels and runs a few torch
steps before any timed run. The clock counts training only: snapshots
(parameter copies, ~21 per run: at 0 and every budget/20 s, at the first
iteration or minibatch step past each mark) are taken with the clock paused.
EM stops at the end of the first iteration past the budget, the VAE after the
first minibatch step past it.

Scoring, after training and untimed: every snapshot's exact mean
log-likelihood ``CPAModel(g, sigma_x).log_prob`` on the training and held-out
data. For the VAE's last snapshot also the exact ELBO with its encoder: with
S = 1, ``E_q ||x - g(z)||^2`` is a finite sum over the decoder's intervals of
truncated-normal moments of q (``fastcpa.interval_moments``), the rest is
closed form; the gap ``log p(x) - ELBO = KL(q(z|x) || p(z|x)) >= 0`` is exact.
A self-check (run first every time, alone with ``--check``) asserts this
ELBO against trapezoid quadrature in z and against Monte Carlo, and the gap's
sign; each VAE's final ELBO is also compared with a Monte Carlo estimate and a
warning is printed if they disagree.

Outputs: a table in ``benchmarks/RESULTS.md`` between
``<!-- em_vs_vae:begin -->`` and ``<!-- em_vs_vae:end -->`` (the rest of the
file is kept), every curve in ``benchmarks/em_vs_vae.json``, and the figure
``benchmarks/em_vs_vae.png``.
"""

import argparse
import contextlib
import math
import os
import sys
import time
from importlib import metadata

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from run import THREAD_VARS, environment, write_section  # noqa: E402  (run.py imports only the stdlib)

# one thread per run, before NumPy / Numba / torch are imported here or in a spawned worker
for _var in THREAD_VARS:
    os.environ[_var] = "1"

import numpy as np  # noqa: E402

BEGIN, END = "<!-- em_vs_vae:begin -->", "<!-- em_vs_vae:end -->"
DATASETS = ("wave", "circle", "digits")
HIDDEN = ((8,), (8, 8))
LRS = (5e-3, 1e-3, 1e-4)
N_TRAIN = 500
BATCH = 50
SLOPE = 0.1
N_MARKS = 20  # snapshots every budget / N_MARKS seconds
BUDGET = {"wave": 20.0, "circle": 20.0, "digits": 40.0}
QUICK_BUDGET = {"wave": 1.5, "circle": 1.5, "digits": 2.5}
MC_SAMPLES = 200  # per point, the Monte Carlo comparison of each VAE's final ELBO


# --------------------------------------------------------------------------- set-up
def setup(dataset, hidden, seed):
    """Training and held-out data, the initial generator and sigma_x of one seed."""
    from fastcpa.cli import initial_generator, make_data

    rng = np.random.default_rng(seed)
    X, _, _ = make_data(dataset, 2 * N_TRAIN, rng)
    train, test = X[:N_TRAIN], X[N_TRAIN:]
    gen = initial_generator([1, *hidden, X.shape[1]], train, rng)
    return train, test, gen, float(train.std())


def generator(weights, biases):
    import fastcpa

    return fastcpa.Generator(weights, biases, activation="leaky_relu", slope=SLOPE)


def decoder_label(hidden):
    return "[1, " + ", ".join(map(str, hidden)) + ", D]"


def method_label(lr):
    return "EM" if lr is None else f"VAE lr={lr:.0e}".replace("e-0", "e-")


class Clock:
    """Wall time since start, less the time spent in ``paused()`` blocks."""

    def __init__(self):
        self.t0, self.off = time.perf_counter(), 0.0

    def __call__(self):
        return time.perf_counter() - self.t0 - self.off

    @contextlib.contextmanager
    def paused(self):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.off += time.perf_counter() - t


class Marks:
    """``due(t)``: True once per snapshot mark (every budget / N_MARKS s) passed, and at the budget."""

    def __init__(self, budget):
        self.budget, self.next = budget, 1

    def __call__(self, t):
        if t < self.budget and t < self.next * self.budget / N_MARKS:
            return False
        self.next = int(t * N_MARKS / self.budget) + 1
        return True


# --------------------------------------------------------------------------- training (timed)
def train_em(train, gen0, sigma0, budget):
    import fastcpa

    snaps = [dict(t=0.0, step=0, W=[w.copy() for w in gen0.weights], c=[c.copy() for c in gen0.biases],
                  sigma_x=sigma0)]
    trace = []  # (t, iteration, exact train mean log-likelihood): free, EM computes it anyway
    model = fastcpa.CPAModel(gen0, sigma0)
    due = Marks(budget)
    clock = Clock()

    def callback(it, ll, cur):
        t = clock()
        trace.append((t, it, ll))
        done = t >= budget
        if due(t):
            with clock.paused():
                g = cur.generator
                snaps.append(dict(t=t, step=it, W=[w.copy() for w in g.weights], c=[c.copy() for c in g.biases],
                                  sigma_x=float(cur.sigma_x)))
        return done

    error = None
    try:
        model.fit(train, n_iter=10**9, tol=0.0, progress=False, callback=callback)
    except Exception as exc:  # keep what was trained so far; reported in the table
        error = f"{type(exc).__name__}: {exc}"
    trace.insert(0, (0.0, 0, float(model.history_[0]) if hasattr(model, "history_") else float("nan")))
    return dict(snapshots=snaps, trace=trace, steps=len(trace) - 1, elapsed=clock(), error=error,
                backtracks=int(np.sum(getattr(model, "backtracks_", 0))))


def torch_decoder(gen):
    import torch
    from torch import nn

    layers = []
    for k, (W, c) in enumerate(zip(gen.weights, gen.biases)):
        lin = nn.Linear(W.shape[1], W.shape[0]).double()
        with torch.no_grad():
            lin.weight.copy_(torch.tensor(W))
            lin.bias.copy_(torch.tensor(c))
        layers += [lin] if k == gen.n_layers - 1 else [lin, nn.LeakyReLU(SLOPE)]
    return nn.Sequential(*layers)


def torch_encoder(D):
    from torch import nn

    return nn.Sequential(nn.Linear(D, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2)).double()


def _decoder_params(dec):
    lins = [m for m in dec if hasattr(m, "weight")]
    return [m.weight.detach().numpy().copy() for m in lins], [m.bias.detach().numpy().copy() for m in lins]


def minibatch_loss(enc, dec, log_sx, xb):
    """Minus the minibatch's mean ELBO estimate: one reparameterised sample per row for the
    reconstruction term, the KL of q(z|x) = N(m, diag(exp(logvar))) to N(0, I) in closed form
    (the encoder gives m and logvar, S numbers each)."""
    import torch

    D = xb.shape[1]
    h = enc(xb)
    S = h.shape[1] // 2
    m, logvar = h[:, :S], h[:, S:]
    z = m + torch.exp(0.5 * logvar) * torch.randn_like(m)
    rec = -0.5 * ((xb - dec(z)) ** 2).sum(1) * torch.exp(-2 * log_sx) - D * (log_sx + 0.5 * math.log(2 * math.pi))
    kl = 0.5 * (m**2 + torch.exp(logvar) - 1.0 - logvar).sum(1)
    return (kl - rec).mean()


def train_vae(train, gen0, sigma0, budget, lr, seed):
    import torch

    torch.manual_seed(seed)
    N, D = train.shape
    enc, dec = torch_encoder(D), torch_decoder(gen0)
    log_sx = torch.nn.Parameter(torch.tensor(math.log(sigma0), dtype=torch.float64))
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters(), log_sx], lr=lr)
    X = torch.from_numpy(train)
    W, c = _decoder_params(dec)
    snaps = [dict(t=0.0, step=0, W=W, c=c, sigma_x=sigma0, objective=None)]
    steps, acc, n_acc = 0, 0.0, 0
    due = Marks(budget)
    clock = Clock()
    done = False
    while not done:
        perm = torch.randperm(N)
        for i in range(0, N, BATCH):
            loss = minibatch_loss(enc, dec, log_sx, X[perm[i:i + BATCH]])
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            acc, n_acc = acc - loss.item(), n_acc + 1
            t = clock()
            done = t >= budget
            if due(t):
                with clock.paused():
                    W, c = _decoder_params(dec)
                    # objective: mean minibatch ELBO estimate since the previous snapshot
                    snaps.append(dict(t=t, step=steps, W=W, c=c, sigma_x=math.exp(log_sx.item()),
                                      objective=acc / n_acc))
                    acc, n_acc = 0.0, 0
            if done:
                break
    return dict(snapshots=snaps, steps=steps, epochs=steps * BATCH / N, elapsed=clock(), error=None, encoder=enc)


# --------------------------------------------------------------------------- exact ELBO
def exact_elbo(gen, sigma_x, X, m, s):
    """Exact per-sample ELBO of q(z|x) = N(m, s^2) for S = 1, sigma_z = 1, isotropic noise.

    ``E_q ||x - g(z)||^2 = sum_r P_r (||x - A_r mu_r - b_r||^2 + ||A_r||^2 v_r)``
    over the partition's intervals, with ``P_r``, ``mu_r``, ``v_r`` the mass,
    mean and variance of q restricted to interval r.
    """
    import fastcpa

    part = fastcpa.partition(gen)
    A, b = part.A[:, :, 0], part.b  # (R, D)
    lo, hi = part.intervals[:, 0], part.intervals[:, 1]
    mom = fastcpa.interval_moments(lo[None, :], hi[None, :], m[:, None], s[:, None])  # (N, R)
    P = np.exp(mom.log_mass)
    with np.errstate(invalid="ignore"):
        res = X[:, None, :] - A[None] * mom.mean[..., None] - b[None]
        sq = np.where(P > 0, P * ((res**2).sum(-1) + (A**2).sum(-1)[None] * mom.var), 0.0).sum(1)
    D = X.shape[1]
    log_lik = -0.5 * D * math.log(2 * math.pi * sigma_x**2) - 0.5 * sq / sigma_x**2
    kl_prior = 0.5 * (m**2 + s**2 - 1.0 - 2.0 * np.log(s))
    return log_lik - kl_prior


def _elbo_integrand(gen, sigma_x, X, m, s, Z):
    """``log p(x|z) + log p(z) - log q(z)`` at latent points Z (N, K)."""
    N, K = Z.shape
    G = gen(Z.reshape(-1, 1)).reshape(N, K, -1)
    D = X.shape[1]
    lx = -0.5 * ((X[:, None, :] - G) ** 2).sum(-1) / sigma_x**2 - 0.5 * D * math.log(2 * math.pi * sigma_x**2)
    lz = -0.5 * Z**2
    lq = -0.5 * ((Z - m[:, None]) / s[:, None]) ** 2 - np.log(s)[:, None]
    return lx + lz - lq  # the two log(2 pi)/2 cancel


def mc_elbo(gen, sigma_x, X, m, s, k, rng, chunk=100):
    """Monte Carlo ELBO per sample (k draws from q) and its standard error."""
    tot, tot2 = np.zeros(len(X)), np.zeros(len(X))
    for a in range(0, k, chunk):
        kc = min(chunk, k - a)
        f = _elbo_integrand(gen, sigma_x, X, m, s, m[:, None] + s[:, None] * rng.standard_normal((len(X), kc)))
        tot += f.sum(1)
        tot2 += (f**2).sum(1)
    mean = tot / k
    return mean, np.sqrt(np.maximum(tot2 / k - mean**2, 0.0) / k)


def self_check(mc_draws=4000, seed=0):
    """Assert the exact ELBO against quadrature and Monte Carlo, and log p(x) >= ELBO."""
    import fastcpa

    rng = np.random.default_rng(seed)
    worst = []
    for D, hidden in ((2, (8,)), (2, (8, 8)), (64, (8, 8))):
        sizes = [1, *hidden, D]
        gen = generator([rng.normal(size=(o, i)) / math.sqrt(i) for i, o in zip(sizes[:-1], sizes[1:])],
                        [0.5 * rng.normal(size=o) for o in sizes[1:]])
        sigma = 0.3
        X = fastcpa.CPAModel(gen, sigma).sample(40, seed=rng)
        X[:5] += 3.0  # some points far from the data manifold
        m, s = 1.5 * rng.normal(size=40), np.exp(0.7 * rng.normal(size=40) - 0.5)
        exact = exact_elbo(gen, sigma, X, m, s)
        # trapezoid rule on m +- 12 s (kinks at region boundaries: O(h^2) error)
        u = np.linspace(-12.0, 12.0, 40001)
        w = np.exp(-0.5 * u**2) / math.sqrt(2 * math.pi)
        quad = np.concatenate([np.trapezoid(_elbo_integrand(gen, sigma, X[i:i + 4], m[i:i + 4], s[i:i + 4],
                                                            m[i:i + 4, None] + s[i:i + 4, None] * u) * w, u, axis=1)
                               for i in range(0, len(X), 4)])
        err = np.abs(quad - exact) / (1.0 + np.abs(exact))
        assert err.max() < 1e-6, f"exact ELBO != quadrature (D={D}, {hidden}): max rel. error {err.max():.2e}"
        mc, se = mc_elbo(gen, sigma, X, m, s, mc_draws, rng)
        z = np.abs(mc - exact) / se
        z_mean = abs(mc.mean() - exact.mean()) / (np.sqrt((se**2).sum()) / len(X))
        assert z.max() < 6 and z_mean < 5, \
            f"exact ELBO != Monte Carlo (D={D}, {hidden}): |z| {z.max():.1f}, mean {z_mean:.1f}"
        gap = fastcpa.CPAModel(gen, sigma).log_prob(X) - exact
        assert gap.min() > -1e-8 * (1 + np.abs(exact).max()), f"log p(x) < ELBO by {-gap.min():.2e}"
        worst.append((D, hidden, err.max(), z.max(), z_mean))
    for D, hidden, e, zmax, zm in worst:
        print(f"self-check D={D} {decoder_label(hidden)}: exact ELBO vs quadrature max rel. error {e:.1e}, "
              f"vs Monte Carlo ({mc_draws} draws) max |z| {zmax:.2f} (mean: {zm:.2f}); gap >= 0", flush=True)


# --------------------------------------------------------------------------- scoring (untimed)
def score(out, train, test, seed, vae=None):
    """Exact train / held-out mean log-likelihood of every snapshot; the VAE's exact ELBO and gap."""
    import fastcpa
    import torch

    for snap in out["snapshots"]:
        try:
            model = fastcpa.CPAModel(generator(snap["W"], snap["c"]), snap["sigma_x"])
            snap["train"] = float(model.log_prob(train).mean())
            snap["test"] = float(model.log_prob(test).mean())
        except Exception as exc:  # a degenerate snapshot (sigma_x underflow, NaN weights...)
            snap["train"] = snap["test"] = float("nan")
            out["error"] = out["error"] or f"scoring: {type(exc).__name__}: {exc}"
    if vae is None:
        return
    last = out["snapshots"][-1]
    gen = generator(last["W"], last["c"])
    model = fastcpa.CPAModel(gen, last["sigma_x"])
    rng = np.random.default_rng(seed)
    for name, X in (("train", train), ("test", test)):
        with torch.no_grad():
            h = vae(torch.from_numpy(X)).numpy()
        m, s = h[:, 0], np.exp(0.5 * h[:, 1])
        elbo = exact_elbo(gen, last["sigma_x"], X, m, s)
        gap = model.log_prob(X) - elbo
        mc, se = mc_elbo(gen, last["sigma_x"], X, m, s, MC_SAMPLES, rng)
        z = abs(mc.mean() - elbo.mean()) / (np.sqrt((se**2).sum()) / len(X))
        out[f"elbo_{name}"], out[f"gap_{name}"] = float(elbo.mean()), float(gap.mean())
        out[f"gap_min_{name}"] = float(gap.min())
        out[f"mc_elbo_{name}"], out[f"mc_z_{name}"] = float(mc.mean()), float(z)
        if z > 6 or gap.min() < -1e-6:
            print(f"WARNING: exact ELBO check failed ({name}): Monte Carlo |z| = {z:.1f}, min gap {gap.min():.2e}",
                  flush=True)


def _init_worker(barrier):
    """Per process: one torch thread, kernels compiled, torch warmed; then wait for the other workers
    (so no timed run shares the cores with another worker's start-up)."""
    import torch

    import fastcpa

    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    fastcpa.warmup()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2))
    gen = generator([rng.normal(size=(4, 1)), rng.normal(size=(4, 4)), rng.normal(size=(2, 4))],
                    [rng.normal(size=4), rng.normal(size=4), np.zeros(2)])
    fastcpa.CPAModel(gen, 1.0).fit(X, n_iter=2, tol=-np.inf, progress=False)  # E-/M-step kernels
    train_vae(X, gen, 1.0, 0.05, 1e-3, 0)
    barrier.wait(timeout=600)


def run_one(job):
    """One timed run and its scoring; a JSON-ready dict."""
    dataset, hidden, seed, lr, budget = job
    train, test, gen0, sigma0 = setup(dataset, hidden, seed)
    out = train_em(train, gen0, sigma0, budget) if lr is None else train_vae(train, gen0, sigma0, budget, lr, seed)
    score(out, train, test, seed, vae=out.pop("encoder", None))
    for snap in out["snapshots"]:
        snap["W"], snap["c"] = [w.tolist() for w in snap["W"]], [c.tolist() for c in snap["c"]]
    # keep only the last snapshot's parameters (the curves need the scores only)
    for snap in out["snapshots"][:-1]:
        del snap["W"], snap["c"]
    final = out["snapshots"][-1]
    out.update(dataset=dataset, hidden=list(hidden), D=train.shape[1], seed=seed, lr=lr, method=method_label(lr),
               budget=budget, train=final["train"], test=final["test"])
    return out


# --------------------------------------------------------------------------- report
def _pm(values, fmt="{:.3f}"):
    v = np.asarray([x for x in values if x is not None], float)
    if len(v) == 0:
        return "—"
    if len(v) == 1:
        return fmt.format(v[0])
    return f"{fmt.format(v.mean())} ± {fmt.format(v.std(ddof=1))}"


def groups(runs, datasets):
    """Runs grouped by (dataset, hidden, lr), in table order."""
    out = []
    for ds in datasets:
        for hidden in HIDDEN:
            for lr in (None, *LRS):
                sel = [r for r in runs if r["dataset"] == ds and tuple(r["hidden"]) == hidden and r["lr"] == lr]
                if sel:
                    out.append((ds, hidden, lr, sorted(sel, key=lambda r: r["seed"])))
    return out


def render(runs, args, env, seeds, budgets, self_check_rows):
    cmd = "python benchmarks/em_vs_vae.py" + (" --quick" if args.quick else "")
    lines = [BEGIN, "## Exact EM vs a VAE with the same decoder (equal wall-clock budgets)", "",
             f"Mode `{'quick' if args.quick else 'full'}`: `{cmd}` ({len(seeds)} seed(s): "
             f"{', '.join(map(str, seeds))}; `--jobs {args.jobs}`). Log-likelihoods are exact means per sample "
             "(nats) of the parameters at the end of the budget, mean ± standard deviation (ddof 1) over seeds; "
             "the best held-out value per dataset and decoder is in bold.", ""]
    lines += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in env] + [""]
    lines += ["| data | decoder¹ | method² | budget³ | train log-lik⁴ | held-out log-lik⁴ "
              "| EM iterations / VAE epochs⁵ | VAE ELBO (train)⁶ | gap train⁶ | gap held-out⁶ |",
              "|---|---|---|--:|--:|--:|--:|--:|--:|--:|"]
    errors = []
    for ds, hidden, lr, sel in groups(runs, args.datasets):
        best = max((np.nanmean([r["test"] for r in g]) for d, h, _, g in groups(runs, [ds]) if h == hidden),
                   default=None)
        test = _pm([r["test"] for r in sel])
        if np.isclose(np.nanmean([r["test"] for r in sel]), best):
            test = f"**{test}**"
        steps = _pm([r["steps"] if lr is None else r["epochs"] for r in sel], "{:.0f}")
        vae = [_pm([r.get(k) for r in sel]) for k in ("elbo_train", "gap_train", "gap_test")] if lr else ["—"] * 3
        lines.append(f"| {ds} | {decoder_label(hidden)} | {method_label(lr)} | {budgets[ds]:g} s "
                     f"| {_pm([r['train'] for r in sel])} | {test} | {steps} | {' | '.join(vae)} |")
        errors += [f"{ds} {decoder_label(hidden)} {method_label(lr)} seed {r['seed']}: {r['error']}"
                   for r in sel if r["error"]]
    over = max((r["elapsed"] - r["budget"] for r in runs), default=0.0)
    # interference check: VAE minibatch steps per second, slowest / fastest run of one dataset and decoder
    rates = [[r["steps"] / r["elapsed"] for r in runs if r["lr"] and r["dataset"] == ds and tuple(r["hidden"]) == h]
             for ds in args.datasets for h in HIDDEN]
    spread = min((min(v) / max(v) for v in rates if v), default=1.0)
    em_back = [r["backtracks"] / max(r["steps"], 1) for r in runs if r["lr"] is None]
    lines += [
        "",
        "1. Decoder g: sizes `[1, hidden..., D]`, leaky ReLU (slope 0.1); latent z ~ N(0, 1) (S = 1); noise "
        "N(0, sigma_x² I) with a learned scalar sigma_x. Per seed s, `numpy.random.default_rng(s)` draws the data "
        "(`fastcpa.cli.make_data`: wave and circle with noise 0.1, digits = scikit-learn's 8x8 digits / 16 in a "
        "permuted order; 500 training rows, the next 500 held out) and then the initial decoder "
        "(`fastcpa.cli.initial_generator`: weights N(0, 1/fan_in), biases N(0, 0.01), output layer scaled to the "
        "data's spread with its bias at the data mean). EM and all VAE runs of a seed start from this decoder and "
        "from sigma_x = the training data's standard deviation.",
        "2. EM: `fastcpa.CPAModel.fit` (exact E-step, blockwise M-steps, each step checked on the exact "
        "likelihood and halved until it does not decrease), `tol=0`, stopped by its callback once the budget is "
        f"spent ({np.mean(em_back) if em_back else 0:.2f} step halvings per iteration on average). VAE: "
        "PyTorch on CPU in float64, encoder D-32-32-2 (ReLU) for the mean and log-variance of "
        "q(z|x) = N(m, s²), the decoder as an `nn.Sequential` of `nn.Linear` / `nn.LeakyReLU(0.1)` with a learned "
        "log sigma_x, loss = −ELBO with one reparameterised sample per point (KL to N(0, 1) in closed form), Adam "
        "at the learning rate shown, minibatches of 50, reshuffled every epoch; encoder init, minibatch order "
        "and noise from `torch.manual_seed(s)`.",
        "3. Wall-clock training time per run, the same for both methods. Every run is its own process pinned to "
        "one thread (NUMBA/OMP/OPENBLAS/MKL_NUM_THREADS = 1 before NumPy is imported, `torch.set_num_threads(1)`), "
        f"{args.jobs} at a time; kernels compiled and torch warmed up before the clock starts. Snapshots of the "
        "parameters (at 0 and every budget/20 s) are taken with the clock paused. EM stops after the first "
        "iteration past the budget, the VAE after the first minibatch step past it (largest overshoot: "
        f"{over:.3f} s). Interference check: the slowest VAE run of a dataset and decoder made "
        f"{100 * spread:.0f}% as many minibatch steps per second as the fastest (100% = no interference).",
        "4. Exact mean log p(x) per sample, `fastcpa.CPAModel(g, sigma_x).log_prob`, computed after training "
        "(untimed) on the training and the held-out 500 rows.",
        "5. EM iterations completed, or VAE epochs (passes over the 500 training rows, 10 minibatch steps each).",
        "6. For the VAE's final encoder and decoder: the exact ELBO, E_q[log p(x|z)] + E_q[log p(z)] − "
        "E_q[log q(z|x)] (E_q||x − g(z)||² as a sum over the decoder's intervals of truncated-normal moments of q, "
        "`fastcpa.interval_moments`; the rest in closed form), mean per sample; gap = exact log p(x) − ELBO = "
        "KL(q(z|x) ‖ p(z|x)) ≥ 0, mean per sample (nats), on the training and the held-out rows. Checks: "
        + "; ".join(self_check_rows) + f"; each run's ELBO against a Monte Carlo estimate ({MC_SAMPLES} draws per "
        f"point): largest |z| {max((r.get(k, 0) for r in runs for k in ('mc_z_train', 'mc_z_test')), default=0):.2f}.",
        "7. Every curve (exact train and held-out log-likelihood at each snapshot, EM's train log-likelihood at "
        "every iteration, the VAE's minibatch ELBO) is in `benchmarks/em_vs_vae.json`; figure: "
        "`benchmarks/em_vs_vae.png`.",
    ]
    if errors:
        lines += ["", "Errors (the run's parameters up to the error are scored):", ""] + [f"- {e}" for e in errors]
    lines += [END]
    return "\n".join(lines) + "\n"


def figure(runs, datasets, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {None: "black", LRS[0]: "tab:red", LRS[1]: "tab:blue", LRS[2]: "tab:green"}
    rows = [(h, key) for h in HIDDEN for key in ("test", "train")]
    fig, axes = plt.subplots(len(rows), len(datasets), figsize=(4.2 * len(datasets), 2.9 * len(rows)), squeeze=False)
    for j, ds in enumerate(datasets):
        for i, (hidden, key) in enumerate(rows):
            ax = axes[i, j]
            ys = []
            for _, _, lr, sel in [g for g in groups(runs, [ds]) if g[1] == hidden]:
                for k, r in enumerate(sel):
                    t = [s["t"] for s in r["snapshots"]]
                    y = [s[key] for s in r["snapshots"]]
                    ax.plot(t, y, color=colors[lr], lw=0.9, alpha=0.75, label=method_label(lr) if k == 0 else None)
                    ys += [v for s, v in zip(t, y) if s >= 0.1 * r["budget"] and np.isfinite(v)]
            if ys:  # the early transient would squash the end of the curves
                lo, hi = np.percentile(ys, 2), max(ys)
                ax.set_ylim(lo - 0.1 * (hi - lo + 1e-9), hi + 0.05 * (hi - lo + 1e-9))
            ax.set_title(f"{ds}, {decoder_label(hidden)}: {'held-out' if key == 'test' else 'train'}", fontsize=9)
            ax.grid(alpha=0.3)
            if i == len(rows) - 1:
                ax.set_xlabel("training wall time (s)")
            if j == 0:
                ax.set_ylabel("exact mean log p(x)")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 1 seed, ~2 s per run")
    p.add_argument("--check", action="store_true", help="run the exact-ELBO self-check only")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..n-1 (default 3, quick 1)")
    p.add_argument("--budget-scale", type=float, default=1.0,
                   help="multiply every budget (20 s wave/circle, 40 s digits)")
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel, one thread each (<= idle cores)")
    p.add_argument("--output", default=os.path.join(HERE, "RESULTS.md"), help="Markdown file to update")
    p.add_argument("--json", default=os.path.join(HERE, "em_vs_vae.json"))
    p.add_argument("--figure", default=os.path.join(HERE, "em_vs_vae.png"))
    return p.parse_args(argv)


def main(argv=None):
    import json
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    args = parse_args(argv)
    import fastcpa

    fastcpa.warmup()
    t0 = time.perf_counter()
    self_check()
    check_rows = [f"the self-check asserts the exact ELBO against trapezoid quadrature (relative error < 1e-6) and "
                  f"Monte Carlo (|z| < 6), and gap ≥ 0, on random decoders (D = 2 and 64, points off the manifold)"]
    print(f"self-check passed ({time.perf_counter() - t0:.1f} s)", flush=True)
    if args.check:
        return
    seeds = list(range(args.seeds if args.seeds is not None else (1 if args.quick else 3)))
    budgets = {ds: args.budget_scale * (QUICK_BUDGET if args.quick else BUDGET)[ds] for ds in args.datasets}
    # interleave methods so parallel jobs mix EM and VAE runs
    jobs = [(ds, h, s, lr, budgets[ds]) for ds in args.datasets for h in HIDDEN for s in seeds for lr in (None, *LRS)]
    total = sum(j[-1] for j in jobs)
    args.jobs = max(1, min(args.jobs, len(jobs)))  # every worker must reach the start barrier
    print(f"{len(jobs)} runs, {total:.0f} s of training in all, {args.jobs} at a time "
          f"(about {total / args.jobs / 60:.1f} min plus scoring)", flush=True)
    runs = []
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: the thread settings above hold
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx, initializer=_init_worker,
                             initargs=(ctx.Barrier(args.jobs),)) as pool:
        futures = {pool.submit(run_one, job): job for job in jobs}
        for fut in as_completed(futures):
            r = fut.result()
            runs.append(r)
            extra = f", gap {r['gap_train']:.3f}" if r["lr"] else ""
            print(f"[{len(runs)}/{len(jobs)} {time.perf_counter() - t0:.0f} s] {r['dataset']} "
                  f"{decoder_label(r['hidden'])} {r['method']} seed {r['seed']}: {r['steps']} steps, "
                  f"train {r['train']:.3f}, held-out {r['test']:.3f}{extra}"
                  + (f"  ERROR {r['error']}" if r["error"] else ""), flush=True)
    runs.sort(key=lambda r: (args.datasets.index(r["dataset"]), r["hidden"],
                             0.0 if r["lr"] is None else 1.0 / r["lr"], r["seed"]))  # EM first
    env = environment() + [("torch / scikit-learn",
                             f"{metadata.version('torch')} / {metadata.version('scikit-learn')}")]
    write_section(args.output, render(runs, args, env, seeds, budgets, check_rows), BEGIN, END)
    with open(args.json, "w") as f:
        json.dump({"protocol": __doc__, "args": vars(args), "environment": env, "budgets": budgets, "runs": runs}, f)
    figure(runs, args.datasets, args.figure)
    print(f"wrote {args.output}, {args.json}, {args.figure} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
