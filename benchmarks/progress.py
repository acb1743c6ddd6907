"""Progress per second: exact log-likelihood against wall time for EM, exact-gradient Adam and a VAE.

Time per iteration says little by itself: an EM iteration may cost many
gradient steps and be worth more. This benchmark measures what a user waits
for, the exact training log-likelihood reached after t seconds, for three ways
of fitting the same piecewise-affine generator from the same start, and the
time each takes to come within 1, 0.1 and 0.01 nats of the best value any of
them reached.

Commands::

    python benchmarks/progress.py                  # every net, default budgets (1.5 h or more)
    python benchmarks/progress.py --quick          # smoke run: N = 100, budgets of 2-3 s (longer: EM runs
                                                   # its first iteration, 9 s on torch-S2 at N = 100)
    python benchmarks/progress.py --nets digits --budget 60
    python benchmarks/progress.py --nets torch-S2 --budget torch-S2=300 --n 500
    python benchmarks/progress.py --from-json benchmarks/progress.json   # table and figure again, no training

Protocol
--------
Nets (``NETS``), each fitted from one start by every method:

* ``torch-S2``: ``Linear(2,64) - LeakyReLU(0.2) - Linear(64,64) - ReLU -
  Linear(64,10)`` and ``S1-1024x3``: ``[1, 1024, 1024, 1024, 64]``, leaky ReLU
  0.01; both exactly as ``CASES`` in ``benchmarks/em_speed.py`` (torch's
  default ``nn.Linear`` init, ``benchmarks/_cases.py``). Data: ``--n`` samples
  (default 1000) drawn as em_speed draws them,
  ``CPAModel(_generator(..., seed=1), sigma_x=0.1).sample(n, seed=2)``; start:
  the generator of seed 0 and sigma_x = 0.3.
* ``digits``: the decoder ``[1, 8, 8, 64]`` (leaky ReLU 0.1) on scikit-learn's
  8x8 digits, ``benchmarks/em_vs_vae.py``'s ``setup("digits", (8, 8), 0)``: its
  500 training rows, its initial decoder and its initial sigma_x (the training
  data's standard deviation). ``--n`` does not apply.

Methods, each from that start (a learned scalar sigma_x throughout):

* EM: ``CPAModel(g0, sigma0).fit(X, n_iter=10**9, tol=-inf, method="em",
  max_time=budget, callback=cb)``; the callback notes (seconds since the fit was
  called, the exact mean log-likelihood ``fit`` passes it, which it computes
  anyway) after every iteration and stops the fit at the end of the first
  iteration past the budget. The clock includes the fit's first partition and
  its initial E-step.
* gradient: the same with ``method="gradient"`` (Adam on the exact
  log-likelihood with its exact gradient, ``lr=--lr-gradient``, default 1e-2).
* VAE: ``em_vs_vae.py``'s VAE (encoder D-32-32-2S, ReLU; one reparameterised
  sample per point; KL in closed form; learned log sigma_x; Adam, batch 50,
  float64, ``torch.manual_seed(--seed)``) at ``--lr-vae`` (default 5e-3, the
  best of em_vs_vae's three rates on every dataset there), its decoder built
  by ``em_vs_vae.torch_decoder`` from the same g0 with g0's own activations.
  ``em_vs_vae.train_vae`` itself is S = 1 with leaky ReLU 0.1 only, so
  ``train_vae`` here is its loop for any S and activations, with its ``Clock``
  and ``BATCH``. Snapshots of the decoder and sigma_x are taken with the clock
  paused at 0 and at marks spaced evenly in log time (``--snapshots-per-decade``,
  default 6, from budget/1000 s), and when the first minibatch step passes the
  budget; after training, untimed, each is scored with the exact
  ``CPAModel(g, sigma_x).log_prob(X).mean()``, as ``em_vs_vae.score`` does.
  Its times to within a tolerance are therefore those of the first snapshot
  within it (at most a factor 10^(1/6) = 1.47 late).

Every (net, method) run is its own Python process (``--worker``), started one
after the other, never two at once, with the machine's default threads (no
``*_NUM_THREADS`` set here; ``em_vs_vae``'s one-thread pinning, done when it is
imported, is undone before NumPy, Numba or torch start), so the methods share
the machine alike. Each process compiles fastcpa's kernels (EM, gradient) or
runs torch for 0.2 s on the same net (VAE) before its clock starts.

Reported per net: ``final`` = the best exact log-likelihood any method reached
(at any recorded point up to and including its first past the budget); per
method: its value at the end, its best, and the first time its curve is at or
above ``final - 1``, ``final - 0.1`` and ``final - 0.01`` nats ("not reached"
if never). Outputs: the table in ``benchmarks/RESULTS.md`` between
``<!-- progress:begin -->`` and ``<!-- progress:end -->`` (``--output``; the
rest of the file is kept), every curve in ``benchmarks/progress.json``
(``--json``) and, where matplotlib is installed, ``benchmarks/progress.png``
(``--figure``): per net, the log-likelihood and its distance to ``final``
against time on a log scale.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from importlib import metadata

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(1, ROOT)  # this tree's fastcpa
from em_speed import CASES as SPEED_CASES  # noqa: E402  (em_speed.py imports only the stdlib)
from em_speed import _generator  # noqa: E402
from run import THREAD_VARS, environment, write_section  # noqa: E402  (so does run.py)

BEGIN, END = "<!-- progress:begin -->", "<!-- progress:end -->"
NETS = ("torch-S2", "S1-1024x3", "digits")
DIGITS_HIDDEN, DIGITS_SEED = (8, 8), 0
METHODS = ("em", "gradient", "vae")
LABELS = {"em": "EM", "gradient": "gradient", "vae": "VAE"}
COLORS = {"em": "black", "gradient": "tab:orange", "vae": "tab:blue"}
BUDGET = {"torch-S2": 600.0, "S1-1024x3": 600.0, "digits": 120.0}
QUICK_BUDGET = {"torch-S2": 3.0, "S1-1024x3": 3.0, "digits": 2.0}
N_DEFAULT, N_QUICK = 1000, 100
SIGMA_DATA, SIGMA_START = 0.1, 0.3  # em_speed's recipe: data drawn at 0.1, fits start at 0.3
TOLS = (1.0, 0.1, 0.01)  # nats below the net's final
VAE_WARMUP_S = 0.2


def _em_vs_vae():
    """``benchmarks/em_vs_vae.py``, imported without its one-thread pinning.

    Importing it sets ``NUMBA_NUM_THREADS`` etc. to 1 (and imports NumPy). Here NumPy is
    imported first, so OpenBLAS sizes its pool from the environment as it was, and the
    variables are put back straight after, before Numba, scipy or torch start."""
    if "em_vs_vae" in sys.modules:
        return sys.modules["em_vs_vae"]
    import numpy  # noqa: F401

    saved = {v: os.environ.get(v) for v in THREAD_VARS}
    try:
        import em_vs_vae
    finally:
        for v, val in saved.items():
            if val is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = val
    return em_vs_vae


def net_label(net):
    if net == "digits":
        return "[1, " + ", ".join(map(str, DIGITS_HIDDEN)) + ", 64]"
    sizes = SPEED_CASES[net][0]
    return "[" + ", ".join(map(str, sizes)) + "]"


# --------------------------------------------------------------------------- set-up (worker)
def setup(net, n):
    """Training data, initial generator and initial sigma_x of a net: the same for every method."""
    import fastcpa

    if net == "digits":
        train, _, gen0, sigma0 = _em_vs_vae().setup("digits", DIGITS_HIDDEN, DIGITS_SEED)
        return train, gen0, sigma0
    sizes, acts, slopes, _, _ = SPEED_CASES[net]
    X = fastcpa.CPAModel(_generator(sizes, acts, slopes, seed=1), sigma_x=SIGMA_DATA).sample(n, seed=2)
    return X, _generator(sizes, acts, slopes, seed=0), SIGMA_START


def like(gen0, weights, biases):
    """A generator with g0's activations and the given parameters."""
    import fastcpa

    return fastcpa.Generator(weights, biases, activation=list(gen0.activations), slope=list(gen0.slopes))


