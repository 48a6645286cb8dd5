"""The models and guides the comparison trains (docs/math.md, sections 1 and 8).

All share one decoder architecture (``d -> H -> H -> D``, tanh; ``H = 50`` by default) and
one observation model ``p(x | f(z))`` (:class:`~pyro_mapa.models.Likelihood`: a Gaussian of
fixed ``sigma``, or a Bernoulli over logits):

* the VAE model ``z ~ N(0, I)``, ``x ~ p(x | f(z))`` in a subsampled data plate, with an
  amortized Gaussian encoder guide (VAE, IWAE) or Pyro's ``AutoNormal`` / ``AutoDelta``
  (non-amortized local latents);
* the VAE model with a learned prior: VampPrior's mixture of the encoder at ``K`` learned
  pseudo-inputs (:func:`vampprior_model`), or Exemplar VAE's mixture at the encoder means of
  the training points, leave-one-out, over each point's retrieved neighbours
  (:func:`exemplar_model`);
* the empiricalized model, ``i ~ Categorical(N)``, ``x ~ p(x | f(z_i))``, whose decoder runs
  on the distinct indices of a step (:func:`~pyro_mapa.decode_unique`), scored by the
  likelihood's gathered form (:class:`~pyro_mapa.GatheredNormal`,
  :class:`~pyro_mapa.GatheredBernoulli`);
* the smoothed empiricalized model, ``i ~ Categorical(N)`` leaving the point itself out,
  ``z ~ N(z_i, tau^2 I)``, ``x ~ p(x | f(z))`` (:func:`smoothed_empirical_model`), with the
  guide that draws ``z`` from the model's own ``p(z | i)`` (:func:`smoothed_guide`).
"""

from __future__ import annotations

import math
from typing import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints

from .._checks import check_code_noise
from ..models import ExemplarMixture, Likelihood, as_likelihood, observe_empirical

__all__ = [
    "empirical_model",
    "encoder_guide",
    "exemplar_model",
    "smoothed_empirical_model",
    "smoothed_guide",
    "vae_model",
    "vamp_prior",
    "vampprior_model",
]


def vae_model(decoder: torch.nn.Module, likelihood: Likelihood | float, num_points: int, latent_dim: int) -> Callable:
    """``z ~ N(0, I)``, ``x ~ p(x | f(z))``; called as ``model(x, idx)``. ``likelihood`` may be
    a number: the Gaussian's ``sigma``."""
    likelihood = as_likelihood(likelihood)


    def model(x, idx=None):
        pyro.module("decoder", decoder)
        with pyro.plate("data", num_points, subsample=idx):
            z = pyro.sample("z", dist.Normal(torch.zeros(latent_dim), 1.0).to_event(1))
            pyro.sample("x", likelihood.distribution(decoder(z)), obs=x)

    return model


def vamp_prior(encoder: torch.nn.Module, pseudo_inputs: torch.Tensor) -> dist.Distribution:
    """VampPrior (Tomczak and Welling 2018): ``p(z) = (1/K) sum_k q(z | u_k)``, the encoder's
    Gaussians at the ``K`` pseudo-inputs ``u_k``, as an :class:`~pyro_mapa.models.ExemplarMixture`
    with a diagonal scale per component (scored by matrix products: torch's ``MixtureSameFamily``
    ran a scorer out of memory at ``K = 500``)."""
    loc, log_scale = encoder(pseudo_inputs).chunk(2, dim=-1)
    return ExemplarMixture(loc, log_scale.clamp(-10, 5).exp())


