"""Numba CPU kernels for the exact latent partition (region enumeration).

Both kernels refine a partition by one hidden layer. Inside a parent region
every pre-activation of the next layer is affine, ``u_k(z) = a_k . z + beta_k``,
so the parent is split by (at most) ``width`` hyperplanes. For S = 1 the
parents are swept left to right carrying the affine maps by their changes at
boundaries; for S = 2 parents are independent and split by depth-first
cutting, either in one serial pass or (on more than two threads) in two
parallel passes (count pieces, then fill them at their prefix-sum offsets).
The regions' affine maps are computed in ``layer_maps``.
"""

import numpy as np
from numba import prange

from .. import _geometry as _g
from ._jit import jit

line_value = jit(_g.line_value)
line_tolerance = jit(_g.line_tolerance)
side_of = jit(_g.side_of)
crossing_point = jit(_g.crossing_point)
side_of_disc = jit(_g.side_of_disc)
foot_of_line = jit(_g.foot_of_line)
unit_on_interval = jit(_g.unit_on_interval)


# ----------------------------------------------------------------------------- S = 1
@jit
def _grow(a, n, cap):
    out = np.empty((cap,) + a.shape[1:], dtype=a.dtype)
    out[:n] = a[:n]
    return out


@jit
def sweep_intervals(lo, hi, lo_unit, hi_unit, s0, o0, dS, switching, eta, unit_offset, want_codes):
    """Refine a sorted partition of the line by one hidden layer, left to right.

    The layer's pre-activations are affine on each parent interval; their
    slopes ``s`` and offsets ``o`` are carried from parent to parent: across
    the boundary ``t`` between parents j and j+1 the slope changes by
    ``dS[j]`` and, u being continuous at t, the offset by ``-t * dS[j]``.
    So no dense map is ever formed per interval.

    Parameters
    ----------
    lo, hi : (m,) float64
        Parent intervals, sorted, ``hi[j] == lo[j+1]``; ends may be infinite.
    lo_unit, hi_unit : (m,) int64
        Unit owning each parent end (-1 at infinity).
    s0, o0 : (w,) float64
        Slope and offset of the layer's pre-activations on parent 0.
    dS : (m-1, w) float64
        Slope change across each parent boundary.
    switching : (w,) bool
    eta : (w,) float64
        Negative-side slope of each unit.
    unit_offset : int
        Global index of the layer's first unit.
    want_codes : bool
        Return the children's sign codes; without, only one code row is held
        at a time (a wide layer's codes are n x w).

    Returns
    -------
    parent, c_lo, c_hi, c_lo_unit, c_hi_unit, code
        The children (n of them), in order, and their sign codes (n, w), or
        (0, w) without ``want_codes``.
    dense_pos, dense
        For each parent boundary: its index among the children's boundaries
        and the slope change of the layer's outputs ``h = act(u)`` across it.
    sp_pos, sp_unit, sp_val
        The same at the new inner boundaries, where only the crossing units'
        outputs change slope: sparse (boundary index, unit, slope change).
    h0s, h0o : (w,)
        Slope and offset of the layer's outputs on child 0.
    """
    m = lo.shape[0]
    w = s0.shape[0]
    s = s0.copy()
    o = o0.copy()
    cap = 2 * m + 16
    parent = np.empty(cap, dtype=np.int64)
    c_lo = np.empty(cap)
    c_hi = np.empty(cap)
    c_lo_unit = np.empty(cap, dtype=np.int64)
    c_hi_unit = np.empty(cap, dtype=np.int64)
    code = np.empty((cap if want_codes else 0, w), dtype=np.bool_)
    cur = np.empty(w, dtype=np.bool_)  # the code of the child being walked
    first_code = np.empty(w, dtype=np.bool_)
    sp_cap = cap
    sp_pos = np.empty(sp_cap, dtype=np.int64)
    sp_unit = np.empty(sp_cap, dtype=np.int64)
    sp_val = np.empty(sp_cap)
    n_sp = 0
    dense_pos = np.empty(max(m - 1, 0), dtype=np.int64)
    dense = np.empty((max(m - 1, 0), w))
    t_buf = np.empty(w)
    k_buf = np.empty(w, dtype=np.int64)
    left_of = np.empty(w, dtype=np.int64)
    n = 0
    for j in range(m):
        if j > 0:
            t = lo[j]
            for k in range(w):
                d = dS[j - 1, k]
                s[k] += d
                o[k] -= t * d
        nc = 0
        for k in range(w):
            if switching[k] and s[k] != 0.0:
                t = -o[k] / s[k] + 0.0  # + 0.0 turns a breakpoint at -0.0 into 0.0
                if lo[j] < t < hi[j]:
                    t_buf[nc] = t
                    k_buf[nc] = k
                    nc += 1
        order = np.argsort(t_buf[:nc], kind="mergesort")
        if n + nc + 1 > cap:
            new_cap = 2 * (n + nc + 1)
            parent = _grow(parent, n, new_cap)
            c_lo = _grow(c_lo, n, new_cap)
            c_hi = _grow(c_hi, n, new_cap)
            c_lo_unit = _grow(c_lo_unit, n, new_cap)
            c_hi_unit = _grow(c_hi_unit, n, new_cap)
            if want_codes:
                code = _grow(code, n, new_cap)
            cap = new_cap
        if n_sp + nc > sp_cap:
            sp_cap = 2 * (n_sp + nc)
            sp_pos = _grow(sp_pos, n_sp, sp_cap)
            sp_unit = _grow(sp_unit, n_sp, sp_cap)
            sp_val = _grow(sp_val, n_sp, sp_cap)
        first = n
        parent[n] = j
        c_lo[n] = lo[j]
        c_lo_unit[n] = lo_unit[j]
        for i in range(nc):
            t = t_buf[order[i]]
            if i == 0 or t != t_buf[order[i - 1]]:
                c_hi[n] = t
                c_hi_unit[n] = unit_offset + k_buf[order[i]]
                n += 1
                parent[n] = j
                c_lo[n] = t
                c_lo_unit[n] = unit_offset + k_buf[order[i]]
            left_of[i] = n - 1  # the child that ends at this crossing
        c_hi[n] = hi[j]
        c_hi_unit[n] = hi_unit[j]
        n += 1
        for k in range(w):
            cur[k] = switching[k] and unit_on_interval(s[k], o[k], c_lo[first])
        if j == 0:
            first_code[:] = cur
        # the boundary with the previous parent: every output may change slope
        if j > 0:
            dense_pos[j - 1] = first - 1
            for k in range(w):
                qb = 1.0 if cur[k] else eta[k]
                dense[j - 1, k] += qb * s[k]
        if want_codes:
            code[first] = cur
        # each later child differs only in the units crossing at its left end;
        # there (an inner boundary) only those units' outputs change slope
        for i in range(nc):
            c = left_of[i] + 1
            k = k_buf[order[i]]
            qa = 1.0 if cur[k] else eta[k]
            cur[k] = unit_on_interval(s[k], o[k], c_lo[c])
            qb = 1.0 if cur[k] else eta[k]
            sp_pos[n_sp] = c - 1
            sp_unit[n_sp] = k
            sp_val[n_sp] = (qb - qa) * s[k]
            n_sp += 1
            if want_codes and (i == nc - 1 or left_of[i + 1] != left_of[i]):
                code[c] = cur
        if j < m - 1:
            for k in range(w):
                qa = 1.0 if cur[k] else eta[k]
                dense[j, k] = -qa * s[k]
    h0s = np.empty(w)
    h0o = np.empty(w)
    for k in range(w):
        q = 1.0 if first_code[k] else eta[k]
        h0s[k] = q * s0[k]
        h0o[k] = q * o0[k]
    return (parent[:n], c_lo[:n], c_hi[:n], c_lo_unit[:n], c_hi_unit[:n], code[:n] if want_codes else code,
            dense_pos, dense, sp_pos[:n_sp], sp_unit[:n_sp], sp_val[:n_sp], h0s, h0o)


