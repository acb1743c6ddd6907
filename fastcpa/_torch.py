"""Conversion of a PyTorch ``nn.Sequential`` into a :class:`fastcpa.Generator`.

PyTorch is an optional dependency: it is imported only when
:func:`generator_from_torch` runs (``pip install "fastcpa[torch]"``; a CPU
build is enough).

The network is read as a list of affine pieces (``Linear``, and ``BatchNorm1d``
in eval mode, which is a per-feature affine map) and two-slope activations
(``ReLU``, ``LeakyReLU``, ``PReLU``); ``Identity`` and eval-mode ``Dropout``
are skipped. Runs of consecutive affine pieces are composed into a single
affine layer in float64, which is exact up to rounding: this folds a
``BatchNorm1d`` into the ``Linear`` before it (output side) or after it (input
side), and merges ``Linear`` layers with nothing between them (their product
is one affine map, so no non-switching ``"linear"`` layer is added). The
result must read ``affine, (activation, affine)*``.
"""

import numpy as np

__all__ = ["generator_from_torch"]

_EXPECTED = (
    "fastcpa expects nn.Sequential(Linear, act, Linear, act, ..., Linear): an activation "
    "(ReLU, LeakyReLU, PReLU) between consecutive Linear layers and an affine output layer"
)

_SUPPORTED = "Linear, ReLU, LeakyReLU, PReLU, Identity, and in eval mode Dropout and BatchNorm1d"

#: Activations that are smooth (or otherwise not piecewise-affine) somewhere.
_NOT_PIECEWISE_AFFINE = {
    "Tanh", "Sigmoid", "GELU", "Softplus", "ELU", "SELU", "CELU", "SiLU", "Mish",
    "Softsign", "LogSigmoid", "Tanhshrink", "Softmax", "LogSoftmax", "Softmin",
    "Softmax2d", "Hardswish", "GLU", "MultiheadAttention",
}

#: Piecewise-affine, but with more than two pieces or a breakpoint away from 0.
_TOO_MANY_PIECES = {"ReLU6", "Hardtanh", "Hardsigmoid", "Hardshrink", "Softshrink", "Threshold", "RReLU"}


class _Affine:
    """Affine map x -> A x + b; ``A`` is a matrix (``diag=False``) or a diagonal vector."""

    __slots__ = ("A", "b", "diag", "names")

    def __init__(self, A, b, diag, names):
        self.A, self.b, self.diag, self.names = A, b, diag, names

    @property
    def in_dim(self):
        return self.A.shape[0] if self.diag else self.A.shape[1]

    @property
    def out_dim(self):
        return self.A.shape[0]

    def then(self, nxt):
        """Return ``nxt o self`` (apply ``self`` first)."""
        if nxt.in_dim != self.out_dim:
            raise ValueError(
                f"{nxt.names[0]} expects {nxt.in_dim} input features but {self.names[-1]} "
                f"produces {self.out_dim}; the layer sizes do not chain."
            )
        names = self.names + nxt.names
        if nxt.diag and self.diag:
            return _Affine(nxt.A * self.A, nxt.A * self.b + nxt.b, True, names)
        if nxt.diag:  # scale the rows of self (output side)
            return _Affine(nxt.A[:, None] * self.A, nxt.A * self.b + nxt.b, False, names)
        if self.diag:  # scale the columns of nxt (input side)
            return _Affine(nxt.A * self.A[None, :], nxt.A @ self.b + nxt.b, False, names)
        return _Affine(nxt.A @ self.A, nxt.A @ self.b + nxt.b, False, names)

    def matrix(self):
        return np.diag(self.A) if self.diag else self.A


def _import_torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - exercised only without torch
        raise ImportError(
            'Generator.from_torch needs PyTorch: pip install "fastcpa[torch]" (a CPU build of torch is enough).'
        ) from exc
    return torch


def _flatten(torch, seq, prefix=""):
    """Yield ``(name, layer)`` for the leaves of a (possibly nested) Sequential."""
    for key, layer in seq.named_children():
        name = f"{prefix}{key}"
        if isinstance(layer, torch.nn.Sequential):
            yield from _flatten(torch, layer, prefix=f"{name}.")
        else:
            yield name, layer


def _to_numpy(torch, tensor, what):
    lazy = tuple(
        getattr(torch.nn.parameter, n) for n in ("UninitializedParameter", "UninitializedBuffer")
        if hasattr(torch.nn.parameter, n)
    )
    if lazy and isinstance(tensor, lazy):
        raise ValueError(f"{what} is not initialised yet (lazy module): run one forward pass before converting.")
    return tensor.detach().cpu().double().numpy().copy()


