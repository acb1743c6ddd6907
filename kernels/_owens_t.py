"""Owen's T function, accurate in relative terms deep into the tails.

Plain Python over ``math`` (plus constant tuples), compiled by each target
(``numba.njit`` on the CPU, ``numba.cuda.jit(device=True)`` on the GPU); the
helpers from ``_normal`` are imported by name so that a target can re-bind
them to its compiled versions.

``T(h, a) = 1/(2 pi) int_0^a exp(-h^2 (1 + x^2) / 2) / (1 + x^2) dx`` is even
in ``h`` and odd in ``a``. Everything is computed in the scaled form

    J(h, a) = 2 pi exp(h^2 / 2) T(h, a) = int_0^a exp(-h^2 x^2 / 2) / (1 + x^2) dx,

which never underflows for ``a > 0`` (``J ~ sqrt(pi/2) / h`` as ``h -> inf``),
so ``log T = log J - log(2 pi) - h^2 / 2`` keeps full relative accuracy where
``T`` itself (and SciPy's ``owens_t``, past ``h ~ 38``) underflows.

Method (chosen over Patefield-Tandy's six series because one rule covers the
whole range with terms of one sign, so the relative error is a few ulps
everywhere, and it has no branches to tune):

* ``0 <= a <= 1``: ``J`` is a single 24-point Gauss-Legendre rule over
  ``[0, b]``, ``b = min(a, Y/h)`` with ``Y = 9``. All terms are positive. The
  integrand's poles at ``x = +-i`` are at least one interval length away, and
  the Gaussian factor varies over at most ``h b <= 9`` standard widths on it;
  against a 40-digit oracle 22 nodes already reach rounding level at
  ``Y = 9`` and 24 nodes at ``Y = 10``, so the rule has a margin. Cutting at
  ``x = Y/h`` (only when ``h a > Y``, so ``h > 9``) drops, in ``y = h x``,
  ``(1/h) int_9^inf exp(-y^2/2) dy <= exp(-40.5) / (9 h) < 2.9e-19 / h``,
  while the part kept is at least ``(1/h) int_0^1 exp(-y^2/2) / (1 + y^2/81) dy
  > 0.84 / h``: a relative truncation below ``3.5e-19``.
* ``a > 1``: the identity ``T(h, a) + T(ah, 1/a) = (Phi(h) Q(ah) + Phi(ah)
  Q(h)) / 2``, scaled by ``2 pi exp(h^2/2)`` with ``Q(t) = phi(t) R(t)`` (``R``
  the Mills ratio), reads

      J(h, a) = sqrt(pi/2) Phi(ah) R(h)
                + E (sqrt(pi/2) Phi(h) R(ah) - J(ah, 1/a)),
      E = exp(-(a^2 - 1) h^2 / 2)   (exponent formed as (a-1) h (a+1) h).

  ``J(ah, 1/a)`` is the ``a <= 1`` rule (no recursion). For ``a >= 1``,
  ``T(ah, 1/a) <= T(ah, 1) <= T(h, 1) <= T(h, a)`` (T grows with a, and
  ``T(t, 1) = Phi(t) Q(t) / 2`` falls for t >= 0), so the subtracted term is
  at most half of the positive ones and the sum loses at most one bit. A relative
  error ``eps`` in the exponent ``z`` of ``E`` costs at most ``eps z E B``,
  and ``E B / J <= 2 E R(ah) / R(h) <= 2 exp(-z)`` (``J >= A >= sqrt(pi/2)
  R(h) / 2``, ``R`` falls), so relative to ``J`` at most ``2 eps z exp(-z)
  <= 0.74 eps``: no exact square is needed.

Measured against a 40-digit mpmath oracle (``tests/test_owens_t.py``; grid
h in [0, 1e4] x a in [1e-300, inf], plus 1500 random points): relative error
of ``owens_t_scaled`` at most 9e-16 (the tests allow 4e-15). Subnormal ``a``
(below ~2.2e-308) loses relative accuracy with the underflow. Cost: 8, 12,
16 or 24 ``exp`` for ``a <= 1`` (by ``h b``, see ``_HB_12``) (one Mills ratio instead where ``h a > 9``: then
``J = sqrt(pi/2) R(h)`` to 3.5e-19); for ``a > 1`` also two Mills ratios
(``erfc`` below 5, then continued fractions or the asymptotic series) and two ``erfc``, the
bracket skipped where ``E`` < 1.4e-17 (it adds at most ``2 E`` relative).
"""

