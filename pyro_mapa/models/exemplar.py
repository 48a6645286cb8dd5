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

The same mixture with a diagonal scale per component, ``(1/M) sum_m N(z; mu_m, diag(s_m^2))``,
is VampPrior's (Tomczak and Welling 2018: the encoder's Gaussians at ``M`` pseudo-inputs); its
squared distances are ``z^2 . P_m - 2 z . (mu_m P_m) + mu_m^2 . P_m`` with ``P_m = s_m^{-2}``,
two matrix products. torch's ``MixtureSameFamily`` would hold a ``(rows, M, d)`` tensor: 20 GB
at 65,000 rows, 500 components and ``d = 40`` (a scorer's chunk).
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution, constraints

__all__ = ["ExemplarMixture"]


class ExemplarMixture(TorchDistribution):
    """``(1 / M) sum_m N(z; locs[m], scale^2 I)``: no batch shape, event shape ``(d,)``.

    :param locs: ``(M, d)`` component means (gradients flow through them).
    :param scale: the shared standard deviation ``s`` (a positive number or 0-d tensor), or an
        ``(M, d)`` tensor: each component's own diagonal (VampPrior's).
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
        if self.scale.dim() and self.scale.shape != locs.shape:
            raise ValueError(f"scale must be a number or of the locs' shape {tuple(locs.shape)}, got {tuple(self.scale.shape)}")
        self.max_entries = max_entries
        super().__init__(torch.Size(), locs.shape[1:], validate_args=False)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            pick = torch.randint(0, len(self.locs), sample_shape, device=self.locs.device)
            scale = self.scale[pick] if self.scale.dim() else self.scale
            return self.locs[pick] + scale * torch.randn(sample_shape + self.event_shape, dtype=self.locs.dtype,
                                                         device=self.locs.device)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        d = self.locs.shape[1]
        locs = self.locs.double()
        centre = locs.mean(0).detach()
        locs = locs - centre
        flat = value.reshape(-1, d).double() - centre
        scale = self.scale.double()
        pieces = []
        if scale.dim():  # per component: P_m = s_m^-2, two matrix products
            precision = scale.pow(-2)
            weighted, loc_terms = locs * precision, (locs.square() * precision).sum(1)
            log_det = scale.log().sum(1)
            for chunk in flat.split(max(1, self.max_entries // len(self.locs))):
                squared = (chunk.square() @ precision.T - 2 * chunk @ weighted.T + loc_terms).clamp_min(0.0)
                pieces.append(torch.logsumexp(-0.5 * squared - log_det, dim=1))
            shared_log_det = 0.0  # inside the logsumexp: it differs between components
        else:
            loc_norms = locs.square().sum(1)
            for chunk in flat.split(max(1, self.max_entries // len(self.locs))):
                squared = (chunk.square().sum(1, keepdim=True) - 2 * chunk @ locs.T + loc_norms).clamp_min(0.0)
                pieces.append(torch.logsumexp(-0.5 * squared / scale.square(), dim=1))
            shared_log_det = d * scale.log()
        log_norm = shared_log_det + 0.5 * d * math.log(2 * math.pi) + math.log(len(self.locs))
        return (torch.cat(pieces).reshape(value.shape[:-1]) - log_norm).to(value.dtype)