def exact_ll(gen, sigma_x, X):
    import fastcpa

    return float(fastcpa.CPAModel(gen, sigma_x).log_prob(X).mean())


# --------------------------------------------------------------------------- training (worker, timed)
def train_exact(X, gen0, sigma0, budget, method, lr):
    """EM or exact-gradient Adam: (t, exact mean log-likelihood) after every iteration, from fit's callback."""
    import fastcpa

    curve = []

    def callback(it, ll, fit):
        t = clock()
        curve.append((t, float(ll)))
        return t >= budget  # stop at the end of the first iteration past the budget

    model = fastcpa.CPAModel(gen0, sigma0)
    error = None
    clock = _em_vs_vae().Clock()
    try:
        model.fit(X, n_iter=10**9, tol=-math.inf, method=method, lr=lr, callback=callback, max_time=budget,
                  progress=False)
    except Exception as exc:  # keep the curve so far; reported in the table
        error = f"{type(exc).__name__}: {exc}"
    elapsed = clock()
    done = hasattr(model, "history_")
    start = float(model.history_[0]) if done else exact_ll(gen0, sigma0, X)
    return dict(curve=[(0.0, start), *curve], steps=len(curve), elapsed=elapsed, error=error,
                backtracks=int(sum(model.backtracks_)) if done else None,
                regions_end=int(model.partition.n_regions) if done else None)


