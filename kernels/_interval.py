"""Mass and moments of the standard normal over an interval, as scalar routines.

Plain Python over ``math`` (plus constant tuples), compiled by each target.
The result is ``(log_mass, mean, var)`` of t ~ N(0, 1) restricted to
``[a, a + w]``; the width ``w`` is passed on its own so that thin intervals far
out keep their relative width (``b - a`` would round). Three regimes, chosen
so that no formula subtracts nearly equal numbers:

* thin (the log-density varies by at most ``_THIN`` over the interval, or
  ``_THIN_ONE_SIDED`` right of 0): moments relative to ``phi(c)`` at the
  midpoint ``c``, from the Hermite series
  ``exp(-c s - s^2/2) = sum_n He_n(c) (-s)^n / n!`` integrated term by term
  over ``|s| <= h = w/2``; there ``|c| h <= 1/2`` (``3/2`` right of 0) and
  ``h <= 1``, so the scaled terms ``t_n = He_n(c) h^n / n!`` fall fast (at
  most 34 of them to an ulp), with no exponential at all.
* one-sided (after mirroring, ``0 <= a``): moments of ``s = t - a`` as those
  of the tail beyond ``a`` less the tail beyond ``b``, each tail's mass, mean
  and variance from ``kernels._normal.mills_tails``; the thin series is used
  up to ``_THIN_ONE_SIDED = 3`` here, so that the tail beyond ``b`` has at
  most ``e^-2`` of the mass and the difference loses at most a bit or two
  (near ``_THIN`` it lost ~20x the error of the tails, ~100 ulps in the
  variance).
* containing 0 (and not thin): the mass is at least ~0.37, so the textbook
  formulas are well conditioned; the mass itself comes from ``log1p`` of the
  two excluded tails, or from a sum of two ``erf`` values, whichever has no
  cancellation.
"""

import math

from ._normal import INV_SQRT2, LOG_SQRT_2PI, exp_neg_half_square, log_phi, mills_ratio, mills_tails

# Largest variation of the log-density over an interval treated as thin
# (``|c| w + w^2/4``, c the midpoint), in general and for an interval right of 0.
_THIN = 1.0
_THIN_ONE_SIDED = 3.0
# Reciprocals 1/k for the thin-interval series (a product is cheaper than a division).
_INV = tuple(1.0 / k if k else 0.0 for k in range(48))
_THIN_MAX_N = 40


def _thin_sums(c, h):
    """Sums ``(S0, S1, S2)`` of the thin-interval series at midpoint ``c``,
    half-width ``h``: ``int_{-h}^{h} s^j exp(-c s - s^2/2) ds`` is ``2h S0``,
    ``-2h^2 S1`` and ``2h^3 S2`` for j = 0, 1, 2. With ``t_0 = 1``,
    ``t_1 = c h`` and ``t_{n+1} = (c h t_n - h^2 t_{n-1}) / (n + 1)``:
    ``S0 = sum_even t_n / (n+1)``, ``S1 = sum_odd t_n / (n+2)``,
    ``S2 = sum_even t_n / (n+3)``."""
    ch = c * h
    hh = h * h
    te = 1.0
    to = ch
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    n = 0
    while True:
        s0 += te * _INV[n + 1]
        s2 += te * _INV[n + 3]
        s1 += to * _INV[n + 3]
        if abs(te) + abs(to) <= 1e-17 * s0 or n >= _THIN_MAX_N:
            return s0, s1, s2
        te = (ch * to - hh * te) * _INV[n + 2]
        to = (ch * te - hh * to) * _INV[n + 3]
        n += 2


def _thin(c, w):
    """Thin interval ``[c - w/2, c + w/2]``: the Hermite series around the
    midpoint; ``(log_mass, mean - c, var)``."""
    h = 0.5 * w
    s0, s1, s2 = _thin_sums(c, h)
    m = s1 / s0
    # the mean as its offset from the midpoint c
    return log_phi(c) + math.log(w * s0), -(h * m), h * h * (s2 / s0 - m * m)


