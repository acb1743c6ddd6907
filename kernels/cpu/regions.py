"""Numba CPU kernels for the exact latent partition (region enumeration).

Both kernels refine a partition by one hidden layer. Inside a parent region
every pre-activation of the next layer is affine, ``u_k(z) = a_k . z + beta_k``,
so the parent is split by (at most) ``width`` hyperplanes. For S = 1 the
parents are swept left to right carrying the affine maps by their changes at
boundaries; for S = 2 parents are independent and split in two parallel
passes (count pieces, then fill them at their prefix-sum offsets).
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
unit_on_interval = jit(_g.unit_on_interval)


# ----------------------------------------------------------------------------- S = 1
@jit
def _grow(a, n, cap):
    out = np.empty((cap,) + a.shape[1:], dtype=a.dtype)
    out[:n] = a[:n]
    return out


@jit
def sweep_intervals(lo, hi, lo_unit, hi_unit, s0, o0, dS, switching, eta, unit_offset):
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

    Returns
    -------
    parent, c_lo, c_hi, c_lo_unit, c_hi_unit, code
        The children (n of them), in order, and their sign codes (n, w).
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
    code = np.empty((cap, w), dtype=np.bool_)
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
            code[first, k] = switching[k] and unit_on_interval(s[k], o[k], c_lo[first])
        # each later child differs only in the units crossing at its left end
        for i in range(nc):
            c = left_of[i] + 1
            if i == 0 or left_of[i] != left_of[i - 1]:
                code[c] = code[c - 1]
            k = k_buf[order[i]]
            code[c, k] = unit_on_interval(s[k], o[k], c_lo[c])
        # inner boundaries: only the units that cross there change
        for i in range(nc):
            k = k_buf[order[i]]
            c = left_of[i]
            qa = 1.0 if code[c, k] else eta[k]
            qb = 1.0 if code[c + 1, k] else eta[k]
            sp_pos[n_sp] = c
            sp_unit[n_sp] = k
            sp_val[n_sp] = (qb - qa) * s[k]
            n_sp += 1
        # the boundary with the previous parent: every output may change slope
        if j > 0:
            dense_pos[j - 1] = first - 1
            for k in range(w):
                qb = 1.0 if code[first, k] else eta[k]
                dense[j - 1, k] += qb * s[k]
        if j < m - 1:
            for k in range(w):
                qa = 1.0 if code[n - 1, k] else eta[k]
                dense[j, k] = -qa * s[k]
    h0s = np.empty(w)
    h0o = np.empty(w)
    for k in range(w):
        q = 1.0 if code[0, k] else eta[k]
        h0s[k] = q * s0[k]
        h0o[k] = q * o0[k]
    return (parent[:n], c_lo[:n], c_hi[:n], c_lo_unit[:n], c_hi_unit[:n], code[:n],
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
def _split_polygon(P0, L0, U0, lines, switching, unit_offset, rel_tol):
    """Split one parent polygon by every switching unit's line.

    Depth-first cutting: a piece carries the candidate lines that crossed its
    parent; each candidate that misses the piece is settled for the whole
    subtree (its code bit is set once), and the first one that crosses splits
    it. Far cheaper than testing every line against every piece when many
    lines cross one parent (one hidden layer over the whole plane).

    Returns ``(n, NV, P, L, U, C)``: the number of pieces, their point counts,
    pooled boundary points / edge lines / edge owners, and the layer's sign
    code of each piece.
    """
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
    code = np.zeros(w, dtype=np.bool_)
    # pieces waiting (the negative side of each split), with their candidates
    dcap = 16
    sP = np.empty((dcap, maxv, 3))
    sL = np.empty((dcap, maxv, 3))
    sU = np.empty((dcap, maxv), dtype=np.int64)
    sNV = np.empty(dcap, dtype=np.int64)
    sCand = np.empty((dcap, w), dtype=np.int64)
    sNC = np.empty(dcap, dtype=np.int64)
    sCode = np.zeros((dcap, w), dtype=np.bool_)
    depth = 0
    # finished pieces
    cap = 8
    P = np.empty((cap, maxv, 3))
    L = np.empty((cap, maxv, 3))
    U = np.empty((cap, maxv), dtype=np.int64)
    NV = np.empty(cap, dtype=np.int64)
    C = np.zeros((cap, w), dtype=np.bool_)
    n = 0
    f = np.empty(maxv)
    s = np.empty(maxv, dtype=np.int8)
    tP = np.empty((2, maxv, 3))
    tL = np.empty((2, maxv, 3))
    tU = np.empty((2, maxv), dtype=np.int64)
    while True:
        split_at = -1
        for i in range(nc):
            k = cand[i]
            has_pos, has_neg = _classify(cP[0], cnv, lines[0, k], lines[1, k], lines[2, k], rel_tol, f, s)
            if has_pos and has_neg:
                split_at = i
                break
            # whole piece on one side; a unit that is zero on it counts as on
            code[k] = has_pos or not has_neg
        if split_at < 0:  # a finished piece
            if n == cap:
                cap *= 2
                P, L, U = _resize_polygons(P, L, U, n, cap, maxv)
                NV = _grow(NV, n, cap)
                C = _grow(C, n, cap)
            P[n, :cnv] = cP[0, :cnv]
            L[n, :cnv] = cL[0, :cnv]
            U[n, :cnv] = cU[0, :cnv]
            NV[n] = cnv
            C[n] = code
            n += 1
            if depth == 0:
                break
            depth -= 1
            cnv = sNV[depth]
            cP[0, :cnv] = sP[depth, :cnv]
            cL[0, :cnv] = sL[depth, :cnv]
            cU[0, :cnv] = sU[depth, :cnv]
            nc = sNC[depth]
            cand[:nc] = sCand[depth, :nc]
            code[:] = sCode[depth]
            continue
        if cnv + 3 > maxv:  # a child has at most cnv + 3 points
            maxv *= 2
            cP, cL, cU = _resize_polygons(cP, cL, cU, 1, 1, maxv)
            sP, sL, sU = _resize_polygons(sP, sL, sU, depth, dcap, maxv)
            P, L, U = _resize_polygons(P, L, U, n, cap, maxv)
            f2 = np.empty(maxv)
            f2[:cnv] = f[:cnv]
            s2 = np.empty(maxv, dtype=np.int8)
            s2[:cnv] = s[:cnv]
            f, s = f2, s2
            tP = np.empty((2, maxv, 3))
            tL = np.empty((2, maxv, 3))
            tU = np.empty((2, maxv), dtype=np.int64)
        if depth == dcap:
            dcap *= 2
            sP, sL, sU = _resize_polygons(sP, sL, sU, depth, dcap, maxv)
            sNV = _grow(sNV, depth, dcap)
            sCand = _grow(sCand, depth, dcap)
            sNC = _grow(sNC, depth, dcap)
            sCode = _grow(sCode, depth, dcap)
        k = cand[split_at]
        a0 = lines[0, k]
        a1 = lines[1, k]
        b = lines[2, k]
        unit = unit_offset + k
        mp = _clip_side(cP[0], cL[0], cU[0], cnv, f, s, 1, a0, a1, b, unit, tP[0], tL[0], tU[0])
        mn = _clip_side(cP[0], cL[0], cU[0], cnv, f, s, -1, a0, a1, b, unit, tP[1], tL[1], tU[1])
        rc = nc - split_at - 1
        sP[depth, :mn] = tP[1, :mn]
        sL[depth, :mn] = tL[1, :mn]
        sU[depth, :mn] = tU[1, :mn]
        sNV[depth] = mn
        sCand[depth, :rc] = cand[split_at + 1 : nc]
        sNC[depth] = rc
        sCode[depth] = code
        sCode[depth, k] = False
        depth += 1
        cP[0, :mp] = tP[0, :mp]
        cL[0, :mp] = tL[0, :mp]
        cU[0, :mp] = tU[0, :mp]
        cnv = mp
        for i in range(rc):
            cand[i] = cand[split_at + 1 + i]
        nc = rc
        code[k] = True
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


@jit
def split_polygons_serial(ptr, P, L, U, lines, switching, unit_offset, rel_tol):
    """One serial pass over the parents, growing the outputs as it goes.

    Cheaper than :func:`split_polygons_count` + :func:`split_polygons_fill`
    (which split every parent twice) when there are few threads or parents.
    Returns ``(c_parent, c_ptr, c_P, c_L, c_U, c_code)``.
    """
    m = ptr.shape[0] - 1
    w = lines.shape[2]
    cap = 2 * m + 16
    vcap = 2 * P.shape[0] + 64
    c_parent = np.empty(cap, dtype=np.int64)
    c_ptr = np.empty(cap + 1, dtype=np.int64)
    c_code = np.empty((cap, w), dtype=np.bool_)
    c_P = np.empty((vcap, 3))
    c_L = np.empty((vcap, 3))
    c_U = np.empty(vcap, dtype=np.int64)
    r = 0
    q = 0
    for j in range(m):
        a, e = ptr[j], ptr[j + 1]
        n, NV, PP, LL, UU, CC = _split_polygon(P[a:e], L[a:e], U[a:e], lines[j], switching, unit_offset, rel_tol)
        nv_total = NV[:n].sum()
        if r + n + 1 > cap:
            cap = 2 * (r + n + 1)
            c_parent = _grow(c_parent, r, cap)
            c_ptr = _grow(c_ptr, r, cap + 1)
            c_code = _grow(c_code, r, cap)
        if q + nv_total > vcap:
            vcap = 2 * (q + nv_total)
            c_P = _grow(c_P, q, vcap)
            c_L = _grow(c_L, q, vcap)
            c_U = _grow(c_U, q, vcap)
        for i in range(n):
            c_parent[r] = j
            c_ptr[r] = q
            nv = NV[i]
            c_P[q : q + nv] = PP[i, :nv]
            c_L[q : q + nv] = LL[i, :nv]
            c_U[q : q + nv] = UU[i, :nv]
            c_code[r] = CC[i]
            q += nv
            r += 1
    c_ptr[r] = q
    return c_parent[:r], c_ptr[: r + 1], c_P[:q], c_L[:q], c_U[:q], c_code[:r]


@jit(parallel=True)
def gather_scaled_maps(U_prev, parent, code, eta, out):
    """``out[i] = U_prev[parent[i]] * q[i]`` with ``q = 1`` (on) or ``eta`` (off), in one pass."""
    n, S1, w = out.shape
    for i in prange(n):
        p = parent[i]
        for k in range(w):
            q = 1.0 if code[i, k] else eta[k]
            for a in range(S1):
                out[i, a, k] = U_prev[p, a, k] * q


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
