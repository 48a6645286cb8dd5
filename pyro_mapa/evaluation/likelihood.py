r"""Per-datapoint log-likelihood estimates, the same for every model (docs/math.md, section 5).

For a model with local latents in a plate and any proposal guide ``r(z | x_n)``,

.. math::
    \hat{\log p}(x_n) = \log \frac{1}{P}\sum_{p=1}^P \frac{p(x_n, z_p)}{r(z_p \mid x_n)},
    \qquad z_p \sim r(\cdot \mid x_n),

computed in chunks of particles (memory stays bounded) on the machinery of
:mod:`pyro_mapa.infer.importance`, with the delta-method standard error
``sqrt(Var[w] / (P E[w]^2))``. The estimate is consistent for any proposal whose
support covers the posterior; the standard error says whether ``P`` is enough, and
:func:`stable_log_likelihood` adds samples until the mean stops moving.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, NamedTuple

import pyro.distributions as dist
import torch

from .._checks import check_count
from .._tensors import row_chunks
from ..infer.importance import ImportanceWeightedELBO
from ..models import Likelihood, as_likelihood
from .diagnostics import K_HAT_THRESHOLD, pareto_k_hat

__all__ = [
    "LogLikelihood",
    "StableEstimate",
    "check_sample_range",
    "empirical_log_likelihood",
    "grid_log_likelihood",
    "importance_log_likelihood",
    "stable_log_likelihood",
]


#: Entries of a chunk's pairwise log-likelihoods (and of its decoded outputs) in the exact sums
#: over codes or grid points (:func:`empirical_log_likelihood`, :func:`grid_log_likelihood`).
DECODE_ENTRIES = 2**24


class LogLikelihood(NamedTuple):
    """Per-datapoint estimates of ``log p(x_n)``, their standard errors (nats), and the
    effective sample size ``(sum w)^2 / sum w^2`` of each point's weights (``None`` where not
    sampled). An ESS near 1 means one weight dominates: the estimate is not a result, whatever
    its standard error says (that error is computed from the same few weights). ``k_hat``, where
    asked for, is PSIS's Pareto ``k-hat`` of each point's weights (above 0.7: not to be trusted)."""

    value: torch.Tensor
    stderr: torch.Tensor
    ess: torch.Tensor | None = None
    k_hat: torch.Tensor | None = None


class _ImportanceSampler(ImportanceWeightedELBO):
    """Log-weights under any proposal with a density: nothing is differentiated."""

    def _check_guide_site(self, site: dict) -> None:
        fn = site["fn"]
        while isinstance(fn, (dist.Independent, dist.MaskedDistribution, dist.ExpandedDistribution)):
            fn = fn.base_dist
        if isinstance(fn, dist.Delta):
            raise ValueError(
                f"proposal site '{site['name']}' is a point mass (Delta, e.g. AutoDelta): it has no density, "
                "so importance sampling would return log p(x, z*) rather than log p(x); use a proposal with spread"
            )


def importance_log_likelihood(
    model: Callable,
    proposal: Callable,
    *args,
    num_particles: int = 1000,
    chunk_size: int = 100,
    max_plate_nesting: float = float("inf"),
    k_hat: bool = False,
    **kwargs,
) -> LogLikelihood:
    """Importance-sampling estimate of ``log p(x_n)`` for each datapoint of the model's plate.

    :param model: a Pyro model with its latent sites inside the data plate.
    :param proposal: a guide with the same signature (the prior, an encoder, a mixture...).
    :param num_particles: ``P``, draws per datapoint in all.
    :param chunk_size: draws per pass (memory is ``O(chunk_size x batch)``).
    :param max_plate_nesting: the model's plate nesting; guessed (and logged by Pyro) if infinite.
    :param k_hat: also give each point's Pareto ``k-hat`` (keeps all ``P`` weights per point), and
        warn when their median exceeds 0.7.

    >>> import pyro
    >>> def model(x):
    ...     with pyro.plate("data", len(x)):
    ...         z = pyro.sample("z", dist.Normal(0.0, 1.0))
    ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
    >>> def exact_posterior(x):  # p(z | x) = N(x / 2, 1 / 2): every weight equals p(x)
    ...     with pyro.plate("data", len(x)):
    ...         pyro.sample("z", dist.Normal(x / 2, 0.5**0.5))
    >>> x = torch.tensor([0.0, 1.0])
    >>> estimate = importance_log_likelihood(model, exact_posterior, x, num_particles=10, max_plate_nesting=1)
    >>> estimate.value, dist.Normal(0.0, 2**0.5).log_prob(x)  # p(x) = N(x; 0, 2)
    (tensor([-1.2655, -1.5155]), tensor([-1.2655, -1.5155]))
    """
    check_count(num_particles, "num_particles")
    check_count(chunk_size, "chunk_size")
    sampler = _ImportanceSampler(chunk_size, 0.0, max_plate_nesting)
    log_sum = log_sum_sq = None
    done, kept = 0, []
    with torch.no_grad():
        while done < num_particles:
            sampler.num_particles = min(chunk_size, num_particles - done)
            log_w = sampler.importance_weights(model, proposal, *args, **kwargs).log_weights
            if k_hat:
                kept.append(log_w.reshape(len(log_w), -1))
            chunk_sum, chunk_sum_sq = log_w.logsumexp(0), (2 * log_w).logsumexp(0)
            log_sum = chunk_sum if log_sum is None else torch.logaddexp(log_sum, chunk_sum)
            log_sum_sq = chunk_sum_sq if log_sum_sq is None else torch.logaddexp(log_sum_sq, chunk_sum_sq)
            done += sampler.num_particles
    log_mean = log_sum - math.log(done)
    relative_variance = (log_sum_sq - math.log(done) - 2 * log_mean).exp() - 1
    ess = (2 * log_sum - log_sum_sq).exp()
    k_hats = None
    if k_hat:
        k_hats = pareto_k_hat(torch.cat(kept).T).reshape(log_mean.shape)
        if k_hats.median() > K_HAT_THRESHOLD:
            warnings.warn(
                f"the median Pareto k-hat of the importance weights is {k_hats.median():.2f} > {K_HAT_THRESHOLD}: "
                "the proposal misses the posterior and the estimate is not to be trusted, whatever its standard error",
                stacklevel=2,
            )
    return LogLikelihood(log_mean, (relative_variance.clamp_min(0) / done).sqrt(), ess, k_hats)


def empirical_log_likelihood(
    decoder: Callable[[torch.Tensor], torch.Tensor],
    codes: torch.Tensor,
    x: torch.Tensor,
    likelihood: Likelihood | float,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Exact ``log p(x | theta, Z) = logsumexp_m log p(x | f(z_m)) - log N`` per point of
    ``x``, for the empiricalized model (docs/math.md, section 1). The decoder runs once on
    each of the ``N`` codes, ``chunk_size`` codes at a time (default: as many as keep a
    chunk's ``len(x) x chunk`` log-likelihoods and its decoded outputs under 2^24 entries),
    and the sum over codes runs along: memory stays bounded whatever ``N``.

    :param likelihood: the observation model, or a number: the Gaussian's ``sigma``.
    """
    likelihood = as_likelihood(likelihood)
    if chunk_size is not None:
        check_count(chunk_size, "chunk_size")
    return _decoded_logsumexp(decoder, codes, x, likelihood, chunk_size=chunk_size) - math.log(codes.shape[0])


