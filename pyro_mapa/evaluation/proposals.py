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

from typing import Callable

import pyro
import pyro.distributions as dist
import torch

from ..cache import MAPAIndex, exact_neighbors
from ..models import Likelihood, as_likelihood
from .mixtures import DefensiveMixture, GaussianMixture, fast_prior

__all__ = ["laplace_mixture_proposal"]


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
    anchors: Callable[[torch.Tensor], MAPAIndex] | None = None,
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
    :param anchors: where the anchors come from: ``None``, the codes whose decoded outputs
        explain ``x`` best (searched here); or a function of ``x`` giving a distribution over
        the training indices, such as a MAPA cache's ``posterior.encode`` (no decoder passes
        for the search: the anchors are ``x``'s cached neighbours, weighted by ``q(i | x)``
        renormalised over the top ``K``, :meth:`~pyro_mapa.cache.MAPAIndex.top`).
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
    else:
        prior = fast_prior(prior)
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
            if anchors is None:
                table = exact_neighbors(x, outputs, kernel, num_anchors, progress=False)  # blocked by itself
                index, log_weights = table.index, table.log_prob
            else:
                index, log_weights = anchors(x).top(num_anchors)
            parts = [laplace(*chunk) for chunk in zip(x.split(chunk_size), index.split(chunk_size))]
            last.update(x=x, value=(log_weights, *(torch.cat(p) for p in zip(*parts))))
        return last["value"]

    def proposal(x: torch.Tensor) -> None:
        with torch.no_grad():
            log_weights, loc, scale_tril, whitener = components(x)
        anchors = GaussianMixture(
            dist.Categorical(logits=log_weights), dist.MultivariateNormal(loc, scale_tril=scale_tril), whitener
        )
        with pyro.plate("data", len(x)):
            pyro.sample(site, DefensiveMixture(anchors, prior, prior_weight))

    return proposal
