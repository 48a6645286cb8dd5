"""The networks of the comparison and of ``pyro-mapa train``: a decoder ``d -> H -> H -> D``
(tanh) and an amortized encoder of the same shape."""

from __future__ import annotations

import torch

__all__ = ["make_decoder", "make_encoder"]


def make_decoder(latent_dim: int, obs_dim: int, hidden: int = 50) -> torch.nn.Module:
    """The decoder every method shares."""
    return torch.nn.Sequential(
        torch.nn.Linear(latent_dim, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, hidden), torch.nn.Tanh(),
        torch.nn.Linear(hidden, obs_dim),
    )


def make_encoder(obs_dim: int, latent_dim: int, hidden: int = 50) -> torch.nn.Module:
    """The amortized encoder of VAE and IWAE: ``x -> (loc, log scale)``."""
    return make_decoder(obs_dim, 2 * latent_dim, hidden)
