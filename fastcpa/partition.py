"""The exact partition of latent space into the affine regions of a generator.

The partition is built layer by layer. Inside a region of the partition of
layers ``< l`` every pre-activation of layer ``l`` is affine in z, so each
region is split by at most ``width_l`` hyperplanes (lines for S = 2, points
for S = 1). Unbounded regions are represented exactly: intervals with
infinite ends for S = 1, polygons in the oriented projective plane (boundary
points that may be ideal points, i.e. directions at infinity) for S = 2.

Tolerances (documented behaviour on degenerate input)
------------------------------------------------------
* S = 1 is decided by comparing computed breakpoints exactly: breakpoints
  that are equal in floating point are one breakpoint (all units crossing
  there flip together); any interval of positive floating-point length is a
  region.
* S = 2: a polygon vertex within ``rel_tol`` (default ``1e-12``) relative to
  the magnitude of the terms of ``a . z + beta`` counts as lying on that
  unit's line. So a line through an existing vertex (up to rounding) does not
  create a sliver, and a duplicated unit does not split anything. Pieces
  thinner than this resolution are never created; every piece that is
  created has positive area and is kept.
* A unit whose pre-activation is identically zero on a region is "on"
  (``u >= 0``); units with zero incoming weights have a constant
  pre-activation and never split. Units of ``linear`` layers (slope 1) never
  switch and are reported off.
"""

import numba
import numpy as np

from ._threads import matmul
from ._validation import as_points, check_region_index, check_region_indices
from .generator import Generator

__all__ = ["partition", "Partition"]

#: Relative resolution of the S = 2 polygon clipper (see module docstring).
REL_TOL_2D = 1e-12
# Regions' maps are updated from their predecessor's by rank-one terms and
# recomputed in full every this many rows (bounds the rounding of the updates).
_MAP_RESTART = 32
# Fewest parent regions for which the two-pass parallel polygon split is used.
_PARALLEL_MIN_PARENTS = 64
# "auto" | "serial" | "parallel": how S = 2 parents are split (tests force each path).
_SPLIT_MODE = "auto"


def _use_parallel_split(n_parents):
    if _SPLIT_MODE != "auto":
        return _SPLIT_MODE == "parallel"
    return n_parents >= _PARALLEL_MIN_PARENTS and numba.get_num_threads() > 2


