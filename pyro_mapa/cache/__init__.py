"""The cache: data -> neighbours and weights (docs/math.md, section 2).

Nothing here knows about the bound: :mod:`pyro_mapa.infer` builds on it, never the
other way round.
"""

from .batches import NeighborhoodBatches
from .index import MAPAIndex
from .kernels import BernoulliKernel, CustomKernel, GaussianKernel, Kernel
from .neighbors import NeighborTable, exact_neighbors
from .posterior import MAPAPosterior

__all__ = [
    "BernoulliKernel",
    "CustomKernel",
    "GaussianKernel",
    "Kernel",
    "MAPAIndex",
    "MAPAPosterior",
    "NeighborTable",
    "NeighborhoodBatches",
    "exact_neighbors",
]
