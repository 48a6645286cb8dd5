"""Scoring and checking a trained model: log-likelihood estimators, an importance-sampling
proposal that needs no encoder, one from an encoder fitted after training, and diagnostics (docs/math.md, sections 5 and 6)."""

from .diagnostics import (
    ImportanceDiagnostics,
    PosteriorDistance,
    gaussian_index_log_posterior,
    importance_diagnostics,
    latent_to_index_log_posterior,
    posterior_distance,
    to_inference_data,
)
from .encoder_proposal import EncoderProposal
from .likelihood import (
    LogLikelihood,
    StableEstimate,
    empirical_log_likelihood,
    grid_log_likelihood,
    importance_log_likelihood,
    stable_log_likelihood,
)
from .proposals import laplace_mixture_proposal

__all__ = [
    "EncoderProposal",
    "ImportanceDiagnostics",
    "LogLikelihood",
    "PosteriorDistance",
    "StableEstimate",
    "empirical_log_likelihood",
    "gaussian_index_log_posterior",
    "grid_log_likelihood",
    "importance_diagnostics",
    "importance_log_likelihood",
    "laplace_mixture_proposal",
    "latent_to_index_log_posterior",
    "posterior_distance",
    "stable_log_likelihood",
    "to_inference_data",
]
