"""Exact EM at the sizes researchers use: time per iteration and gain, this tree beside a baseline, in one run.

    python benchmarks/em_speed.py --baseline 2fdf56b          # every case, both versions
    python benchmarks/em_speed.py --cases S1-256x3 --iters 2  # one case, this tree only
    python benchmarks/em_speed.py --cases torch-S2 --n 200 --iters 1 --baseline 414f8be  # smaller N
    python benchmarks/em_speed.py --cases torch-S2 --iters 50 --baseline 27af367 --section em-speed-50

Each version runs in its own Python process with its own source tree first on
``sys.path`` (the baseline from a ``git worktree`` of the given revision, made
under the system's temporary folder and removed afterwards), on the same data,
from the same starting generator, case by case one version after the other on
the same machine, so the ratios are like for like.

Cases (``CASES``): the new user's torch generator ``Linear(2,64) - LeakyReLU(0.2)
- Linear(64,64) - ReLU - Linear(64,10)`` and the S = 1 nets ``[1, 256, 256, 256,
64]`` and ``[1, 1024, 1024, 1024, 64]`` (leaky ReLU, slope 0.01), each with
torch's default ``nn.Linear`` init (``benchmarks/_cases.py``; seed 0 for the
fit's start, seed 1 for the generator that draws the N samples, with sigma_x
= 0.1); the fit starts at sigma_x = 0.3. Measured: ``CPAModel.fit(X,
n_iter=k, tol=-inf)``, the time of every iteration as ``fit_time_`` reports
it, the callback's ticks from the call itself (the first of them holds fit's
first likelihood pass; the first partition is computed before the clock
starts), the mean
log-likelihood after each, and one ``sufficient_stats(X)`` (the E-step) as
(sample, region) pairs per second. The table goes into
``benchmarks/RESULTS.md`` between ``<!-- em-speed:begin -->`` and
``<!-- em-speed:end -->`` (``--section NAME``: between ``<!-- NAME:begin -->`` and
``<!-- NAME:end -->``, e.g. a longer run beside the default one).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SECTION = "em-speed"
# name: (layer sizes, activations, negative slopes, N, EM iterations timed)
CASES = {
    "torch-S2": ((2, 64, 64, 10), ("leaky_relu", "relu"), (0.2, 0.0), 1000, 2),
    "S1-256x3": ((1, 256, 256, 256, 64), "leaky_relu", 0.01, 1000, 3),
    "S1-1024x3": ((1, 1024, 1024, 1024, 64), "leaky_relu", 0.01, 1000, 2),
}
#: The issue's targets, seconds per EM iteration on a 2-core machine.
TARGET_S = {"torch-S2": 5.0, "S1-256x3": 1.0, "S1-1024x3": 10.0}


def _generator(sizes, acts, slopes, seed):
    import fastcpa
    from _cases import init_params

    weights, biases = init_params(sizes, seed)
    return fastcpa.Generator(weights, biases, activation=list(acts) if isinstance(acts, tuple) else acts,
                             slope=list(slopes) if isinstance(slopes, tuple) else slopes)


def measure(name, iters=None, n=None):
    """One case with whatever ``fastcpa`` this process imports: a dict of timings."""
    import fastcpa

    sizes, acts, slopes, n0, k = CASES[name]
    k = iters or k
    n = n or n0
    X = fastcpa.CPAModel(_generator(sizes, acts, slopes, seed=1), sigma_x=0.1).sample(n, seed=2)
    model = fastcpa.CPAModel(_generator(sizes, acts, slopes, seed=0), sigma_x=0.3)
    R = model.partition.n_regions
    t0 = time.perf_counter()
    model.sufficient_stats(X)
    estep = time.perf_counter() - t0
    times, last = [], [0.0]

    def tick(i, ll, fit):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    fit = fastcpa.CPAModel(model.generator, sigma_x=0.3)
    fit.partition
    last[0] = time.perf_counter()
    fit.fit(X, n_iter=k, tol=-float("inf"), progress=False, callback=tick)
    h = fit.history_
    return dict(case=name, regions=R, n=n, estep_s=estep, pairs_per_s=n * R / estep, iter_s=times,
                fit_s=[float(t) for t in fit.fit_time_], history=[float(v) for v in h],
                backtracks=[int(b) for b in fit.backtracks_])


def _worker(args):
    # the version under test must be the one on sys.path[0], not an installed (editable) copy
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    sys.path.insert(0, args.tree)
    sys.path.insert(1, HERE)
    import fastcpa
    import fastcpa.kernels

    for mod in (fastcpa, fastcpa.kernels):
        if not os.path.abspath(mod.__file__).startswith(os.path.abspath(args.tree) + os.sep):
            raise SystemExit(f"{mod.__name__} was imported from {mod.__file__}, not from {args.tree}")
    fastcpa.warmup()
    out = [measure(name, args.iters, args.n) for name in args.cases]
    with open(args.json, "w") as fh:
        json.dump(out, fh)


def _run_version(tree, cases, iters, n):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        path = fh.name
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--tree", tree, "--json", path, "--cases", *cases]
    if iters:
        cmd += ["--iters", str(iters)]
    if n:
        cmd += ["--n", str(n)]
    subprocess.run(cmd, check=True)
    with open(path) as fh:
        rows = json.load(fh)
    os.unlink(path)
    return rows


def _baseline_tree(rev):
    where = tempfile.mkdtemp(prefix="fastcpa-baseline-")
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", where, rev], check=True,
                   stdout=subprocess.DEVNULL)
    sha = subprocess.run(["git", "-C", where, "rev-parse", "--short=12", "HEAD"], check=True, capture_output=True,
                         text=True).stdout.strip()
    return where, sha


def render(rows, base, base_sha, env, cmd, section=SECTION):
    def per_iteration(r):  # fit's own per-iteration times (rows without them: the callback's)
        return statistics.median(r.get("fit_s") or r["iter_s"])

    def cell(r):
        t = per_iteration(r)
        gain = (r["history"][-1] - r["history"][0]) / len(r["iter_s"])
        rate = (r["history"][-1] - r["history"][0]) / sum(r["iter_s"])
        return (f"{t:.2f} s", f"{gain:.3f}", f"{rate:.3g}", f"{r['pairs_per_s']:.3g}",
                f"{r['history'][-1]:.4f} ({len(r['iter_s'])})")

    title = "## Exact EM at researchers' sizes: time per iteration, this tree beside a baseline"
    if section != SECTION:
        title += f" ({section})"
    lines = [f"<!-- {section}:begin -->", title, "",
             f"Written by `{cmd}` (`benchmarks/em_speed.py`: cases, data and start as documented there; both "
             "versions on this machine in one run, case by case one after the other).", ""]
    head = "| case | regions R | N | target |"
    rule = "|---|--:|--:|--:|"
    if base:
        head += (f" baseline {base_sha}: s / iteration | gain / iteration | gain / s | E-step pairs/s |"
                 " log-lik at the end (iterations) |")
        rule += "--:|--:|--:|--:|--:|"
    head += " this tree: s / iteration | gain / iteration | gain / s | E-step pairs/s | log-lik at the end (iterations) |"
    rule += "--:|--:|--:|--:|--:|"
    if base:
        head += " speed-up |"
        rule += "--:|"
    lines += [head, rule]
    for i, r in enumerate(rows):
        line = f"| {r['case']} | {r['regions']:,} | {r['n']:,} | <= {TARGET_S[r['case']]:g} s at N = {CASES[r['case']][3]:,} |"
        if base:
            line += " {} | {} | {} | {} | {} |".format(*cell(base[i]))
        line += " {} | {} | {} | {} | {} |".format(*cell(r))
        if base:
            line += f" {per_iteration(base[i]) / per_iteration(r):.1f}x |"
        lines.append(line)
    lines += ["", "Seconds per iteration: the median over the timed iterations of `fit(X, n_iter=k, tol=-inf)`, "
              "as `fit_time_` gives them (each iteration's own time; `fit`'s first likelihood pass, which "
              "may also form the first E-step, is in none). "
              "Gain: mean log-likelihood (nats per sample) gained per iteration over them, and per second "
              "of the whole call, that first pass included (the measure across schedules: `fit`'s default `schedule=\"auto\"` is "
              "`\"joint\"` for S = 2, one E-step an iteration, each gaining less). E-step: one "
              "`sufficient_stats(X)` at the start, N x R / its time. Log-lik at the end: the mean exact "
              "log-likelihood per sample after the run's iterations (in brackets).", "",
              "| machine | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in env] + ["", f"<!-- {section}:end -->"]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    ap.add_argument("--iters", type=int, help="EM iterations timed per case (default: the case's own)")
    ap.add_argument("--n", type=int, help="samples per case (default: the case's own N)")
    ap.add_argument("--baseline", metavar="REV", help="a git revision to run beside this tree")
    ap.add_argument("--output", default=os.path.join(HERE, "RESULTS.md"))
    ap.add_argument("--section", default=SECTION, help="the marker name of the section it writes (default: em-speed)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tree", default=ROOT, help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.iters is not None and args.iters < 1:
        ap.error(f"--iters must be at least 1, got {args.iters}")
    if args.n is not None and args.n < 1:
        ap.error(f"--n must be at least 1, got {args.n}")
    if args.worker:
        return _worker(args)
    base, base_sha, rows = None, None, []
    tree = None
    try:
        if args.baseline:
            tree, base_sha = _baseline_tree(args.baseline)
            base = []
        # case by case, the baseline then this tree: a drift of the machine's speed
        # reaches both sides of a ratio alike
        for case in args.cases:
            if tree is not None:
                base += _run_version(tree, [case], args.iters, args.n)
                print("baseline", json.dumps(base[-1]), flush=True)
            rows += _run_version(ROOT, [case], args.iters, args.n)
            print("this tree", json.dumps(rows[-1]), flush=True)
    finally:
        if tree is not None:
            subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", tree], check=False)
            shutil.rmtree(tree, ignore_errors=True)
    sys.path.insert(0, HERE)
    from run import environment, write_section

    cmd = "python benchmarks/em_speed.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    write_section(args.output, render(rows, base, base_sha, environment(), cmd, args.section),
                  f"<!-- {args.section}:begin -->", f"<!-- {args.section}:end -->")
    print("wrote", args.output)


if __name__ == "__main__":
    main()
