r"""The MAPA bound: ``K`` cached neighbours plus ``S`` draws from a fixed proposal.

For datapoint ``n`` with top neighbours ``A_n`` and draws ``m_1..m_S ~ r_n`` on the
other indices ``B_n``,

.. math::
    \hat p_n = \frac{1}{N}\Big[\sum_{m \in A_n} l_{nm}
        + \frac{1}{S}\sum_s \frac{l_{n m_s}}{r_n(m_s)}\Big],
    \qquad l_{nm} = p(x_n \mid f_\theta(z_m)),

is unbiased for ``p(x_n | theta, Z)`` and ``E[log p_hat_n]`` is a lower bound on
``log p(x_n | theta, Z)``. In log space particle ``p`` has weight ``log w_p`` (0 for
a neighbour, ``log S + log r_n(m_s)`` for a draw), and the per-datapoint bound is
``logsumexp_p(log p(x_n, i_p) - log w_p)`` (:mod:`pyro_mapa.infer.importance`;
docs/math.md, section 3). The
``1/N`` is the model's own prior ``p(i) = 1/N``. The proposal does not depend on
``theta`` or ``Z``, so no gradient flows through the index sampling.

References: Yacoby, Pan, Doshi-Velez, "Towards Model-Agnostic Posterior
Approximation for Fast and Accurate Variational Autoencoders", arXiv 2403.08941.
"""

from __future__ import annotations

from typing import Callable

from pyro.distributions.torch_distribution import ExpandedDistribution
from pyro.poutine.messenger import Messenger

from .._checks import check_count
from ..cache import MAPAIndex
from .importance import ImportanceWeightedELBO
from .proposal import IndexParticles, ParticleProposal

__all__ = ["MAPA_ELBO", "IndexParticleMessenger"]


class IndexParticleMessenger(Messenger):
    """Replace the draw of each site whose distribution offers
    :class:`~pyro_mapa.infer.proposal.ParticleProposal` (``index_particles``) by the bound's particles.

    Placed outside the particle plate, it sees the site after the plates have
    broadcast it, sets the value to the ``K + S`` particles along ``particle_dim``
    and the site's ``fn`` to :class:`~pyro_mapa.infer.proposal.IndexParticles` carrying
    ``log w_p``. Other sites are left alone.
    """

    def __init__(self, num_neighbors: int, num_samples: int, particle_dim: int):
        super().__init__()
        self.num_neighbors = num_neighbors
        self.num_samples = num_samples
        self.particle_dim = particle_dim

    def _pyro_sample(self, msg) -> None:
        fn = msg["fn"]
        base = fn.base_dist if isinstance(fn, ExpandedDistribution) else fn
        if not isinstance(base, ParticleProposal) or msg["is_observed"]:
            return
        values, log_weights = base.index_particles(self.num_neighbors, self.num_samples)
        target = fn.batch_shape
        # (K + S, *base batch) -> the site's broadcast batch shape, particles at particle_dim
        padded = values.shape[:1] + (1,) * (len(target) - values.dim()) + base.batch_shape
        if len(target) != -self.particle_dim or any(t not in (1, s) for t, s in zip(target[1:], padded[1:])):
            raise ValueError(
                f"site '{msg['name']}': the MAPA index distribution of batch shape {tuple(base.batch_shape)} "
                f"was broadcast to {tuple(target)}; it must sit in the data plate only"
            )
        values, log_weights = values.reshape(padded), log_weights.reshape(padded)
        msg["value"] = values
        msg["fn"] = IndexParticles(values, log_weights, base.support)


class MAPA_ELBO(ImportanceWeightedELBO):
    """The MAPA bound (docs/math.md, section 3), per datapoint and plate-aware.

    Use it with a :class:`~pyro_mapa.MAPAGuide` (or any guide whose index site's
    distribution offers :class:`~pyro_mapa.infer.proposal.ParticleProposal`); other latent
    guide sites, if any, must be reparameterized and are drawn i.i.d. per particle.

    :param num_neighbors: ``K``, the top neighbours summed exactly (at most the
        ``K_c`` the cache holds, or ``K = N``: the exact log marginal, any cache).
    :param num_samples: ``S``, the draws from ``r_n`` on the other indices (0:
        neighbours only, a lower bound that is exact when ``K = N``).
    :param max_plate_nesting: the model's plate nesting; guessed if infinite.

    >>> import pyro, pyro.distributions as dist, torch
    >>> from pyro_mapa import MAPAGuide, MAPAPosterior
    >>> X = torch.randn(20, 1)
    >>> def model(x):  # 20 codes, identity decoder
    ...     z = pyro.param("z", lambda: torch.zeros(20, 1))
    ...     with pyro.plate("data", 20):
    ...         i = pyro.sample("i", dist.Categorical(logits=torch.zeros(20)))
    ...         pyro.sample("x", dist.Normal(z[i], 1.0).to_event(1), obs=x)
    >>> guide = MAPAGuide(model, MAPAPosterior.fit(X, scale=1.0, num_cached=4))
    >>> elbo = MAPA_ELBO(num_neighbors=20, num_samples=0)  # K = N: the exact log marginal
    >>> loss = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.1}), loss=elbo).step(X)
    >>> abs(loss + dist.Normal(0.0, 1.0).log_prob(X).sum().item()) < 1e-4  # all codes at 0
    True
    """

    def __init__(self, num_neighbors: int = 5, num_samples: int = 10, max_plate_nesting: float = float("inf")):
        num_neighbors = check_count(num_neighbors, "num_neighbors")
        num_samples = check_count(num_samples, "num_samples", minimum=0)
        super().__init__(num_neighbors + num_samples, 0.0, max_plate_nesting, num_fixed=num_neighbors)
        self.num_neighbors = num_neighbors
        self.num_samples = num_samples

    def _particle_guide(self, guide: Callable, particle_dim: int) -> Callable:
        return IndexParticleMessenger(self.num_neighbors, self.num_samples, particle_dim)(guide)

    def _check_guide_site(self, site: dict) -> None:
        fn = site["fn"]
        if isinstance(fn, IndexParticles):
            return
        base = fn.base_dist if isinstance(fn, ExpandedDistribution) else fn
        if isinstance(base, MAPAIndex):
            raise ValueError(
                f"guide site '{site['name']}' samples the cache's MAPAIndex, which offers no particles: sample "
                "pyro_mapa.IndexProposal(q, defensive) there instead (what MAPAGuide does)"
            )
        super()._check_guide_site(site)

    def _check_guide_sites(self, sites: list[dict]) -> None:
        if not any(isinstance(site["fn"], IndexParticles) for site in sites):
            raise ValueError(
                f"MAPA_ELBO needs a guide with a MAPA index site (MAPAGuide, or a site sampling IndexProposal); "
                f"the guide's latent sites {[site['name'] for site in sites]} are drawn i.i.d., and without the "
                "index particles the loss would not be a bound: use IWAE_ELBO for such a guide"
            )