class LogMarks:
    """Like ``em_vs_vae.Marks``, with the marks spaced evenly in log time: ``per_decade`` a decade
    from ``first`` s; ``due(t)`` is True once per mark passed, and at the budget."""

    def __init__(self, budget, per_decade, first):
        self.budget, self.marks = budget, []
        k = 0
        while first * 10 ** (k / per_decade) < budget * (1 - 1e-9):
            self.marks.append(first * 10 ** (k / per_decade))
            k += 1
        self.i = 0

    def __call__(self, t):
        if t >= self.budget:
            return True
        if self.i < len(self.marks) and t >= self.marks[self.i]:
            while self.i < len(self.marks) and t >= self.marks[self.i]:
                self.i += 1
            return True
        return False


def torch_decoder(gen0):
    """``em_vs_vae.torch_decoder`` (nn.Linear layers holding g0's weights) with g0's own activations
    in place of its leaky ReLU 0.1."""
    import numpy as np
    import torch
    from torch import nn

    class TwoSlope(nn.Module):  # per-unit slopes (PReLU-like generators)
        def __init__(self, eta):
            super().__init__()
            self.register_buffer("eta", torch.tensor(np.asarray(eta, dtype=np.float64)))

        def forward(self, u):
            return torch.where(u >= 0, u, self.eta * u)

    dec = _em_vs_vae().torch_decoder(gen0)
    acts = iter(gen0.slopes)
    for i, mod in enumerate(dec):
        if not hasattr(mod, "weight"):
            eta = next(acts)
            dec[i] = nn.LeakyReLU(float(eta[0])) if np.all(eta == eta[0]) else TwoSlope(eta)
    return dec


def train_vae(X, gen0, sigma0, budget, lr, seed, marks):
    """``em_vs_vae.train_vae`` for any latent dimension S and two-slope activations.

    The same loss (``em_vs_vae.minibatch_loss``), optimiser, batches and clock; the encoder
    gives 2S numbers (mean and log-variance of a diagonal Gaussian q(z|x)). Snapshots
    whenever ``marks(t)``."""
    import torch
    from torch import nn

    evv = _em_vs_vae()
    torch.manual_seed(seed)
    N, D = X.shape
    S = gen0.latent_dim
    enc = nn.Sequential(nn.Linear(D, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2 * S)).double()
    dec = torch_decoder(gen0)
    log_sx = nn.Parameter(torch.tensor(math.log(sigma0), dtype=torch.float64))
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters(), log_sx], lr=lr)
    Xt = torch.from_numpy(X)
    W, c = evv._decoder_params(dec)
    snaps = [dict(t=0.0, step=0, W=W, c=c, sigma_x=sigma0)]
    steps, done = 0, False
    clock = evv.Clock()
    while not done:
        perm = torch.randperm(N)
        for i in range(0, N, evv.BATCH):
            loss = evv.minibatch_loss(enc, dec, log_sx, Xt[perm[i:i + evv.BATCH]])
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            t = clock()
            done = t >= budget
            if marks(t):
                with clock.paused():
                    W, c = evv._decoder_params(dec)
                    snaps.append(dict(t=t, step=steps, W=W, c=c, sigma_x=math.exp(log_sx.item())))
            if done:
                break
    return dict(snapshots=snaps, steps=steps, epochs=steps * evv.BATCH / N, elapsed=clock(), error=None)


