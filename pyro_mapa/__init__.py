"""pyro-mapa: MAPA, a cached model-agnostic index posterior, for Pyro.

Write a Pyro model with an empirical latent prior, build a :class:`MAPAPosterior` of the
data once, swap in :class:`MAPAGuide` and :class:`MAPA_ELBO`, and train with
``pyro.infer.SVI``. The package's rooms, one way: :mod:`pyro_mapa.cache` (data ->
neighbours and weights), :mod:`pyro_mapa.infer` (weights -> particles -> bound),
:mod:`pyro_mapa.models` (what a user's model uses), :mod:`pyro_mapa.evaluation` (scores
and diagnostics), :mod:`pyro_mapa.trainer` (a user's data in, a saved model out, on one
process or data-parallel), :mod:`pyro_mapa.datasets`, and :mod:`pyro_mapa.experiments` (the
comparison harness). The math they cite is in docs/math.md.
"""

from .cache import (
    Kernel,
    MAPAIndex,
    MAPAPosterior,
    NeighborhoodBatches,
    NeighborTable,
    exact_neighbors,
)
from .infer import (
    IWAE_ELBO,
    MAPA_ELBO,
    ImportanceWeightedELBO,
    ImportanceWeights,
    IndexParticleMessenger,
    IndexParticles,
    IndexProposal,
    MAPAGuide,
)
from .models import (
    EmpiricalModel,
    GatheredBernoulli,
    GatheredNormal,
    decode,
    decode_unique,
    fit_prior,
    pca_codes,
)
from .trainer import TrainedModel, train_mapa

__version__ = "0.1.0"

__all__ = [
    "EmpiricalModel",
    "GatheredBernoulli",
    "GatheredNormal",
    "IWAE_ELBO",
    "ImportanceWeightedELBO",
    "ImportanceWeights",
    "IndexParticleMessenger",
    "IndexParticles",
    "IndexProposal",
    "Kernel",
    "MAPAGuide",
    "MAPAIndex",
    "MAPAPosterior",
    "MAPA_ELBO",
    "NeighborTable",
    "NeighborhoodBatches",
    "TrainedModel",
    "decode",
    "decode_unique",
    "exact_neighbors",
    "fit_prior",
    "pca_codes",
    "train_mapa",
]