def _one_sided(a, b, w):
    """``0 <= a < b <= inf``, not thin: moments of ``s = t - a`` (module
    docstring); ``(log_mass, mean - a, var)``.

    The interval is the tail beyond ``a`` less the tail beyond ``b``, whose
    masses (relative to ``phi(a)``), means and variances :func:`mills_tails`
    gives without cancellation; with ``r`` the ratio of their masses,
    ``q = 1 - r`` and ``D`` the distance between their means, the mean is
    ``delta_a - r D / q`` and the variance ``(v_a - r v_b) / q - r D^2 / q^2``
    (the raw ``M2/M0 - m1^2`` lost up to ~20x the error of the tails).
    Outside the thin regime ``r <= e^-2`` (``c w > 2``), so neither
    difference loses more than a bit.
    """
    Ra, da, va = mills_tails(a)
    if b == math.inf:
        return log_phi(a) + math.log(Ra), da, va
    Rb, db, vb = mills_tails(b)
    r = math.exp(-0.5 * w * (a + b)) * Rb / Ra  # phi(b) R(b) / (phi(a) R(a))
    q = 1.0 - r
    rq = r / q
    D = w + (db - da)  # mean beyond b minus mean beyond a
    return log_phi(a) + math.log(Ra * q), da - rq * D, (va - r * vb) / q - rq * D * (D / q)


def _tphi(t):
    """``t * phi(t)``, zero at the infinite ends."""
    if math.isinf(t):
        return 0.0
    return t * math.exp(-0.5 * t * t - LOG_SQRT_2PI)


def _upper_tail(t):
    """``Q(t)`` for ``t >= 0``, to a few ulps: ``phi(t) R(t)`` with the Mills
    ratio (plain ``erfc(t / sqrt 2)`` loses ~t^2 ulps to the rounding of
    ``t / sqrt 2``, 1e-13 relative at t = 33)."""
    if t == math.inf:
        return 0.0
    return exp_neg_half_square(t) * mills_ratio(t) * 0.3989422804014327


def _central(a, b):
    """``a < 0 < b``, not thin: mass >= ~0.37, textbook formulas are well conditioned
    (the excluded tails taken by :func:`_upper_tail`)."""
    p_lo = _upper_tail(-a)  # Phi(a)
    p_hi = _upper_tail(b)  # Q(b)
    if p_lo + p_hi < 0.5:
        log_mass = math.log1p(-(p_lo + p_hi))
    else:
        log_mass = math.log(0.5 * (math.erf(b * INV_SQRT2) + math.erf(-a * INV_SQRT2)))
    m = math.exp(log_mass)
    phi_a = 0.0 if math.isinf(a) else math.exp(-0.5 * a * a - LOG_SQRT_2PI)
    phi_b = 0.0 if math.isinf(b) else math.exp(-0.5 * b * b - LOG_SQRT_2PI)
    mean = (phi_a - phi_b) / m
    return log_mass, mean, 1.0 + (_tphi(a) - _tphi(b)) / m - mean * mean


def _moment_parts(a, b, w):
    """The regimes of :func:`std_interval_moments` for ``a <= b`` not both
    left of 0 (not mirrored), ``w > 0``: ``(log_mass, base, off, boff, var)``
    with mean ``base + off`` and ``boff = base - a`` exactly (the mean's
    offset from ``a`` is ``boff + off`` without a difference)."""
    if math.isfinite(w):
        c = a + 0.5 * w
        if abs(c) * w + 0.25 * w * w <= (_THIN_ONE_SIDED if a >= 0.0 else _THIN):
            lm, dm, var = _thin(c, w)
            return lm, c, dm, 0.5 * w, var
    if a >= 0.0:
        lm, m1, var = _one_sided(a, b, w)
        return lm, a, m1, 0.0, var
    lm, mean, var = _central(a, b)
    return lm, mean, 0.0, mean - a, var


def std_interval_moments(a, b, w):
    """``(log_mass, mean, var)`` of N(0, 1) restricted to ``[a, b]``, ``w = b - a`` given accurately.

    ``a`` may be ``-inf`` and ``b`` ``+inf`` (then ``w = inf``). A zero-width
    interval has ``log_mass = -inf``, mean ``a`` and variance 0; ``a > b`` or
    NaN input gives NaNs (callers validate first).
    """
    if not (a <= b) or not (w >= 0.0):
        return math.nan, math.nan, math.nan
    if w == 0.0:
        return -math.inf, a, 0.0
    flip = b <= 0.0  # mirror so that the interval is not left of 0
    if flip:
        a, b = -b, -a
    lm, base, off, _, var = _moment_parts(a, b, w)
    mean = base + off
    return lm, -mean if flip else mean, var


