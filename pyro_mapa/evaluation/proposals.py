r"""An importance-sampling proposal for a decoder's latent posterior, anchored at its codes.

To estimate ``log p(x)`` of a continuous-prior model ``z ~ p(z)``,
``x ~ p(x | f(z))`` at a new point ``x``
(:func:`~pyro_mapa.evaluation.importance_log_likelihood`), the proposal must put mass
wherever ``p(z | x)`` does. A model trained on ``N`` points has a code ``c_m`` per
training point (the empiricalized model's codes, or an encoder's means); the codes whose
decoded outputs ``f(c_m)`` explain ``x`` best are the anchors, weighted by
``w_m ∝ p(x | f(c_m))`` (the empiricalized model's own index posterior, restricted to the
``K`` best). Linearising the decoder at an anchor, ``f(z) ~ f(c_m) + J_m (z - c_m)``, with
``g_m = d log p(x | f) / d f`` and the Fisher weight ``W_m`` at ``f(c_m)`` (``I / sigma^2``
for the Gaussian, ``diag(p (1 - p))`` for the Bernoulli with ``p = sigmoid(f(c_m))``) and a
standard normal prior's curvature (whatever the model's prior: for another prior the
components sit a little off, which costs samples, not bias), gives a Gaussian with

.. math::
    \Lambda_m = J_m^\top W_m J_m + I, \qquad
    \mu_m = c_m + \Lambda_m^{-1} \big(J_m^\top g_m - c_m\big)

(one Gauss-Newton step from ``c_m`` on ``log p(x | z) + log N(z; 0, I)``). The proposal
mixes these, widened by ``inflation``, with the model's prior as a defensive component:

.. math::
    r(z \mid x) = w_0\, p(z) + (1 - w_0) \sum_m w_m\, N(z; \mu_m, \text{inflation}^2 \Lambda_m^{-1}).

Anchoring at the decoded codes rather than at the codes of ``x``'s nearest *training
points* matters: a model may explain a training point by another code than its own (exact
enumeration leaves codes behind), and a fixed spread around the codes misses posteriors
much narrower than it: either way the estimate can be biased low by nats even at 10,000
samples (docs/math.md, section 5).
"""

from __future__ import annotations

import math
from typing import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution, constraints

from ..cache import exact_neighbors
from ..models import Likelihood, as_likelihood

__all__ = ["laplace_mixture_proposal"]


class _DefensiveMixture(TorchDistribution):
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


class _GaussianMixture(dist.MixtureSameFamily):
    """torch's mixture of ``K`` multivariate normals per batch element, sampled and scored
    the fast way. torch draws from all ``K`` components and then picks one (``K`` times the
    work), and scores with one small triangular solve per (sample, element, component); here
    each draw comes from its own component only, and the density whitens all the samples of a
    component at once, ``L^{-1} (x - mu)`` as one matrix product (at ``d = 40`` these were
    most of the scorer's time). The density is the same."""

    #: entries of gathered Cholesky factors held at once while sampling
    MAX_ENTRIES = 2**22

    def __init__(self, mixture, components: dist.MultivariateNormal, whitener: torch.Tensor | None = None):
        """``whitener``: triangular ``W`` per component with ``W^T W`` the precision (default
        ``L^{-1}`` of the components' ``scale_tril``, computed here)."""
        super().__init__(mixture, components, validate_args=False)
        if whitener is None:
            tril = components.scale_tril
            whitener = torch.linalg.solve_triangular(tril, torch.eye(tril.shape[-1], dtype=tril.dtype), upper=False)
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

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        normal, batch = self.component_distribution, self.batch_shape
        d, num_components = normal.event_shape[0], normal.batch_shape[-1]
        lead = value.shape[: value.dim() - 1 - len(batch)]
        num_vectors, num_elements = lead.numel(), batch.numel()
        vectors = value.expand(lead + batch + (d,)).reshape(num_vectors, num_elements, d).permute(1, 2, 0)
        loc = normal.loc.expand(batch + (num_components, d)).reshape(num_elements, num_components, d, 1)
        whitener = self.whitener.expand(batch + (num_components, d, d)).reshape(num_elements, num_components, d, d)
        mahalanobis = (whitener @ (vectors.unsqueeze(1) - loc)).pow(2).sum(-2)  # (elements, K, vectors)
        half_log_det = -whitener.diagonal(dim1=-2, dim2=-1).abs().log().sum(-1, keepdim=True)  # log |Sigma|^(1/2)
        log_weights = torch.log_softmax(self.mixture_distribution.logits, -1).expand(batch + (num_components,))
        log_prob = -0.5 * mahalanobis - half_log_det - 0.5 * d * math.log(2 * math.pi)
        log_prob = (log_prob + log_weights.reshape(num_elements, num_components, 1)).logsumexp(1)
        return log_prob.T.reshape(lead + batch)