def vampprior_model(
    decoder: torch.nn.Module, encoder: torch.nn.Module, likelihood: Likelihood, num_points: int,
    init_pseudo_inputs: torch.Tensor,
) -> Callable:
    """``z ~ vamp_prior(encoder, u)``, ``x ~ p(x | f(z))``, with learned pseudo-inputs ``u``
    (in ``[0, 1]`` for binary data), started at ``init_pseudo_inputs``; ``model(x, idx)``."""
    constraint = constraints.unit_interval if likelihood.binary else constraints.real

    def model(x, idx=None):
        pyro.module("decoder", decoder)
        pyro.module("encoder", encoder)
        pseudo_inputs = pyro.param("pseudo_inputs", init_pseudo_inputs.clone(), constraint=constraint)
        with pyro.plate("data", num_points, subsample=idx):
            z = pyro.sample("z", vamp_prior(encoder, pseudo_inputs))
            pyro.sample("x", likelihood.distribution(decoder(z)), obs=x)

    return model


def exemplar_model(
    decoder: torch.nn.Module, encoder: torch.nn.Module, likelihood: Likelihood, train: torch.Tensor,
    neighbors: torch.Tensor,
) -> Callable:
    r"""Exemplar VAE's model (Norouzi, Fleet, Norouzi 2020) on the training points ``train``:
    for point ``n``, ``z ~ (1 / (N - 1)) sum_{m != n} N(mu_phi(x_m), s^2 I)``, the sum
    restricted to ``n``'s retrieved ``neighbors[n]`` (``N x R`` indices; ``n`` itself is
    masked out wherever it appears), then ``x ~ p(x | f(z))``. The restricted sum keeps the
    weight ``1 / (N - 1)`` of each term, so its density is a lower bound of the full
    leave-one-out prior's and the ELBO stays a bound. ``s`` is learned (``exemplar_scale``).
    Called as ``model(x, idx)``."""
    num_points = len(train)

    def model(x, idx=None):
        pyro.module("decoder", decoder)
        pyro.module("encoder", encoder)
        scale = pyro.param("exemplar_scale", torch.tensor(1.0, dtype=train.dtype), constraint=constraints.positive)
        with pyro.plate("data", num_points, subsample=idx) as rows:
            found = neighbors[rows]  # (B, R)
            loc = encoder(train[found.reshape(-1)]).chunk(2, dim=-1)[0].reshape(*found.shape, -1)
            logits = torch.where(found == rows.unsqueeze(-1), -math.inf, 0.0).to(loc.dtype)  # leave-one-out
            components = dist.Normal(loc, scale).to_event(1)
            # the mixture normalises its weights over the R retrieved; each term's weight is 1 / (N - 1)
            pyro.factor("exemplar_weight", logits.logsumexp(-1) - math.log(num_points - 1))
            z = pyro.sample("z", dist.MixtureSameFamily(dist.Categorical(logits=logits), components))
            pyro.sample("x", likelihood.distribution(decoder(z)), obs=x)

    return model


def encoder_guide(encoder: torch.nn.Module, num_points: int) -> Callable:
    """``z ~ N(loc(x), scale(x)^2)``, amortized; called as ``guide(x, idx)``."""

    def guide(x, idx=None):
        pyro.module("encoder", encoder)
        with pyro.plate("data", num_points, subsample=idx):
            loc, log_scale = encoder(x).chunk(2, dim=-1)
            pyro.sample("z", dist.Normal(loc, log_scale.clamp(-10, 5).exp()).to_event(1))

    return guide


def empirical_model(
    decoder: torch.nn.Module,
    likelihood: Likelihood | float,
    num_points: int,
    latent_dim: int,
    init_codes: torch.Tensor | None = None,
    code_noise: float = 0.0,
) -> Callable:
    """``i ~ Categorical(N)``, ``x ~ p(x | f(z_i))`` with learnable codes ``z``, started at
    ``init_codes`` (``N x d``, e.g. :func:`~pyro_mapa.pca_codes`) or near 0. ``likelihood``
    may be a number: the Gaussian's ``sigma``.

    ``code_noise``: ``tau``, each decoded code perturbed by ``N(0, tau^2 I)`` noise
    (:func:`~pyro_mapa.models.observe_empirical`)."""
    likelihood = as_likelihood(likelihood)
    code_noise = check_code_noise(code_noise)
    if init_codes is not None and tuple(init_codes.shape) != (num_points, latent_dim):
        raise ValueError(f"init_codes must have shape ({num_points}, {latent_dim}), got {tuple(init_codes.shape)}")

    def initial_codes() -> torch.Tensor:
        return init_codes.clone() if init_codes is not None else 0.1 * torch.randn(num_points, latent_dim)

    def model(x, idx=None):
        pyro.module("decoder", decoder)
        observe_empirical(decoder, pyro.param("codes", initial_codes), likelihood, x, idx, code_noise=code_noise)

    return model


