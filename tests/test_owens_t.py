"""Owen's T (``kernels/_owens_t.py``) against a 40-digit mpmath oracle.

Oracle: the defining integral with ``mpmath.quad``, in the scaled form
``J(h, a) = 2 pi exp(h^2/2) T(h, a) = int_0^a exp(-h^2 x^2 / 2) / (1 + x^2) dx``
(so nothing underflows). ``mpmath.quad``'s tolerance is absolute, so each
piece is written with an integrand of order 1 and its scale factored out:
``[0, min(a, 1)]`` as ``x = min(a, 1) t`` (so ``a = 1e-300`` is fine) when
``h min(a, 1) <= 1``, else as ``y = h x`` split at ``y`` = 1, 4, 16 (and cut at 40);
``[1, a]`` (for ``a > 1``) as ``x = 1/s`` over ``[1/a, 1]`` when ``h < 1``, else
as ``u = h^2 (x^2 - 1) / 2`` with ``exp(-h^2/2) / h^2`` factored out (so
``a = 1e300`` or ``inf`` is harmless; cut at ``u = 150``). The cuts drop
less than ``e^-100`` of the whole, far below the 40 digits. The
oracle is itself checked against the closed forms ``T(0, a)``, ``T(h, 1)``,
``T(h, inf)`` and against ``scipy.special.owens_t`` where SciPy is accurate.
Results are cached per ``(h, a)``.

Numba: the scalar module calls ``_normal``'s functions by name, and Numba only
compiles calls to functions that are themselves compiled. ``_compile_module`` below
clones every function of ``_normal`` and of ``_owens_t`` into a namespace in
which those names are bound to the compiled clones (compiled with the
project's ``jit``), exactly as a target would; the compiled results must
match the plain-Python ones to an ulp or two.

Tolerances: ``owens_t_scaled`` relative error <= ``TOL`` (4e-15; measured
below 1e-15); ``log_owens_t`` absolute error <= ``TOL * max(1, |log T|)``;
``owens_t`` relative error <= ``TOL`` plus 4 subnormal ulps (its result is
the scaled value times ``exp(-h^2/2)``, which underflows gradually).
"""

import functools
import math
import types

import mpmath as mp
import numpy as np
import pytest
import scipy.special

from fastcpa.kernels import _normal
from fastcpa.kernels import _owens_t as owt
from fastcpa.kernels.cpu._jit import jit

DPS = 40
TOL = 4e-15
SUBNORMAL_ULP = 5e-324

HS = [0.0, 1e-8, 0.1, 0.5, 1.0, 2.0, 5.0, 8.0, 10.0, 20.0, 37.0, 38.0, 40.0, 100.0, 1e3, 1e4]
AS = [1e-300, 1e-10, 1e-3, 0.1, 0.5, 0.9, 0.999, 1.0, 1.001, 1.5, 3.0, 10.0, 100.0, 1e8, 1e300, math.inf]
GRID = [(h, a) for h in HS for a in AS]
# Around the method's switches: a = 1, h a = 9 (cut of the a <= 1 integral), h = 2 and
# 6 (where the Mills ratio changes method), a h = 9 in the a > 1 branch's inner call.
EDGES = [
    (9.0, 1.0 - 2**-52), (9.0, 1.0 + 2**-52), (9.000001, 1.0), (8.999999, 1.0), (18.0, 0.5),
    (18.0, 0.49999999), (1.999999, 1.5), (2.000001, 1.5), (6.0, 1.5), (4.5, 2.0), (4.5000001, 2.0),
    (0.3, 1.0 + 1e-12), (50.0, 1.0 + 1e-12), (1e-200, 1e300), (1e200, 0.5), (1e200, 3.0),
]
BREAKS = (1, 4, 16)


@functools.lru_cache(maxsize=None)
def j_ref(h, a):
    """``J(h, a)`` (scaled Owen's T times 2 pi) for ``h >= 0``, ``a >= 0``, as an mpf.

    ``mpmath.quad``'s tolerance is absolute, so every piece is written with an
    integrand of order 1 and its scale factored out (module docstring).
    """
    with mp.workdps(DPS):
        h = mp.mpf(h)
        a = mp.mpf(a)
        lo = min(a, mp.mpf(1))
        c = h * lo
        if c <= 1:  # x = lo t, t in [0, 1]
            J = lo * mp.quad(lambda t: mp.exp(-((c * t) ** 2) / 2) / (1 + (lo * t) ** 2), [0, 1])
        else:  # y = h x, y in [0, c]; beyond y = 40 the integrand is < e^-800
            top = min(c, mp.mpf(40))
            pts = [mp.mpf(0)] + [mp.mpf(y) for y in BREAKS if y < top] + [top]
            J = mp.quad(lambda y: mp.exp(-(y**2) / 2) / (1 + (y / h) ** 2), pts) / h
        if a > 1 and h < 1:  # x = 1/s, s in [1/a, 1]
            s0 = 1 / a
            pts = [s0] + sorted(h / y for y in BREAKS if s0 < h / y < 1) + [mp.mpf(1)]
            J += mp.quad(lambda s: mp.exp(-h * h / (2 * s * s)) / (1 + s * s), pts)
        elif a > 1:  # u = h^2 (x^2 - 1) / 2 in [0, h^2 (a^2 - 1) / 2]
            top = min(h * h * (a * a - 1) / 2, mp.mpf(150))  # the rest is < e^-150
            pts = [mp.mpf(0)] + [mp.mpf(u) for u in BREAKS if u < top] + [top]

            def f(u):
                x = mp.sqrt(1 + 2 * u / (h * h))
                return mp.exp(-u) / (x * (1 + x * x))

            J += mp.exp(-h * h / 2) / (h * h) * mp.quad(f, pts)
        return +J