@jit
def add_sparse_columns(out, pos, unit, val, Wt):
    """``out[pos[i]] += val[i] * Wt[unit[i]]`` for every entry (rows of W^T are W's columns)."""
    for i in range(pos.shape[0]):
        r = pos[i]
        k = unit[i]
        v = val[i]
        for d in range(Wt.shape[1]):
            out[r, d] += v * Wt[k, d]


# ----------------------------------------------------------------------------- S = 2
@jit
def _classify(P, nv, a0, a1, b, rel_tol, f, s):
    """Side of each boundary point; returns (has_pos, has_neg)."""
    has_pos = False
    has_neg = False
    anorm = np.sqrt(a0 * a0 + a1 * a1)
    babs = abs(b)
    for i in range(nv):
        px = P[i, 0]
        py = P[i, 1]
        pw = P[i, 2]
        v = line_value(a0, a1, b, px, py, pw)
        f[i] = v
        s[i] = side_of(v, line_tolerance(anorm, babs, px, py, pw, rel_tol))
        if s[i] > 0:
            has_pos = True
        elif s[i] < 0:
            has_neg = True
    return has_pos, has_neg


@jit
def _enclosing_disc(P, nv):
    """``(bounded, cx, cy, rad)``: a disc holding a polygon with only finite
    points (centroid of the points, largest distance); ``bounded`` is False
    when a point is ideal (the polygon is unbounded)."""
    cx = 0.0
    cy = 0.0
    for i in range(nv):
        if P[i, 2] == 0.0:
            return False, 0.0, 0.0, 0.0
        cx += P[i, 0]
        cy += P[i, 1]
    cx /= nv
    cy /= nv
    r2 = 0.0
    for i in range(nv):
        dx = P[i, 0] - cx
        dy = P[i, 1] - cy
        r2 = max(r2, dx * dx + dy * dy)
    return True, cx, cy, np.sqrt(r2)


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
def _resize_points(a, rows, cap, maxv):
    """Copy the first ``rows`` of a (cap, maxv, ...) pool into a larger one."""
    shape = (cap, maxv) + a.shape[2:]
    out = np.empty(shape, dtype=a.dtype)
    m = min(a.shape[1], maxv)
    for r in range(rows):
        out[r, :m] = a[r, :m]
    return out


