"""Measure fastcpa.partition against the LP reference and write a Markdown table.

    python benchmarks/run.py                  # the issue's sizes (a few minutes)
    python benchmarks/run.py --quick          # smoke sizes, small reference budget
    python benchmarks/run.py --cases S2-256 --output /tmp/r.md

The table goes into ``benchmarks/RESULTS.md`` (``--output``) between the
markers ``<!-- partition:begin -->`` and ``<!-- partition:end -->``; an
existing file keeps everything outside them, so other benchmarks can add
their own sections to the same file.

Per case it reports: the number of regions; the wall time of
``fastcpa.partition`` (median of ``--repeats`` runs after warmup) and
regions/s; the peak memory of one partition call, measured in a fresh
subprocess; the LP reference's regions/s over a time-budgeted partial
enumeration; the speed-up; and whether the issue's targets are met.
Cases live in ``benchmarks/_cases.py``.
"""

import argparse
import datetime
import gc
import inspect
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BEGIN, END = "<!-- partition:begin -->", "<!-- partition:end -->"
THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

# Modes: which cases, and how long the reference may run on each.
MODES = {
    "full": {"cases": "issue", "ref_seconds": 30.0, "ref_max_regions": 100_000},
    "quick": {"cases": "smoke", "ref_seconds": 3.0, "ref_max_regions": 20},
}


# --------------------------------------------------------------------------- measurements
def time_fastcpa(case, repeats):
    """Regions and the wall times of ``repeats`` partition calls (after one untimed call)."""
    import fastcpa
    from _cases import build_generator

    gen = build_generator(case)
    part = fastcpa.partition(gen)  # untimed: first-touch effects
    n_regions = part.n_regions
    del part
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        part = fastcpa.partition(gen)
        times.append(time.perf_counter() - t0)
        assert part.n_regions == n_regions, "partition is not deterministic"
        del part
    return n_regions, times


# The child process of peak_memory(). It prints one JSON line.
_MEMORY_CHILD = r"""
import gc, json, resource, sys
sys.path.insert(0, sys.argv[1])
import fastcpa
from _cases import build_generator

def status_kib(key):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None

def maxrss_kib():
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 if sys.platform == "darwin" else r  # bytes on macOS, KiB on Linux

fastcpa.warmup()
gen = build_generator(json.loads(sys.argv[2]))
gc.collect()
try:  # reset this process's RSS high-water mark (VmHWM) to its current RSS (Linux >= 4.0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    hwm_reset = status_kib("VmHWM") is not None
except OSError:
    hwm_reset = False
rss0, maxrss0 = status_kib("VmRSS"), maxrss_kib()
part = fastcpa.partition(gen)
hwm1, maxrss1 = status_kib("VmHWM"), maxrss_kib()
print(json.dumps({
    "regions": part.n_regions,
    "maxrss_delta_mib": (maxrss1 - maxrss0) / 1024,
    "hwm_delta_mib": (hwm1 - rss0) / 1024 if hwm_reset else None,
    "baseline_rss_mib": rss0 / 1024 if rss0 is not None else maxrss0 / 1024,
}))
"""