class Partition:
    """The exact partition of R^S into the affine regions of a generator.

    Built by :func:`partition`; all arrays are read-only NumPy arrays.

    Attributes
    ----------
    n_regions : int
        Number of regions R.
    latent_dim, output_dim : int
        S and D.
    A : ndarray, shape (R, D, S)
    b : ndarray, shape (R, D)
        ``g(z) = A[r] @ z + b[r]`` for z in region r.
    codes : ndarray of uint64, shape (R, ceil(n_units / 64))
        Bit-packed sign codes: bit ``k % 64`` of word ``k // 64`` is set when
        hidden unit k (layers concatenated in order) is on in the region.
    facet_ptr : ndarray of int64, shape (R + 1,)
        CSR offsets into the facet arrays: region r owns facets
        ``facet_ptr[r]:facet_ptr[r+1]``.
    facet_normal : ndarray, shape (F, S)
    facet_offset : ndarray, shape (F,)
        Each region is ``{z : facet_normal @ z + facet_offset >= 0}`` over its
        facets; normals have unit length and point into the region. Every facet
        is non-redundant (it carries a piece of the boundary of positive
        length; a point for S = 1).
    facet_unit : ndarray of int64, shape (F,)
        The hidden unit whose hyperplane carries the facet (the first in unit
        order when several coincide).
    facet_neighbor : ndarray of int64, shape (F,)
        The region on the other side of the facet, at a point inside the
        facet (computed on first access). When several regions border one
        facet (only on degenerate input) this is the one at that point.
    intervals : ndarray, shape (R, 2)
        S = 1 only: ``[lo, hi]`` with ``+-inf`` for unbounded ends, sorted.
    boundary_ptr : ndarray of int64, shape (R + 1,)
    boundary : ndarray, shape (V, 3)
    boundary_unit : ndarray of int64, shape (V,)
        S = 2 only: the boundary of region r is the counter-clockwise cycle
        ``boundary[boundary_ptr[r]:boundary_ptr[r+1]]`` of homogeneous points
        ``(x, y, w)``: ``w = 1`` a finite vertex, ``w = 0`` an ideal point (a
        unit direction at infinity). Edge i joins point i to point i+1
        (cyclically) and lies on the hyperplane of ``boundary_unit[i]``; -1
        marks an arc at infinity. A boundary line with no vertex (half-planes,
        strips) carries one finite point; use :meth:`polygon` for vertices
        and rays.
    """

    def __init__(self, generator, A, b, codes, facet_ptr, facet_normal, facet_offset, facet_unit, geometry):
        self.generator = generator
        self.A, self.b, self._codes = A, b, codes
        self.facet_ptr, self.facet_normal, self.facet_offset, self.facet_unit = (
            facet_ptr, facet_normal, facet_offset, facet_unit)
        for name, value in geometry.items():
            setattr(self, name, value)
        self._lookup = None
        self._facet_neighbor = None
        self._anchors = None
        for arr in self.__dict__.values():
            if isinstance(arr, np.ndarray):
                arr.setflags(write=False)

    @property
    def codes(self):
        """Bit-packed sign codes (see the class docstring). A wide S = 1 partition forms
        them on first access, from its sweeps again (regions x units bits: a layer of a
        million units makes them too large to keep unasked)."""
        if self._codes is None:
            self._codes = _sweep_codes(self.generator)
        return self._codes

    @property
    def anchors(self):
        """``(Z, G)``: a point ``Z[r]`` of each region's closure and ``G[r] = g(Z[r])``.

        ``b[r]`` is the region's map extrapolated to ``z = 0``: for a steep
        region far from the origin it is a large number that ``A[r] z``
        cancels, and its rounding would reach every fitted point ``A z + b``.
        ``G[r] + A[r] (z - Z[r])`` has no such cancellation for z near the
        region, so the likelihood kernels evaluate residuals this way.

        The point is the interval's point nearest the origin (S = 1), or a
        polygon's finite boundary point nearest the origin (S = 2; the origin
        itself in the region that holds it). Values come from the forward
        pass with the region's own activation pattern (a point on a boundary
        may round onto the neighbouring piece), except for partitions whose ``regions x parameters`` exceeds
        2e8, where ``A[r] Z[r] + b[r]`` stands in. Computed on first
        access.
        """
        if self._anchors is None:
            self._anchors = _region_anchors(self)
            for a in self._anchors:
                a.setflags(write=False)
        return self._anchors

    def _code_lookup(self):
        """``(sorted codes, order)`` for looking regions up by code (built on first use)."""
        if self._lookup is None:
            codes = self.codes
            order = np.lexsort(codes.T[::-1]) if codes.shape[1] else np.arange(len(codes))
            self._lookup = (np.ascontiguousarray(codes[order]), order.astype(np.int64))
        return self._lookup

    @property
    def facet_neighbor(self):
        """Region across each facet, shape (F,) (computed on first access)."""
        if self._facet_neighbor is None:
            nb = _facet_neighbors(self)
            nb.setflags(write=False)
            self._facet_neighbor = nb
        return self._facet_neighbor

    @property
    def n_regions(self):
        """Number of regions R."""
        return self.A.shape[0]

    @property
    def latent_dim(self):
        """Latent dimension S."""
        return self.generator.latent_dim

    @property
    def output_dim(self):
        """Output dimension D."""
        return self.generator.output_dim

    def __len__(self):
        return self.n_regions

    def __repr__(self):
        return f"Partition(n_regions={self.n_regions}, latent_dim={self.latent_dim}, output_dim={self.output_dim})"

    def code_bits(self, regions=None):
        """Unpacked sign codes, shape (R, n_units) bool (or of the given regions).

        Parameters
        ----------
        regions : array_like of int, optional
            Region indices in ``[0, n_regions)``; the result has one row per
            entry (a scalar index gives one row).

        Raises
        ------
        TypeError
            For non-integer indices.
        IndexError
            For negative or out-of-range indices.
        """
        if regions is None:
            codes = self.codes
        else:
            codes = self.codes[np.atleast_1d(check_region_indices(regions, self.n_regions))]
        return _unpack_codes(codes, self.generator.n_units)

    def facets(self, r):
        """Facets of region r as ``(normal (k, S), offset (k,), unit (k,), neighbor (k,))``.

        ``r`` is an integer in ``[0, n_regions)``: a negative, out-of-range or
        non-integer index raises IndexError / TypeError.
        """
        r = check_region_index(r, self.n_regions)
        sl = slice(self.facet_ptr[r], self.facet_ptr[r + 1])
        return self.facet_normal[sl], self.facet_offset[sl], self.facet_unit[sl], self.facet_neighbor[sl]

    def polygon(self, r):
        """S = 2: the finite vertices (CCW) of region r and its rays.

        Returns
        -------
        vertices : ndarray, shape (k, 2)
            Finite boundary points in counter-clockwise order (including the
            single point carried by a boundary line without a vertex).
        rays : list of (origin, direction)
            The unbounded edges, each a finite point and a unit direction.

        Raises
        ------
        TypeError
            For a non-integer ``r``.
        IndexError
            For ``r`` outside ``[0, n_regions)`` (negative indices included).
        """
        if self.latent_dim != 2:
            raise ValueError("polygon() is defined for S = 2 partitions only.")
        r = check_region_index(r, self.n_regions)
        pts = self.boundary[self.boundary_ptr[r]:self.boundary_ptr[r + 1]]
        finite = pts[:, 2] == 1.0
        rays = []
        n = len(pts)
        for i in range(n):
            j = (i + 1) % n
            if finite[i] and not finite[j]:
                rays.append((pts[i, :2].copy(), pts[j, :2].copy()))
            elif not finite[i] and finite[j]:
                rays.append((pts[j, :2].copy(), pts[i, :2].copy()))
        return pts[finite, :2].copy(), rays

    def is_bounded(self):
        """Boolean array (R,): whether each region is bounded."""
        if self.latent_dim == 1:
            return np.isfinite(self.intervals).all(axis=1)
        if self.latent_dim > 2:  # only the single region R^S of an affine generator
            return np.zeros(self.n_regions, bool)
        ideal = np.add.reduceat((self.boundary[:, 2] == 0.0).astype(np.int64), self.boundary_ptr[:-1])
        return ideal == 0

    def locate(self, Z):
        """Index of the region containing each row of Z.

        The region is the one whose sign code the generator has at z (with
        ``u >= 0`` counted as on, so points on a boundary go to the side where
        the unit is on). Points whose code belongs to no region (only possible
        inside a sliver below the S = 2 resolution, see the module notes) go
        to the region whose facet inequalities they violate least.

        Parameters
        ----------
        Z : array_like, shape (N, S)

        Returns
        -------
        ndarray of int64, shape (N,)

        Examples
        --------
        >>> import numpy as np, fastcpa
        >>> gen = fastcpa.Generator([np.array([[1.0], [1.0]]), np.ones((1, 2))],
        ...                         [np.array([0.0, -1.0]), np.zeros(1)])
        >>> part = fastcpa.partition(gen)
        >>> part.intervals
        array([[-inf,   0.],
               [  0.,   1.],
               [  1.,  inf]])
        >>> part.locate([[-3.0], [0.5], [7.0]])
        array([0, 1, 2])
        """
        from fastcpa.kernels.cpu.regions import lookup_codes

        Z = as_points(Z, self.latent_dim)
        if self.latent_dim == 1:
            return self._locate_1d(Z[:, 0])
        q = _pack_codes(self.generator.sign_codes(Z))
        idx = lookup_codes(*self._code_lookup(), q) if q.shape[1] else np.zeros(len(Z), np.int64)
        missing = np.flatnonzero(idx < 0)
        if missing.size:
            idx[missing] = self._nearest_by_facets(Z[missing])
        return idx

    def _locate_1d(self, z):
        """S = 1: the interval holding each point; a point on a boundary goes to
        the side whose code it has (units with ``u >= 0`` on), as for S = 2."""
        lo = self.intervals[:, 0]
        idx = np.maximum(np.searchsorted(lo, z, side="right") - 1, 0).astype(np.int64)
        edge = np.flatnonzero((idx > 0) & (lo[idx] == z))
        if edge.size:
            here = self.generator.sign_codes(z[edge, None])
            left = self.code_bits(idx[edge] - 1)
            idx[edge[(here == left).all(axis=1)]] -= 1
        return idx

    def _nearest_by_facets(self, Z):
        # worst facet violation of each point in each region; pick the smallest
        slack = Z @ self.facet_normal.T + self.facet_offset  # (n, F)
        worst = np.minimum.reduceat(slack, self.facet_ptr[:-1], axis=1)
        worst[:, self.facet_ptr[:-1] == self.facet_ptr[1:]] = np.inf
        return np.argmax(worst, axis=1).astype(np.int64)


