"""pytest configuration for the benchmarks.

``pytest benchmarks/`` runs every benchmark once as a smoke test (the project's
addopts include ``--benchmark-disable``); ``pytest benchmarks/
--benchmark-enable`` times them. ``-m "not slow"`` keeps to the smoke sizes.

Thread counts default to 2 (``NUMBA_NUM_THREADS``, ``OMP_NUM_THREADS``,
``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS``) so the numbers are comparable
with ``benchmarks/run.py``; set them in the environment to override. They
only take effect when NumPy/Numba are not imported yet, which is the case when
pytest loads this file first.
"""

import os
import sys

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

# the benchmark helpers are plain modules next to this file, not a package
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import pytest  # noqa: E402

# run.py is a script; do not import it for doctest collection
collect_ignore = ["run.py"]


@pytest.fixture(scope="session")
def warm_fastcpa():
    """Compile the Numba kernels once, outside any timed region."""
    import fastcpa

    fastcpa.warmup()
    return fastcpa
