"""Numba CPU kernels for the exact latent partition (region enumeration).

Both kernels refine a partition by one hidden layer. Inside a parent region
every pre-activation of the next layer is affine, ``u_k(z) = a_k . z + beta_k``,
so the parent is split by (at most) ``width`` hyperplanes. Parents are
independent, so each kernel runs in two parallel passes: count children, then
fill them at their prefix-sum offsets.
"""

import numpy as np
from numba import prange

from .. import _geometry as _g
from ._jit import jit

line_value = jit(_g.line_value)
line_tolerance = jit(_g.line_tolerance)
side_of = jit(_g.side_of)
crossing_point = jit(_g.crossing_point)
foot_of_line = jit(_g.foot_of_line)


# ----------------------------------------------------------------------------- S = 1
@jit
def _interval_crossings(lo, hi, us, uo, switching, t_buf, k_buf):
    """Crossings ``t = -beta/a`` strictly inside (lo, hi), sorted (ties: lower unit first)."""
    n = 0
    for k in range(us.shape[0]):
        s = us[k]
        if switching[k] and s != 0.0:
            t = -uo[k] / s
            if lo < t < hi:
                t_buf[n] = t
                k_buf[n] = k
                n += 1
    order = np.argsort(t_buf[:n], kind="mergesort")
    return n, order


@jit(parallel=True)
def split_intervals_count(lo, hi, us, uo, switching):
    """Number of children of each parent interval (1 + distinct inner crossings)."""
    m, w = us.shape
    counts = np.empty(m, dtype=np.int64)
    for j in prange(m):
        t_buf = np.empty(w)
        k_buf = np.empty(w, dtype=np.int64)
        n, order = _interval_crossings(lo[j], hi[j], us[j], uo[j], switching, t_buf, k_buf)
        c = 1
        for i in range(n):
            if i == 0 or t_buf[order[i]] != t_buf[order[i - 1]]:
                c += 1
        counts[j] = c
    return counts


@jit(parallel=True)
def split_intervals_fill(lo, hi, lo_unit, hi_unit, us, uo, switching, unit_offset, offsets,
                         c_parent, c_lo, c_hi, c_lo_unit, c_hi_unit, c_code):
    """Write the children of every parent interval at ``offsets[j]``.

    A child's sign code is read off the crossing positions, not from a sign
    evaluated at some interior point: unit k (crossing at t) is on in child
    [cl, ch] iff (t <= cl and a_k > 0) or (t >= ch and a_k < 0); a unit with
    a_k = 0 is on iff beta_k >= 0. Units that do not switch are reported off.
    """
    m, w = us.shape
    for j in prange(m):
        t_buf = np.empty(w)
        k_buf = np.empty(w, dtype=np.int64)
        n, order = _interval_crossings(lo[j], hi[j], us[j], uo[j], switching, t_buf, k_buf)
        pos = offsets[j]
        c_parent[pos] = j
        c_lo[pos] = lo[j]
        c_lo_unit[pos] = lo_unit[j]
        for i in range(n):
            t = t_buf[order[i]]
            if i > 0 and t == t_buf[order[i - 1]]:
                continue
            c_hi[pos] = t
            c_hi_unit[pos] = unit_offset + k_buf[order[i]]
            pos += 1
            c_parent[pos] = j
            c_lo[pos] = t
            c_lo_unit[pos] = unit_offset + k_buf[order[i]]
        c_hi[pos] = hi[j]
        c_hi_unit[pos] = hi_unit[j]
        for c in range(offsets[j], pos + 1):
            cl = c_lo[c]
            ch = c_hi[c]
            for k in range(w):
                s = us[j, k]
                if not switching[k]:
                    c_code[c, k] = False
                elif s == 0.0:
                    c_code[c, k] = uo[j, k] >= 0.0
                else:
                    t = -uo[j, k] / s
                    c_code[c, k] = (s > 0.0) if t <= cl else (s < 0.0)


# ----------------------------------------------------------------------------- S = 2
@jit
def _classify(P, nv, a0, a1, b, rel_tol, f, s):
    """Side of each boundary point; returns (has_pos, has_neg)."""
    has_pos = False
    has_neg = False
    for i in range(nv):
        f[i] = line_value(a0, a1, b, P[i, 0], P[i, 1], P[i, 2])
        s[i] = side_of(f[i], line_tolerance(a0, a1, b, P[i, 0], P[i, 1], P[i, 2], rel_tol))
        if s[i] > 0:
            has_pos = True
        elif s[i] < 0:
            has_neg = True
    return has_pos, has_neg


