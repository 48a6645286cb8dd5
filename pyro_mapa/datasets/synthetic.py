"""Synthetic data with ground truth (docs/math.md, section 7).

Every set draws ``z ~ N(0, I_d)`` and ``x = f(z) + sigma * noise`` with a known
decoder ``f`` and fixed ``sigma``, so the true codes, the true posterior and the
true log-likelihood ``log p(x) = log ∫ N(z; 0, I) N(x; f(z), sigma^2 I) dz`` are known.

* ``"absolute-value"``: ``d = 1``, ``f(z) = [z, |z|]``, ``sigma = 0.1``.
* ``"spiral-dots"``: ``d = 1``, ``t = Phi(z)``, ``f(z) = (0.3 + t) [cos 4 pi t, sin 4 pi t]``
  (a two-turn spiral), ``sigma = 0.05``.
* ``"non-identifiable-a"`` / ``"non-identifiable-b"``: the spiral's decoder ``f`` and
  ``f o g`` with ``g(z) = -z``, which preserves the prior: the same seed gives the
  very same observations, but codes ``z`` and ``-z``, hence different latent posteriors.
* ``"embedded"``: a ``d``-dimensional latent (``latent_dim``, default 2) through a
  fixed random two-layer tanh network into ``D`` dimensions (``obs_dim``, default 20),
  ``sigma = 0.1``.

The true log-likelihood is computed by quadrature on a grid for ``d <= 2`` (error far
below 0.01 nats for these decoders) and estimated by ``2^16`` prior samples above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .._checks import as_data_tensor, check_count
from .._tensors import row_chunks, squared_distances

__all__ = ["SYNTHETIC_DATASETS", "SyntheticData", "load_synthetic"]


def _absolute_value(z: torch.Tensor) -> torch.Tensor:
    return torch.cat([z, z.abs()], dim=-1)


def _spiral(z: torch.Tensor) -> torch.Tensor:
    t = torch.special.ndtr(z)
    angle = 4 * math.pi * t
    return (0.3 + t) * torch.cat([angle.cos(), angle.sin()], dim=-1)


def _mirrored_spiral(z: torch.Tensor) -> torch.Tensor:
    return _spiral(-z)


class _RandomNetwork:
    """``f(z) = W2 tanh(W1 z + b1)``, fixed by a seed (the "embedded" decoder)."""

    def __init__(self, latent_dim: int, obs_dim: int, seed: int, hidden: int = 32):
        g = torch.Generator().manual_seed(10_000 + seed)
        self.w1 = torch.randn(latent_dim, hidden, generator=g, dtype=torch.float64) * 1.5
        self.b1 = torch.randn(hidden, generator=g, dtype=torch.float64) * 0.5
        self.w2 = torch.randn(hidden, obs_dim, generator=g, dtype=torch.float64) / math.sqrt(hidden)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        w1, b1, w2 = (t.to(z) for t in (self.w1, self.b1, self.w2))
        return torch.tanh(z @ w1 + b1) @ w2


@dataclass
class SyntheticData:
    """A synthetic data set with its ground truth.

    :param name: the data set's name.
    :param train: ``(num_train, D)`` observations.
    :param test: ``(num_test, D)`` observations.
    :param sigma: the fixed observation noise.
    :param train_codes: ``(num_train, d)`` true latent codes of ``train``.
    :param test_codes: ``(num_test, d)`` true latent codes of ``test``.
    :param decoder: the true decoder ``f`` (``(..., d) -> (..., D)``).
    """

    name: str
    train: torch.Tensor
    test: torch.Tensor
    sigma: float
    train_codes: torch.Tensor
    test_codes: torch.Tensor
    decoder: Callable[[torch.Tensor], torch.Tensor]

    @property
    def latent_dim(self) -> int:
        """``d``, the latent dimension."""
        return self.train_codes.shape[1]

    def log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """The true model's ``log p(x)`` per point of ``x`` (``M x D``), in float64."""
        x = as_data_tensor(x, "x").to(torch.float64)
        if x.shape[1] != self.train.shape[1]:
            raise ValueError(f"x has {x.shape[1]} features, the data set has {self.train.shape[1]}")
        if self.latent_dim <= 2:
            grid = torch.linspace(-7.0, 7.0, 4001 if self.latent_dim == 1 else 601, dtype=torch.float64)
            z = torch.cartesian_prod(*[grid] * self.latent_dim).reshape(-1, self.latent_dim)
            # Riemann sum of the prior density times the likelihood
            log_weight = -0.5 * (z**2).sum(-1) + self.latent_dim * (
                math.log(float(grid[1] - grid[0])) - 0.5 * math.log(2 * math.pi)
            )
        else:
            g = torch.Generator().manual_seed(0)
            z = torch.randn(2**16, self.latent_dim, generator=g, dtype=torch.float64)
            log_weight = torch.full((z.shape[0],), -math.log(z.shape[0]), dtype=torch.float64)
        mean = self.decoder(z)
        const = -x.shape[1] * (math.log(self.sigma) + 0.5 * math.log(2 * math.pi))
        out = []
        for chunk in row_chunks(x, 2**23, row_size=z.shape[0]):
            sq = squared_distances(chunk, mean)
            out.append((log_weight - 0.5 * sq / self.sigma**2).logsumexp(-1) + const)
        return torch.cat(out)