def _check_eval(layer, label):
    if layer.training:
        raise ValueError(
            f"{label} is in training mode, where its output is random or depends on the batch; "
            "call module.eval() before Generator.from_torch(module)."
        )


def _batchnorm_affine(torch, layer, label):
    _check_eval(layer, label)
    if layer.running_mean is None or layer.running_var is None:
        raise ValueError(
            f"{label} has no running statistics (track_running_stats=False), so even in eval mode it "
            "normalises with batch statistics and is not a fixed affine map; use track_running_stats=True."
        )
    mean = _to_numpy(torch, layer.running_mean, f"{label}.running_mean")
    var = _to_numpy(torch, layer.running_var, f"{label}.running_var")
    scale = 1.0 / np.sqrt(var + float(layer.eps))
    shift = -mean * scale
    if layer.weight is not None:
        gamma = _to_numpy(torch, layer.weight, f"{label}.weight")
        scale, shift = gamma * scale, gamma * shift
    if layer.bias is not None:
        shift = shift + _to_numpy(torch, layer.bias, f"{label}.bias")
    return _Affine(scale, shift, True, [label])


def _unsupported(label, name):
    if name in _NOT_PIECEWISE_AFFINE:
        why = (
            "is not piecewise-affine: fastcpa needs two-slope activations (ReLU, LeakyReLU, PReLU) "
            "between Linear layers"
        )
    elif name in _TOO_MANY_PIECES:
        why = (
            "is piecewise-affine but not a two-slope activation with its kink at 0: fastcpa supports "
            "ReLU, LeakyReLU and PReLU between Linear layers"
        )
    else:
        why = f"is not supported: fastcpa converts only {_SUPPORTED} (a piecewise-affine MLP)"
    return TypeError(f"{label} {why}.")


