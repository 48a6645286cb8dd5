"""The networks of the comparison and of ``pyro-mapa train``: a decoder ``d -> H -> H -> D``
and an amortized encoder of the same shape, their two hidden layers tanh or gated."""

from __future__ import annotations

import torch

__all__ = ["LAYERS", "GatedDense", "make_decoder", "make_encoder"]

#: The hidden layers :func:`make_decoder` and :func:`make_encoder` build: ``"tanh"``, a linear
#: map then tanh; ``"gated"``, :class:`GatedDense`.
LAYERS = ("tanh", "gated")


class GatedDense(torch.nn.Module):
    """``h(x) * sigmoid(g(x))`` for two linear maps ``h`` and ``g`` (a gated linear unit,
    Dauphin et al. 2017): the hidden layer of the published VampPrior and Exemplar VAE networks.
    Both maps are one ``Linear`` of twice the width, split in halves (one matrix product)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = torch.nn.Linear(in_features, 2 * out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, g = self.linear(x).chunk(2, dim=-1)
        return h * torch.sigmoid(g)


def _hidden_layer(in_features: int, out_features: int, layers: str) -> list[torch.nn.Module]:
    if layers == "tanh":
        return [torch.nn.Linear(in_features, out_features), torch.nn.Tanh()]
    if layers == "gated":
        return [GatedDense(in_features, out_features)]
    raise ValueError(f"layers must be one of {LAYERS}, got {layers!r}")


def make_decoder(latent_dim: int, obs_dim: int, hidden: int = 50, layers: str = "tanh") -> torch.nn.Module:
    """The decoder every method shares: two hidden layers of ``hidden`` units (``layers``, one of
    :data:`LAYERS`), then a linear map to ``obs_dim`` outputs."""
    return torch.nn.Sequential(*_hidden_layer(latent_dim, hidden, layers), *_hidden_layer(hidden, hidden, layers),
                               torch.nn.Linear(hidden, obs_dim))


def make_encoder(obs_dim: int, latent_dim: int, hidden: int = 50, layers: str = "tanh") -> torch.nn.Module:
    """The amortized encoder of VAE and IWAE: ``x -> (loc, log scale)``."""
    return make_decoder(obs_dim, 2 * latent_dim, hidden, layers)
