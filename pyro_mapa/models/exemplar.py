r"""The exemplar prior: an equally weighted mixture of isotropic Gaussians at given points (docs/math.md, section 4).

Exemplar VAE (Norouzi, Fleet, Norouzi 2020) puts the prior

.. math::
    p(z) = \frac{1}{M} \sum_{m=1}^M N(z;\, \mu_m,\, s^2 I)

at the encoder means ``mu_m = mu_phi(x_m)`` of the ``M`` training points, with one learned
scale ``s``. With ``M`` in the tens of thousands, torch's ``MixtureSameFamily`` would hold
an ``M x d`` component per batch element; :class:`ExemplarMixture` scores all components at
once by one matrix product, ``||z - mu_m||^2 = |z|^2 - 2 z . mu_m + |mu_m|^2``, in chunks of
``z`` so that memory stays bounded (below: how, and in which dtype).

The same mixture with a diagonal scale per component, ``(1/M) sum_m N(z; mu_m, diag(s_m^2))``,
is VampPrior's (Tomczak and Welling 2018: the encoder's Gaussians at ``M`` pseudo-inputs).

Both are scored as one matrix product and one logsumexp per chunk of ``z``. With
``P_m = s_m^{-2}`` (a scalar for the shared scale),

.. math::
    \log N(z; \mu_m, \mathrm{diag}(P_m^{-1})) = \underbrace{-\tfrac12 z^2 \cdot P_m + z \cdot (\mu_m P_m)}_{\text{features of } z
    \,\times\, \text{weights of } m}
    \underbrace{- \tfrac12 \mu_m^2 \cdot P_m - \textstyle\sum_j \log s_{mj}}_{\text{bias of } m} - \tfrac d2 \log 2\pi,

so the features ``[z^2, z]`` times the weights ``[-P_m / 2, mu_m P_m]`` plus the bias is one
``addmm``; with a shared scale the ``z^2`` term leaves the logsumexp (``-|z|^2 / 2 s^2``, one
number per row) and the features are ``z`` alone. torch's ``MixtureSameFamily`` would hold a
``(rows, M, d)`` tensor: 20 GB at 65,000 rows, 500 components and ``d = 40`` (a scorer's chunk).

The expansion cancels when the points lie far from the means' centre compared with the
scales, so both sides are moved to that centre in the working dtype. That is float32 when the
means and the points are float32 and the rounding of the largest term, estimated as
``eps (max|z| + max|mu|)^2 / (2 min s^2)`` and taken 4 times over (measured errors reach 1.6
times the estimate), stays below :attr:`ExemplarMixture.TOLERANCE` nats; float64 otherwise, and
always under TF32 matrix products (means 20 away with ``s = 0.02`` were 2.8 nats off in
float32). Autocast is switched off inside. Float32 makes a scorer's 50,000 components 2.5 times
faster (benchmarks/RESULTS.md, "The exemplar prior's cost").

An importance sampler scores the same draws twice, under the proposal (whose defensive
component is this prior) and under the model: the second call returns the first's densities
(:class:`pyro_mapa._memo.RepeatedDensity`).
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution, constraints

from .._memo import RepeatedDensity

__all__ = ["ExemplarMixture"]

#: terms this many nats below a row's largest are raised to ``e^-_FLOOR`` (:func:`_floored_logsumexp`)
_FLOOR = 80.0
#: the float32 rounding estimate's factor of safety: errors measured up to 1.6 times the estimate (d = 40 to 400)
_ROUNDING_MARGIN = 4.0


class ExemplarMixture(RepeatedDensity, TorchDistribution):
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
    #: nats of rounding allowed before the products move to float64
    TOLERANCE = 1e-3

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

    def _memo_parameters(self) -> tuple[torch.Tensor, ...]:
        return self.locs, self.scale

    def _log_prob(self, value: torch.Tensor) -> torch.Tensor:
        with torch.autocast(value.device.type, enabled=False):  # the rounding rule assumes full float32
            return self._scores(value)

    def _scores(self, value: torch.Tensor) -> torch.Tensor:
        d = self.locs.shape[1]
        centre = self.locs.detach().mean(0)
        dtype = self._working_dtype(value, centre)
        centre = centre.to(dtype)  # any point will do; the differences are taken in the working dtype
        locs, flat, scale = self.locs.to(dtype) - centre, value.reshape(-1, d).to(dtype) - centre, self.scale.to(dtype)
        precision = scale.pow(-2)
        if scale.dim():  # per component: features [z^2, z], weights [-P/2, mu P]
            weights = torch.cat([-0.5 * precision, locs * precision], 1)
            bias = -0.5 * (locs.square() * precision).sum(1) - scale.log().sum(1)
            features, row_term = torch.cat([flat.square(), flat], 1), 0.0
        else:  # shared scale: -|z|^2 / 2 s^2 leaves the logsumexp
            weights, bias = locs * precision, -0.5 * locs.square().sum(1) * precision - d * scale.log()
            features, row_term = flat, -0.5 * flat.square().sum(1) * precision
        pieces = [_floored_logsumexp(torch.addmm(bias, chunk, weights.T))
                  for chunk in features.split(max(1, self.max_entries // len(self.locs)))]
        log_norm = 0.5 * d * math.log(2 * math.pi) + math.log(len(self.locs))
        return (torch.cat(pieces) + row_term - log_norm).reshape(value.shape[:-1]).to(value.dtype)

    def _working_dtype(self, value: torch.Tensor, centre: torch.Tensor) -> torch.dtype:
        """float32 where both sides are float32, the matrix products run in full float32 (no
        TF32) and the rounding estimate, times a margin, stays below :attr:`TOLERANCE` nats;
        float64 otherwise."""
        if torch.promote_types(self.locs.dtype, value.dtype) != torch.float32 or value.numel() == 0:
            return torch.float64
        if torch.get_float32_matmul_precision() != "highest" or (value.is_cuda and torch.backends.cuda.matmul.allow_tf32):
            return torch.float64
        with torch.no_grad():
            reach = (self.locs - centre).norm(dim=1).max() + (value.reshape(-1, len(centre)) - centre).norm(dim=1).max()
            estimate = torch.finfo(torch.float32).eps * reach.double() ** 2 / (2 * self.scale.double().min() ** 2)
        return torch.float32 if _ROUNDING_MARGIN * estimate <= self.TOLERANCE else torch.float64


def _floored_logsumexp(logits: torch.Tensor) -> torch.Tensor:
    """``logsumexp`` over each row, with the terms more than :data:`_FLOOR` nats below the row's
    largest raised to ``e^-FLOOR``: float32's ``exp`` of anything below -87 is a denormal number,
    and torch's ``logsumexp`` took 8 times as long on such rows (benchmarks/RESULTS.md, "The
    exemplar prior's cost"). The change is at most ``M e^-80`` relative, below float64's
    resolution for fewer than 10^19 components. In place where nothing is differentiated."""
    top = logits.detach().amax(1, keepdim=True)
    if logits.requires_grad and torch.is_grad_enabled():
        terms = (logits - top).clamp_min(-_FLOOR).exp()
    else:
        terms = logits.sub_(top).clamp_(min=-_FLOOR).exp_()
    return terms.sum(1).log() + top.squeeze(1)