@jit
def _resize_polygons(P, L, U, rows, cap, maxv):
    """Grow a pool of polygons (points, edge lines, edge owners) together."""
    return _resize_points(P, rows, cap, maxv), _resize_points(L, rows, cap, maxv), _resize_points(U, rows, cap, maxv)


@jit
def _split_polygon(P0, L0, U0, lines, switching, unit_offset, rel_tol, out, n, q):
    """Split one parent polygon by every switching unit's line.

    Depth-first cutting with the candidate lines in unit order: at a piece,
    candidates are classified in order; each one that misses the piece is
    settled for the whole subtree (its code bit is set once) and the first one
    that crosses splits it. Both children then inherit the candidates after
    the splitting line, so a piece's candidates are always a suffix
    ``cand[start:]`` of the parent's list and nothing but the pieces' points is
    copied when descending. Most candidates miss a small piece; a disc around
    it settles those in O(1). Far cheaper than testing every line against every
    piece when many lines cross one parent (one hidden layer over the plane).

    The pieces are appended to ``out = (ptr, P, L, U, C)`` (boundary start per
    piece, pooled boundary points / edge lines / edge owners, the layer's sign
    code of each piece), which holds ``n`` pieces and ``q`` points so far and
    grows by doubling. Returns ``(out, n, q)``.
    """
    o_ptr, o_P, o_L, o_U, o_C = out
    w = lines.shape[1]
    nv0 = P0.shape[0]
    maxv = nv0 + 8
    # the piece being worked on
    cP = np.empty((1, maxv, 3))
    cL = np.empty((1, maxv, 3))
    cU = np.empty((1, maxv), dtype=np.int64)
    cP[0, :nv0] = P0
    cL[0, :nv0] = L0
    cU[0, :nv0] = U0
    cnv = nv0
    cand = np.empty(w, dtype=np.int64)
    nc = 0
    for k in range(w):
        if switching[k]:
            cand[nc] = k
            nc += 1
    start = 0
    # Bits of cand[:start] are fixed for the current subtree; deeper pieces only
    # write bits of their own (later) candidates, so no copy is ever needed.
    code = np.zeros(w, dtype=np.bool_)
    # pieces waiting (the negative side of each split) and their first candidate
    dcap = 16
    sP = np.empty((dcap, maxv, 3))
    sL = np.empty((dcap, maxv, 3))
    sU = np.empty((dcap, maxv), dtype=np.int64)
    sNV = np.empty(dcap, dtype=np.int64)
    sStart = np.empty(dcap, dtype=np.int64)
    depth = 0
    f = np.empty(maxv)
    s = np.empty(maxv, dtype=np.int8)
    tP = np.empty((1, maxv, 3))
    tL = np.empty((1, maxv, 3))
    tU = np.empty((1, maxv), dtype=np.int64)
    anorm = np.empty(w)
    babs = np.empty(w)
    for k in range(w):
        anorm[k] = np.sqrt(lines[0, k] ** 2 + lines[1, k] ** 2)
        babs[k] = abs(lines[2, k])
    while True:
        split_at = -1
        bounded, cx, cy, rad = _enclosing_disc(cP[0], cnv)
        for i in range(start, nc):
            k = cand[i]
            if lines[0, k] == 0.0 and lines[1, k] == 0.0:
                # a constant pre-activation (zero incoming weights): on iff its
                # offset is >= 0. (The value at an ideal point is 0 whatever the
                # offset, so the whole plane alone could not tell.)
                code[k] = lines[2, k] >= 0.0
                continue
            if bounded:
                side = side_of_disc(lines[0, k], lines[1, k], lines[2, k], anorm[k], babs[k], cx, cy, rad, rel_tol)
                if side != 0:
                    code[k] = side > 0
                    continue
            has_pos, has_neg = _classify(cP[0], cnv, lines[0, k], lines[1, k], lines[2, k], rel_tol, f, s)
            if has_pos and has_neg:
                split_at = i
                break
            # whole piece on one side; a unit that is zero on it counts as on
            code[k] = has_pos or not has_neg
        if split_at < 0:  # a finished piece
            if n >= o_C.shape[0]:  # (o_ptr always has one entry more)
                cap = 2 * (n + 1)
                o_ptr = _grow(o_ptr, n, cap + 1)
                o_C = _grow(o_C, n, cap)
            if q + cnv > o_P.shape[0]:
                vcap = 2 * (q + cnv)
                o_P = _grow(o_P, q, vcap)
                o_L = _grow(o_L, q, vcap)
                o_U = _grow(o_U, q, vcap)
            o_ptr[n] = q
            o_P[q : q + cnv] = cP[0, :cnv]
            o_L[q : q + cnv] = cL[0, :cnv]
            o_U[q : q + cnv] = cU[0, :cnv]
            o_C[n] = code
            n += 1
            q += cnv
            if depth == 0:
                break
            depth -= 1
            cnv = sNV[depth]
            cP[0, :cnv] = sP[depth, :cnv]
            cL[0, :cnv] = sL[depth, :cnv]
            cU[0, :cnv] = sU[depth, :cnv]
            start = sStart[depth]
            code[cand[start - 1]] = False  # the negative side of its split
            continue
        if cnv + 3 > maxv:  # a child has at most cnv + 3 points
            maxv *= 2
            cP, cL, cU = _resize_polygons(cP, cL, cU, 1, 1, maxv)
            sP, sL, sU = _resize_polygons(sP, sL, sU, depth, dcap, maxv)
            f2 = np.empty(maxv)
            f2[:cnv] = f[:cnv]
            s2 = np.empty(maxv, dtype=np.int8)
            s2[:cnv] = s[:cnv]
            f, s = f2, s2
            tP = np.empty((1, maxv, 3))
            tL = np.empty((1, maxv, 3))
            tU = np.empty((1, maxv), dtype=np.int64)
        if depth == dcap:
            dcap *= 2
            sP, sL, sU = _resize_polygons(sP, sL, sU, depth, dcap, maxv)
            sNV = _grow(sNV, depth, dcap)
            sStart = _grow(sStart, depth, dcap)
        k = cand[split_at]
        a0 = lines[0, k]
        a1 = lines[1, k]
        b = lines[2, k]
        unit = unit_offset + k
        mp = _clip_side(cP[0], cL[0], cU[0], cnv, f, s, 1, a0, a1, b, unit, tP[0], tL[0], tU[0])
        mn = _clip_side(cP[0], cL[0], cU[0], cnv, f, s, -1, a0, a1, b, unit, sP[depth], sL[depth], sU[depth])
        sNV[depth] = mn
        sStart[depth] = split_at + 1
        depth += 1
        cP[0, :mp] = tP[0, :mp]
        cL[0, :mp] = tL[0, :mp]
        cU[0, :mp] = tU[0, :mp]
        cnv = mp
        start = split_at + 1
        code[k] = True
    return (o_ptr, o_P, o_L, o_U, o_C), n, q


