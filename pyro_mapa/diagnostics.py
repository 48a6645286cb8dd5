"""Where is the cached proposal poor? Diagnostics on ArviZ (SPEC section 6).

* :func:`importance_diagnostics`: per-datapoint Pareto ``k-hat`` (PSIS, by
  ``arviz.psislw``) and effective sample size ``(sum w)^2 / sum w^2`` of a bound's
  importance weights. For :class:`~pyro_mapa.MAPA_ELBO` only the ``S`` sampled
  particles are i.i.d. draws from ``r_n``, so ``k-hat`` and ESS are taken over those.
  ``k-hat > 0.7`` marks points whose weights are too heavy-tailed to trust.
* :func:`posterior_distance`: total variation and ``KL(p || q)`` between MAPA's index
  posterior ``q`` and a reference ``p`` (e.g. the true one on synthetic data).
* :func:`gaussian_index_log_posterior`: the empiricalized model's exact index posterior
  ``p(i = m | x) ∝ N(x; f(z_m), sigma^2 I)`` given the decoder's means ``f(z_m)`` (on
  synthetic data, the true decoder at the true codes: the reference for ``q``).
* :func:`latent_to_index_log_posterior`: a latent posterior ``q(z | x)`` (e.g. an
  encoder's) pushed to indices, ``q(i = m | x) ∝ q(z_m | x) / p(z_m)``, so that it can be
  compared with MAPA's ``q`` by :func:`posterior_distance`.
* :func:`to_inference_data`: posterior draws of per-datapoint codes as an
  ``arviz.InferenceData``, so that ``az.summary`` and ``az.plot_posterior`` work.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, NamedTuple

import numpy as np
import torch

from .importance import ImportanceWeightedELBO
from .neighbors import NeighborTable

__all__ = [
    "ImportanceDiagnostics",
    "PosteriorDistance",
    "dense_log_q",
    "gaussian_index_log_posterior",
    "importance_diagnostics",
    "latent_to_index_log_posterior",
    "posterior_distance",
    "to_inference_data",
]

K_HAT_THRESHOLD = 0.7


def _arviz():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # arviz 0.23 announces its 1.0 refactor on import
        import arviz

    return arviz


class ImportanceDiagnostics(NamedTuple):
    """Per-datapoint ``k_hat`` and ``ess`` (over ``num_draws`` draws), and the points
    whose ``k_hat`` exceeds 0.7 (``flagged``, indices into the batch)."""

    k_hat: torch.Tensor
    ess: torch.Tensor
    num_draws: int
    flagged: torch.Tensor

    def report(self) -> str:
        """A short report: how many points have ``k_hat > 0.7`` and which."""
        n = len(self.k_hat)
        shown = self.flagged[:10].tolist()
        more = "" if len(self.flagged) <= 10 else f" and {len(self.flagged) - 10} more"
        return (
            f"{len(self.flagged)} of {n} points have k-hat > {K_HAT_THRESHOLD} (median k-hat "
            f"{self.k_hat.median():.2f}; median ESS {self.ess.median():.1f} of {self.num_draws} draws)"
            + (f": {shown}{more}" if len(self.flagged) else "")
        )


def importance_diagnostics(
    model: Callable, guide: Callable, elbo: ImportanceWeightedELBO, *args, **kwargs
) -> ImportanceDiagnostics:
    """Pareto ``k-hat`` and ESS of ``elbo``'s importance weights, per datapoint.

    :param elbo: a :class:`~pyro_mapa.MAPA_ELBO` or :class:`~pyro_mapa.IWAE_ELBO`; use many
        samples (``S`` of a few hundred) for a stable ``k-hat``.
    """
    with torch.no_grad():
        weights = elbo.importance_weights(model, guide, *args, **kwargs)
    log_w = weights.log_weights[weights.num_fixed :]
    log_w = log_w.reshape(len(log_w), -1).T.double()  # (datapoints, draws)
    if log_w.shape[1] < 2:
        raise ValueError("importance_diagnostics needs at least 2 sampled particles per datapoint")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # psislw warns about the very k-hat we report
        _, k_hat = _arviz().psislw(log_w.cpu().numpy())
    ess = (2 * log_w.logsumexp(1) - (2 * log_w).logsumexp(1)).exp()
    k_hat = torch.as_tensor(np.asarray(k_hat, dtype=np.float64))
    return ImportanceDiagnostics(k_hat, ess, log_w.shape[1], (k_hat > K_HAT_THRESHOLD).nonzero().flatten())


class PosteriorDistance(NamedTuple):
    """Per-datapoint total variation and ``KL(p || q)`` (nats), with their means."""

    total_variation: torch.Tensor
    kl: torch.Tensor

    @property
    def mean_total_variation(self) -> float:
        return self.total_variation.mean().item()

    @property
    def mean_kl(self) -> float:
        return self.kl.mean().item()


def dense_log_q(q: NeighborTable | torch.Tensor, num_points: int) -> torch.Tensor:
    """``log q(i = m | x)`` over all ``N`` indices (``M x N``), the tail spread uniformly."""
    if isinstance(q, torch.Tensor):
        return q
    index, log_prob, log_tail = q
    num_uncached = num_points - index.shape[1]
    fill = log_tail - math.log(num_uncached) if num_uncached else torch.full_like(log_tail, -math.inf)
    dense = fill.unsqueeze(1).expand(len(index), num_points).clone()
    return dense.scatter_(1, index, log_prob)


def posterior_distance(q: NeighborTable | torch.Tensor, log_p: torch.Tensor) -> PosteriorDistance:
    """Distances between MAPA's index posterior ``q`` and a reference ``p``.

    :param q: a :class:`~pyro_mapa.NeighborTable` (its tail spread uniformly over the
        uncached indices, as :class:`~pyro_mapa.MAPAIndex` does) or dense ``log q`` (``M x N``).
    :param log_p: dense normalised ``log p(i = m | x)`` (``M x N``).
    """
    log_q = dense_log_q(q, log_p.shape[1]).to(log_p)
    if log_q.shape != log_p.shape:
        raise ValueError(f"q covers shape {tuple(log_q.shape)} but log_p has shape {tuple(log_p.shape)}")
    p, q_probs = log_p.exp(), log_q.exp()
    total_variation = 0.5 * (p - q_probs).abs().sum(1)
    kl = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(1)
    return PosteriorDistance(total_variation, kl)


def gaussian_index_log_posterior(x: torch.Tensor, means: torch.Tensor, sigma: float) -> torch.Tensor:
    """The index posterior of the empiricalized model with a Gaussian likelihood,
    ``log p(i = m | x_j) = log N(x_j; f(z_m), sigma^2 I) - logsumexp_m' log N(x_j; f(z_m'), sigma^2 I)``
    (SPEC section 1; the uniform ``1 / N`` prior cancels).

    :param x: ``(M, D)`` observations.
    :param means: ``(N, D)`` decoder outputs ``f(z_m)``; on synthetic data
        ``data.decoder(data.train_codes)`` gives the true index posterior.
    :param sigma: the fixed observation noise.
    :return: ``(M, N)`` normalised log-probabilities.

    >>> gaussian_index_log_posterior(torch.zeros(1, 1), torch.tensor([[0.0], [1.0]]), 1.0).exp()
    tensor([[0.6225, 0.3775]])
    """
    if x.dim() != 2 or means.dim() != 2 or x.shape[1] != means.shape[1]:
        raise ValueError(f"x (M x D) and means (N x D) must share D, got shapes {tuple(x.shape)} and {tuple(means.shape)}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    means = means.to(x)
    # ||x - mu||^2 without cancellation: cdist's direct path
    sq = torch.cdist(x, means, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    return torch.log_softmax(-0.5 * sq / sigma**2, dim=-1)


def latent_to_index_log_posterior(
    q_z: torch.distributions.Distribution,
    codes: torch.Tensor,
    prior: torch.distributions.Distribution | None = None,
) -> torch.Tensor:
    """A latent posterior ``q(z | x_j)`` pushed to the indices of codes ``z_m`` drawn from
    the prior ``p(z)``: ``log q(i = m | x_j) = log q(z_m | x_j) - log p(z_m)``, normalised over ``m``.

    Why the ratio: the empiricalized model's index posterior is
    ``p(i = m | x) ∝ p(x | z_m) ∝ p(z_m | x) / p(z_m)``, the self-normalised importance
    weights of the codes (draws from ``p(z)``) for the target ``p(z | x)``. Putting any
    ``q(z | x)`` in place of ``p(z | x)`` gives its index posterior: it is exact when ``q`` is
    the true latent posterior, and ``sum_m q(i = m | x) δ(z_m)`` tends to ``q(z | x)`` as
    ``N`` grows. (The density at the codes alone, ``∝ q(z_m | x)``, would tend to
    ``q(z | x) p(z)``, pulled towards the prior's mode.)

    :param q_z: batch shape ``(M,)``, event shape ``(d,)`` (e.g. an encoder's
        ``Normal(loc, scale).to_event(1)`` at ``M`` observations).
    :param codes: ``(N, d)`` codes ``z_m``.
    :param prior: ``p(z)``, event shape ``(d,)``; default ``N(0, I)``.
    :return: ``(M, N)`` normalised log-probabilities.
    """
    if codes.dim() != 2:
        raise ValueError(f"codes must be (N, d), got shape {tuple(codes.shape)}")
    if prior is None:
        zero = torch.zeros(codes.shape[1], dtype=codes.dtype, device=codes.device)
        prior = torch.distributions.Independent(torch.distributions.Normal(zero, 1.0), 1)
    log_q = q_z.log_prob(codes.unsqueeze(1))  # (N, M)
    if log_q.dim() != 2:
        raise ValueError(f"q_z must have batch shape (M,) and event shape (d,), got log_prob shape {tuple(log_q.shape)}")
    return torch.log_softmax(log_q.T - prior.log_prob(codes), dim=-1)


def to_inference_data(draws: dict[str, torch.Tensor], num_chains: int = 1, datapoint_dim: str = "datapoint"):
    """``arviz.InferenceData`` from draws ``{name: (num_draws, num_points, *event)}``.

    The draws are split into ``num_chains`` chains; dims are named ``datapoint`` and
    ``<name>_dim_k`` for event dims. Get MAPA's from
    ``Predictive(model, guide=MAPAGuide(...), num_samples=...)`` or
    :meth:`~pyro_mapa.MAPAPosterior.index_distribution` (``codes[i]``), and any other
    guide's the same way.
    """
    posterior, dims = {}, {}
    for name, value in draws.items():
        value = value.detach().cpu().numpy()
        if len(value) % num_chains:
            raise ValueError(f"{len(value)} draws of '{name}' do not split into {num_chains} chains")
        posterior[name] = value.reshape(num_chains, len(value) // num_chains, *value.shape[1:])
        dims[name] = [datapoint_dim] + [f"{name}_dim_{k}" for k in range(value.ndim - 2)]
    return _arviz().from_dict(posterior=posterior, dims=dims)
