"""Amortized Gaussian encoders fitted against a *known* decoder (benchmarks of issue 4).

The encoder is :func:`pyro_mapa.experiments.baselines.make_encoder` (``D -> 50 -> 50 -> 2 d``, tanh),
the guide :func:`pyro_mapa.experiments.baselines.encoder_guide`, the model ``z ~ N(0, I)``,
``x ~ N(f(z), sigma^2 I)`` with the synthetic set's true decoder ``f`` held fixed, so
that only the encoder is learned. Two recipes:

* ``"elbo"``: the VAE recipe of ``pyro-mapa compare``: Trace_ELBO from a random
  initialisation, Adam (lr 1e-2), minibatches of 100 training points.
* ``"sleep+elbo"``: first the *sleep phase* of wake-sleep: maximise
  ``E_{p(z) p(x | z)} log q(z | x)`` on fresh draws from the true model (256 a step;
  Adam, lr 1e-2 decayed exponentially to 1e-4), i.e. minimise the amortized forward KL
  ``E_{p(x)} KL(p(z | x) || q(z | x))``; then Trace_ELBO on the training points
  (minibatches of 256, Adam, lr 1e-3) from there. The encoder that comes out is a
  Trace_ELBO encoder; the sleep phase only chooses where its optimisation starts.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from pyro_mapa.datasets import SyntheticData
from pyro_mapa.experiments.baselines import encoder_guide
from pyro_mapa.models import make_encoder

RECIPES = ("elbo", "sleep+elbo")


def fixed_decoder_model(data: SyntheticData):
    """``z ~ N(0, I)``, ``x ~ N(f(z), sigma^2 I)`` with the true ``f``; ``model(x, idx)``."""
    num_points, d = data.train.shape[0], data.latent_dim
    zero = torch.zeros(d, dtype=data.train.dtype)

    def model(x, idx=None):
        with pyro.plate("data", num_points, subsample=idx):
            z = pyro.sample("z", dist.Normal(zero, 1.0).to_event(1))
            pyro.sample("x", dist.Normal(data.decoder(z), data.sigma).to_event(1), obs=x)

    return model


def train_encoder(data: SyntheticData, recipe: str, steps: int, seed: int) -> torch.nn.Module:
    """An encoder for ``data`` by ``recipe`` (``"elbo"``: ``steps`` Trace_ELBO steps;
    ``"sleep+elbo"``: ``steps`` sleep steps, then ``steps // 2`` Trace_ELBO steps)."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose from {RECIPES}")
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    num_points, obs_dim, d = *data.train.shape, data.latent_dim
    encoder = make_encoder(obs_dim, d).to(data.train.dtype)
    model = fixed_decoder_model(data)
    if recipe == "sleep+elbo":
        optimizer = torch.optim.Adam(encoder.parameters(), lr=1e-2)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.01 ** (s / steps))
        for _ in range(steps):
            z = torch.randn(256, d, dtype=data.train.dtype)
            x = data.decoder(z) + data.sigma * torch.randn(256, obs_dim, dtype=data.train.dtype)
            loc, log_scale = encoder(x).chunk(2, -1)
            loss = -dist.Normal(loc, log_scale.clamp(-10, 5).exp()).log_prob(z).sum(-1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        lr, batch, elbo_steps = 1e-3, 256, steps // 2
    else:
        lr, batch, elbo_steps = 1e-2, 100, steps
    svi = SVI(model, encoder_guide(encoder, num_points), Adam({"lr": lr}), Trace_ELBO())
    for _ in range(elbo_steps):
        idx = torch.randint(0, num_points, (batch,))
        svi.step(data.train[idx], idx)
    return encoder


def encoder_posterior(encoder: torch.nn.Module, x: torch.Tensor) -> dist.Distribution:
    """``q(z | x) = N(loc(x), scale(x)^2)``, batch shape ``(M,)``, event shape ``(d,)``."""
    with torch.no_grad():
        loc, log_scale = encoder(x).chunk(2, -1)
    return dist.Normal(loc, log_scale.clamp(-10, 5).exp()).to_event(1)


def train_elbo(data: SyntheticData, encoder: torch.nn.Module, num_samples: int = 200) -> float:
    """Mean ELBO per training point of ``encoder`` (``num_samples`` draws each)."""
    q = encoder_posterior(encoder, data.train)
    with torch.no_grad():
        z = q.sample((num_samples,))
        log_prior = dist.Normal(torch.zeros_like(z), 1.0).to_event(1).log_prob(z)
        log_lik = dist.Normal(data.decoder(z), data.sigma).to_event(1).log_prob(data.train)
        return (log_prior + log_lik - q.log_prob(z)).mean().item()
