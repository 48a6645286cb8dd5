"""What a user's model uses: decoding distinct codes, gathered likelihoods, likelihood
objects, starting codes, and the final model's fitted prior (docs/math.md, section 1)."""

from .decode import decode, decode_unique
from .empirical import EmpiricalModel, observe_empirical
from .exemplar import ExemplarMixture
from .gathered import GatheredBernoulli, GatheredNormal
from .initialization import pca_codes
from .likelihoods import (
    BernoulliLikelihood,
    Likelihood,
    NormalLikelihood,
    as_likelihood,
)
from .networks import LAYERS, GatedDense, make_decoder, make_encoder
from .priors import PRIOR_FAMILIES, fit_prior

__all__ = [
    "BernoulliLikelihood",
    "LAYERS",
    "PRIOR_FAMILIES",
    "EmpiricalModel",
    "ExemplarMixture",
    "GatedDense",
    "GatheredBernoulli",
    "GatheredNormal",
    "Likelihood",
    "NormalLikelihood",
    "as_likelihood",
    "decode",
    "decode_unique",
    "fit_prior",
    "make_decoder",
    "make_encoder",
    "observe_empirical",
    "pca_codes",
]