@jit
def _clip_side(P, L, U, nv, f, s, sigma, a0, a1, b, unit, oP, oL, oU):
    """Sutherland-Hodgman clip of one polygon to ``sigma * (a.z + b) >= 0``.

    Works on the oriented projective boundary, so unbounded polygons are
    clipped exactly. Returns the number of points written to ``oP``.
    Each output point carries the line and owning unit of its outgoing edge.
    """
    m = 0
    for i in range(nv):
        j = i + 1 if i + 1 < nv else 0
        si = s[i] * sigma
        sj = s[j] * sigma
        if si >= 0:
            oP[m, 0] = P[i, 0]
            oP[m, 1] = P[i, 1]
            oP[m, 2] = P[i, 2]
            if si == 0 and sj < 0:  # the boundary leaves along the new line
                oL[m, 0] = sigma * a0
                oL[m, 1] = sigma * a1
                oL[m, 2] = sigma * b
                oU[m] = unit
            else:
                oL[m, 0] = L[i, 0]
                oL[m, 1] = L[i, 1]
                oL[m, 2] = L[i, 2]
                oU[m] = U[i]
            m += 1
            if si > 0 and sj < 0:  # exit: the new edge starts here
                x, y, w = crossing_point(P[i, 0], P[i, 1], P[i, 2], f[i], P[j, 0], P[j, 1], P[j, 2], f[j])
                oP[m, 0] = x
                oP[m, 1] = y
                oP[m, 2] = w
                oL[m, 0] = sigma * a0
                oL[m, 1] = sigma * a1
                oL[m, 2] = sigma * b
                oU[m] = unit
                m += 1
        elif sj > 0:  # entry: continue along the old edge
            x, y, w = crossing_point(P[i, 0], P[i, 1], P[i, 2], f[i], P[j, 0], P[j, 1], P[j, 2], f[j])
            oP[m, 0] = x
            oP[m, 1] = y
            oP[m, 2] = w
            oL[m, 0] = L[i, 0]
            oL[m, 1] = L[i, 1]
            oL[m, 2] = L[i, 2]
            oU[m] = U[i]
            m += 1
    # A new edge joining two ideal points is a whole line (no vertex on it):
    # give it one finite point so the edge is unambiguous.
    for i in range(m):
        j = i + 1 if i + 1 < m else 0
        if oU[i] == unit and oP[i, 2] == 0.0 and oP[j, 2] == 0.0:
            for t in range(m, i + 1, -1):
                oP[t] = oP[t - 1]
                oL[t] = oL[t - 1]
                oU[t] = oU[t - 1]
            x, y = foot_of_line(a0, a1, b)
            oP[i + 1, 0] = x
            oP[i + 1, 1] = y
            oP[i + 1, 2] = 1.0
            oL[i + 1] = oL[i]
            oU[i + 1] = unit
            m += 1
            break
    return m


