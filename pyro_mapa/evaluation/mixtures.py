"""Mixture proposals that torch lacks or draws slowly: a defensive mixture of two families,
and a Gaussian mixture sampled and scored the fast way (docs/math.md, section 5)."""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution, constraints

from .._memo import RepeatedDensity

__all__ = ["DefensiveMixture", "GaussianMixture", "fast_prior"]


class DefensiveMixture(TorchDistribution):
    """``w_0 defensive + (1 - w_0) main``, for two distributions of any families with the
    same event shape (torch's mixtures need one family); ``defensive`` may have no batch
    shape (one prior for all points: its densities broadcast)."""

    arg_constraints = {}
    support = constraints.real_vector

    def __init__(self, main: dist.Distribution, defensive: dist.Distribution, weight: float):
        self.main, self.defensive, self.weight = main, defensive, weight
        super().__init__(main.batch_shape, main.event_shape, validate_args=False)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        main = self.main.sample(sample_shape)
        defensive = self.defensive.sample(main.shape[: main.dim() - len(self.event_shape)])
        pick = torch.rand(main.shape[: main.dim() - len(self.event_shape)], device=main.device) < self.weight
        return torch.where(pick.reshape(pick.shape + (1,) * len(self.event_shape)), defensive, main)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return torch.logaddexp(
            self.main.log_prob(value) + math.log1p(-self.weight), self.defensive.log_prob(value) + math.log(self.weight)
        )