def score_vae(out, X, gen0):
    """Exact mean log-likelihood of every snapshot (untimed): the VAE's curve."""
    curve = []
    for s in out.pop("snapshots"):
        try:
            ll = exact_ll(like(gen0, s["W"], s["c"]), s["sigma_x"], X)
        except Exception as exc:  # a diverged decoder: no score
            ll = float("nan")
            out["error"] = out["error"] or f"scoring: {type(exc).__name__}: {exc}"
        curve.append((s["t"], ll))
    out["curve"] = curve
    return out


def _worker(job, result_path):
    import numba

    X, gen0, sigma0 = setup(job["net"], job["n"])
    if job["method"] == "vae":
        import torch

        marks = LogMarks(job["budget"], job["per_decade"], job["budget"] / 1000)
        train_vae(X, gen0, sigma0, VAE_WARMUP_S, job["lr_vae"], job["seed"], lambda t: False)  # warm torch
        out = train_vae(X, gen0, sigma0, job["budget"], job["lr_vae"], job["seed"], marks)
        out = score_vae(out, X, gen0)
        out["lr"] = job["lr_vae"]
        threads = f"torch {torch.get_num_threads()}"
    else:
        import fastcpa

        fastcpa.warmup()
        out = train_exact(X, gen0, sigma0, job["budget"], job["method"], job["lr_gradient"])
        out["lr"] = job["lr_gradient"] if job["method"] == "gradient" else None
        threads = f"Numba {numba.get_num_threads()} ({numba.threading_layer()})"
    out.update(job, N=int(X.shape[0]), D=int(X.shape[1]), S=int(gen0.latent_dim), threads=threads)
    with open(result_path, "w") as f:
        json.dump(out, f)


# --------------------------------------------------------------------------- driver
def run_all(args, budgets, n):
    """Every (net, method), one process after the other; {net: {method: result}}."""
    nets, t0 = {}, time.perf_counter()
    jobs = [(net, m) for net in args.nets for m in METHODS]
    for k, (net, method) in enumerate(jobs, 1):
        job = dict(net=net, method=method, budget=budgets[net], n=n, lr_gradient=args.lr_gradient,
                   lr_vae=args.lr_vae, seed=args.seed, per_decade=args.snapshots_per_decade)
        fd, path = tempfile.mkstemp(suffix=".json", prefix="progress-")
        os.close(fd)
        try:
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(job),
                                   "--result", path])
            if proc.returncode == 0:
                with open(path) as f:
                    r = json.load(f)
            else:
                r = dict(job, curve=[], steps=0, elapsed=float("nan"),
                         error=f"worker exited with status {proc.returncode}")
        finally:
            os.unlink(path)
        nets.setdefault(net, {})[method] = r
        end = f"{r['curve'][0][1]:.4f} -> {r['curve'][-1][1]:.4f}" if r["curve"] else "no curve"
        print(f"[{k}/{len(jobs)}, {time.perf_counter() - t0:.0f} s] {net} {LABELS[method]}: {r['steps']} steps in "
              f"{r['elapsed']:.2f} s, exact train log-lik {end}" + (f"  ERROR {r['error']}" if r["error"] else ""),
              flush=True)
    return nets


