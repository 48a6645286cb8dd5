"""Where is the cached proposal poor? Diagnostics on ArviZ (docs/math.md, section 6).

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

import warnings
from typing import Callable, NamedTuple

import numpy as np
import torch

from .._tensors import squared_distances
from ..cache import NeighborTable
from ..infer import ImportanceWeightedELBO

__all__ = [
    "ImportanceDiagnostics",
    "PosteriorDistance",
    "gaussian_index_log_posterior",
    "importance_diagnostics",
    "latent_to_index_log_posterior",
    "pareto_k_hat",
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

    >>> import pyro, pyro.distributions as dist
    >>> from pyro_mapa import IWAE_ELBO
    >>> def model(x):  # z ~ N(0, 1), x ~ N(z, 1)
    ...     with pyro.plate("data", len(x)):
    ...         pyro.sample("x", dist.Normal(pyro.sample("z", dist.Normal(0.0, 1.0)), 1.0), obs=x)
    >>> def exact(x):  # p(z | x) = N(x / 2, 1 / 2): equal weights
    ...     with pyro.plate("data", len(x)):
    ...         pyro.sample("z", dist.Normal(x / 2, 0.5**0.5))
    >>> def prior(x):  # the prior: far too wide where x is far out
    ...     with pyro.plate("data", len(x)):
    ...         pyro.sample("z", dist.Normal(torch.zeros(len(x)), 1.0))
    >>> x, elbo = torch.tensor([0.0, 6.0]), IWAE_ELBO(num_particles=500, max_plate_nesting=1)
    >>> importance_diagnostics(model, exact, elbo, x).ess.round()
    tensor([500., 500.], dtype=torch.float64)
    >>> bool(importance_diagnostics(model, prior, elbo, x).ess[1] < 50)  # about 1 in expectation
    True
    """
    with torch.no_grad():
        weights = elbo.importance_weights(model, guide, *args, **kwargs)
    log_w = weights.log_weights[weights.num_fixed :]
    if len(log_w) < 2:
        raise ValueError(
            f"importance_diagnostics needs at least 2 sampled particles per datapoint, the bound draws {len(log_w)} "
            "(MAPA_ELBO: num_samples=S of a few hundred)"
        )
    log_w = log_w.reshape(len(log_w), -1).T.double()  # (datapoints, draws)
    k_hat = pareto_k_hat(log_w)
    ess = (2 * log_w.logsumexp(1) - (2 * log_w).logsumexp(1)).exp()
    return ImportanceDiagnostics(k_hat, ess, log_w.shape[1], (k_hat > K_HAT_THRESHOLD).nonzero().flatten())


def pareto_k_hat(log_weights: torch.Tensor) -> torch.Tensor:
    """Pareto-smoothed importance sampling's ``k-hat`` (ArviZ's ``psislw``) of each row of
    ``log_weights`` (``(points, draws)``), as float64: above 0.7 the weights' variance is
    too heavy-tailed for the estimate to be trusted."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # psislw warns about the very k-hat we report
        _, k_hat = _arviz().psislw(log_weights.detach().double().cpu().numpy())
    return torch.as_tensor(np.asarray(k_hat, dtype=np.float64)).reshape(log_weights.shape[:-1])


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


def posterior_distance(q: NeighborTable | torch.Tensor, log_p: torch.Tensor) -> PosteriorDistance:
    """Distances between MAPA's index posterior ``q`` and a reference ``p``.

    :param q: a :class:`~pyro_mapa.cache.NeighborTable` (its tail spread uniformly over the
        uncached indices, as :class:`~pyro_mapa.cache.MAPAIndex` does: its
        :meth:`~pyro_mapa.cache.NeighborTable.dense_log_prob`) or dense ``log q`` (``M x N``).
    :param log_p: dense normalised ``log p(i = m | x)`` (``M x N``).
    """
    if isinstance(q, NeighborTable) and q.index.numel() and int(q.index.max()) >= log_p.shape[1]:
        raise ValueError(
            f"q holds indices up to {int(q.index.max())} but log_p covers {log_p.shape[1]} indices: "
            "they are posteriors over different training sets"
        )
    log_q = q if isinstance(q, torch.Tensor) else q.dense_log_prob(log_p.shape[1])
    log_q = log_q.to(log_p)
    if log_q.shape != log_p.shape:
        raise ValueError(f"q covers shape {tuple(log_q.shape)} but log_p has shape {tuple(log_p.shape)}")
    p, q_probs = log_p.exp(), log_q.exp()
    total_variation = 0.5 * (p - q_probs).abs().sum(1)
    kl = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(1)
    return PosteriorDistance(total_variation, kl)


def gaussian_index_log_posterior(x: torch.Tensor, means: torch.Tensor, sigma: float) -> torch.Tensor:
    """The index posterior of the empiricalized model with a Gaussian likelihood,
    ``log p(i = m | x_j) = log N(x_j; f(z_m), sigma^2 I) - logsumexp_m' log N(x_j; f(z_m'), sigma^2 I)``
    (docs/math.md, section 1; the uniform ``1 / N`` prior cancels).

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
    sq = squared_distances(x, means, precise=True)  # float64: no cancellation that matters
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

    >>> idata = to_inference_data({"z": torch.randn(100, 3, 2)}, num_chains=2)
    >>> dict(idata.posterior["z"].sizes)
    {'chain': 2, 'draw': 50, 'datapoint': 3, 'z_dim_0': 2}
    """
    posterior, dims = {}, {}
    for name, value in draws.items():
        value = value.detach().cpu().numpy()
        if len(value) % num_chains:
            raise ValueError(f"{len(value)} draws of '{name}' do not split into {num_chains} chains")
        posterior[name] = value.reshape(num_chains, len(value) // num_chains, *value.shape[1:])
        dims[name] = [datapoint_dim] + [f"{name}_dim_{k}" for k in range(value.ndim - 2)]
    return _arviz().from_dict(posterior=posterior, dims=dims)
