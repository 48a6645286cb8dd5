"""The amortized-encoder methods of the comparison: VAE, IWAE (standard and DReG), VampPrior, Exemplar VAE
(docs/math.md, sections 4 and 8)."""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import torch
from pyro.infer import Trace_ELBO

from ..cache import MAPAPosterior
from ..infer import IWAE_ELBO
from ..models import ExemplarMixture, make_encoder
from .baselines import (
    encoder_guide,
    exemplar_model,
    vae_model,
    vamp_prior,
    vampprior_model,
)
from .method_base import Method, TrainingSetup

__all__ = ["ExemplarVAE", "IWAE", "IWAEDReG", "VAE", "VampPrior"]


@dataclass(frozen=True)
class VAE(Method):
    """An amortized Gaussian encoder trained with ``Trace_ELBO``."""

    kind = "vae"
    warms_up = True

    def loss(self) -> pyro.infer.ELBO:
        return Trace_ELBO()

    def setup(self, split, decoder, init_codes):
        (num_points, obs_dim), d = split.train.shape, split.latent_dim
        encoder = make_encoder(obs_dim, d, split.hidden, split.layers)
        return TrainingSetup(
            vae_model(decoder, split.likelihood, num_points, d), encoder_guide(encoder, num_points), self.loss(), encoder
        )

    def train_codes(self, setup, train):
        return setup.encoder(train).chunk(2, -1)[0].detach()


@dataclass(frozen=True)
class IWAE(VAE):
    """The same encoder with the per-datapoint IWAE bound of ``num_particles`` draws."""

    num_particles: int
    kind = "iwae"
    warms_up = False  # its bound has one scale per datapoint, not one per site

    @property
    def label(self) -> str:
        return f"iwae-{self.num_particles}"

    def loss(self) -> pyro.infer.ELBO:
        return IWAE_ELBO(self.num_particles, max_plate_nesting=1)


@dataclass(frozen=True)
class IWAEDReG(IWAE):
    """IWAE with doubly-reparameterized gradients (:class:`~pyro_mapa.IWAE_ELBO`,
    ``estimator="dreg"``): the same bound, a lower-variance encoder gradient."""

    kind = "iwae-dreg"

    @property
    def label(self) -> str:
        return f"iwae-dreg-{self.num_particles}"

    def loss(self) -> pyro.infer.ELBO:
        return IWAE_ELBO(self.num_particles, max_plate_nesting=1, estimator="dreg")


@dataclass(frozen=True)
class VampPrior(VAE):
    """The VAE with VampPrior's learned mixture prior of the encoder at ``K`` pseudo-inputs
    (:func:`~pyro_mapa.experiments.baselines.vampprior_model`; ``vampprior-K``, the paper's
    ``K = 500``: ``vampprior-500``), trained with ``Trace_ELBO``. The pseudo-inputs start at training points drawn by the
    seed (pulled 5% towards 1/2 for binary data, inside the unit interval); their encoder
    passes count among the encoder's."""

    num_pseudo_inputs: int
    kind = "vampprior"

    @property
    def label(self) -> str:
        return f"vampprior-{self.num_pseudo_inputs}"

    def setup(self, split, decoder, init_codes):
        (num_points, obs_dim), d = split.train.shape, split.latent_dim
        encoder = make_encoder(obs_dim, d, split.hidden, split.layers)
        start = split.train[torch.randint(0, num_points, (self.num_pseudo_inputs,))]
        if split.likelihood.binary:
            start = 0.9 * start + 0.05
        model = vampprior_model(decoder, encoder, split.likelihood, num_points, start)
        return TrainingSetup(model, encoder_guide(encoder, num_points), self.loss(), encoder)

    def continuous_prior(self, setup, codes, seed):
        """The learned VampPrior itself."""
        return vamp_prior(setup.encoder, pyro.param("pseudo_inputs"))


@dataclass(frozen=True)
class ExemplarVAE(VAE):
    """Exemplar VAE (:func:`~pyro_mapa.experiments.baselines.exemplar_model`): the prior of
    point ``n`` a mixture at the encoder means of its ``R = 10`` nearest training points
    (itself left out), retrieved once by the MAPA cache of the likelihood's kernel (the same
    search MAPA uses), one learned scale ``s``; ``Trace_ELBO``. Each step encodes the ``R + 1``
    retrieved points of every datapoint (counted as encoder passes). Scored with the full
    prior over all ``N`` training points' encoder means (:class:`~pyro_mapa.models.ExemplarMixture`)."""

    num_retrieved: int = 10
    kind = "exemplar"

    def setup(self, split, decoder, init_codes):
        (num_points, obs_dim), d = split.train.shape, split.latent_dim
        encoder = make_encoder(obs_dim, d, split.hidden, split.layers)
        cache = MAPAPosterior.fit(split.train, kernel=split.likelihood.cache_kernel(),
                                  num_cached=min(self.num_retrieved + 1, num_points), progress=False)
        model = exemplar_model(decoder, encoder, split.likelihood, split.train, cache.table.index)
        return TrainingSetup(model, encoder_guide(encoder, num_points), self.loss(), encoder)

    def continuous_prior(self, setup, codes, seed):
        """``(1/N) sum_m N(mu_phi(x_m), s^2 I)`` over every training point."""
        return ExemplarMixture(codes, pyro.param("exemplar_scale").detach())
