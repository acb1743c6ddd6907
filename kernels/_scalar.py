"""Compile the scalar source modules (plain Python over ``math``) for one target.

A scalar routine may call other scalar routines, of its own module or
imported from another scalar module. A compiler (``numba.njit``,
``numba.cuda.jit(device=True)``) only resolves such calls when the callee is
itself compiled for the same target, so each target gets its own copy of
every function, re-bound to a namespace in which the callees are that
target's compiled versions. The sources stay the single implementation.
Nothing is compiled here: decorators return lazy dispatchers.
"""

import sys
import types


def _is_scalar_function(obj, module_names):
    return isinstance(obj, types.FunctionType) and obj.__module__ in module_names


def compile_scalars(module, decorator, registry):
    """A namespace with every function of ``module`` wrapped by ``decorator``.

    Parameters
    ----------
    module : module
        A scalar source module of ``fastcpa.kernels`` (e.g. ``_normal``).
    decorator : callable
        The target's compiler, applied to a copy of each function.
    registry : dict
        Per-target cache, module name -> namespace, filled on the way; scalar
        modules that ``module`` imports from are compiled first, into it.

    Returns
    -------
    types.SimpleNamespace
    """
    name = module.__name__
    if name in registry:
        return registry[name]
    package = name.rpartition(".")[0]
    ns = dict(vars(module))
    compiled = {}
    for key, obj in vars(module).items():
        if not isinstance(obj, types.FunctionType):
            continue
        home = obj.__module__
        if home == name:
            clone = types.FunctionType(obj.__code__, ns, obj.__name__, obj.__defaults__, obj.__closure__)
            clone.__qualname__ = obj.__qualname__
            clone.__doc__ = obj.__doc__
            clone.__module__ = home
            compiled[key] = decorator(clone)
        elif home.rpartition(".")[0] == package:  # imported from a sibling scalar module
            compiled[key] = getattr(compile_scalars(sys.modules[home], decorator, registry), obj.__name__)
    ns.update(compiled)
    out = types.SimpleNamespace(**compiled)
    registry[name] = out
    return out
