"""Exactness report: every metamorphic class of ``tests/test_metamorphic.py`` at a chosen size.

    python benchmarks/exactness.py                  # --cases 20 per class (about 2 minutes)
    python benchmarks/exactness.py --cases 3000 --jobs 2   # >= 100,000 cases (34 classes x 3,000)

``--jobs k`` runs k worker processes, one class at a time each, with one Numba and BLAS
thread per worker (the cases are small: threads only add overhead).

Writes the section between ``<!-- exactness:begin -->`` and ``<!-- exactness:end -->`` of
``benchmarks/RESULTS.md`` (``--output``): per class the cases run, passes, failures
(an exception counts as a failure) and the worst error relative to its tolerance, with
the seed of the worst case (``run_class(name, seed)`` in ``tests/test_metamorphic.py``
reproduces it), plus the machine and the command.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BEGIN, END = "<!-- exactness:begin -->", "<!-- exactness:end -->"


def run(classes, n_cases, seed0, jobs=1):
    if jobs > 1:
        import multiprocessing as mp

        for k in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[k] = "1"  # inherited by the workers (spawned: nothing imported yet)
        with mp.get_context("spawn").Pool(jobs, initializer=_worker_init) as pool:
            # in order, each reported as soon as it and those before it are done
            return [_report(r) for r in pool.imap(_run_one_args, [(name, n_cases, seed0) for name in classes])]
    return [_report(run_one(name, n_cases, seed0)) for name in classes]


def _worker_init():
    sys.path.insert(0, os.path.join(REPO, "tests"))


def _run_one_args(args):
    return run_one(*args)


def _report(r):
    print(f"{r['name']:28s} {r['passes']:6d}/{r['cases']:<6d} worst err/tol {r['worst']:.3g} (seed {r['seed']})"
          + (f" failing: {r['failing'][:10]}" if r.get("failing") else ""), flush=True)
    return r


def run_one(name, n_cases, seed0):
    """Cases ``seed0 .. seed0 + n_cases - 1`` of one class: counts, the worst err/tol and its seed."""
    import numpy as np
    from test_metamorphic import run_class

    t0 = time.perf_counter()
    passes = fails = 0
    worst, worst_seed = 0.0, None
    failing = []
    for k in range(n_cases):
        seed = seed0 + k
        try:
            err, tol, _ = run_class(name, seed)
            ratio = float(np.max(np.where(np.isfinite(err), err / tol, np.inf)))
        except Exception:  # noqa: BLE001 (an exception is a failure of the class)
            ratio = float("inf")
        if ratio <= 1.0:
            passes += 1
        else:
            fails += 1
            failing.append(seed)
        if not ratio <= worst:
            worst, worst_seed = ratio, seed
    return dict(name=name, cases=n_cases, passes=passes, fails=fails, worst=worst, seed=worst_seed,
                seconds=time.perf_counter() - t0, failing=failing)


def render(rows, env, cmd):
    total = sum(r["cases"] for r in rows)
    lines = [BEGIN, "## Exactness: metamorphic identities of log p(x)", "",
             f"Command: `{cmd}` ({total:,} cases). Tolerances come from each case's conditioning "
             "(`tests/test_metamorphic.py`); a class passes when every case has err/tol <= 1. "
             "`run_class(name, seed)` reproduces a case.", "",
             "| class | cases | pass | fail | worst err / tol | worst seed | failing seeds | time (s) |",
             "|---|--:|--:|--:|--:|--:|---|--:|"]
    for r in rows:
        failing = r.get("failing", [])
        shown = ", ".join(map(str, failing[:10])) + (" ..." if len(failing) > 10 else "")
        lines.append(f"| {r['name']} | {r['cases']} | {r['passes']} | {r['fails']} | {r['worst']:.3g} | "
                     f"{r['seed']} | {shown} | {r['seconds']:.1f} |")
    lines += ["", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in env] + ["", END, ""]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=20, help="cases per class (default 20)")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--classes", default="", help="comma-separated subset of classes")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (one thread each; default 1)")
    p.add_argument("--output", default=os.path.join(HERE, "RESULTS.md"))
    args = p.parse_args(argv)
    if args.cases < 1 or args.jobs < 1:
        p.error("--cases and --jobs must be at least 1")
    sys.path.insert(0, os.path.join(REPO, "tests"))
    sys.path.insert(0, HERE)
    from test_metamorphic import DEEP, HARD, ORDINARY

    from run import environment, write_section

    classes = [c for c in ORDINARY + HARD + DEEP if not args.classes or c in args.classes.split(",")]
    rows = run(classes, args.cases, args.seed, args.jobs)
    cmd = "python benchmarks/exactness.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_section(args.output, render(rows, environment(), cmd.strip()), BEGIN, END)


if __name__ == "__main__":
    main()
