"""fastcpa imports and computes the same way from a source checkout and from an install.

pyproject maps the top-level ``kernels/`` folder to ``fastcpa.kernels``; Python
started in the repository root with no install must find the kernels all the same.
"""

import math
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# log(Phi(1) - Phi(0)) from the error function: independent of fastcpa
EXPECTED = math.log(0.5 * math.erf(1.0 / math.sqrt(2.0)))

PROBE = """
import math, sys
import fastcpa
r = fastcpa.interval_moments(0.0, 1.0)
import fastcpa.kernels.cpu.truncated
print(fastcpa.__file__)
print(fastcpa.kernels.__file__)
print(repr(float(r.log_mass)))
print(any("editable" in type(f).__name__.lower() or "editable" in repr(f).lower() for f in sys.meta_path))
"""


def _clean_env():
    """Only what the interpreter and Numba's cache need: no PYTHONPATH, no user site."""
    keep = ("PATH", "HOME", "TMPDIR", "NUMBA_CACHE_DIR", "NUMBA_NUM_THREADS", "FASTCPA_NUMBA_CACHE")
    return {k: os.environ[k] for k in keep if k in os.environ}


def _run(args, cwd):
    out = subprocess.run(args, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout.split("\n")


def test_source_checkout_without_install(tmp_path):
    """``python -S`` (no site-packages .pth files, so no editable-install finder) with the
    repository root first on the path and only the dependencies' folders after it."""
    if not (ROOT / "kernels" / "__init__.py").is_file():
        pytest.skip("not a source checkout")
    import numba
    import numpy
    import scipy
    import threadpoolctl
    import tqdm

    deps = set()
    for m in (numpy, scipy, numba, tqdm, threadpoolctl):
        f = pathlib.Path(m.__file__).resolve()
        deps.add(str(f.parents[1] if f.name == "__init__.py" else f.parent))
    setup = f"import sys; sys.path[:0] = {[str(ROOT), *sorted(deps)]!r}\n"
    f_init, k_init, log_mass, editable = _run([sys.executable, "-S", "-c", setup + PROBE], cwd=ROOT)[:4]
    assert pathlib.Path(f_init) == ROOT / "fastcpa" / "__init__.py"
    assert pathlib.Path(k_init) == ROOT / "kernels" / "__init__.py"
    assert editable == "False"
    assert float(log_mass) == pytest.approx(EXPECTED, rel=1e-14)


def test_installed_package(tmp_path):
    """The package the test suite runs against (normally the editable install), imported
    from a folder that is not the repository root."""
    out = subprocess.run([sys.executable, "-c", "import fastcpa"], cwd=tmp_path, env=_clean_env(),
                         capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("fastcpa is not installed in this interpreter")
    f_init, k_init, log_mass = _run([sys.executable, "-c", PROBE], cwd=tmp_path)[:3]
    assert pathlib.Path(k_init).name == "__init__.py" and pathlib.Path(k_init).parent.name == "kernels"
    assert pathlib.Path(f_init).parent.name == "fastcpa"
    assert float(log_mass) == pytest.approx(EXPECTED, rel=1e-14)