@jit
def _new_pieces(n_pieces, n_points, w):
    """Empty growable outputs for :func:`_split_polygon`."""
    return (np.empty(n_pieces + 1, dtype=np.int64), np.empty((n_points, 3)), np.empty((n_points, 3)),
            np.empty(n_points, dtype=np.int64), np.empty((n_pieces, w), dtype=np.bool_))


@jit(parallel=True)
def split_polygons_count(ptr, P, L, U, lines, switching, unit_offset, rel_tol):
    """Per parent: number of pieces and of boundary points after the split."""
    m = ptr.shape[0] - 1
    n_pieces = np.empty(m, dtype=np.int64)
    n_points = np.empty(m, dtype=np.int64)
    for j in prange(m):
        a, e = ptr[j], ptr[j + 1]
        _, n, q = _split_polygon(P[a:e], L[a:e], U[a:e], lines[j], switching, unit_offset, rel_tol,
                                 _new_pieces(8, 8 * (e - a), lines.shape[2]), 0, 0)
        n_pieces[j] = n
        n_points[j] = q
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
        r = piece_off[j]
        q0 = point_off[j]
        # exactly sized (the count pass ran the same split), so nothing grows
        n1 = piece_off[j + 1] if j + 1 < m else c_code.shape[0]
        q1 = point_off[j + 1] if j + 1 < m else c_P.shape[0]
        out = _new_pieces(n1 - r, q1 - q0, lines.shape[2])
        (optr, oP, oL, oU, oC), n, q = _split_polygon(P[a:e], L[a:e], U[a:e], lines[j], switching, unit_offset,
                                                      rel_tol, out, 0, 0)
        for i in range(n):
            c_parent[r + i] = j
            c_ptr[r + i] = q0 + optr[i]
            c_code[r + i] = oC[i]
        c_P[q0 : q0 + q] = oP[:q]
        c_L[q0 : q0 + q] = oL[:q]
        c_U[q0 : q0 + q] = oU[:q]


@jit
def split_polygons_serial(ptr, P, L, U, lines, switching, unit_offset, rel_tol):
    """One serial pass over the parents, appending to growing outputs.

    Cheaper than :func:`split_polygons_count` + :func:`split_polygons_fill`
    (which split every parent twice) when there are few threads or parents.
    Returns ``(c_parent, c_ptr, c_P, c_L, c_U, c_code)``.
    """
    m = ptr.shape[0] - 1
    out = _new_pieces(2 * m + 16, 2 * P.shape[0] + 64, lines.shape[2])
    c_parent = np.empty(2 * m + 16, dtype=np.int64)
    n = 0
    q = 0
    for j in range(m):
        a, e = ptr[j], ptr[j + 1]
        n0 = n
        out, n, q = _split_polygon(P[a:e], L[a:e], U[a:e], lines[j], switching, unit_offset, rel_tol, out, n, q)
        if n > c_parent.shape[0]:
            c_parent = _grow(c_parent, n0, 2 * n)
        c_parent[n0:n] = j
    c_ptr, c_P, c_L, c_U, c_code = out
    c_ptr[n] = q
    return c_parent[:n], c_ptr[: n + 1], c_P[:q], c_L[:q], c_U[:q], c_code[:n]


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
