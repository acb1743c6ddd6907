"""``fastcpa.warmup()`` compiles every kernel the public API uses, in every signature.

A fresh interpreter (``tests/_warmup_probe.py``) runs the warmup, records every Numba
dispatcher's compiled signatures in ``fastcpa.kernels``, exercises the public API on small
S = 1, S = 2 and affine models (isotropic and diagonal noise, fit for 2 iterations with both
methods, read-only data, broadcasting Gaussian integrals, sampling, the partition), and
reports any signature that appeared after the warmup. The subprocess compiles once when
Numba's cache is cold (minutes on two cores) and takes seconds when it is warm.
"""

import json
import os
import pathlib
import subprocess
import sys

PROBE = pathlib.Path(__file__).with_name("_warmup_probe.py")


def test_nothing_compiles_after_warmup():
    out = subprocess.run([sys.executable, str(PROBE)], capture_output=True, text=True, timeout=1800,
                         env={**os.environ, "PYTHONWARNINGS": "ignore::FutureWarning"})
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["n_dispatchers"] > 50  # the walk found the kernels (and the scalar routines)
    assert report["n_compiled"] > 0
    assert report["gained"] == {}, json.dumps(report["gained"], indent=1)


def test_cached_kernels_from_other_sources_are_dropped(tmp_path, monkeypatch):
    """Numba keys a cached kernel on its own file only; the kernels inline the
    scalar modules, so a cache folder stamped with other kernel sources is
    emptied (else an edit or upgrade of, say, kernels/_normal.py would be
    served the old compiled mathematics), and one stamped with these is kept."""
    from fastcpa.kernels.cpu import _jit

    folder = tmp_path / "mirror" / "fastcpa" / "kernels" / "cpu"
    folder.mkdir(parents=True)
    (folder / _jit._STAMP).write_text("0" * 64)
    stale = folder / "pairs.log_prob_block_1d-1.py311.nbi"
    stale.write_bytes(b"old")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    _jit._drop_stale_cache()
    assert not stale.exists()
    fresh = folder / "pairs.log_prob_block_1d-1.py311.nbi"
    fresh.write_bytes(b"new")
    _jit._drop_stale_cache()
    assert fresh.exists()