@jit
def _split_polygon(P0, L0, U0, lines, switching, unit_offset, rel_tol):
    """Split one parent polygon by every switching unit's line.

    Returns ``(n, NV, P, L, U, C)``: the number of pieces, their point counts,
    pooled boundary points / edge lines / edge owners, and the layer's sign
    code of each piece.
    """
    w = lines.shape[1]
    nv0 = P0.shape[0]
    cap = 8
    maxv = nv0 + 8
    P = np.empty((cap, maxv, 3))
    L = np.empty((cap, maxv, 3))
    U = np.empty((cap, maxv), dtype=np.int64)
    NV = np.empty(cap, dtype=np.int64)
    C = np.zeros((cap, w), dtype=np.bool_)
    P[0, :nv0] = P0
    L[0, :nv0] = L0
    U[0, :nv0] = U0
    NV[0] = nv0
    n = 1
    f = np.empty(maxv)
    s = np.empty(maxv, dtype=np.int8)
    tP = np.empty((2, maxv, 3))
    tL = np.empty((2, maxv, 3))
    tU = np.empty((2, maxv), dtype=np.int64)
    for k in range(w):
        if not switching[k]:
            continue
        a0 = lines[0, k]
        a1 = lines[1, k]
        b = lines[2, k]
        unit = unit_offset + k
        n_now = n
        for i in range(n_now):
            nv = NV[i]
            has_pos, has_neg = _classify(P[i], nv, a0, a1, b, rel_tol, f, s)
            if not (has_pos and has_neg):
                # whole piece on one side; a unit that is zero on it counts as on
                C[i, k] = has_pos or not has_neg
                continue
            if n == cap or nv + 3 > maxv:
                new_cap = cap * 2 if n == cap else cap
                new_maxv = maxv * 2 if nv + 3 > maxv else maxv
                P2 = np.empty((new_cap, new_maxv, 3))
                L2 = np.empty((new_cap, new_maxv, 3))
                U2 = np.empty((new_cap, new_maxv), dtype=np.int64)
                NV2 = np.empty(new_cap, dtype=np.int64)
                C2 = np.zeros((new_cap, w), dtype=np.bool_)
                for q in range(n):
                    P2[q, : NV[q]] = P[q, : NV[q]]
                    L2[q, : NV[q]] = L[q, : NV[q]]
                    U2[q, : NV[q]] = U[q, : NV[q]]
                    C2[q] = C[q]
                NV2[:n] = NV[:n]
                P, L, U, NV, C = P2, L2, U2, NV2, C2
                if new_maxv != maxv:
                    f2 = np.empty(new_maxv)
                    f2[:nv] = f[:nv]
                    s2 = np.empty(new_maxv, dtype=np.int8)
                    s2[:nv] = s[:nv]
                    f, s = f2, s2
                    tP = np.empty((2, new_maxv, 3))
                    tL = np.empty((2, new_maxv, 3))
                    tU = np.empty((2, new_maxv), dtype=np.int64)
                cap, maxv = new_cap, new_maxv
            mp = _clip_side(P[i], L[i], U[i], nv, f, s, 1, a0, a1, b, unit, tP[0], tL[0], tU[0])
            mn = _clip_side(P[i], L[i], U[i], nv, f, s, -1, a0, a1, b, unit, tP[1], tL[1], tU[1])
            P[i, :mp] = tP[0, :mp]
            L[i, :mp] = tL[0, :mp]
            U[i, :mp] = tU[0, :mp]
            NV[i] = mp
            P[n, :mn] = tP[1, :mn]
            L[n, :mn] = tL[1, :mn]
            U[n, :mn] = tU[1, :mn]
            NV[n] = mn
            C[n] = C[i]
            C[i, k] = True
            C[n, k] = False
            n += 1
    return n, NV, P, L, U, C


@jit(parallel=True)
def split_polygons_count(ptr, P, L, U, lines, switching, unit_offset, rel_tol):
    """Per parent: number of pieces and of boundary points after the split."""
    m = ptr.shape[0] - 1
    n_pieces = np.empty(m, dtype=np.int64)
    n_points = np.empty(m, dtype=np.int64)
    for j in prange(m):
        a, e = ptr[j], ptr[j + 1]
        n, NV, _, _, _, _ = _split_polygon(P[a:e], L[a:e], U[a:e], lines[j], switching, unit_offset, rel_tol)
        n_pieces[j] = n
        n_points[j] = NV[:n].sum()
    return n_pieces, n_points


@jit(parallel=True)
def split_polygons_fill(ptr, P, L, U, lines, switching, unit_offset, rel_tol, piece_off, point_off,
                        c_parent, c_ptr, c_P, c_L, c_U, c_code):
    """Write every parent's pieces at the offsets from :func:`split_polygons_count`.

    ``c_ptr`` has one entry per child; the caller appends the final total.
    """
    m = ptr.shape[0] - 1
    for j in prange(m):
        a, e = ptr[j], ptr[j + 1]
        n, NV, PP, LL, UU, CC = _split_polygon(P[a:e], L[a:e], U[a:e], lines[j], switching, unit_offset, rel_tol)
        r = piece_off[j]
        q = point_off[j]
        for i in range(n):
            c_parent[r + i] = j
            c_ptr[r + i] = q
            nv = NV[i]
            c_P[q : q + nv] = PP[i, :nv]
            c_L[q : q + nv] = LL[i, :nv]
            c_U[q : q + nv] = UU[i, :nv]
            c_code[r + i] = CC[i]
            q += nv


# ----------------------------------------------------------------------------- lookup
@jit
def _compare_rows(a, b):
    for i in range(a.shape[0]):
        if a[i] < b[i]:
            return -1
        if a[i] > b[i]:
            return 1
    return 0


@jit(parallel=True)
def lookup_codes(sorted_codes, order, queries):
    """Index (into the unsorted table) of each query code, or -1 when absent.

    ``sorted_codes`` are the packed codes in lexicographic word order and
    ``order`` maps sorted positions back to region indices.
    """
    nq = queries.shape[0]
    out = np.empty(nq, dtype=np.int64)
    R = sorted_codes.shape[0]
    for i in prange(nq):
        lo = 0
        hi = R
        found = -1
        while lo < hi:
            mid = (lo + hi) // 2
            c = _compare_rows(sorted_codes[mid], queries[i])
            if c == 0:
                found = order[mid]
                break
            if c < 0:
                lo = mid + 1
            else:
                hi = mid
        out[i] = found
    return out