import math

import numpy as np

from ._normal import INV_SQRT2, SQRT_HALF_PI, exp_neg_half_square, mills_and_ndtr, mills_ratio

_INV_2PI = 0.15915494309189535  # 1 / (2 pi)
# Cut of the a <= 1 integral in y = h x (see the module docstring for the bound).
_Y_CUT = 9.0
# Beyond it T(h, a) < exp(-h^2/2) / 4 underflows to 0 (exp(-745) is the last subnormal).
_H_UNDERFLOW = 39.0
# 24-point Gauss-Legendre rule mapped to [0, 1]: nodes and weights (summing to 1),
# correctly rounded from a 50-digit computation.
_N_GL = 24
_GL_U = (
    0.00240639000148932, 0.012635722014345251, 0.030862723998633622, 0.056792236497799485,
    0.08999900701304854, 0.12993790421072282, 0.17595317403151223, 0.22728926430558022,
    0.2831032461869774, 0.3424786601519183, 0.40444056626319186, 0.4679715535686972,
    0.5320284464313028, 0.5955594337368082, 0.6575213398480817, 0.7168967538130225,
    0.7727107356944197, 0.8240468259684878, 0.8700620957892772, 0.9100009929869515,
    0.9432077635022005, 0.9691372760013663, 0.9873642779856547, 0.9975936099985107,
)
_GL_V = (
    0.0061706148999936, 0.014265694314466832, 0.022138719408709904, 0.02964929245771839,
    0.03667324070554015, 0.04309508076597664, 0.04880932605205694, 0.05372213505798282,
    0.0577528340268628, 0.060835236463901696, 0.06291872817341415, 0.06396909767337608,
    0.06396909767337608, 0.06291872817341415, 0.060835236463901696, 0.0577528340268628,
    0.05372213505798282, 0.04880932605205694, 0.04309508076597664, 0.03667324070554015,
    0.02964929245771839, 0.022138719408709904, 0.014265694314466832, 0.0061706148999936,
)


# Shorter rules where the Gaussian factor varies less (h b the largest y on [0, b]):
# measured against mpmath, 12 nodes stay within 4e-16 up to h b = 1.5 and 16 nodes
# within 7e-16 up to h b = 4 (the pole at x = i is at least 4.6 ellipse radii away).
_HB_8 = 1.0  # ... and 8 nodes within 3e-16 up to h b = 1 where b <= 1/4 (the pole 4x further)
_B_8 = 0.25
_GL8_U = tuple(float(v) for v in 0.5 * (np.polynomial.legendre.leggauss(8)[0] + 1.0))
_GL8_V = tuple(float(v) for v in 0.5 * np.polynomial.legendre.leggauss(8)[1])
_GL10_U = tuple(float(v) for v in 0.5 * (np.polynomial.legendre.leggauss(10)[0] + 1.0))
_GL10_V = tuple(float(v) for v in 0.5 * np.polynomial.legendre.leggauss(10)[1])
_HB_12 = 1.5
_HB_16 = 4.0
_GL12_U = tuple(float(v) for v in 0.5 * (np.polynomial.legendre.leggauss(12)[0] + 1.0))
_GL12_V = tuple(float(v) for v in 0.5 * np.polynomial.legendre.leggauss(12)[1])
_GL16_U = tuple(float(v) for v in 0.5 * (np.polynomial.legendre.leggauss(16)[0] + 1.0))
_GL16_V = tuple(float(v) for v in 0.5 * np.polynomial.legendre.leggauss(16)[1])