def scaled_ref(h, a):
    with mp.workdps(DPS):
        return j_ref(h, a) / (2 * mp.pi)


def log_ref(h, a):
    with mp.workdps(DPS):
        return mp.log(scaled_ref(abs(h), a)) - mp.mpf(h) ** 2 / 2


def t_ref(h, a):
    """``T(h, a)`` for any real h, a (even in h, odd in a)."""
    with mp.workdps(DPS):
        v = scaled_ref(abs(h), abs(a)) * mp.exp(-mp.mpf(h) ** 2 / 2)
        return -v if a < 0 else v


def rel_err(value, ref):
    with mp.workdps(DPS):
        return float(abs(mp.mpf(value) - ref) / abs(ref))


# ----------------------------------------------------------------------------- the oracle itself
@pytest.mark.parametrize("a", [1e-300, 1e-3, 0.5, 1.0, 3.0, 1e8, 1e300, math.inf])
def test_oracle_at_h0(a):
    with mp.workdps(DPS):
        assert rel_err(j_ref(0.0, a), mp.atan(mp.mpf(a))) < 1e-30


@pytest.mark.parametrize("h", [1e-8, 0.5, 2.0, 10.0, 38.0, 100.0, 1e4])
def test_oracle_at_a1_and_inf(h):
    with mp.workdps(DPS):
        hh = mp.mpf(h)
        g = mp.exp(hh * hh / 2)  # the scaling
        q = mp.ncdf(-hh)
        assert rel_err(scaled_ref(h, 1.0), mp.ncdf(hh) * q * g / 2) < 1e-30
        assert rel_err(scaled_ref(h, math.inf), q * g / 2) < 1e-30


def _scipy_is_accurate(h, a):
    # SciPy's owens_t loses ~7 digits at tiny a once h >= 5 (e.g. T(5, 1e-10): 1.6e-7
    # relative), and ~1e-13 near h ~ 37; keep it to where it agrees to 2e-13.
    # T(h, a) ~ a / (2 pi) for tiny a: a = 1e-300 makes SciPy's value subnormal.
    return not (h >= 5.0 and a < 1e-6) and h <= 37.0 and a > 1e-290


@pytest.mark.parametrize("h,a", [(h, a) for (h, a) in GRID if _scipy_is_accurate(h, a)])
def test_oracle_against_scipy(h, a):
    ref = t_ref(h, a)
    assert rel_err(scipy.special.owens_t(h, a), ref) < 2e-13


