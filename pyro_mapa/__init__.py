"""pyro-mapa: MAPA, a cached model-agnostic index posterior, for Pyro.

Write a Pyro model with an empirical latent prior, build a
:class:`MAPAPosterior` of the data once, swap in :class:`MAPAGuide` and
:class:`MAPA_ELBO`, and train with ``pyro.infer.SVI``.
"""

from .decode import decode, decode_unique
from .gathered import GatheredNormal
from .guide import MAPAGuide
from .importance import ImportanceWeightedELBO, ImportanceWeights
from .index_distribution import IndexParticles, MAPAIndex
from .initialization import pca_codes
from .iwae_elbo import IWAE_ELBO
from .mapa_elbo import MAPA_ELBO, IndexParticleMessenger
from .neighbors import NeighborTable, exact_neighbors
from .posterior import MAPAPosterior
from .priors import fit_prior

__version__ = "0.1.0"

__all__ = [
    "GatheredNormal",
    "IWAE_ELBO",
    "ImportanceWeightedELBO",
    "ImportanceWeights",
    "IndexParticleMessenger",
    "IndexParticles",
    "MAPAGuide",
    "MAPAIndex",
    "MAPAPosterior",
    "MAPA_ELBO",
    "NeighborTable",
    "decode",
    "decode_unique",
    "exact_neighbors",
    "fit_prior",
    "pca_codes",
]
