"""Scalar geometric routines, written once as plain Python and compiled by each
target (``numba.njit`` on the CPU, ``cuda.jit(device=True)`` on the GPU).

Polygons live in the oriented projective plane: a boundary point is
``(x, y, w)`` with ``w = 1`` for a finite point and ``w = 0`` for an ideal
point (a unit direction at infinity). This represents unbounded regions
exactly, with no bounding box. A line is ``(nx, ny, off)`` and its positive
side is ``nx*x + ny*y + off*w >= 0``; for an ideal point only the direction
matters, which is the correct limit of the sign far out along that direction.
"""

import math


def line_value(nx, ny, off, px, py, pw):
    """Signed value of the line at a homogeneous point (``off`` scaled by ``w``)."""
    return nx * px + ny * py + off * pw


def line_tolerance(anorm, babs, px, py, pw, rel_tol):
    """Absolute tolerance for :func:`line_value` at a point: ``rel_tol`` times
    the size of its terms, ``|a| |p| + |b| w`` (``anorm = |a|``, ``babs = |b|``
    are passed in, computed once per line). Points within it are taken to lie
    on the line."""
    return rel_tol * (anorm * math.sqrt(px * px + py * py) + babs * pw)


def side_of(value, tol):
    """-1, 0 or +1: which side of a line a point is on, with ties inside ``tol``."""
    if value > tol:
        return 1
    if value < -tol:
        return -1
    return 0


def side_of_disc(nx, ny, off, anorm, babs, cx, cy, rad, rel_tol):
    """+1 or -1 when a whole disc (centre ``(cx, cy)``, radius ``rad``) is
    certainly on that side of a line, with every point of it beyond the
    :func:`line_tolerance` of that point; 0 when undecided (the caller then
    classifies the polygon's points one by one).

    The margin is twice the largest point tolerance in the disc plus a few
    ulps of the terms, so this never disagrees with the point-wise test even
    with ``rel_tol = 0``: it only skips work for lines that clearly miss.
    """
    v = nx * cx + ny * cy + off
    terms = anorm * (math.sqrt(cx * cx + cy * cy) + rad) + babs
    margin = anorm * rad + (2.0 * rel_tol + 1e-14) * terms
    if v > margin:
        return 1
    if v < -margin:
        return -1
    return 0


def crossing_point(px, py, pw, fp, qx, qy, qw, fq):
    """Where the segment from p (value fp) to q (value fq, opposite sign) meets
    the line, as a normalised homogeneous point ``(x, y, w)``.

    The combination ``|fq| p + |fp| q`` has non-negative weights, so it stays
    in the oriented projective plane; it is finite when either end is finite.
    """
    cp = abs(fq)
    cq = abs(fp)
    rx = cp * px + cq * qx
    ry = cp * py + cq * qy
    rw = cp * pw + cq * qw
    if rw > 0.0:
        return rx / rw, ry / rw, 1.0
    nrm = math.hypot(rx, ry)
    return rx / nrm, ry / nrm, 0.0


def foot_of_line(nx, ny, off):
    """The point of the line ``nx*x + ny*y + off = 0`` nearest the origin."""
    s = -off / (nx * nx + ny * ny)
    return nx * s, ny * s


def unit_on_interval(s, o, cl):
    """Whether the unit u(z) = s z + o is on (u >= 0) on an interval starting
    at ``cl`` that no crossing of u enters: decided from the crossing position
    ``-o/s`` (left of the interval: on iff rising), never from a sign sampled
    at some interior point. A unit with s = 0 is on iff o >= 0."""
    if s == 0.0:
        return o >= 0.0
    if -o / s <= cl:
        return s > 0.0
    return s < 0.0