def peak_memory(case):
    """Peak memory increase (MiB) of one partition call, in a fresh interpreter.

    The child imports fastcpa, warms up, builds the generator, then measures
    the rise of its peak resident set size over the call. On Linux the peak
    (VmHWM) is reset to the current RSS just before the call, so the number is
    ``peak RSS during the call - RSS before it``. ``ru_maxrss`` alone is not
    usable here: a child started by fork/vfork + exec inherits the parent's
    ``ru_maxrss``, which after the timing runs is far above the child's own.
    Elsewhere the rise of ``ru_maxrss`` is used.
    """
    from _cases import sizes_of

    out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, HERE, json.dumps(list(sizes_of(case)))],
                         capture_output=True, text=True, env=os.environ.copy())
    if out.returncode != 0:
        raise RuntimeError(f"memory child failed for {case}:\n{out.stderr}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["peak_mib"] = res["hwm_delta_mib"] if res["hwm_delta_mib"] is not None else res["maxrss_delta_mib"]
    res["method"] = "VmHWM" if res["hwm_delta_mib"] is not None else "ru_maxrss"
    return res


def run_reference(case, seconds, max_regions):
    """Partial LP-reference enumeration of about ``seconds`` wall time.

    Uses the reference's ``time_budget`` (checked between regions) when it has
    one; otherwise estimates the seconds per region from a 2-region run and
    picks ``max_regions`` to fit the budget.
    """
    from reference_enumeration import enumerate_regions_lp
    from _cases import build_generator, reference_args

    args = reference_args(build_generator(case))
    params = inspect.signature(enumerate_regions_lp).parameters
    if "time_budget" in params:
        kwargs = {"max_regions": max_regions, "time_budget": seconds}
    else:
        t0 = time.perf_counter()
        probe = enumerate_regions_lp(*args, max_regions=2)
        per_region = (time.perf_counter() - t0) / max(1, len(probe["codes"]))
        kwargs = {"max_regions": max(1, min(max_regions, int(seconds / per_region)))}
    t0 = time.perf_counter()
    out = enumerate_regions_lp(*args, **kwargs)
    wall = time.perf_counter() - t0
    regions, complete = len(out["codes"]), bool(out.get("complete", False))
    if complete:
        stop = "complete"
    elif regions >= kwargs["max_regions"]:
        stop = f"max_regions={kwargs['max_regions']}"
    else:
        stop = f"time budget {seconds:g} s"
    return {"regions": regions, "seconds": wall, "complete": complete, "n_lp": out.get("n_lp"),
            "codes": out["codes"], "interior": out["interior"], "stop": stop}


def reference_agrees(case, ref):
    """Whether each reference region (its interior point) has the same sign code in fastcpa's partition."""
    import fastcpa
    from _cases import build_generator

    part = fastcpa.partition(build_generator(case))
    idx = part.locate(ref["interior"])
    return bool((part.code_bits(idx) == ref["codes"]).all())


# --------------------------------------------------------------------------- environment
def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    except (ValueError, OSError, AttributeError):
        return None


def _blas():
    try:
        from threadpoolctl import threadpool_info

        def owner(path):  # the wheel that bundles the library, e.g. numpy.libs -> numpy
            parts = os.path.normpath(path or "").split(os.sep)
            hits = [p.split(".")[0] for p in parts if p.endswith(".libs") or p in ("numpy", "scipy")]
            return f"{hits[-1]}: " if hits else ""

        libs = [f"{owner(i.get('filepath'))}{i.get('internal_api')} {i.get('version')} "
                f"({i.get('threading_layer', '?')}, {i.get('architecture', '?')}, {i.get('num_threads')} threads)"
                for i in threadpool_info() if i.get("user_api") == "blas"]
        if libs:
            return "; ".join(libs)
    except Exception:
        pass
    try:
        import numpy as np

        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}"
    except Exception:
        return None