_DECODERS = {
    "absolute-value": (1, 2, 0.1, _absolute_value),
    "spiral-dots": (1, 2, 0.05, _spiral),
    "non-identifiable-a": (1, 2, 0.05, _spiral),
    "non-identifiable-b": (1, 2, 0.05, _mirrored_spiral),
}
SYNTHETIC_DATASETS = (*_DECODERS, "embedded")


def load_synthetic(
    name: str,
    num_train: int = 1000,
    num_test: int = 500,
    seed: int = 0,
    *,
    latent_dim: int = 2,
    obs_dim: int = 20,
    dtype: torch.dtype | None = None,
) -> SyntheticData:
    """Draw a synthetic data set (see the module docstring for the sets).

    :param name: one of :data:`SYNTHETIC_DATASETS`.
    :param num_train: training points ``N``.
    :param num_test: test points.
    :param seed: the seed of the draw (train and test together).
    :param latent_dim: ``d`` of ``"embedded"``.
    :param obs_dim: ``D`` of ``"embedded"``.
    :param dtype: of the returned tensors (default: torch's default dtype).

    >>> data = load_synthetic("absolute-value", num_train=3, num_test=2)
    >>> data.train.shape, data.test.shape, data.sigma
    (torch.Size([3, 2]), torch.Size([2, 2]), 0.1)
    """
    check_count(num_train, "num_train")
    check_count(num_test, "num_test", minimum=0)
    dtype = dtype or torch.get_default_dtype()
    if name == "embedded":
        check_count(latent_dim, "latent_dim")
        check_count(obs_dim, "obs_dim")
        d, decoder, sigma = latent_dim, _RandomNetwork(latent_dim, obs_dim, seed), 0.1
    elif name in _DECODERS:
        d, _, sigma, decoder = _DECODERS[name]
    else:
        raise ValueError(f"unknown synthetic data set {name!r}; choose from {SYNTHETIC_DATASETS}")
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(num_train + num_test, d, generator=g, dtype=torch.float64)
    if name == "non-identifiable-b":
        z = -z  # g(z) = -z: same observations as "non-identifiable-a", mirrored codes
    mean = decoder(z)
    x = mean + sigma * torch.randn(mean.shape, generator=g, dtype=torch.float64)
    return SyntheticData(
        name=name,
        train=x[:num_train].to(dtype),
        test=x[num_train:].to(dtype),
        sigma=sigma,
        train_codes=z[:num_train].to(dtype),
        test_codes=z[num_train:].to(dtype),
        decoder=decoder,
    )