def grid_log_likelihood(
    decoder: Callable[[torch.Tensor], torch.Tensor],
    prior: dist.Distribution,
    likelihood: Likelihood | float,
    x: torch.Tensor,
    low: float,
    high: float,
    num_points: int = 2001,
) -> torch.Tensor:
    """``log p(x_n) = log \\int p(x_n | f(z)) p(z) dz`` per point of ``x`` by the
    midpoint rule on a regular grid over ``[low, high]^d``, for a latent of ``d <= 2``
    dimensions: a reference for importance sampling that involves no proposal. The grid
    must cover the posteriors and be fine next to their widths (``num_points`` per axis).
    ``likelihood`` is the observation model, or a number: the Gaussian's ``sigma``.

    >>> prior = dist.Normal(torch.zeros(1), 1.0).to_event(1)
    >>> x = torch.tensor([[0.3]])  # x ~ N(z, 0.5^2): p(x) = N(x; 0, 1 + 0.25)
    >>> round(grid_log_likelihood(lambda z: z, prior, 0.5, x, -8.0, 8.0).item(), 5)
    -1.06651
    >>> round(dist.Normal(0.0, 1.25**0.5).log_prob(x).item(), 5)
    -1.06651
    """
    if len(prior.event_shape) != 1 or prior.event_shape[0] > 2:
        raise ValueError(
            f"grid_log_likelihood integrates over d <= 2 latent dimensions (a prior of event shape (d,)), "
            f"got event shape {tuple(prior.event_shape)}"
        )
    d = prior.event_shape[0]
    if x.dim() != 2:
        raise ValueError(f"x must be a (num_points, D) matrix, got shape {tuple(x.shape)}")
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"the grid needs finite low < high, got [{low}, {high}]")
    check_count(num_points, "num_points")
    likelihood = as_likelihood(likelihood)
    step = (high - low) / num_points
    axis = torch.linspace(low + step / 2, high - step / 2, num_points, dtype=x.dtype, device=x.device)
    grid = torch.cartesian_prod(*[axis] * d).reshape(-1, d)
    return _decoded_logsumexp(decoder, grid, x, likelihood, log_weight=prior.log_prob) + d * math.log(step)


