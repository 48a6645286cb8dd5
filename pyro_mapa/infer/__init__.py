"""The bound: weights -> particles -> per-datapoint estimate (docs/math.md, sections 3 and 4).

:class:`MAPAGuide` turns the cache's ``q(i | x_n)`` into the index site's proposal,
:class:`MAPA_ELBO` takes its ``K + S`` particles, and both importance-weighted bounds
(:class:`MAPA_ELBO`, :class:`IWAE_ELBO`) share one per-datapoint machinery
(:mod:`pyro_mapa.infer.importance`). Imports run one way: this package uses
:mod:`pyro_mapa.cache`, never the reverse.
"""

from .guide import MAPAGuide
from .importance import ImportanceWeightedELBO, ImportanceWeights
from .iwae_elbo import IWAE_ELBO
from .mapa_elbo import MAPA_ELBO, IndexParticleMessenger
from .proposal import DEFAULT_DEFENSIVE, IndexParticles, IndexProposal, ParticleProposal

__all__ = [
    "DEFAULT_DEFENSIVE",
    "IWAE_ELBO",
    "ImportanceWeightedELBO",
    "ImportanceWeights",
    "IndexParticleMessenger",
    "IndexParticles",
    "IndexProposal",
    "MAPAGuide",
    "MAPA_ELBO",
    "ParticleProposal",
]