def _ndtr_nonneg(t):
    """``Phi(t)`` for ``t >= 0`` (in [1/2, 1], so ``erfc`` of ``-t`` is well conditioned)."""
    return 0.5 * math.erfc(-t * INV_SQRT2)


def owens_j_wedge(h, a):
    """``J(h, a) = int_0^a exp(-h^2 x^2 / 2) / (1 + x^2) dx`` for ``0 <= a <= 1``.

    Parameters
    ----------
    h : float
        ``h >= 0``, finite.
    a : float
        ``0 <= a <= 1``.

    Returns
    -------
    float
        ``J(h, a) = 2 pi exp(h^2/2) T(h, a)``, to a few ulps (module docstring).
    """
    if h * a > _Y_CUT:
        # all but < 3.5e-19 (relative) of J(h, inf) = sqrt(pi/2) R(h); h > 9 here,
        # where the Mills ratio is ulp-accurate and cheaper than the rule
        return SQRT_HALF_PI * mills_ratio(h)
    return owens_j_band(h, 0.0, a)  # the band from 0: the same rule, bit for bit


def owens_j_band(h, a1, w):
    """``exp(h^2 a1^2 / 2) int_{a1}^{a1 + w} exp(-h^2 x^2 / 2) / (1 + x^2) dx``
    for ``0 <= a1``, ``a1 + w <= 1`` and ``h a1 <= 2``: ``J(h, a1 + w) - J(h,
    a1)`` as one rule of positive terms (no difference, half the work), scaled
    to its near end. The width ``w`` is given, not formed as a difference, so
    a narrow band keeps its relative accuracy.

    The rule (8, 12, 16 or 24 Gauss-Legendre nodes) is chosen by ``h b``, the
    largest ``y = h x`` on the band, as measured for ``[0, b]`` (the constants
    ``_HB_8`` to ``_HB_16``; :func:`owens_j_wedge` is the band from 0); on a
    subinterval the integrand is no harder to follow. The cut at ``y = 9``
    drops below ``1e-17`` relative since ``h a1 <= 2`` (``tests/test_owens_t.py``
    checks the band against mpmath)."""
    b = a1 + w
    if h * b > _Y_CUT:
        b = _Y_CUT / h
        w = b - a1
    if w == 0.0:  # (NaN passes on)
        return 0.0
    hb = h * b
    y1 = h * a1
    s = 0.0
    if hb <= _HB_8 and w <= _B_8:
        for i in range(8):
            x = a1 + w * _GL8_U[i]
            y = h * x
            s += _GL8_V[i] * math.exp(-0.5 * (y - y1) * (y + y1)) / (1.0 + x * x)
    elif hb <= _HB_12:
        for i in range(12):
            x = a1 + w * _GL12_U[i]
            y = h * x
            s += _GL12_V[i] * math.exp(-0.5 * (y - y1) * (y + y1)) / (1.0 + x * x)
    elif hb <= _HB_16:
        for i in range(16):
            x = a1 + w * _GL16_U[i]
            y = h * x
            s += _GL16_V[i] * math.exp(-0.5 * (y - y1) * (y + y1)) / (1.0 + x * x)
    else:
        for i in range(_N_GL):
            x = a1 + w * _GL_U[i]
            y = h * x
            s += _GL_V[i] * math.exp(-0.5 * (y - y1) * (y + y1)) / (1.0 + x * x)
    return w * s


def owens_t_scaled(h, a):
    """Owen's T scaled by the Gaussian factor: ``T(h, a) * exp(h^2 / 2)``.

    Parameters
    ----------
    h : float
        ``h >= 0`` (``inf`` gives 0).
    a : float
        ``0 <= a <= inf``.

    Returns
    -------
    float
        ``T(h, a) exp(h^2/2)``, in ``[0, 1/4]``; 0 only at ``a = 0`` or
        ``h = inf``. Relative error at most 9e-16 wherever it is positive
        (measured against mpmath from ``h = 0`` to ``1e4`` and ``a = 1e-300``
        to ``inf``), for normal (not subnormal) ``a``.
    """
    if h == math.inf:
        return 0.0
    if a <= 1.0:
        return owens_j_wedge(h, a) * _INV_2PI
    if h == 0.0:
        return math.atan(a) * _INV_2PI
    r_h, p_h = mills_and_ndtr(h)
    return _owens_t_scaled_above(h, a, r_h, p_h)