def partition(generator, *, backend="auto"):
    """Compute the exact partition of latent space R^S into affine regions.

    Every region is returned, unbounded ones included; no bounding box is
    used. Supported for S = 1 (intervals) and S = 2 (convex polygons).

    Parameters
    ----------
    generator : Generator
    backend : {"auto", "cpu", "gpu"}, default "auto"
        Where to run. Only the CPU backend exists for the partition today:
        "auto" runs on the CPU and "gpu" raises.

    Returns
    -------
    Partition

    Raises
    ------
    NotImplementedError
        For S >= 3, or ``backend="gpu"``.

    Examples
    --------
    >>> import numpy as np, fastcpa
    >>> rng = np.random.default_rng(0)
    >>> gen = fastcpa.Generator([rng.normal(size=(5, 2)), rng.normal(size=(3, 5))],
    ...                         [rng.normal(size=5), rng.normal(size=3)])
    >>> part = fastcpa.partition(gen)
    >>> part.n_regions   # 5 lines in general position: 1 + 5 + 10
    16
    >>> Z = rng.normal(size=(4, 2))
    >>> r = part.locate(Z)
    >>> np.allclose(np.einsum("nds,ns->nd", part.A[r], Z) + part.b[r], gen(Z))
    True
    """
    if not isinstance(generator, Generator):
        raise TypeError(f"partition() takes a fastcpa.Generator, got {type(generator).__name__}.")
    if backend not in ("auto", "cpu", "gpu", "host", "device"):
        raise ValueError(f"backend must be 'auto', 'cpu' or 'gpu', got {backend!r}.")
    if backend in ("gpu", "device"):
        raise NotImplementedError("the partition has no GPU kernels yet; use backend='cpu' (or 'auto').")
    S = generator.latent_dim
    if S == 1:
        return _partition_1d(generator)
    if S == 2:
        return _partition_2d(generator)
    if not generator.switching.any():  # an affine generator: one region, any S
        return _partition_affine(generator)
    raise NotImplementedError(
        f"exact partitions are implemented for latent dimension 1 and 2 (and affine generators of any S); "
        f"this generator has S = {S}."
    )


