"""fastcpa: exact probabilistic inference for deep generative networks with
continuous piecewise-affine (CPA) generators.

Importing fastcpa compiles nothing and never imports CuPy; call
:func:`fastcpa.warmup` to compile the CPU kernels ahead of first use.
"""


def _attach_source_kernels():
    """Let a source checkout import ``fastcpa.kernels`` as an installed copy does.

    pyproject installs the top-level ``kernels/`` folder as ``fastcpa.kernels``
    (setuptools ``package-dir``); a plain or editable install therefore finds it,
    but Python started in the repository root without one does not. Only where
    nothing else provides it, load the sibling ``kernels/`` package under that
    name, so submodules (``fastcpa.kernels.cpu...``) resolve from its folder.
    """
    import importlib.util
    import os
    import sys

    name = __name__ + ".kernels"
    if name in sys.modules or importlib.util.find_spec(name) is not None:
        return
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kernels")
    init = os.path.join(src, "__init__.py")
    if not os.path.isfile(init):
        return  # not a source checkout either: leave the ImportError to the first kernel call
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[src])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)  # kernels/__init__.py only documents; it compiles nothing
    globals()["kernels"] = module  # as the import statement binds a loaded submodule on its parent


_attach_source_kernels()
del _attach_source_kernels

from .gaussian import IntervalMoments, PolygonMoments, interval_moments, polygon_moments
from .generator import Generator
from . import em
from .estep import SufficientStats
from .model import AccuracyWarning, CPAModel, Posterior
from .partition import Partition, partition
from ._warmup import warmup

__version__ = "0.1.0.dev0"
__all__ = [
    "AccuracyWarning", "CPAModel", "Generator", "Posterior", "SufficientStats", "IntervalMoments", "PolygonMoments", "Partition",
    "em", "interval_moments", "polygon_moments", "partition", "warmup", "__version__",
]
