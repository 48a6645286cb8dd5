"""The observation model ``p(x | f(z))`` as an object, for every place that needs it.

A :class:`Likelihood` turns a decoder's output ``f(z)`` into a distribution (the models), a
gathered one over decoded rows (the empiricalized model), the log-likelihood of all pairs of
observations and outputs (exact scores, quadrature, a proposal's anchors), the gradient and
Fisher weight that a Gauss-Newton step needs (docs/math.md, section 5), and MAPA's default
cache kernel for the same data (docs/math.md, section 2):

* :class:`NormalLikelihood`: ``x ~ N(f(z), sigma^2 I)`` with a fixed ``sigma``;
* :class:`BernoulliLikelihood`: ``x ~ Bernoulli(logits=f(z))``, one bit per feature.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import pyro.distributions as dist
import torch

from .._checks import check_positive
from ..cache import Kernel
from .gathered import GatheredBernoulli, GatheredNormal

__all__ = ["BernoulliLikelihood", "Likelihood", "NormalLikelihood", "as_likelihood"]


@dataclass(frozen=True)
class Likelihood(ABC):
    """``p(x | f(z))`` given the decoder's output ``out = f(z)`` (rows of ``D`` features)."""

    #: whether the observations are 0/1
    binary = False

    @abstractmethod
    def distribution(self, out: torch.Tensor) -> dist.Distribution:
        """``p(x | out)`` with event shape ``(D,)``."""
        raise NotImplementedError

    @abstractmethod
    def gathered(self, out: torch.Tensor, rows: torch.Tensor) -> dist.Distribution:
        """``distribution(out[rows])`` for ``(U, D)`` distinct outputs, computed in one pass."""
        raise NotImplementedError

    def pairwise_log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``log p(x_b | out_u)`` for every observation and output: ``(len(x), len(out))``.

        >>> x, out = torch.tensor([[0.0], [2.0]]), torch.tensor([[0.0], [1.0], [2.0]])
        >>> NormalLikelihood(1.0).pairwise_log_prob(x, out).shape
        torch.Size([2, 3])
        """
        return self.gathered(out, torch.arange(len(out), device=out.device)).log_prob(x.unsqueeze(-2))

    @abstractmethod
    def gradient_and_weight(self, x: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``d log p(x | out) / d out`` and the Fisher information's diagonal at ``out``
        (the curvature a Gauss-Newton step uses), both of ``out``'s shape."""
        raise NotImplementedError

    @abstractmethod
    def cache_kernel(self) -> Kernel:
        """MAPA's default kernel for data of this likelihood."""
        raise NotImplementedError

    def anchor_kernel(self) -> Kernel:
        """A kernel between observations and decoded outputs whose log-weights are
        ``log p(x | out)`` up to a per-observation constant."""
        return Kernel.custom(lambda x, out: -self.pairwise_log_prob(x, out), temperature=1.0)


@dataclass(frozen=True)
class NormalLikelihood(Likelihood):
    """``x ~ N(f(z), sigma^2 I)`` with a fixed ``sigma``."""

    sigma: float

    def __post_init__(self):
        object.__setattr__(self, "sigma", check_positive(self.sigma, "sigma"))

    def distribution(self, out):
        return dist.Normal(out, self.sigma).to_event(1)

    def gathered(self, out, rows):
        return GatheredNormal(out, self.sigma, rows)

    def gradient_and_weight(self, x, out):
        return (x - out) / self.sigma**2, torch.full_like(out, self.sigma**-2)

    def cache_kernel(self) -> Kernel:
        """``Kernel.gaussian(sigma)``: ``h^2 = 2 sigma^2``."""
        return Kernel.gaussian(self.sigma)

    def anchor_kernel(self) -> Kernel:
        """``-||x - out||^2 / (2 sigma^2)``: the Gaussian kernel of bandwidth ``sigma``."""
        return Kernel.gaussian(bandwidth=self.sigma)


@dataclass(frozen=True)
class BernoulliLikelihood(Likelihood):
    """``x ~ Bernoulli(logits=f(z))``: the decoder's outputs are logits."""

    binary = True

    def distribution(self, out):
        return dist.Bernoulli(logits=out).to_event(1)

    def gathered(self, out, rows):
        return GatheredBernoulli(out, rows)

    def gradient_and_weight(self, x, out):
        p = torch.sigmoid(out)
        return x - p, p * (1 - p)

    def cache_kernel(self) -> Kernel:
        """``Kernel.bernoulli()``: the flip probability ``eps`` at its default."""
        return Kernel.bernoulli()


def as_likelihood(likelihood: Likelihood | float) -> Likelihood:
    """``likelihood`` itself, or a number: the ``sigma`` of a :class:`NormalLikelihood`."""
    if isinstance(likelihood, Likelihood):
        return likelihood
    return NormalLikelihood(likelihood)