class GaussianMixture(RepeatedDensity, dist.MixtureSameFamily):
    """torch's mixture of ``K`` multivariate normals per batch element, sampled and scored
    the fast way. torch draws from all ``K`` components and then picks one (``K`` times the
    work), and scores with one small triangular solve per (sample, element, component); here
    each draw comes from its own component only, and the density whitens the draws,
    ``L^{-1} (x - mu)``, by matrix products: for a mixture shared by all draws (a prior), all
    components' whitening of a chunk of draws is one product (at ``d = 40`` the solves were most
    of the scorer's time). The density is the same; a second call on the same unchanged
    draws returns the first's densities (:class:`pyro_mapa._memo.RepeatedDensity`: the model
    and its proposal's defensive component share this prior)."""

    #: entries of gathered Cholesky factors held at once while sampling
    MAX_ENTRIES = 2**22

    def __init__(self, mixture, components: dist.MultivariateNormal, whitener: torch.Tensor | None = None):
        """``whitener``: triangular ``W`` per component with ``W^T W`` the precision (default
        ``L^{-1}`` of the components' ``scale_tril``, computed here)."""
        super().__init__(mixture, components, validate_args=False)
        if whitener is None:
            tril = components.scale_tril
            eye = torch.eye(tril.shape[-1], dtype=tril.dtype, device=tril.device)
            whitener = torch.linalg.solve_triangular(tril, eye, upper=False)
        self.whitener = whitener

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            components = self.mixture_distribution.sample(sample_shape)  # sample_shape + batch_shape
            normal = self.component_distribution
            d = normal.event_shape[0]
            loc, tril = normal.loc.reshape(-1, d), normal.scale_tril.reshape(-1, d, d)  # (batch * K, ...)
            num_components = normal.batch_shape[-1]
            rows = torch.arange(self.batch_shape.numel(), device=loc.device) * num_components
            chosen = (rows + components.reshape(-1, self.batch_shape.numel())).reshape(-1)  # (samples * batch,)
            draws = []
            for piece in chosen.split(max(1, self.MAX_ENTRIES // (d * d))):
                noise = torch.randn(len(piece), d, 1, dtype=loc.dtype, device=loc.device)
                draws.append(loc[piece] + (tril[piece] @ noise).squeeze(-1))
            return torch.cat(draws).reshape(components.shape + (d,))

    def expand(self, batch_shape, _instance=None) -> dist.Distribution:
        """Pyro's generic expansion around this mixture (torch's rebuilds a ``MixtureSameFamily``
        from its own ``__init__``), so that a plate's copies share its densities."""
        return self if torch.Size(batch_shape) == self.batch_shape else dist.ExpandedDistribution(self, batch_shape)

    def _memo_parameters(self) -> tuple[torch.Tensor, ...]:
        return self.mixture_distribution.logits, self.component_distribution.loc, self.whitener

    def _log_prob(self, value: torch.Tensor) -> torch.Tensor:
        normal, d = self.component_distribution, self.event_shape[0]
        num_components = normal.batch_shape[-1]
        # the value's batch dimensions broadcast against the mixture's (an expanded size-1 batch)
        batch = torch.broadcast_shapes(self.batch_shape, value.shape[max(0, value.dim() - 1 - len(self.batch_shape)):-1])
        lead = value.shape[: value.dim() - 1 - len(batch)]
        num_vectors, num_elements = lead.numel(), batch.numel()
        log_weights = torch.log_softmax(self.mixture_distribution.logits, -1).expand(batch + (num_components,))
        half_log_det = -self.whitener.diagonal(dim1=-2, dim2=-1).abs().log().sum(-1)  # log |Sigma|^(1/2), per component
        bias = (log_weights - half_log_det.expand(batch + (num_components,))).reshape(num_elements, num_components)
        bias = bias - 0.5 * d * math.log(2 * math.pi)
        if num_elements == 1:
            return self._shared_log_prob(value.expand(lead + batch + (d,)).reshape(num_vectors, d), bias[0]).reshape(
                lead + batch)
        vectors = value.expand(lead + batch + (d,)).reshape(num_vectors, num_elements, d).permute(1, 2, 0)
        loc = normal.loc.expand(batch + (num_components, d)).reshape(num_elements, num_components, d, 1)
        whitener = self.whitener.expand(batch + (num_components, d, d)).reshape(num_elements, num_components, d, d)
        mahalanobis = (whitener @ (vectors.unsqueeze(1) - loc)).pow(2).sum(-2)  # (elements, K, vectors)
        log_prob = (-0.5 * mahalanobis + bias.unsqueeze(-1)).logsumexp(1)
        return log_prob.T.reshape(lead + batch)

    def _shared_log_prob(self, vectors: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """One mixture for all ``vectors`` (a prior): ``W_k (z - mu_k) = W_k (z - c) - W_k (mu_k - c)``
        for all ``K`` components as one matrix product per chunk of draws, about 2^21 entries of
        ``(draws, K, d)`` at once (whitening each component's draws apart held ``K x d x draws``
        entries at once: 1 GB at a scorer's chunk, several times slower). The centre ``c``, the
        components' mean, keeps the subtraction from cancelling where the draws lie far from 0."""
        normal = self.component_distribution
        num_components, d = normal.loc.shape[-2:]
        centre = normal.loc.reshape(num_components, d).mean(0)
        whitener = self.whitener.reshape(num_components, d, d)
        shift = (whitener @ (normal.loc.reshape(num_components, d) - centre).unsqueeze(-1)).reshape(num_components, d)
        rows = max(1, 2**21 // (num_components * d))
        pieces = [
            (-0.5 * ((chunk - centre) @ whitener.reshape(num_components * d, d).T).reshape(len(chunk), num_components, d)
             .sub(shift).square().sum(-1) + bias).logsumexp(-1)
            for chunk in vectors.split(rows)
        ]
        return torch.cat(pieces) if pieces else vectors.new_zeros(0)


def fast_prior(prior: dist.Distribution) -> dist.Distribution:
    """``prior`` itself, or, for a mixture of multivariate normals (a fitted GMM prior), the
    same density as a :class:`GaussianMixture` (sampled and scored faster; one already is returned
    as it is, so that a model and its proposal given the same prior share its densities)."""
    if isinstance(prior, GaussianMixture):
        return prior
    if isinstance(prior, dist.MixtureSameFamily) and isinstance(prior.component_distribution, dist.MultivariateNormal):
        return GaussianMixture(prior.mixture_distribution, prior.component_distribution)
    return prior