def laplace_mixture_proposal(
    decoder: Callable[[torch.Tensor], torch.Tensor],
    codes: torch.Tensor,
    likelihood: Likelihood | float,
    *,
    prior: dist.Distribution | None = None,
    num_anchors: int = 16,
    prior_weight: float = 0.1,
    inflation: float = 1.5,
    site: str = "z",
    chunk_size: int = 64,
) -> Callable:
    """A proposal guide ``proposal(x)`` for the latent site ``site`` of a model
    ``z ~ prior``, ``x ~ p(x | decoder(z))`` in a plate over the rows of ``x``.

    :param decoder: ``f``, mapping ``(M, d)`` codes to ``(M, D)`` outputs.
    :param codes: ``(N, d)`` codes of the training points (any points in latent space
        that the decoder maps near the data).
    :param likelihood: the observation model (:class:`~pyro_mapa.models.NormalLikelihood`,
        :class:`~pyro_mapa.models.BernoulliLikelihood`), or a number: the Gaussian's ``sigma``.
        Its gradient and Fisher weight give the Gauss-Newton step (``1 / sigma^2`` for the
        Gaussian, ``p (1 - p)`` for the Bernoulli).
    :param prior: the model's prior, the defensive component (default ``N(0, I)``).
    :param num_anchors: ``K``, the codes whose decoded outputs explain each ``x`` best.
    :param prior_weight: ``w_0``, the defensive component's weight.
    :param inflation: how much wider than the Laplace approximation each component is.
    :param chunk_size: points of ``x`` whose components are built at once (each needs
        ``chunk_size x K`` Jacobians of ``D x d``); the components of the last ``x`` are kept,
        so that an importance sampler that calls the proposal once per chunk of particles
        builds them once.

    >>> codes = torch.linspace(-2, 2, 50).unsqueeze(-1)
    >>> decoder = lambda z: torch.cat([z, z.abs()], -1)
    >>> proposal = laplace_mixture_proposal(decoder, codes, 0.1, num_anchors=8)
    >>> pyro.poutine.trace(proposal).get_trace(torch.tensor([[1.0, 1.0]])).nodes["z"]["value"].shape
    torch.Size([1, 1])
    """
    if not 0.0 < prior_weight < 1.0:
        raise ValueError(f"prior_weight must lie in (0, 1), got {prior_weight}")
    if not inflation > 0:
        raise ValueError(f"inflation must be positive, got {inflation}")
    likelihood = as_likelihood(likelihood)
    num_anchors = min(num_anchors, len(codes))
    codes = codes.detach()
    d = codes.shape[1]
    eye = torch.eye(d, dtype=torch.float64, device=codes.device)
    if prior is None:
        prior = dist.MultivariateNormal(codes.new_zeros(d), scale_tril=eye.to(codes.dtype))
    elif isinstance(prior, dist.MixtureSameFamily) and isinstance(prior.component_distribution, dist.MultivariateNormal):
        prior = _GaussianMixture(prior.mixture_distribution, prior.component_distribution)  # the same density
    with torch.no_grad():
        outputs = decoder(codes)
    kernel = likelihood.anchor_kernel()  # log-weights log p(x | f(c_m)) + const: w_m

    # forward mode costs d passes per Jacobian, reverse mode D: take the cheaper
    jacobian = torch.func.jacfwd if outputs.shape[1] > d else torch.func.jacrev

    def jacobians(z: torch.Tensor) -> torch.Tensor:
        """``d f / d z`` at each row of ``z``: ``(M, D, d)``."""
        with torch.enable_grad():
            return torch.func.vmap(jacobian(lambda c: decoder(c.unsqueeze(0)).squeeze(0)))(z)

    def laplace(x: torch.Tensor, anchors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """For ``B`` points and their ``(B, K)`` anchors: ``mu_m`` (B, K, d), Cholesky factors
        ``L_m`` of ``inflation^2 Lambda_m^{-1}`` and whiteners ``W_m`` with ``W_m^T W_m = (L_m L_m^T)^{-1}``."""
        centre = codes[anchors]  # (B, K, d)
        jac = jacobians(centre.reshape(-1, d)).reshape(*anchors.shape, -1, d)  # (B, K, D, d)
        gradient_out, weight = likelihood.gradient_and_weight(x.unsqueeze(1), outputs[anchors])  # (B, K, D)
        # the d x d algebra in float64: a steep decoder with a rank-deficient Jacobian makes
        # Lambda_m too ill-conditioned for a float32 Cholesky factorisation
        jac64 = jac.double()
        precision = jac64.transpose(-1, -2) @ (weight.double().unsqueeze(-1) * jac64) + eye
        cholesky = torch.linalg.cholesky(precision)
        gradient = (jac64.transpose(-1, -2) @ gradient_out.double().unsqueeze(-1)).squeeze(-1) - centre.double()
        step = torch.cholesky_solve(gradient.unsqueeze(-1), cholesky).squeeze(-1)
        scale_tril = inflation * torch.linalg.cholesky(torch.cholesky_inverse(cholesky))
        whitener = cholesky.mT / inflation  # Lambda_m = C C^T: W^T W = Lambda_m / inflation^2
        return centre + step.to(codes.dtype), scale_tril.to(codes.dtype), whitener.to(codes.dtype)

    last = {}

    def components(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Anchor weights (B, K) and :func:`laplace`'s components, for all points of ``x``."""
        if last.get("x") is not x:
            table = exact_neighbors(x, outputs, kernel, num_anchors, progress=False)  # blocked by itself
            parts = [laplace(*chunk) for chunk in zip(x.split(chunk_size), table.index.split(chunk_size))]
            last.update(x=x, value=(table.log_prob, *(torch.cat(p) for p in zip(*parts))))
        return last["value"]

    def proposal(x: torch.Tensor) -> None:
        with torch.no_grad():
            log_weights, loc, scale_tril, whitener = components(x)
        anchors = _GaussianMixture(
            dist.Categorical(logits=log_weights), dist.MultivariateNormal(loc, scale_tril=scale_tril), whitener
        )
        with pyro.plate("data", len(x)):
            pyro.sample(site, _DefensiveMixture(anchors, prior, prior_weight))

    return proposal
