r"""The exemplar prior: an equally weighted mixture of isotropic Gaussians at given points (docs/math.md, section 4).

Exemplar VAE (Norouzi, Fleet, Norouzi 2020) puts the prior

.. math::
    p(z) = \frac{1}{M} \sum_{m=1}^M N(z;\, \mu_m,\, s^2 I)

at the encoder means ``mu_m = mu_phi(x_m)`` of the ``M`` training points, with one learned
scale ``s``. With ``M`` in the tens of thousands, torch's ``MixtureSameFamily`` would hold
an ``M x d`` component per batch element; :class:`ExemplarMixture` scores all components at
once by one matrix product, ``||z - mu_m||^2 = |z|^2 - 2 z . mu_m + |mu_m|^2``, in chunks of
``z`` so that memory stays bounded. The expansion cancels when the means lie far from the
origin compared with ``s`` (in float32: 2.8 nats off with means 20 away and ``s = 0.02``), so
both sides are first moved to the means' centre and the products are taken in float64.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution, constraints

__all__ = ["ExemplarMixture"]


class ExemplarMixture(TorchDistribution):
    """``(1 / M) sum_m N(z; locs[m], scale^2 I)``: no batch shape, event shape ``(d,)``.

    :param locs: ``(M, d)`` component means (gradients flow through them).
    :param scale: the shared standard deviation ``s`` (a positive number or 0-d tensor).
    :param max_entries: ``z``-by-component entries computed at once in :meth:`log_prob`.

    >>> prior = ExemplarMixture(torch.tensor([[0.0], [2.0]]), 1.0)
    >>> prior.log_prob(torch.tensor([[1.0]]))  # both components at distance 1
    tensor([-1.4189])
    """

    arg_constraints = {}
    support = constraints.real_vector

    def __init__(self, locs: torch.Tensor, scale: float | torch.Tensor, max_entries: int = 2**22):
        if locs.dim() != 2 or len(locs) == 0:
            raise ValueError(f"locs must be a non-empty (M, d) matrix, got shape {tuple(locs.shape)}")
        self.locs, self.scale = locs, torch.as_tensor(scale, dtype=locs.dtype, device=locs.device)
        if not (self.scale > 0).all():
            raise ValueError(f"scale must be positive, got {self.scale}")
        self.max_entries = max_entries
        super().__init__(torch.Size(), locs.shape[1:], validate_args=False)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            pick = torch.randint(0, len(self.locs), sample_shape, device=self.locs.device)
            return self.locs[pick] + self.scale * torch.randn(sample_shape + self.event_shape, dtype=self.locs.dtype,
                                                              device=self.locs.device)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        d = self.locs.shape[1]
        locs = self.locs.double()
        centre = locs.mean(0).detach()
        locs = locs - centre
        flat = value.reshape(-1, d).double() - centre
        loc_norms = locs.square().sum(1)
        scale = self.scale.double()
        pieces = []
        for chunk in flat.split(max(1, self.max_entries // len(self.locs))):
            squared = (chunk.square().sum(1, keepdim=True) - 2 * chunk @ locs.T + loc_norms).clamp_min(0.0)
            pieces.append(torch.logsumexp(-0.5 * squared / scale.square(), dim=1))
        log_norm = d * (scale.log() + 0.5 * math.log(2 * math.pi)) + math.log(len(self.locs))
        return (torch.cat(pieces).reshape(value.shape[:-1]) - log_norm).to(value.dtype)
