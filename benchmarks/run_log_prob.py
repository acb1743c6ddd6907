"""Measure CPAModel.log_prob throughput and memory; write a Markdown table.

    python benchmarks/run_log_prob.py            # the issue's cases (~10 minutes)
    python benchmarks/run_log_prob.py --quick    # small N, smoke check

Throughput is (sample, region) pairs per second: dense (``prune=False``) and
effective (``prune=True``, pairs of the full N x R grid per second), the
median of three calls after a warm call; beside it the straightforward SciPy
pair loop of ``naive_log_prob.py`` on a capped number of pairs. Peak memory
is the rise of the resident set during one ``log_prob`` call in a fresh
process, for two sample counts N against R >= 1e4 regions: flat in N means
the N x R matrix is never formed. The table goes into ``benchmarks/RESULTS.md``
between ``<!-- log_prob:begin -->`` and ``<!-- log_prob:end -->``.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
BEGIN, END = "<!-- log_prob:begin -->", "<!-- log_prob:end -->"
SIGMA_X = 0.05
# name: (layer sizes, N, naive pairs)
CASES = {
    "S1-D2": ((1, 1024, 1024, 2), 2000, 2000),
    "S1-D64": ((1, 1024, 1024, 64), 2000, 2000),
    "S1-D784": ((1, 1024, 1024, 784), 1000, 20),
    "S2-D2": ((2, 32, 32, 2), 200, 500),
    "S2-D64": ((2, 32, 32, 64), 200, 500),
    "S2-D784": ((2, 32, 32, 784), 100, 20),
}
# memory: (layer sizes, sample counts)
MEMORY = {
    "S1": ((1, 12000, 64), (10_000, 100_000)),
    "S2": ((2, 64, 128, 64), (2048, 8192)),  # beyond sample_chunk (1024): flat from there
}

_MEMORY_CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import fastcpa
from _cases import build_generator

def status_kib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])

sizes, n = json.loads(sys.argv[2]), int(sys.argv[3])
model = fastcpa.CPAModel(build_generator(sizes), sigma_x=float(sys.argv[4]))
model.log_prob(model.sample(2, seed=0))  # partition, region parameters, kernels
X = model.sample(n, seed=1)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
rss0 = status_kib("VmRSS")
model.log_prob(X)
print(json.dumps({"regions": model.partition.n_regions, "peak_mib": (status_kib("VmHWM") - rss0) / 1024,
                  "X_mib": X.nbytes / 2**20}))
"""


def median_time(fn, repeats=3):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(name, sizes, n, naive_pairs):
    import fastcpa
    from _cases import build_generator
    from naive_log_prob import naive_log_prob, naive_log_prob_2d

    model = fastcpa.CPAModel(build_generator(sizes), sigma_x=SIGMA_X)
    X = model.sample(n, seed=1)
    R = model.partition.n_regions
    pairs = n * R
    dense = median_time(lambda: model.log_prob(X, prune=False))
    pruned = median_time(lambda: model.log_prob(X, prune=True))
    skipped = model.last_pairs_skipped_ / pairs
    part = model.partition
    t0 = time.perf_counter()
    if sizes[0] == 1:
        _, done = naive_log_prob(part.A, part.b, part.intervals, X, SIGMA_X, max_pairs=naive_pairs)
    else:
        _, done = naive_log_prob_2d(part, X, SIGMA_X, max_pairs=naive_pairs)
    naive = done / (time.perf_counter() - t0)
    return dict(case=name, sizes=sizes, regions=R, n=n, dense=pairs / dense, pruned=pairs / pruned,
                skipped=skipped, naive=naive)


def memory(sizes, n):
    out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, HERE, json.dumps(list(sizes)), str(n), str(SIGMA_X)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def render(rows, mem, env):
    lines = [BEGIN, "## log_prob: exact log p(x)", "",
             "Written by `python benchmarks/run_log_prob.py`. Pairs/s over the full (sample, region) grid; "
             "dense = `prune=False` (every pair evaluated; a term whose tail bound lies below what the running "
             "sum can register is not refined further, which leaves the sum the same to the bit), "
             "effective = `prune=True` (certified skip, docs/mathematics.md, section 7). Naive = one Python loop "
             "over pairs with SciPy (`benchmarks/naive_log_prob.py`: `multivariate_normal.pdf` times a "
             f"`norm.cdf` difference for S = 1, an Owen's T fan with `scipy.special.owens_t` for S = 2). "
             f"Generators: ReLU, torch default init (`benchmarks/_cases.py`), sigma_x = {SIGMA_X}, "
             "samples drawn from the model.", "",
             "| case | layers | regions R | N | dense pairs/s | effective pairs/s | skipped | naive pairs/s | dense / naive |",
             "|---|---|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        lines.append(f"| {r['case']} | {list(r['sizes'])} | {r['regions']:,} | {r['n']:,} | {r['dense']:.3g} | "
                     f"{r['pruned']:.3g} | {100 * r['skipped']:.0f}% | {r['naive']:.3g} | {r['dense'] / r['naive']:.0f}x |")
    below = [r["case"] for r in rows if r["dense"] < (2e7 if r["case"].startswith("S1") else 2e6)]
    status = (f"below those targets here: {', '.join(below)}" if below else "all cases meet those targets")
    lines += ["",
              "Targets (issue 3, this 2-core machine): dense >= 2e7 pairs/s for S = 1 and >= 2e6 for S = 2; >= 100x "
              "the naive loop; memory flat in N x R. Since the cancellation-free pair evaluation "
              "(docs/mathematics.md, section 3) every pair that can change the sum is evaluated from its whitened "
              f"residual, O(D) work a pair beyond the GEMM; {status}. (The expanded quadratic form, which lost "
              "accuracy far from the data, reached 2.07e7 to 6.2e7 for S = 1 and 2.3e6 to 6.2e6 for S = 2.) Memory "
              "stays flat in N; its constant includes the rows' reference pairs and the whitened region maps.", "",
              "| memory case | layers | regions R | N | peak rise during log_prob | X itself |", "|---|---|--:|--:|--:|--:|"]
    for name, sizes, n, res in mem:
        lines.append(f"| {name} | {list(sizes)} | {res['regions']:,} | {n:,} | {res['peak_mib']:.1f} MiB | "
                     f"{res['X_mib']:.1f} MiB |")
    lines += ["", "| machine | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in env] + ["", END]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small N, small memory runs")
    ap.add_argument("--output", default=os.path.join(HERE, "RESULTS.md"))
    args = ap.parse_args(argv)
    import fastcpa
    from run import environment, write_section

    fastcpa.warmup()
    rows = []
    for name, (sizes, n, naive_pairs) in CASES.items():
        if args.quick:
            n, naive_pairs = max(20, n // 20), min(naive_pairs, 20)
        rows.append(measure(name, sizes, n, naive_pairs))
        print(json.dumps(rows[-1]), flush=True)
    mem = []
    for name, (sizes, ns) in MEMORY.items():
        for n in ns:
            n = n // 100 if args.quick else n
            mem.append((name, sizes, n, memory(sizes, n)))
            print(name, n, json.dumps(mem[-1][3]), flush=True)
    write_section(args.output, render(rows, mem, environment()), BEGIN, END)
    print("wrote", args.output)


if __name__ == "__main__":
    main()