def _owens_t_scaled_above(h, a, r_h, p_h):
    """:func:`owens_t_scaled` for ``a > 1`` and ``0 < h < inf``, given ``R(h)``
    and ``Phi(h)`` (shared by the two ends of an edge)."""
    if a == math.inf:  # T(h, inf) = Q(h) / 2
        return SQRT_HALF_PI * r_h * _INV_2PI
    ah = a * h
    # (a^2 - 1) h^2 / 2 as a product of factors that each keep relative accuracy
    # (a - 1 is exact near 1) and that overflow to inf rather than giving inf * 0.
    e = math.exp(-0.5 * ((a - 1.0) * h) * ((a + 1.0) * h))
    # the bracket adds at most 2 e relative (module docstring): nothing below 2^-56
    if e > 1.4e-17:
        r_ah, p_ah = mills_and_ndtr(ah)
        j = SQRT_HALF_PI * p_ah * r_h + e * (SQRT_HALF_PI * p_h * r_ah - owens_j_wedge(ah, 1.0 / a))
    else:
        j = SQRT_HALF_PI * _ndtr_nonneg(ah) * r_h
    return j * _INV_2PI


def owens_t_scaled_pair(h, a1, a2):
    """``(owens_t_scaled(h, a1), owens_t_scaled(h, a2))`` for ``0 < h < inf``,
    computing ``R(h)`` and ``Phi(h)`` once."""
    if a2 <= 1.0:
        return owens_j_wedge(h, a1) * _INV_2PI, owens_j_wedge(h, a2) * _INV_2PI
    r_h, p_h = mills_and_ndtr(h)
    t2 = _owens_t_scaled_above(h, a2, r_h, p_h)
    if a1 <= 1.0:
        return owens_j_wedge(h, a1) * _INV_2PI, t2
    return _owens_t_scaled_above(h, a1, r_h, p_h), t2


def log_owens_t(h, a):
    """Logarithm of Owen's T, ``log T(h, a)``.

    Parameters
    ----------
    h : float
        Any real (``T`` is even in ``h``); ``+-inf`` gives ``-inf``.
    a : float
        ``0 <= a <= inf``; ``-inf`` at ``a = 0``, ``nan`` for ``a < 0``
        (where ``T < 0``).

    Returns
    -------
    float
        ``log T(h, a) = log(owens_t_scaled(|h|, a)) - h^2 / 2``: the first
        term is accurate to a few ulps of the scaled value, and the rounding
        of ``h^2/2`` is an ulp of itself, so the error is a few ulps of
        ``max(1, |log T|)``. ``-inf`` where ``log T`` itself overflows
        (``|h| > 1.9e154``).
    """
    if a < 0.0:
        return math.nan
    h = abs(h)
    s = owens_t_scaled(h, a)
    if s == 0.0:  # a = 0 or h = inf (math.log(0) would raise in plain Python)
        return -math.inf
    return math.log(s) - 0.5 * h * h


def owens_t(h, a):
    """Owen's T function ``T(h, a)`` for any real ``h`` and ``a``.

    Parameters
    ----------
    h, a : float
        Any reals (``a = +-inf`` allowed).

    Returns
    -------
    float
        ``T(h, a)``, to a few ulps where it is a normal number; it underflows
        (gradually, then to 0) for ``|h|`` beyond about 37.5. Use
        :func:`log_owens_t` or :func:`owens_t_scaled` there.
    """
    sign = 1.0
    if a < 0.0:  # odd in a
        sign = -1.0
        a = -a
    h = abs(h)  # even in h
    if h > _H_UNDERFLOW:
        return sign * 0.0
    return sign * (owens_t_scaled(h, a) * exp_neg_half_square(h))