def _partition_affine(gen):
    """The single region R^S of a generator whose units never switch (S >= 3)."""
    S = gen.latent_dim
    A, b = np.eye(S), np.zeros(S)
    for W, c in zip(gen.weights, gen.biases):  # slopes are all 1: h = u
        A, b = W @ A, W @ b + c
    codes = np.zeros((1, (gen.n_units + 63) // 64), np.uint64)
    return Partition(gen, A[None], b[None], codes, np.zeros(2, np.int64), np.zeros((0, S)), np.zeros(0),
                     np.zeros(0, np.int64), {})


# ----------------------------------------------------------------------------- layer maps
def _map_blocks(parent, restart=_MAP_RESTART):
    """Row blocks for :func:`~fastcpa.kernels.cpu.layer_maps.scaled_maps_product`:
    runs of one parent, cut every ``restart`` rows."""
    n = len(parent)
    cuts = np.flatnonzero(parent[1:] != parent[:-1]) + 1
    cuts = np.union1d(cuts, np.arange(0, n, restart))
    return np.append(cuts, n).astype(np.int64)


def _next_maps(U_prev, parent, code, eta, W, c, out=None):
    """Pre-activation maps of the next layer for every child region.

    ``U_prev[parent]`` are the parents' maps of this layer (rows: d/dz_i ...,
    offset); the children's post-activation maps are ``q * U_prev[parent]``
    with ``q = 1`` (on) or ``eta`` (off). Returns ``(n, S+1, out)``, or writes
    the slope rows and offset row into ``out = (A, b)`` when given.
    """
    from fastcpa.kernels.cpu.layer_maps import scaled_maps_product

    n, S1 = len(parent), U_prev.shape[1]
    Wt = np.ascontiguousarray(W.T)
    if out is None:
        M = np.empty((n, S1, W.shape[0]))
        scaled_maps_product(U_prev, parent, code, eta, Wt, c, _map_blocks(parent), M[:, : S1 - 1], M[:, S1 - 1])
        return M
    scaled_maps_product(U_prev, parent, code, eta, Wt, c, _map_blocks(parent), *out)
    return out


def _initial_maps(S, W, c):
    U = np.empty((1, S + 1, W.shape[0]))
    U[0, :S] = W.T
    U[0, S] = c
    return U


def _output_maps(gen, U, parent, code):
    """A (R, D, S) and b (R, D) from the last hidden layer's maps."""
    S = gen.latent_dim
    if gen.n_layers == 1:
        W, c = gen.weights[0], gen.biases[0]
        return W[None].copy(), c[None].copy()
    A = np.empty((len(parent), gen.output_dim, S))
    b = np.empty((len(parent), gen.output_dim))
    _next_maps(U, parent, code, gen.slopes[-1], gen.weights[-1], gen.biases[-1], out=(np.swapaxes(A, 1, 2), b))
    return A, b


def _compose_codes(gen, parents, codes):
    """Full (R, n_units) codes of the final regions from the per-layer codes."""
    R = len(codes[-1]) if codes else 1
    out = np.zeros((R, gen.n_units), dtype=bool)
    idx = np.arange(R)
    stop = gen.n_units
    for l in range(len(codes) - 1, -1, -1):
        w = codes[l].shape[1]
        out[:, stop - w:stop] = codes[l][idx]
        stop -= w
        idx = parents[l][idx]
    return out


def _pack_codes(bits):
    """Pack (N, n_units) bools into (N, ceil(n_units/64)) uint64 words, bit k%64 of word k//64."""
    N, n = bits.shape
    nw = (n + 63) // 64
    padded = np.zeros((N, nw * 64), dtype=bool)
    padded[:, :n] = bits
    return np.packbits(padded, axis=1, bitorder="little").view("<u8").astype(np.uint64).reshape(N, nw)


def _unpack_codes(words, n_units):
    bytes_ = np.ascontiguousarray(words.astype("<u8")).view(np.uint8).reshape(len(words), -1)
    return np.unpackbits(bytes_, axis=1, bitorder="little")[:, :n_units].astype(bool)


# ----------------------------------------------------------------------------- S = 1
def _sweep_1d(gen, want_codes):
    """The hidden layers' sweeps of :func:`_partition_1d`: ``(lo, hi, lo_unit, hi_unit,
    changes, h0s, h0o, parents, codes)``, the last two (per layer: each child's parent
    interval and its sign code) with ``want_codes`` only (a layer's codes are regions x
    units: a million-unit layer's would not fit)."""
    from fastcpa.kernels.cpu.regions import add_sparse_columns, sweep_intervals

    lo = np.array([-np.inf])
    hi = np.array([np.inf])
    lo_unit = np.array([-1], dtype=np.int64)
    hi_unit = np.array([-1], dtype=np.int64)
    switching_all = gen.switching
    unit_offset = 0
    # state carried between layers: outputs' maps on the first interval and
    # their slope changes across the boundaries (dense part + sparse part)
    h0s, h0o = np.ones(1), np.zeros(1)
    changes = (np.zeros(0, np.int64), np.zeros((0, 1)), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    parents, codes = [], []
    for l in range(gen.n_layers - 1):
        W, c, eta = gen.weights[l], gen.biases[l], gen.slopes[l]
        w = W.shape[0]
        s0, o0 = W @ h0s, W @ h0o + c
        dS = _boundary_slope_changes(len(lo) - 1, changes, gen.weights_t[l], add_sparse_columns)
        switching = np.ascontiguousarray(switching_all[unit_offset:unit_offset + w])
        (parent, lo, hi, lo_unit, hi_unit, code, dense_pos, dense, sp_pos, sp_unit, sp_val, h0s, h0o) = \
            sweep_intervals(lo, hi, lo_unit, hi_unit, s0, o0, dS, switching, eta, unit_offset, want_codes)
        parents.append(parent)
        codes.append(code)
        changes = (dense_pos, dense, sp_pos, sp_unit, sp_val)
        unit_offset += w
    return lo, hi, lo_unit, hi_unit, changes, h0s, h0o, parents, codes


def _sweep_codes(gen):
    """The bit-packed codes of an S = 1 partition's intervals, each unit's sign as the sweep
    decided it from its own breakpoints (``regions.unit_on_interval``): the sweeps again,
    keeping their codes (no forward pass at the intervals' midpoints, which at width 1024
    cost about a likelihood pass, and no float strictly inside a too thin interval needed)."""
    *_, parents, codes = _sweep_1d(gen, True)
    packed = _pack_codes(_compose_codes(gen, parents, codes))
    packed.setflags(write=False)
    return packed


def _partition_1d(gen):
    """Sweep the line layer by layer (see ``kernels.cpu.regions.sweep_intervals``).

    Layer l needs the slope change of u^l across every boundary of the current
    partition: ``W^l`` times the slope change of ``h^(l-1)``. That change is
    sparse (a few columns of W^l) at boundaries made by layer l-1 and dense
    at older ones, which go through one GEMM. The output maps A, b follow by
    the same rule and a prefix sum, so no per-region dense map is formed; where
    ``regions x parameters`` is within ``_ANCHOR_FLOPS``, each region's map is
    then taken from its own pattern instead (the prefix sum carries eps times
    the largest slope met on the way into every later region).
    """
    from fastcpa.kernels.cpu.regions import add_sparse_columns

    lo, hi, lo_unit, hi_unit, changes, h0s, h0o, _, _ = _sweep_1d(gen, False)
    W, c = gen.weights[-1], gen.biases[-1]
    dA = _boundary_slope_changes(len(lo) - 1, changes, gen.weights_t[-1], add_sparse_columns)
    A = np.empty((len(lo), W.shape[0]))
    A[0] = W @ h0s
    np.cumsum(dA, axis=0, out=A[1:])
    A[1:] += A[0]
    b = np.empty_like(A)
    b[0] = W @ h0o + c
    np.cumsum(-lo[1:, None] * dA, axis=0, out=b[1:])
    b[1:] += b[0]
    A = A[:, :, None]
    # facets: z >= lo (normal +1) and z <= hi (normal -1), finite ends only
    has_lo, has_hi = np.isfinite(lo), np.isfinite(hi)
    nf = has_lo.astype(np.int64) + has_hi
    facet_ptr = np.concatenate(([0], np.cumsum(nf))).astype(np.int64)
    F = int(facet_ptr[-1])
    normal = np.empty((F, 1))
    offset = np.empty(F)
    unit = np.empty(F, np.int64)
    first = facet_ptr[:-1]
    normal[first[has_lo], 0] = 1.0
    offset[first[has_lo]] = -lo[has_lo]
    unit[first[has_lo]] = lo_unit[has_lo]
    last = facet_ptr[1:] - 1
    normal[last[has_hi], 0] = -1.0
    offset[last[has_hi]] = hi[has_hi]
    unit[last[has_hi]] = hi_unit[has_hi]
    geometry = {"intervals": np.stack([lo, hi], axis=1)}
    packed = None  # the codes, formed on first use (Partition.codes)
    anchors = None
    if len(lo) * sum(W.size for W in gen.weights) <= _ANCHOR_FLOPS:
        # The prefix sums above carry eps times the largest slope met on the way: a
        # flat region beside steep ones got |A| ~ 8 where its map is exactly 0 (all
        # first-layer units off), and at sigma_x 0.05 that moved log p by 90%. Where
        # affordable, each region's map comes from its own pattern, as products.
        iv = geometry["intervals"]
        Z = np.clip(0.0, iv[:, :1], iv[:, 1:])
        packed = _sweep_codes(gen)
        G, A = _piece_forward(gen, Z, lambda rows: _unpack_codes(packed[rows], gen.n_units), slopes=True)
        b = G - A[:, :, 0] * Z
        anchors = (Z, G)  # what Partition.anchors computes (the same points, the same pass): kept
    part = Partition(gen, A, b, packed, facet_ptr, normal, offset, unit, geometry)
    if anchors is not None:
        for a in anchors:
            a.setflags(write=False)
        part._anchors = anchors
    return part


# Multiply-adds the S = 1 anchors' forward passes may cost (see Partition.anchors).
_ANCHOR_FLOPS = 2e8


def _region_anchors(part):
    """``(Z, G)`` of :attr:`Partition.anchors`."""
    gen = part.generator
    R, S, D = part.n_regions, part.latent_dim, part.output_dim
    if S == 1 and R > 1:
        Z = np.clip(0.0, part.intervals[:, :1], part.intervals[:, 1:])  # the point nearest the origin
    elif S == 2 and R > 1:
        # the finite boundary point nearest the origin (a far vertex would make
        # every fitted point an extrapolation), and the origin in its own region
        B, ptr = part.boundary, part.boundary_ptr
        norm = np.where(B[:, 2] == 1.0, np.hypot(B[:, 0], B[:, 1]), np.inf)
        owner = np.repeat(np.arange(R), np.diff(ptr))
        order = np.lexsort((norm, owner))
        Z = B[order[ptr[:-1]], :2].copy()
        Z[part.locate(np.zeros((1, 2)))[0]] = 0.0
    else:  # one region: the whole space
        Z = np.zeros((R, S))
    if R * sum(W.size for W in gen.weights) <= _ANCHOR_FLOPS:
        G = _piece_forward(gen, Z, part.code_bits)
    else:  # too many for the forward pass: the maps themselves (b's rounding stays)
        G = np.einsum("rds,rs->rd", part.A, Z) + part.b
    return np.ascontiguousarray(Z), np.ascontiguousarray(G)


def _piece_forward(gen, Z, code_bits, slopes=False):
    """``g_r(Z[r])``: the forward pass with each region's own on/off pattern
    ``code_bits(rows)`` (and with ``slopes``, the region's map ``A[r]`` too: the
    pattern's products, carried as a tangent in the same pass).

    An anchor on (or, by the rounding of a breakpoint or vertex, just past) a
    region's boundary would otherwise be evaluated on the neighbouring piece,
    off this region's map by the slope jump times that rounding."""
    R = len(Z)
    out = np.empty((R, gen.output_dim))
    A = np.empty((R, gen.output_dim, Z.shape[1])) if slopes else None
    step = max(1, (1 << 22) // max(gen.n_units, max(W.shape[0] for W in gen.weights)))
    for a in range(0, R, step):
        rows = np.arange(a, min(R, a + step))
        bits = code_bits(rows) if gen.n_units else None
        h, k = Z[rows], 0
        t = np.broadcast_to(np.eye(Z.shape[1]), (len(rows), Z.shape[1], Z.shape[1])) if slopes else None
        for W, c, eta in zip(gen.weights[:-1], gen.biases[:-1], gen.slopes):
            u = matmul(h, W.T)
            u += c
            w = W.shape[0]
            on = bits[:, k:k + w] | (eta == 1.0)
            h = np.where(on, u, eta * u)
            if slopes:  # (rows, S, w): d h / d z, one GEMM (a stacked matmul makes a small one per row)
                t = matmul(t.reshape(-1, t.shape[2]), W.T).reshape(len(rows), Z.shape[1], w)
                t = np.where(on[:, None, :], t, eta * t)
            k += w
        out[rows] = matmul(h, gen.weights[-1].T) + gen.biases[-1]
        if slopes:
            A[rows] = matmul(t.reshape(-1, t.shape[2]), gen.weights[-1].T).reshape(len(rows), Z.shape[1], -1
                                                                                   ).transpose(0, 2, 1)
    return (out, A) if slopes else out


def _boundary_slope_changes(n_boundaries, changes, Wt, add_sparse_columns):
    """``W @ (slope change of h)`` at every boundary (``Wt = W.T``): GEMM for
    the dense part, a few columns of W for the sparse part."""
    dense_pos, dense, sp_pos, sp_unit, sp_val = changes
    out = np.zeros((n_boundaries, Wt.shape[1]))
    if len(dense_pos):
        out[dense_pos] = matmul(dense, Wt)
    add_sparse_columns(out, sp_pos, sp_unit, sp_val, Wt)
    return out


# ----------------------------------------------------------------------------- S = 2
def _plane():
    """R^2 as an oriented projective polygon: three ideal points, 120 degrees apart."""
    r3 = np.sqrt(3.0) / 2.0
    P = np.array([[0.0, 1.0, 0.0], [-r3, -0.5, 0.0], [r3, -0.5, 0.0]])
    return np.array([0, 3], np.int64), P, np.zeros((3, 3)), np.full(3, -1, np.int64)


def _partition_2d(gen, rel_tol=REL_TOL_2D):
    from fastcpa.kernels.cpu.regions import split_polygons_count, split_polygons_fill, split_polygons_serial

    ptr, P, L, EU = _plane()
    parents, codes = [], []
    switching_all = gen.switching
    unit_offset = 0
    U = parent = code = None
    for l in range(gen.n_layers - 1):
        W, c = gen.weights[l], gen.biases[l]
        if l == 0:
            U = _initial_maps(2, W, c)
        else:
            U = _next_maps(U, parent, code, gen.slopes[l - 1], W, c)
        w = W.shape[0]
        switching = np.ascontiguousarray(switching_all[unit_offset:unit_offset + w])
        if _use_parallel_split(len(ptr) - 1):
            # two parallel passes (count, fill) split every parent twice: worth it on > 2 threads
            n_pieces, n_points = split_polygons_count(ptr, P, L, EU, U, switching, unit_offset, rel_tol)
            piece_off = np.concatenate(([0], np.cumsum(n_pieces)[:-1])).astype(np.int64)
            point_off = np.concatenate(([0], np.cumsum(n_points)[:-1])).astype(np.int64)
            n, nv = int(n_pieces.sum()), int(n_points.sum())
            parent = np.empty(n, np.int64)
            c_ptr = np.empty(n + 1, np.int64)
            c_P, c_L, c_U = np.empty((nv, 3)), np.empty((nv, 3)), np.empty(nv, np.int64)
            code = np.empty((n, w), dtype=bool)
            split_polygons_fill(ptr, P, L, EU, U, switching, unit_offset, rel_tol, piece_off, point_off,
                                parent, c_ptr, c_P, c_L, c_U, code)
            c_ptr[n] = nv
        else:
            parent, c_ptr, c_P, c_L, c_U, code = split_polygons_serial(ptr, P, L, EU, U, switching, unit_offset,
                                                                        rel_tol)
        ptr, P, L, EU = c_ptr, c_P, c_L, c_U
        parents.append(parent)
        codes.append(code)
        unit_offset += w
    A, b = _output_maps(gen, U, parent, code)
    facet_ptr, normal, offset, unit = _polygon_facets(ptr, L, EU)
    geometry = {"boundary_ptr": ptr, "boundary": P, "boundary_unit": EU}
    packed = _pack_codes(_compose_codes(gen, parents, codes))
    return Partition(gen, A, b, packed, facet_ptr, normal, offset, unit, geometry)


def _cyclic_next(ptr):
    """Index of the next boundary point within each polygon (cyclically)."""
    nxt = np.arange(1, ptr[-1] + 1, dtype=np.int64)
    nxt[ptr[1:] - 1] = ptr[:-1]
    return nxt


def _facet_starts(ptr, EU):
    """Edges that start a facet: owned by a unit, and not continuing the previous edge's unit.

    Consecutive edges on one unit only occur around the finite point carried
    by a vertex-free boundary line; they form one facet.
    """
    prev = np.arange(-1, ptr[-1] - 1, dtype=np.int64)
    prev[ptr[:-1]] = ptr[1:] - 1
    return (EU >= 0) & (EU != EU[prev])


def _polygon_facets(ptr, L, EU):
    """Facets of each polygon: its edges, merging consecutive edges on one unit's line."""
    keep = _facet_starts(ptr, EU)
    counts = np.add.reduceat(keep.astype(np.int64), ptr[:-1]) if len(EU) else np.zeros(len(ptr) - 1, np.int64)
    facet_ptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    lines = L[keep]
    nrm = np.hypot(lines[:, 0], lines[:, 1])
    return facet_ptr, lines[:, :2] / nrm[:, None], lines[:, 2] / nrm, EU[keep].copy()


# ----------------------------------------------------------------------------- adjacency
def _facet_points(part):
    """A point in the relative interior of every facet."""
    if part.latent_dim == 1:
        return (-part.facet_offset * part.facet_normal[:, 0])[:, None]
    ptr, B, EU = part.boundary_ptr, part.boundary, part.boundary_unit
    nxt = _cyclic_next(ptr)
    i = np.flatnonzero(_facet_starts(ptr, EU))
    j = nxt[i]
    p, q = B[i], B[j]
    run = EU[j] == EU[i]  # the facet continues past point j, which lies inside it
    pts = np.where(run[:, None], q[:, :2], 0.5 * (p[:, :2] + q[:, :2]))
    # an edge with one ideal end is a ray: step from its finite end along it
    ray_out = ~run & (p[:, 2] == 1.0) & (q[:, 2] == 0.0)
    ray_in = ~run & (p[:, 2] == 0.0) & (q[:, 2] == 1.0)
    pts[ray_out] = p[ray_out, :2] + q[ray_out, :2] * (1.0 + np.hypot(p[ray_out, 0], p[ray_out, 1]))[:, None]
    pts[ray_in] = q[ray_in, :2] + p[ray_in, :2] * (1.0 + np.hypot(q[ray_in, 0], q[ray_in, 1]))[:, None]
    return pts


def _limit_codes(gen, Z, direction, rel_tol=1e-9):
    """Sign codes of the region entered from each z along ``direction`` (z + 0+ d).

    Units within ``rel_tol`` of zero at z are decided by their directional
    derivative, so a point on a facet yields the code on the chosen side.
    """
    h, dh = Z, direction
    out = []
    for W, c, eta in zip(gen.weights[:-1], gen.biases[:-1], gen.slopes):
        u = h @ W.T + c
        du = dh @ W.T
        # rounding in h is relative to its norm, so that sets the scale of "zero"
        scale = np.linalg.norm(h, axis=1, keepdims=True) * np.linalg.norm(W, axis=1) + np.abs(c)
        on = np.where(np.abs(u) <= rel_tol * scale, du >= 0, u >= 0)
        out.append(on & (eta != 1.0))
        h = np.where(on, u, eta * u)
        dh = np.where(on, du, eta * du)
    return np.concatenate(out, axis=1) if out else np.zeros((len(Z), 0), bool)


def _facet_neighbors(part):
    """Region across each facet.

    Crossing a facet of unit k at a point where no other unit vanishes flips
    bit k alone (every other pre-activation is continuous and nonzero there),
    so the neighbour is looked up by that code and confirmed geometrically:
    the facet point must satisfy the candidate's inequalities. Facets where
    that fails (several units vanish there: degenerate input) are resolved by
    the directional forward pass of :func:`_limit_codes`.
    """
    from fastcpa.kernels.cpu.regions import lookup_codes

    F = len(part.facet_unit)
    if F == 0:
        return np.zeros(0, np.int64)
    owner = np.repeat(np.arange(part.n_regions), np.diff(part.facet_ptr))
    if part.latent_dim == 1:  # intervals are sorted
        return np.where(part.facet_normal[:, 0] > 0, owner - 1, owner + 1).astype(np.int64)
    unit = part.facet_unit
    q = part.codes[owner].copy()
    q[np.arange(F), unit // 64] ^= np.left_shift(np.uint64(1), (unit % 64).astype(np.uint64))
    nb = lookup_codes(*part._code_lookup(), q)
    pts = _facet_points(part)
    ok = nb >= 0
    ok[ok] = _inside_facets(part, nb[ok], pts[ok])
    bad = np.flatnonzero(~ok)
    if bad.size:
        qb = _pack_codes(_limit_codes(part.generator, pts[bad], -part.facet_normal[bad]))
        nb[bad] = lookup_codes(*part._code_lookup(), qb)
    return nb


def _inside_facets(part, regions, pts, rel_tol=1e-9):
    """Whether each point satisfies every facet inequality of its region (up to rounding)."""
    starts, stops = part.facet_ptr[regions], part.facet_ptr[regions + 1]
    lens = stops - starts
    idx = np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())
    which = np.repeat(np.arange(len(regions)), lens)
    P = pts[which]
    slack = np.einsum("fs,fs->f", part.facet_normal[idx], P) + part.facet_offset[idx]
    tol = rel_tol * (np.linalg.norm(P, axis=1) + np.abs(part.facet_offset[idx]))
    ok = np.ones(len(regions), bool)
    np.logical_and.at(ok, which, slack >= -tol)
    return ok