def generator_from_torch(cls, module):
    """Convert a PyTorch ``nn.Sequential`` into a generator of class ``cls``.

    Implements :meth:`fastcpa.Generator.from_torch`. The layers are read in
    order (nested ``nn.Sequential`` blocks are flattened). ``Linear`` and
    eval-mode ``BatchNorm1d`` are affine maps; every run of consecutive
    affine maps is composed into one affine layer in float64 (exact up to
    rounding). So a ``BatchNorm1d`` after a ``Linear`` is folded into its
    weights and bias (``W' = diag(s) W``, ``c' = s * c + t``), one before a
    ``Linear`` is folded into that layer's input side (``W' = W diag(s)``,
    ``c' = c + W t``), and ``Linear`` layers with nothing between them are
    multiplied into one (no ``"linear"`` activation layer is added). The
    reduced network must read ``affine, (activation, affine)*``.

    Parameters
    ----------
    cls : type
        The class to build, called as ``cls(weights, biases, activation=...,
        slope=...)`` (normally :class:`fastcpa.Generator`).
    module : torch.nn.Sequential
        The network, mapping latent ``(N, S)`` to output ``(N, D)``. Supported
        layers: ``Linear`` (with or without bias), ``ReLU``, ``LeakyReLU``,
        ``PReLU`` (one shared slope or one per unit), ``Identity``, and in
        eval mode ``Dropout`` (the identity) and ``BatchNorm1d`` (with
        running statistics; ``affine=False`` is fine). Parameters may live on
        any device and have any floating dtype; they are copied as float64.

    Returns
    -------
    cls
        The generator; ``gen(Z)`` equals ``module(Z)`` for a float64 module
        up to rounding. Hidden layers are named ``"relu"``, ``"leaky_relu"``
        or ``"prelu"`` in ``gen.activations``.

    Raises
    ------
    ImportError
        If PyTorch is not installed.
    TypeError
        If ``module`` is not an ``nn.Sequential``, or for a layer that is not
        supported (the message names its index and class, e.g.
        ``layer 3 (Tanh) is not piecewise-affine``).
    ValueError
        For ``Dropout`` / ``BatchNorm1d`` in training mode (call
        ``module.eval()``), a ``BatchNorm1d`` without running statistics, a
        lazy module that was never run, layer sizes that do not chain, a
        ``PReLU`` whose ``num_parameters`` is neither 1 nor the layer width,
        or an ordering that is not ``Linear, (activation, Linear)*``: no
        affine layer at all, an activation first or last, or two activations
        in a row.

    Notes
    -----
    Folding changes the rounding but not the function: for a float64 module
    ``gen(Z)`` matches ``module(Z)`` to about ``1e-13`` relative. A
    ``BatchNorm1d`` between two activations (with no ``Linear`` next to it)
    becomes a hidden layer with a diagonal weight matrix.

    Examples
    --------
    >>> import torch  # doctest: +SKIP
    >>> import fastcpa
    >>> net = torch.nn.Sequential(
    ...     torch.nn.Linear(2, 16), torch.nn.ReLU(),
    ...     torch.nn.Linear(16, 16), torch.nn.BatchNorm1d(16), torch.nn.LeakyReLU(0.1),
    ...     torch.nn.Linear(16, 3),
    ... ).eval()  # doctest: +SKIP
    >>> gen = fastcpa.Generator.from_torch(net)  # doctest: +SKIP
    >>> gen.latent_dim, gen.widths, gen.output_dim, gen.activations  # doctest: +SKIP
    (2, (16, 16), 3, ['relu', 'leaky_relu'])
    """
    torch = _import_torch()
    nn = torch.nn
    if not isinstance(module, nn.Sequential):
        raise TypeError(
            f"Generator.from_torch expects a torch.nn.Sequential, got {type(module).__name__}; "
            "pass the nn.Sequential inside your model (e.g. model.net), or wrap the layers in nn.Sequential(...)."
        )

    # Tokens: _Affine pieces and activation tuples (label, name, slope).
    tokens = []
    for key, layer in _flatten(torch, module):
        label = f"layer {key} ({type(layer).__name__})"
        if isinstance(layer, nn.Linear):
            W = _to_numpy(torch, layer.weight, f"{label}.weight")
            b = np.zeros(W.shape[0]) if layer.bias is None else _to_numpy(torch, layer.bias, f"{label}.bias")
            tokens.append(_Affine(W, b, False, [label]))
        elif isinstance(layer, nn.BatchNorm1d):
            tokens.append(_batchnorm_affine(torch, layer, label))
        elif isinstance(layer, nn.Identity):
            continue
        elif isinstance(layer, nn.Dropout):
            _check_eval(layer, label)
            continue
        elif isinstance(layer, nn.ReLU):
            tokens.append((label, "relu", 0.0))
        elif isinstance(layer, nn.LeakyReLU):
            tokens.append((label, "leaky_relu", float(layer.negative_slope)))
        elif isinstance(layer, nn.PReLU):
            tokens.append((label, "prelu", _to_numpy(torch, layer.weight, f"{label}.weight").reshape(-1)))
        else:
            raise _unsupported(label, type(layer).__name__)

    # Compose runs of affine pieces; check the alternation affine, (act, affine)*.
    layers, acts = [], []
    prev_act = None
    for tok in tokens:
        if isinstance(tok, _Affine):
            if layers and prev_act is None:
                layers[-1] = layers[-1].then(tok)
            else:
                layers.append(tok)
                prev_act = None
            continue
        label = tok[0]
        if not layers:
            raise ValueError(f"{label} comes before any Linear layer; {_EXPECTED}.")
        if prev_act is not None:
            raise ValueError(
                f"{prev_act} and {label} are two activations in a row with no Linear between them; {_EXPECTED}."
            )
        acts.append(tok)
        prev_act = label
    if not layers:
        what = "is empty" if len(module) == 0 else "has no Linear layer"
        raise ValueError(f"the nn.Sequential {what}; {_EXPECTED}.")
    if prev_act is not None:
        raise ValueError(
            f"{prev_act} is the last layer, but the output layer must be affine (end with a Linear); {_EXPECTED}."
        )

    names, slopes = [], []
    for (label, name, slope), prev, nxt in zip(acts, layers[:-1], layers[1:]):
        width = prev.out_dim
        if nxt.in_dim != width:
            raise ValueError(
                f"{nxt.names[0]} expects {nxt.in_dim} input features but {prev.names[-1]} "
                f"produces {width}; the layer sizes do not chain."
            )
        if name == "prelu":
            if slope.size == 1:
                slope = float(slope[0])
            elif slope.size != width:
                raise ValueError(
                    f"{label} has num_parameters={slope.size} but follows a layer of width {width}; "
                    "use 1 or the layer width."
                )
        # Always pass one slope per unit (ignored for "relu").
        slope = np.full(width, slope) if np.ndim(slope) == 0 else slope
        names.append(name)
        slopes.append(slope)
    weights = [np.ascontiguousarray(a.matrix()) for a in layers]
    biases = [np.ascontiguousarray(a.b) for a in layers]
    return cls(weights, biases, activation=names, slope=slopes)
