"""The comparison's one estimator of a trained model's log-likelihood (docs/math.md, section 5).

Every method becomes a continuous-prior model ``z ~ p(z)``, ``x ~ p(x | f(z))`` at each
checkpoint, and every such model is scored by importance sampling
(:func:`~pyro_mapa.evaluation.importance_log_likelihood`) with one of two proposals, the
same for all methods of a comparison:

* ``"laplace"``: :func:`~pyro_mapa.evaluation.laplace_mixture_proposal`, anchored at the
  model's own training codes, no fitting (good at small ``D``);
* ``"encoder"``: :class:`~pyro_mapa.evaluation.EncoderProposal`, an encoder fitted to the
  model's posterior on the training points, never the VAE's own (needed at ``D = 784``,
  where the Laplace mixture's weights have an effective sample size near 1). Each
  checkpoint fits a fresh encoder for the same number of steps, so that a later checkpoint
  is not favoured by a better-trained scorer (an estimate's downward bias shrinks as the
  proposal improves); the final score fits a fresh one for longer. The encoder's
  initial weights and its minibatches come from torch's generator: call :meth:`update`
  under ``torch.random.fork_rng()`` to leave a training run's draws alone.
"""

from __future__ import annotations

from typing import Callable

import pyro
import pyro.distributions as dist
import torch

from .._checks import check_count
from ..evaluation import (
    EncoderProposal,
    LogLikelihood,
    importance_log_likelihood,
    laplace_mixture_proposal,
)
from ..evaluation.mixtures import fast_prior
from ..models import Likelihood, make_encoder

__all__ = ["SCORERS", "ModelScorer", "chunked_log_likelihood", "continuous_log_likelihood", "continuous_model"]

#: The proposals a comparison can score with.
SCORERS = ("laplace", "encoder")


def continuous_model(decoder: torch.nn.Module, prior: dist.Distribution, likelihood: Likelihood) -> Callable:
    """``z ~ prior``, ``x ~ p(x | decoder(z))`` in a plate over the rows of ``x``."""

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", prior)
            pyro.sample("x", likelihood.distribution(decoder(z)), obs=x)

    return model


def chunked_log_likelihood(model: Callable, proposal: Callable, x: torch.Tensor, num_particles: int,
                           k_hat: bool) -> LogLikelihood:
    """:func:`~pyro_mapa.evaluation.importance_log_likelihood` of ``x`` under ``model`` (one
    data plate), in chunks of at most 200 draws and 2^16 rows of ``x`` per chunk (memory stays
    bounded)."""
    chunk_size = max(1, min(num_particles, 200, 2**16 // len(x)))
    return importance_log_likelihood(
        model, proposal, x, num_particles=num_particles, chunk_size=chunk_size, max_plate_nesting=1, k_hat=k_hat
    )


def continuous_log_likelihood(
    decoder: torch.nn.Module,
    prior: dist.Distribution,
    likelihood: Likelihood,
    codes: torch.Tensor,
    x: torch.Tensor,
    num_particles: int,
    k_hat: bool = False,
) -> LogLikelihood:
    """``log p(x_n)`` per point of ``x`` for the continuous-prior model, by importance
    sampling with :func:`~pyro_mapa.evaluation.laplace_mixture_proposal` anchored at the
    model's training ``codes`` (0.1 of it the prior)."""
    prior = fast_prior(prior)  # one object for the model and the proposal: each draw's prior density computed once
    proposal = laplace_mixture_proposal(decoder, codes, likelihood, prior=prior)
    return chunked_log_likelihood(continuous_model(decoder, prior, likelihood), proposal, x, num_particles, k_hat)


class ModelScorer:
    """Scores the current model of one run with the proposal ``kind`` (:data:`SCORERS`).

    Call :meth:`update` with the model's prior and training codes whenever its parameters
    changed, then the scorer itself on the points to score.

    :param train: the training points, on which an ``"encoder"`` proposal is fitted.
    :param hidden: the fitted encoder's hidden width (the decoder's).
    :param fit_steps: Adam steps of a fresh encoder's fit at each :meth:`update`.
    :param final_fit_steps: the same before the final score (``update(..., final=True)``).
    """

    def __init__(
        self,
        kind: str,
        decoder: torch.nn.Module,
        likelihood: Likelihood,
        train: torch.Tensor,
        latent_dim: int,
        hidden: int,
        fit_steps: int = 1000,
        final_fit_steps: int = 3000,
    ):
        if kind not in SCORERS:
            raise ValueError(f"unknown scorer {kind!r}; choose one of {', '.join(SCORERS)}")
        self.kind, self.decoder, self.likelihood, self.train = kind, decoder, likelihood, train
        self.latent_dim, self.hidden = latent_dim, hidden
        self.fit_steps = check_count(fit_steps, "fit_steps")
        self.final_fit_steps = check_count(final_fit_steps, "final_fit_steps")
        self.model = self.proposal = None

    def update(self, prior: dist.Distribution, codes: torch.Tensor, final: bool = False) -> None:
        """Score the model with this prior (and these training codes) from now on; ``final``:
        fit the encoder for ``final_fit_steps``."""
        prior = fast_prior(prior)  # one object for the model and the proposal: each draw's prior density computed once
        self.model = continuous_model(self.decoder, prior, self.likelihood)
        if self.kind == "laplace":
            self.proposal = laplace_mixture_proposal(self.decoder, codes, self.likelihood, prior=prior)
            return
        encoder = make_encoder(self.train.shape[1], self.latent_dim, self.hidden).to(self.train)
        self.proposal = EncoderProposal(encoder, self.decoder, prior, self.likelihood)
        self.proposal.fit(self.train, self.final_fit_steps if final else self.fit_steps)

    def swap_prior(self, prior: dist.Distribution) -> None:
        """Score the same decoder under another ``prior`` from now on, with the proposal fitted at
        the last :meth:`update` (its defensive component becomes ``prior``; an ``"encoder"``
        proposal is not refitted: the estimate of ``p(x)`` stays unbiased, but may be noisier, and
        that of ``log p(x)`` more biased low, than with a fit to this model's posterior)."""
        if self.proposal is None:
            raise RuntimeError("call update() with the model's prior before swapping it")
        if self.kind == "laplace":
            raise ValueError("the laplace proposal is rebuilt by update(), not swapped")
        prior = fast_prior(prior)
        self.model = continuous_model(self.decoder, prior, self.likelihood)
        self.proposal.set_model(self.decoder, prior)

    def __call__(self, x: torch.Tensor, num_particles: int, k_hat: bool = False, refine_steps: int = 0) -> LogLikelihood:
        """``log p(x_n)`` per row of ``x``; ``refine_steps``: first fit the ``"encoder"`` proposal to
        each row's own posterior for that many steps (:meth:`~pyro_mapa.evaluation.EncoderProposal.refined`)."""
        if self.model is None:
            raise RuntimeError("call update() with the model's prior before scoring")
        proposal = self.proposal
        if refine_steps:
            if self.kind != "encoder":
                raise ValueError(f"refine_steps: only the 'encoder' proposal is refined per point, not {self.kind!r}")
            proposal = proposal.refined(x, refine_steps)
        return chunked_log_likelihood(self.model, proposal, x, num_particles, k_hat)