def summarise(nets):
    """Per net its final; per method its end, best, and the first time within each tolerance of final."""
    out = {}
    for net, methods in nets.items():
        vals = [ll for r in methods.values() for _, ll in r["curve"] if math.isfinite(ll)]
        final = max(vals) if vals else float("nan")
        rows = {}
        for method, r in methods.items():
            pts = [(t, ll) for t, ll in r["curve"] if math.isfinite(ll)]
            rows[method] = dict(
                start=r["curve"][0][1] if r["curve"] else float("nan"),
                end=r["curve"][-1][1] if r["curve"] else float("nan"),
                best=max((ll for _, ll in pts), default=float("nan")),
                time_to={str(tol): next((t for t, ll in pts if ll >= final - tol), None) for tol in TOLS})
        out[net] = dict(final=final, methods=rows)
    return out


def _secs(t):
    if t is None:
        return "not reached"
    return f"{t:.3f} s" if t < 1 else f"{t:.2f} s" if t < 10 else f"{t:.1f} s" if t < 100 else f"{t:.0f} s"


def _steps(r):
    if r["method"] == "vae" and "epochs" in r:
        return f"{r['steps']:,} minibatches ({r['epochs']:,.0f} epochs)"
    what = "iteration" if r["method"] == "em" else "Adam step"
    return f"{r['steps']:,} {what}{'' if r['steps'] == 1 else 's'}"


def _rel(path):
    path = os.path.abspath(path)
    return os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path