def _git(*args):
    try:
        return subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def environment():
    """(label, value) rows describing the machine and software."""
    import numba
    import numpy
    import scipy

    import fastcpa

    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    ram = _ram_gib()
    commit = _git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", "fastcpa", "kernels")
    if dirty:
        commit += " + uncommitted changes in fastcpa/ or kernels/"
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "not initialised"
    rows = [
        ("Date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("Commit", commit),
        ("CPU", f"{_cpu_model()}, {cores} logical cores ({usable} usable)"),
        ("RAM", f"{ram:.1f} GiB" if ram else None),
        ("OS", platform.platform()),
        ("Python", platform.python_version()),
        ("fastcpa / numpy / scipy / numba",
         f"{fastcpa.__version__} / {numpy.__version__} / {scipy.__version__} / {numba.__version__}"),
        ("BLAS", _blas()),
        ("Threads", ", ".join(f"{v}={os.environ.get(v, 'unset')}" for v in THREAD_VARS)
         + f"; Numba threading layer {layer}"),
    ]
    return [(k, v) for k, v in rows if v]


# --------------------------------------------------------------------------- report
def _rate(x):
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _seconds(x):
    return f"{x:.3g} s" if x >= 1 else f"{x * 1e3:.3g} ms"


def _yes(ok):
    return "yes" if ok else "**no**"


def render(results, env, mode, repeats, ref_seconds):
    from _cases import ISSUE_CASES, TARGET_REGIONS_PER_S, TARGET_SPEEDUP

    lines = [BEGIN, "## Partition throughput: `fastcpa.partition` vs the LP reference", "",
             f"Mode `{mode}` (`python benchmarks/run.py{' --quick' if mode == 'quick' else ''}`).", ""]
    lines += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in env] + [""]
    lines += [
        "| case | sizes | regions | fastcpa time¹ | fastcpa regions/s² | peak memory³ "
        "| reference regions (time)⁴ | reference regions/s⁴ | speed-up⁴ | same codes⁵ "
        "| target regions/s⁶ | target ≥100×⁶ |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|:-:|:-:|:-:|",
    ]
    for r in results:
        S = r["sizes"][0]
        ref = r.get("ref")
        ref_rate = ref["regions"] / ref["seconds"] if ref else None
        speedup = r["rate"] / ref_rate if ref else None
        issue = r["case"] in ISSUE_CASES
        target = TARGET_REGIONS_PER_S.get(S)
        rate_ok = f"{_yes(r['rate'] >= target)} (≥ {target:.0e})".replace("e+0", "e") if issue and target else "—"
        speed_ok = _yes(speedup >= TARGET_SPEEDUP) if issue and speedup is not None else "—"
        ref_cell = "—"
        if ref:
            ref_cell = f"{ref['regions']:,}{' (all)' if ref['complete'] else ''} ({ref['seconds']:.1f} s)"
        mem = f"{r['mem']['peak_mib']:.1f} MiB" if r.get("mem") else "—"
        lines.append(
            f"| {r['case']} | {list(r['sizes'])} | {r['regions']:,} | {_seconds(r['median'])} "
            f"| {_rate(r['rate'])} | {mem} | {ref_cell} "
            f"| {_rate(ref_rate)} | {f'{speedup:,.0f}×' if speedup else '—'} "
            f"| {('yes' if r['agree'] else '**no**') if ref else '—'} | {rate_ok} | {speed_ok} |"
        )
    threads = os.environ.get("NUMBA_NUM_THREADS", "unset")
    lines += [
        "",
        f"1. Wall time of `fastcpa.partition(gen)` only: the generator is built and the Numba kernels "
        f"are compiled (`fastcpa.warmup()`) and run once untimed beforehand; median of {repeats} "
        f"repeats (`time.perf_counter`), single process, {threads} threads "
        f"(`NUMBA_NUM_THREADS`, and the same for OpenBLAS/OpenMP/MKL; `--threads` changes it).",
        "2. regions/s = regions / median time.",
        "3. Peak memory of one `partition` call in a fresh Python process that imported fastcpa, ran "
        "`fastcpa.warmup()` and built the generator first: the rise of the process's peak resident set "
        "size over the call (on Linux `VmHWM` is reset through `/proc/self/clear_refs` just before the "
        "call and the number is peak RSS − RSS before the call; elsewhere the rise of "
        "`getrusage(RUSAGE_SELF).ru_maxrss`). Unlike `tracemalloc`, it counts Numba/NRT allocations "
        "and the result arrays. (`ru_maxrss` alone is not used on Linux: a child started by "
        "fork/vfork + exec inherits the parent's value.)",
        "4. `benchmarks/reference_enumeration.py::enumerate_regions_lp`: breadth-first search over sign "
        "codes with one HiGHS LP per region plus one per (region, unit) facet candidate. It is stopped "
        f"after a ~{ref_seconds:g} s time budget (checked between regions, so a run can overshoot by one "
        "region), i.e. it enumerates only part of the regions (“(all)” marks a complete run); its rate is "
        "regions enumerated / its wall time. Speed-up = fastcpa regions/s ÷ reference regions/s.",
        "5. Each region found by the reference, located in fastcpa's partition by its interior "
        "(Chebyshev-centre) point, has the same sign code there.",
        f"6. Issue targets: ≥ 1e6 regions/s for S = 1, ≥ 1e5 regions/s for S = 2, speed-up ≥ "
        f"{TARGET_SPEEDUP:.0f}× over the reference; checked for the issue's sizes only (“—” for smoke sizes).",
        "7. All cases: ReLU MLP, sizes `[S, hidden..., D]` with D = 64; weights and biases drawn from "
        "uniform(−1/√fan_in, 1/√fan_in) (torch's default `nn.Linear` init) with "
        "`numpy.random.default_rng(0)`, layer by layer (cases: `benchmarks/_cases.py`).",
        END,
    ]
    return "\n".join(lines) + "\n"


