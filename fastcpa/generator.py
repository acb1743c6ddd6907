"""Continuous piecewise-affine (CPA) generators: MLPs with two-slope activations."""

import numbers

import numpy as np

from ._threads import matmul
from ._validation import as_float64, as_points

# Rows x width of the hidden activations evaluated at once (2^22 doubles = 32 MiB).
_BLOCK_ELEMENTS = 1 << 22

__all__ = ["Generator", "ACTIVATIONS"]

#: Activation name -> negative-side slope eta (act(u) = u for u >= 0, eta * u otherwise).
#: ``leaky_relu`` and ``prelu`` take their slope from the ``slope`` argument.
ACTIVATIONS = {"relu": 0.0, "leaky_relu": None, "prelu": None, "abs": -1.0, "linear": 1.0}


class Generator:
    """A multilayer perceptron with two-slope activations, g: R^S -> R^D.

    Layers ``l = 1..L`` compute ``u = W[l] h + c[l]``; hidden layers apply
    ``act(u) = u if u >= 0 else eta * u`` and the output layer is affine.
    ReLU has ``eta = 0``, leaky-ReLU ``eta = slope``, absolute value
    ``eta = -1``, linear ``eta = 1`` and PReLU a per-unit ``eta``.

    Parameters
    ----------
    weights : sequence of array_like
        ``weights[l]`` has shape ``(out, in)`` like ``torch.nn.Linear.weight``;
        ``weights[0]`` has ``in = S`` (latent dimension), the last has
        ``out = D``. Copied as float64 (NumPy arrays, lists, torch tensors;
        the caller's arrays are neither kept nor made read-only, so editing
        them later does not change the generator).
    biases : sequence of array_like
        ``biases[l]`` has shape ``(out,)`` (copied likewise).
    activation : str or sequence of str, default "relu"
        One of ``"relu"``, ``"leaky_relu"``, ``"prelu"``, ``"abs"``,
        ``"linear"`` for every hidden layer, or one name per hidden layer.
    slope : float or sequence, default 0.01
        Negative-side slope for ``"leaky_relu"`` / ``"prelu"`` layers: a float
        for all of them, or one entry per hidden layer (a float, or an array of
        length ``width`` for per-unit PReLU slopes). Any finite value is a
        valid two-slope unit; NaN/inf are rejected. Ignored for other layers.

    Attributes
    ----------
    weights, biases : list of numpy.ndarray
        Read-only float64 copies.
    slopes : list of numpy.ndarray
        Per hidden layer, the per-unit negative-side slope ``eta``.
    activations : list of str
        Per hidden layer, the activation name.
    latent_dim, output_dim : int
        ``S`` and ``D``.
    widths : tuple of int
        Hidden-layer widths.
    n_units : int
        Total number of hidden units (the length of a region's sign code).

    Raises
    ------
    ValueError
        If the shapes do not chain, an activation is unknown, or a value is
        NaN/inf.
    TypeError
        If an array is not real-numeric, or ``activation`` is not a name or a
        list of names (e.g. ``None``).

    Examples
    --------
    >>> import numpy as np
    >>> import fastcpa
    >>> W1, c1 = np.array([[1.0], [-1.0]]), np.array([0.0, 1.0])
    >>> W2, c2 = np.array([[1.0, 2.0]]), np.array([0.5])
    >>> gen = fastcpa.Generator([W1, W2], [c1, c2], activation="relu")
    >>> gen.latent_dim, gen.output_dim, gen.n_units
    (1, 1, 2)
    >>> gen(np.array([[0.0], [2.0]]))
    array([[2.5],
           [2.5]])
    """

    def __init__(self, weights, biases, activation="relu", slope=0.01):
        if isinstance(weights, np.ndarray) or not hasattr(weights, "__len__"):
            raise TypeError("weights must be a list of 2-D arrays, one per layer (got a single array).")
        if len(weights) == 0:
            raise ValueError("weights is empty: a generator needs at least one (output) layer.")
        if biases is None or len(biases) != len(weights):
            n_b = None if biases is None else len(biases)
            raise ValueError(f"got {len(weights)} weight matrices but {n_b} bias vectors; give one bias per layer.")
        Ws, cs = [], []
        for l, (W, c) in enumerate(zip(weights, biases)):
            # own copies: the caller's arrays stay writable, and editing them later
            # cannot go stale under a cached partition
            W = as_float64(W, f"weights[{l}]", ndim=2, copy=True)
            c = as_float64(c, f"biases[{l}]", ndim=1, copy=True)
            if c.shape[0] != W.shape[0]:
                raise ValueError(f"biases[{l}] has length {c.shape[0]} but weights[{l}] has {W.shape[0]} rows (out, in).")
            if l > 0 and W.shape[1] != Ws[-1].shape[0]:
                raise ValueError(
                    f"weights[{l}] has {W.shape[1]} columns but layer {l - 1} has {Ws[-1].shape[0]} outputs; "
                    "weights are (out, in) like torch.nn.Linear.weight."
                )
            if W.shape[0] == 0 or W.shape[1] == 0:
                raise ValueError(f"weights[{l}] has an empty dimension {W.shape}.")
            # own copies: freezing the caller's arrays made their later edits fail ("assignment
            # destination is read-only"), and editing shared ones would change the generator
            W, c = W.copy(), c.copy()
            for a in (W, c):
                a.setflags(write=False)
            Ws.append(W)
            cs.append(c)
        self.weights, self.biases = Ws, cs
        self.activations, self.slopes = _parse_activations(activation, slope, [W.shape[0] for W in Ws[:-1]])

    # ------------------------------------------------------------------ properties
    @property
    def latent_dim(self):
        """Latent dimension S."""
        return self.weights[0].shape[1]

    @property
    def output_dim(self):
        """Output dimension D."""
        return self.weights[-1].shape[0]

    @property
    def widths(self):
        """Hidden-layer widths."""
        return tuple(W.shape[0] for W in self.weights[:-1])

    @property
    def n_units(self):
        """Total number of hidden units."""
        return int(sum(self.widths))

    @property
    def n_layers(self):
        """Number of affine layers L (hidden layers + output layer)."""
        return len(self.weights)

    def __repr__(self):
        sizes = [self.latent_dim, *self.widths, self.output_dim]
        acts = sorted(set(self.activations)) or ["none"]
        return f"Generator(sizes={sizes}, activations={acts})"

    # ------------------------------------------------------------------ evaluation
    def __call__(self, Z):
        """Evaluate g at the rows of ``Z``.

        Parameters
        ----------
        Z : array_like, shape (N, S)
            Latent points (a 1-D array is read as N points when S = 1).

        Returns
        -------
        numpy.ndarray, shape (N, D)
        """
        Z = as_points(Z, self.latent_dim)
        # rows in blocks, so that hidden activations stay ~32 MB however many rows
        width = max(W.shape[0] for W in self.weights)
        block = max(1, _BLOCK_ELEMENTS // width)
        out = np.empty((Z.shape[0], self.output_dim))
        for a in range(0, Z.shape[0], block):
            h = Z[a:a + block]
            for W, c, eta in zip(self.weights[:-1], self.biases[:-1], self.slopes):
                u = h @ W.T + c
                h = np.where(u >= 0, u, eta * u)
            out[a:a + block] = h @ self.weights[-1].T + self.biases[-1]
        return out

    def sign_codes(self, Z):
        """Per-unit activation pattern at the rows of ``Z`` (True = "on", u >= 0).

        Units of ``linear`` layers (eta = 1) never switch and are reported
        False: they do not split latent space.

        Parameters
        ----------
        Z : array_like, shape (N, S)

        Returns
        -------
        numpy.ndarray of bool, shape (N, n_units)
        """
        h = as_points(Z, self.latent_dim)
        out = []
        for W, c, eta in zip(self.weights[:-1], self.biases[:-1], self.slopes):
            u = matmul(h, W.T)
            u += c
            on = u >= 0
            out.append(on & (eta != 1.0))
            h = np.where(on, u, eta * u)
        if not out:
            return np.zeros((h.shape[0], 0), dtype=bool)
        return np.concatenate(out, axis=1)

    @property
    def weights_t(self):
        """C-contiguous transposes of the weights (read-only, built once)."""
        if getattr(self, "_weights_t", None) is None:
            wt = [np.ascontiguousarray(W.T) for W in self.weights]
            for a in wt:
                a.setflags(write=False)
            self._weights_t = wt
        return self._weights_t

    @property
    def switching(self):
        """Boolean mask (n_units,) of units whose two slopes differ (they split space)."""
        if not self.slopes:
            return np.zeros(0, dtype=bool)
        return np.concatenate([eta != 1.0 for eta in self.slopes])

    @classmethod
    def from_torch(cls, module):
        """Convert a PyTorch ``nn.Sequential`` into a :class:`Generator`.

        Supported layers: ``Linear``, ``ReLU``, ``LeakyReLU``, ``PReLU``,
        ``Identity``, and in eval mode ``Dropout`` (the identity) and
        ``BatchNorm1d`` (folded exactly into the neighbouring affine layer).
        Parameters are copied as float64.

        Parameters
        ----------
        module : torch.nn.Sequential

        Returns
        -------
        Generator

        Raises
        ------
        TypeError
            For a layer that is not piecewise-affine (named in the message).
        ValueError
            For layers in training mode whose eval behaviour differs, or an
            ordering that is not Linear (activation Linear)*.
        """
        from ._torch import generator_from_torch

        return generator_from_torch(cls, module)


def _parse_activations(activation, slope, widths):
    """Per hidden layer: the activation name and the per-unit slopes ``eta``.

    Any finite slope gives a continuous two-slope (piecewise-affine) unit, so
    every finite value is accepted (``slope > 1`` or ``< 0`` included: ``abs``
    is ``eta = -1``); NaN/inf, bools and non-numbers are rejected.
    """
    n_hidden = len(widths)
    valid = f"one of {sorted(ACTIVATIONS)}, or a list/tuple of such names with one per hidden layer ({n_hidden})"
    if isinstance(activation, str):
        names = [activation] * n_hidden
    elif isinstance(activation, (list, tuple, np.ndarray)):
        names = list(activation)
        if len(names) != n_hidden:
            raise ValueError(f"activation lists {len(names)} names but the network has {n_hidden} hidden layers; "
                             f"give {valid}.")
    else:
        raise TypeError(f"activation must be {valid}; got {activation!r} of type {type(activation).__name__}.")
    if isinstance(slope, (bool, np.bool_)):
        raise TypeError(f"slope must be a real number or a list with one entry per hidden layer, got {slope!r}.")
    if isinstance(slope, numbers.Real) or (isinstance(slope, np.ndarray) and slope.ndim == 0):
        slopes_in = [slope] * n_hidden
    elif isinstance(slope, (list, tuple, np.ndarray)) or type(slope).__module__.split(".")[0] == "torch":
        slopes_in = list(slope)
        if len(slopes_in) != n_hidden:
            raise ValueError(f"slope lists {len(slopes_in)} entries but the network has {n_hidden} hidden layers; "
                             "give a float for all of them or one entry per hidden layer.")
    else:
        raise TypeError(f"slope must be a real number or a list with one entry per hidden layer, got {slope!r} "
                        f"of type {type(slope).__name__}.")
    etas = []
    for l, (name, width, s) in enumerate(zip(names, widths, slopes_in)):
        if not isinstance(name, str) or name not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {name!r} for hidden layer {l}; choose from {sorted(ACTIVATIONS)} "
                "(only two-slope, piecewise-affine activations keep the generator CPA)."
            )
        eta = ACTIVATIONS[name]
        if eta is None:
            if isinstance(s, (bool, np.bool_)):
                raise TypeError(f"slope[{l}] must be a real number (or an array of per-unit slopes), got {s!r}.")
            eta = as_float64(s, f"slope[{l}]")
            if eta.ndim == 0:
                eta = np.full(width, float(eta))
            elif eta.shape != (width,):
                raise ValueError(f"slope[{l}] has shape {eta.shape}; give a float or an array of length {width}.")
            else:
                eta = eta.copy()
        else:
            eta = np.full(width, eta)
        eta.setflags(write=False)
        etas.append(eta)
    return names, etas