def _decoded_logsumexp(
    decoder: Callable[[torch.Tensor], torch.Tensor],
    points: torch.Tensor,
    x: torch.Tensor,
    likelihood: Likelihood,
    *,
    log_weight: Callable[[torch.Tensor], torch.Tensor] | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """``logsumexp_m [log_weight(z_m) + log p(x_n | f(z_m))]`` per row ``n`` of ``x`` over the
    latent ``points`` ``z_m``, without gradients. The decoder runs on ``chunk_size`` points at a
    time (default: ``2^24 / max(len(x), D)``, so that a chunk's pairwise matrix and decoded
    outputs stay under 2^24 entries), each once, and the running sum is updated by ``logaddexp``."""
    chunks = points.split(chunk_size) if chunk_size else row_chunks(points, DECODE_ENTRIES, row_size=max(len(x), x.shape[1]))
    total = torch.full((len(x),), -math.inf, dtype=x.dtype, device=x.device)
    with torch.no_grad():
        for chunk in chunks:
            terms = likelihood.pairwise_log_prob(x, decoder(chunk))  # (len(x), len(chunk))
            if log_weight is not None:
                terms = terms + log_weight(chunk)
            total = torch.logaddexp(total, terms.logsumexp(-1))
    return total


class StableEstimate(NamedTuple):
    """What :func:`stable_log_likelihood` returns: the last estimate, its samples per
    point, and whether the mean had settled (``False``: the limit stopped it first)."""

    estimate: LogLikelihood
    particles: int
    converged: bool


def check_sample_range(start: int, limit: int, start_name: str = "start", limit_name: str = "limit") -> None:
    """Both counts are positive ints and ``start <= limit`` (what :func:`stable_log_likelihood` needs)."""
    check_count(start, start_name)
    if check_count(limit, limit_name) < start:
        raise ValueError(f"{limit_name} ({limit}) is below {start_name} ({start})")


def stable_log_likelihood(
    estimate: Callable[[int], LogLikelihood], start: int, limit: int, tolerance: float = 0.01
) -> StableEstimate:
    """``estimate(P)`` at ``P = start, 4 start, 16 start, ...`` (at most ``limit``) until the
    mean over points moves by less than ``tolerance`` nats from one ``P`` to the next and, where
    the estimate has them, the median Pareto ``k-hat`` is at most 0.7. An importance-sampling
    estimate of ``log p`` is biased low, the less the more samples, so a mean that stops rising
    is one that has stopped moving. ``start == limit`` gives one estimate, not called
    converged; ``converged`` is ``False`` whenever the limit stopped it first."""
    check_sample_range(start, limit)

    def trusted(result: LogLikelihood) -> bool:
        return result.k_hat is None or bool(result.k_hat.median() <= K_HAT_THRESHOLD)

    particles, current = start, estimate(start)
    while 4 * particles <= limit:
        particles, previous, current = 4 * particles, current, estimate(4 * particles)
        if abs(current.value.mean() - previous.value.mean()) < tolerance and trusted(current):
            return StableEstimate(current, particles, True)
    return StableEstimate(current, particles, False)