def render(data):
    """The Markdown section of a saved run (the dict written to the JSON file)."""
    nets, summary = data["nets"], summarise(data["nets"])
    lines = [BEGIN, "## Progress per second: exact log-likelihood against wall time (EM, gradient, VAE)", "",
             f"Written by `{data['command']}` (`benchmarks/progress.py`: nets, data, start and protocol as documented "
             "there). Each run is its own process, one after the other, with the machine's default threads. "
             "Log-likelihoods are exact mean log p(x) per training sample (nats); *final* is the best value any "
             "method reached on the net (in bold); the last three columns give the first time a method's curve came "
             "within 1, 0.1 and 0.01 nats of it.", "",
             "| net | N | budget | method¹ | steps | ran² | start | at the end | best | final − best "
             "| within 1 nat³ | within 0.1 nat³ | within 0.01 nat³ |",
             "|---|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    errors = []
    for net, methods in nets.items():
        s = summary[net]
        for method, r in methods.items():
            m = s["methods"][method]
            best = f"{m['best']:.4f}"
            if m["best"] == s["final"]:
                best = f"**{best}**"
            label = LABELS[method] + (f" (lr {r['lr']:g})" if r.get("lr") else "")
            lines.append(
                f"| {net} {net_label(net)} | {r.get('N', '—')} | {r['budget']:g} s | {label} | {_steps(r)} "
                f"| {r['elapsed']:.1f} s | {m['start']:.4f} | {m['end']:.4f} | {best} "
                f"| {s['final'] - m['best']:.4f} | "
                + " | ".join(_secs(m["time_to"][str(tol)]) for tol in TOLS) + " |")
            if r.get("error"):
                errors.append(f"{net} {LABELS[method]}: {r['error']}")
    lines += [
        "",
        "1. All from the same start (generator and sigma_x). EM: `CPAModel.fit(method=\"em\", tol=-inf, "
        "max_time=budget)`; gradient: the same with `method=\"gradient\"` (Adam on the exact log-likelihood); both "
        "record the exact log-likelihood `fit` gives its callback after every iteration, so their curves are exact "
        "at every step. VAE: `em_vs_vae.py`'s (encoder D-32-32-2S, Adam, batch 50, float64, the decoder initialised "
        "with the start); its decoder is snapshotted (clock paused) at 0, at "
        f"{data['args']['snapshots_per_decade']} marks per decade of time from budget/1000 s and at the end, and "
        "each snapshot scored afterwards, untimed, with the exact `CPAModel(g, sigma_x).log_prob`: its times are "
        "those of the first snapshot within the tolerance.",
        "2. Training wall time of the run: each stops at the end of the first iteration or minibatch step past the "
        "budget. The EM and gradient clocks include the fit's first partition and initial E-step; each process "
        "compiled the kernels (or ran torch 0.2 s) before its clock started.",
        "3. First time the curve is at or above final − tolerance; \"not reached\" if never within the run. "
        "Where the best curve is still rising at the budget (its last step gained more than 0.01 nats), final is "
        "the best value within the budget, not the converged one, and these times say who led at the end.",
        f"4. Every curve is in `{_rel(data['args']['json'])}`; figure: `{_rel(data['args']['figure'])}` "
        "(where matplotlib is installed).",
    ]
    if errors:
        lines += ["", "Errors (the curve up to the error counts):", ""] + [f"- {e}" for e in errors]
    lines += ["", "| machine | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in data["environment"]] + ["", END]
    return "\n".join(lines) + "\n"


def figure(data, path):
    """Per net: exact log-likelihood (top) and final − log-likelihood (bottom) against log time."""
    try:
        import matplotlib
    except ImportError:
        print(f"matplotlib is not installed: no figure written to {path} (pip install matplotlib, then "
              f"python benchmarks/progress.py --from-json JSON --figure {path})", flush=True)
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets, summary = data["nets"], summarise(data["nets"])
    fig, axes = plt.subplots(2, len(nets), figsize=(4.8 * len(nets), 7.0), squeeze=False)
    floor = 1e-3
    for j, (net, methods) in enumerate(nets.items()):
        final = summary[net]["final"]
        ts = [t for r in methods.values() for t, _ in r["curve"] if t > 0]
        left = min(ts) / 2 if ts else 1e-3
        right = max([r["elapsed"] for r in methods.values() if math.isfinite(r["elapsed"])] + [left * 10])
        for method, r in methods.items():
            if not r["curve"]:
                continue
            # the model available at time t: the last point recorded by then (a step function)
            t = [left] + [max(p[0], left) for p in r["curve"][1:]] + [max(r["elapsed"], left)]
            y = [r["curve"][0][1]] + [p[1] for p in r["curve"][1:]] + [r["curve"][-1][1]]
            kw = dict(color=COLORS[method], lw=1.4, drawstyle="steps-post",
                      label=LABELS[method] + (f" (lr {r['lr']:g})" if r.get("lr") else ""))
            axes[0, j].plot(t, y, **kw)
            axes[1, j].plot(t, [max(final - v, floor) if math.isfinite(v) else float("nan") for v in y], **kw)
            marks = [(p[0], p[1]) for p in r["curve"][1:] if p[0] > 0]
            if method == "vae" and marks:  # the scored snapshots
                axes[0, j].plot(*zip(*marks), "o", ms=2.5, color=COLORS[method])
        axes[0, j].axhline(final, color="grey", ls=":", lw=1)
        budget = next(iter(methods.values()))["budget"]
        for ax in axes[:, j]:
            ax.axvline(budget, color="grey", ls="--", lw=1)
        axes[1, j].text(budget * 0.97, floor * 1.3, "budget", fontsize=7, color="grey", ha="right")
        for tol in TOLS:
            axes[1, j].axhline(tol, color="grey", ls=":", lw=1)
            axes[1, j].text(left * 1.05, tol * 1.08, f"{tol:g} nat", fontsize=7, color="grey")
        n = next((r.get("N") for r in methods.values() if r.get("N")), "?")
        axes[0, j].set_title(f"{net} {net_label(net)}, N = {n}", fontsize=9)
        axes[0, j].set_ylabel("exact mean log p(x), train (nats)")
        axes[1, j].set_ylabel("final − exact mean log p(x) (nats)")
        axes[1, j].set_yscale("log")
        for ax in axes[:, j]:
            ax.set_xscale("log")
            ax.set_xlim(left, right * 1.1)
            ax.grid(alpha=0.3, which="both")
        axes[1, j].set_xlabel(f"training wall time (s); gaps below {floor:g} drawn at {floor:g}")
        axes[0, j].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------- main
def _budgets(values, nets, quick):
    """``--budget``: one number for every net, or NET=SECONDS pairs over the defaults."""
    budgets = {net: (QUICK_BUDGET if quick else BUDGET)[net] for net in nets}
    for v in values or []:
        net, _, secs = v.rpartition("=")
        if net and net not in NETS:
            raise SystemExit(f"--budget {v}: unknown net {net!r} (choose from {', '.join(NETS)})")
        secs = float(secs)
        if not secs > 0:
            raise SystemExit(f"--budget {v}: the budget must be positive")
        for k in ([net] if net else nets):
            if k in budgets:
                budgets[k] = secs
    return budgets


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nets", nargs="+", choices=NETS, default=list(NETS))
    p.add_argument("--budget", nargs="+", metavar="[NET=]SECONDS",
                   help="training seconds per (net, method): one number for every net, or NET=SECONDS "
                        "(default: torch-S2 600, S1-1024x3 600, digits 120; --quick: 3, 3, 2)")
    p.add_argument("--n", type=int, help=f"samples of the synthetic nets (default {N_DEFAULT}, --quick {N_QUICK}); "
                                          "digits always uses em_vs_vae's 500 training rows")
    p.add_argument("--quick", action="store_true", help="smoke run: N = 100, budgets of a few seconds")
    p.add_argument("--lr-gradient", type=float, default=1e-2, help="Adam's rate for method='gradient'")
    p.add_argument("--lr-vae", type=float, default=5e-3, help="the VAE's Adam rate")
    p.add_argument("--seed", type=int, default=0, help="torch.manual_seed of the VAE")
    p.add_argument("--snapshots-per-decade", type=int, default=None, help="VAE snapshots (default 6, --quick 3)")
    p.add_argument("--output", default=os.path.join(HERE, "RESULTS.md"), help="Markdown file to update")
    p.add_argument("--json", default=os.path.join(HERE, "progress.json"))
    p.add_argument("--figure", default=os.path.join(HERE, "progress.png"))
    p.add_argument("--from-json", metavar="JSON", help="write the table and figure of a saved run; no training")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.n is not None and args.n < 1:
        p.error(f"--n must be at least 1, got {args.n}")
    if args.snapshots_per_decade is None:
        args.snapshots_per_decade = 3 if args.quick else 6
    if args.snapshots_per_decade < 1:
        p.error("--snapshots-per-decade must be at least 1")
    for name in ("lr_gradient", "lr_vae"):
        if not getattr(args, name) > 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return _worker(json.loads(args.worker), args.result)
    if args.from_json:
        with open(args.from_json) as f:
            data = json.load(f)
    else:
        budgets = _budgets(args.budget, args.nets, args.quick)
        n = args.n or (N_QUICK if args.quick else N_DEFAULT)
        total = 3 * sum(budgets.values())
        print(f"{3 * len(args.nets)} runs, {total:.0f} s of training in all, one at a time (plus start-up, "
              "overshoot and scoring the VAE's snapshots)", flush=True)
        nets = run_all(args, budgets, n)
        threads = sorted({r["threads"] for ms in nets.values() for r in ms.values() if r.get("threads")})
        env = environment() + [
            ("torch / scikit-learn", f"{metadata.version('torch')} / {metadata.version('scikit-learn')}"),
            ("Threads in the runs", "; ".join(threads) or "—")]
        cmd = "python benchmarks/progress.py" + "".join(
            f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
        data = dict(protocol=__doc__, command=cmd, args=vars(args), environment=env, budgets=budgets, n=n,
                    nets=nets, summary=summarise(nets))
        with open(args.json, "w") as f:
            json.dump(data, f)
    data["environment"] = [tuple(row) for row in data["environment"]]
    section = render(data)
    write_section(args.output, section, BEGIN, END)
    print(section)
    wrote = [args.output] + ([] if args.from_json else [args.json])
    if figure(data, args.figure):
        wrote.append(args.figure)
    print("wrote", ", ".join(wrote))


if __name__ == "__main__":
    main()