def smoothed_empirical_model(
    decoder: torch.nn.Module,
    likelihood: Likelihood,
    num_points: int,
    latent_dim: int,
    init_codes: torch.Tensor | None = None,
    init_scale: float = 0.1,
) -> Callable:
    r"""The empiricalized model smoothed by a learned ``tau`` and trained leave-one-out
    (docs/math.md, section 4): for training point ``n``,

    .. math::
        i \sim \mathrm{Uniform}(\{1..N\} \setminus \{n\}), \quad z \sim N(z_i, \tau^2 I),
        \quad x_n \sim p(x \mid f_\theta(z)).

    Written as ``i ~ Categorical(N)`` with a factor ``log(N / (N - 1))`` off the point itself and
    ``-inf`` on it, so that MAPA's index proposal (which proposes ``n`` too) still fits: a
    particle at ``n`` weighs nothing. Without leaving the point out, its own code would explain
    it and ``tau`` would shrink to 0. The model it trains is the mixture prior
    ``(1/N) sum_m N(z; z_m, tau^2 I)`` (:class:`~pyro_mapa.models.ExemplarMixture`): no prior to
    fit afterwards. ``tau`` is the parameter ``smoothing_scale``; called as ``model(x, idx)``."""
    if init_codes is not None and tuple(init_codes.shape) != (num_points, latent_dim):
        raise ValueError(f"init_codes must have shape ({num_points}, {latent_dim}), got {tuple(init_codes.shape)}")
    if num_points < 2:
        raise ValueError("leaving each point out needs at least 2 training points")
    stay = math.log(num_points / (num_points - 1))

    def initial_codes() -> torch.Tensor:
        return init_codes.clone() if init_codes is not None else 0.1 * torch.randn(num_points, latent_dim)

    def model(x, idx=None):
        pyro.module("decoder", decoder)
        codes = pyro.param("codes", initial_codes)
        tau = pyro.param("smoothing_scale", lambda: torch.tensor(init_scale, dtype=codes.dtype),
                         constraint=constraints.positive)
        with pyro.plate("data", num_points, subsample=idx) as rows:
            i = pyro.sample("i", dist.Categorical(logits=torch.zeros(num_points, dtype=codes.dtype)))
            pyro.factor("leave_one_out", torch.where(i == rows, -math.inf, stay).to(codes.dtype))
            z = pyro.sample("z", dist.Normal(codes[i], tau).to_event(1))
            pyro.sample("x", likelihood.distribution(decoder(z)), obs=x)

    return model


def smoothed_guide(index_guide: Callable) -> Callable:
    """The guide of :func:`smoothed_empirical_model`: the index from ``index_guide`` (a
    :class:`~pyro_mapa.MAPAGuide` of that model), then ``z ~ N(z_i, tau^2 I)``, the model's own
    ``p(z | i)``, reparameterized: in the bound's weight ``p(z | i) / q(z | i) = 1`` and the
    gradient reaches the codes and ``tau`` through the decoder. Called as ``guide(x, idx)``."""

    def guide(x, idx=None):
        i = index_guide(x, idx)[index_guide.index_site]
        codes, tau = pyro.param("codes"), pyro.param("smoothing_scale")
        with index_guide.plates["data"]:  # the index's own plate, re-entered: the same subsample
            pyro.sample("z", dist.Normal(codes[i], tau).to_event(1))

    return guide