def write_section(path, section, begin=BEGIN, end=END):
    """Write ``section`` into ``path``, replacing only an existing section marked by ``begin``/``end``."""
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
        i, j = text.find(begin), text.find(end)
        if i >= 0 and j > i:
            text = text[:i] + section.rstrip("\n") + text[j + len(end):]
        else:
            text = text.rstrip("\n") + "\n\n" + section
    else:
        text = "# fastcpa benchmark results\n\nWritten by the scripts in `benchmarks/`.\n\n" + section
    with open(path, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")


# --------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Benchmark fastcpa.partition against the LP reference.")
    p.add_argument("--quick", action="store_true", help="smoke sizes and a small reference budget")
    p.add_argument("--output", default=os.path.join(HERE, "RESULTS.md"), help="Markdown file to update")
    p.add_argument("--cases", nargs="+", help="case names from benchmarks/_cases.py (default: by mode)")
    p.add_argument("--repeats", type=int, default=5, help="timed partition calls per case (>= 5)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for Numba and BLAS (default: NUMBA_NUM_THREADS if set, else 2)")
    p.add_argument("--ref-seconds", type=float, default=None, help="time budget of each reference run")
    p.add_argument("--ref-max-regions", type=int, default=None, help="cap on the reference's regions")
    p.add_argument("--no-reference", action="store_true", help="skip the LP reference")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    args = p.parse_args(argv)
    if args.repeats < 5:
        p.error("--repeats must be at least 5")
    return args


def main(argv=None):
    args = parse_args(argv)
    # thread counts must be set before NumPy / Numba are imported
    threads = str(args.threads) if args.threads else os.environ.get("NUMBA_NUM_THREADS", "2")
    for var in THREAD_VARS:
        os.environ[var] = threads
    sys.path.insert(0, HERE)

    import fastcpa
    from _cases import CASES, ISSUE_CASES, SMOKE_CASES, sizes_of

    mode = "quick" if args.quick else "full"
    cfg = MODES[mode]
    names = args.cases or list(SMOKE_CASES if cfg["cases"] == "smoke" else ISSUE_CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; known: {list(CASES)}")
    ref_seconds = args.ref_seconds if args.ref_seconds is not None else cfg["ref_seconds"]
    ref_max = args.ref_max_regions if args.ref_max_regions is not None else cfg["ref_max_regions"]

    t_start = time.perf_counter()
    fastcpa.warmup()
    results = []
    for name in names:
        r = {"case": name, "sizes": sizes_of(name)}
        r["regions"], r["times"] = time_fastcpa(name, args.repeats)
        r["median"] = statistics.median(r["times"])
        r["rate"] = r["regions"] / r["median"]
        print(f"[{name}] fastcpa: {r['regions']} regions, median {r['median']:.4g} s "
              f"({min(r['times']):.4g}..{max(r['times']):.4g}), {r['rate']:,.0f} regions/s", flush=True)
        if not args.no_memory:
            r["mem"] = peak_memory(name)
            print(f"[{name}] peak memory: +{r['mem']['peak_mib']:.1f} MiB ({r['mem']['method']}; "
                  f"ru_maxrss rise {r['mem']['maxrss_delta_mib']:.1f} MiB)", flush=True)
        if not args.no_reference:
            ref = run_reference(name, ref_seconds, ref_max)
            r["agree"] = reference_agrees(name, ref)
            del ref["codes"], ref["interior"]
            r["ref"] = ref
            print(f"[{name}] reference: {ref['regions']} regions in {ref['seconds']:.1f} s "
                  f"({ref['regions'] / ref['seconds']:.3g} regions/s, {ref['n_lp']} LPs, "
                  f"complete={ref['complete']}, stop: {ref['stop']}); codes agree: {r['agree']}", flush=True)
        results.append(r)

    section = render(results, environment(), mode, args.repeats, ref_seconds)
    write_section(args.output, section)
    print(section)
    print(f"wrote {args.output} in {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