# ----------------------------------------------------------------------------- the functions
def test_gauss_legendre_constants():
    x, w = np.polynomial.legendre.leggauss(owt._N_GL)
    np.testing.assert_allclose(owt._GL_U, (1.0 + x) / 2.0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(owt._GL_V, w / 2.0, rtol=0, atol=1e-15)
    assert abs(math.fsum(owt._GL_V) - 1.0) < 1e-15


@pytest.mark.parametrize("h,a", GRID + EDGES)
def test_scaled(h, a):
    ref = scaled_ref(h, a)
    assert rel_err(owt.owens_t_scaled(h, a), ref) <= TOL


@pytest.mark.parametrize("h,a", GRID + EDGES)
def test_log(h, a):
    for hs in (h, -h):
        ref = log_ref(hs, a)
        if ref < -1.7976931348623157e308:  # log T itself overflows (|h| > 1.9e154)
            assert owt.log_owens_t(hs, a) == -math.inf
            continue
        with mp.workdps(DPS):
            err = float(abs(mp.mpf(owt.log_owens_t(hs, a)) - ref) / max(1, abs(ref)))
        assert err <= TOL


@pytest.mark.parametrize("h,a", GRID + EDGES)
def test_plain_all_signs(h, a):
    for hs in (h, -h):
        for as_ in (a, -a):
            ref = t_ref(hs, as_)
            v = owt.owens_t(hs, as_)
            with mp.workdps(DPS):
                err = abs(mp.mpf(v) - ref)
                assert err <= TOL * abs(ref) + 4 * SUBNORMAL_ULP
            if v != 0.0:
                assert math.copysign(1.0, v) == math.copysign(1.0, as_)


def test_beyond_scipy_underflow():
    # SciPy returns 0 here; the log and the scaled value stay exact.
    assert scipy.special.owens_t(40.0, 0.5) == 0.0
    assert owt.owens_t(40.0, 0.5) == 0.0
    assert math.isfinite(owt.log_owens_t(40.0, 0.5))


def test_special_values():
    assert owt.owens_t_scaled(3.0, 0.0) == 0.0
    assert owt.log_owens_t(3.0, 0.0) == -math.inf
    assert owt.log_owens_t(0.0, 0.0) == -math.inf
    assert owt.owens_t_scaled(math.inf, 2.0) == 0.0
    assert owt.log_owens_t(-math.inf, 2.0) == -math.inf
    assert owt.owens_t(math.inf, 2.0) == 0.0
    assert math.isnan(owt.log_owens_t(1.0, -0.5))
    assert owt.owens_t(0.0, math.inf) == 0.25
    assert owt.owens_t(0.0, -math.inf) == -0.25
    for args in ((math.nan, 0.5), (math.nan, 2.0), (1.0, math.nan), (0.0, math.nan)):
        assert math.isnan(owt.owens_t_scaled(*args))
        assert math.isnan(owt.owens_t(*args))


@pytest.mark.parametrize("h", [0.0, 0.3, 1.0, 4.0, 9.0, 30.0, 1e3])
def test_continuous_across_a1(h):
    # a = 1 switches from the quadrature to the identity: no jump beyond rounding.
    lo = owt.owens_t_scaled(h, 1.0)
    hi = owt.owens_t_scaled(h, math.nextafter(1.0, 2.0))
    assert abs(hi - lo) / lo <= 4e-15


# ----------------------------------------------------------------------------- numba
def _compile_module(module, ns_extra):
    """Compiled clones of ``module``'s own functions, calling each other's clones."""
    ns = dict(vars(module))
    ns.update(ns_extra)
    out = {}
    for name, obj in vars(module).items():
        if isinstance(obj, types.FunctionType) and obj.__module__ == module.__name__:
            out[name] = jit(types.FunctionType(obj.__code__, ns, obj.__name__, obj.__defaults__))
    ns.update(out)  # dispatchers compile lazily, so binding after creation is enough
    return types.SimpleNamespace(**out)


@pytest.fixture(scope="module")
def compiled():
    normal = _compile_module(_normal, {})
    imported = {k: getattr(normal, k) for k in vars(owt) if hasattr(normal, k)}
    return _compile_module(owt, imported)


def test_numba_matches_python(compiled):
    specials = [(math.inf, 2.0), (3.0, 0.0), (0.0, math.inf), (1.0, -0.5), (-2.0, -3.0)]
    worst = 0.0
    for h, a in GRID + EDGES + specials:
        for fn in ("owens_t_scaled", "log_owens_t", "owens_t"):
            if fn == "owens_t_scaled" and (h < 0 or a < 0):
                continue
            py = getattr(owt, fn)(h, a)
            nb = getattr(compiled, fn)(h, a)
            if math.isnan(py):
                assert math.isnan(nb), (fn, h, a)
                continue
            if py == nb:
                continue
            assert math.isfinite(py) and py != 0.0, (fn, h, a, py, nb)
            worst = max(worst, abs(nb - py) / math.ulp(py))
    assert worst <= 2.0


# ----------------------------------------------------------------------------- band (one edge's difference)
BAND_CASES = [
    (h, a1, a2)
    for h in (1e-3, 0.3, 1.0, 1.6, 2.0, 4.2, 9.0, 30.0, 1e3)
    for a1 in (0.0, 1e-6, 0.1, 0.5, 0.999)
    for a2 in (a1 + 2**-30, a1 + 2**-7, (a1 + 1) / 2, 1.0)  # a2 - a1 exact
    if h * a1 <= 2.0 and a2 <= 1.0
]


@pytest.mark.parametrize("h,a1,a2", BAND_CASES)
def test_band_against_mpmath(h, a1, a2):
    """``owens_j_band`` (one rule over [a1, a2], scaled to its near end) against 40-digit quadrature of
    its definition: no difference of two T values, so it keeps its relative accuracy however
    narrow the band."""
    with mp.workdps(DPS):
        top = min(mp.mpf(a2), mp.mpf(12) / h)  # beyond y = h x = 12 the integrand is below e^-70
        c = mp.mpf(h) * mp.mpf(a1)
        ref = mp.quad(lambda x: mp.exp(-(((h * x) ** 2) - c**2) / 2) / (1 + x * x), [a1, top])
        assert rel_err(owt.owens_j_band(h, a1, a2 - a1), ref) <= 1e-15
