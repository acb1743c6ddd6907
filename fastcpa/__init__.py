"""fastcpa: exact probabilistic inference for deep generative networks with
continuous piecewise-affine (CPA) generators.

Importing fastcpa compiles nothing and never imports CuPy; call
:func:`fastcpa.warmup` to compile the CPU kernels ahead of first use.
"""

from .gaussian import IntervalMoments, PolygonMoments, interval_moments, polygon_moments
from .generator import Generator
from . import em
from .estep import SufficientStats
from .model import CPAModel, Posterior
from .partition import Partition, partition
from ._warmup import warmup

__version__ = "0.1.0.dev0"
__all__ = [
    "CPAModel", "Generator", "Posterior", "SufficientStats", "IntervalMoments", "PolygonMoments", "Partition",
    "em", "interval_moments", "polygon_moments", "partition", "warmup", "__version__",
]