def std_interval_offset_moments(a, b, w):
    """:func:`std_interval_moments` with the mean as its offset from ``a``
    (``mean - a``, finite ``a``), formed without that difference: a thin
    interval far from 0 keeps the relative position of its mean."""
    if not (a <= b) or not (w >= 0.0):
        return math.nan, math.nan, math.nan
    if w == 0.0:
        return -math.inf, 0.0, 0.0
    if b <= 0.0:  # mirrored: the offset from the other end, from w
        lm, _, off, boff, var = _moment_parts(-b, -a, w)
        return lm, w - (boff + off), var
    lm, _, off, boff, var = _moment_parts(a, b, w)
    return lm, boff + off, var


def interval_moments(lo, hi, mu, sigma):
    """``(log_mass, mean, var)`` of N(mu, sigma^2) restricted to ``[lo, hi]`` (``sigma > 0``)."""
    a = (lo - mu) / sigma
    b = (hi - mu) / sigma
    w = (hi - lo) / sigma
    if math.isinf(w) and not (math.isinf(lo) or math.isinf(hi)):
        w = b - a  # hi - lo overflowed
    # the mean from the interval's end on the side of mu when mu lies outside:
    # mu + sigma m would cancel (|mu| >> |mean|, e.g. 69 sd out: 1e-14 relative)
    if a > 0.0 and math.isfinite(lo):
        lm, off, v = std_interval_offset_moments(a, b, w)
        return lm, lo + sigma * off, sigma * sigma * v
    if b < 0.0 and math.isfinite(hi):
        lm, off, v = std_interval_offset_moments(-b, -a, w)  # mirrored: the offset below hi
        return lm, hi - sigma * off, sigma * sigma * v
    lm, m, v = std_interval_moments(a, b, w)
    return lm, mu + sigma * m, sigma * sigma * v


def std_interval_log_mass(a, b, w):
    """``log P(a <= t <= b)`` for t ~ N(0, 1), ``w = b - a``: the log-mass of
    :func:`std_interval_moments` by the same regimes, without the moments,
    except that the thin series stops at ``_THIN`` on both sides of 0 (the
    mass needs no more; about 3x cheaper; relative error a few ulps larger in
    the 2-5 sd range, where the Mills ratio comes from erfc)."""
    if not (a <= b) or not (w >= 0.0):
        return math.nan
    if w == 0.0:
        return -math.inf
    if b <= 0.0:
        a, b = -b, -a
    if math.isfinite(w):
        c = a + 0.5 * w
        if abs(c) * w + 0.25 * w * w <= _THIN:
            return log_phi(c) + math.log(w * _thin_sums(c, 0.5 * w)[0])
    if a >= 0.0:
        Ra = mills_ratio(a)
        ex = -0.5 * w * (a + b)
        if ex < -40.0:  # e R(b) / R(a) < e^-40, below half an ulp: the upper end does not matter
            return log_phi(a) + math.log(Ra)
        return log_phi(a) + math.log(Ra - math.exp(ex) * mills_ratio(b))
    p_lo = _upper_tail(-a)
    p_hi = _upper_tail(b)
    if p_lo + p_hi < 0.5:
        return math.log1p(-(p_lo + p_hi))
    return math.log(0.5 * (math.erf(b * INV_SQRT2) + math.erf(-a * INV_SQRT2)))


def interval_log_mass(lo, hi, mu, sigma):
    """``log P(lo <= z <= hi)`` for z ~ N(mu, sigma^2) (see :func:`std_interval_log_mass`)."""
    a = (lo - mu) / sigma
    b = (hi - mu) / sigma
    w = (hi - lo) / sigma
    if math.isinf(w) and not (math.isinf(lo) or math.isinf(hi)):
        w = b - a
    return std_interval_log_mass(a, b, w)
