r"""The bound's proposal ``r_n`` over training indices, and the particles it gives.

With ``A_n`` the top ``K`` cached indices of datapoint ``n``, ``C`` the other cached ones
(mass ``Q_n``) and ``U`` the ``N - K_c`` uncached ones (tail mass ``T_n``), the proposal is
(docs/math.md, section 3)

.. math::
    r_n(m) = (1 - \lambda_n)\, q(m | x_n) / Q_n \;(m \in C), \qquad
    r_n(m) = \lambda_n / |U| \;(m \in U),

with ``lambda_n = max(T_n / (Q_n + T_n), defensive)`` (1 if ``C`` is empty, 0 if ``U``
is), so every index of ``B_n = C ∪ U`` has positive probability.

:class:`IndexProposal` is what :class:`~pyro_mapa.MAPAGuide` samples at the index site:
alone (``Trace_ELBO``, ``Predictive``) it is ``q(i | x_n)`` itself; to
:class:`~pyro_mapa.MAPA_ELBO` it offers :meth:`IndexProposal.index_particles`, the
:class:`ParticleProposal` protocol the bound looks for. :class:`IndexParticles` carries the
particles and their log-weights into the trace.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch
from pyro.distributions import TorchDistribution, constraints

from ..cache import MAPAIndex, NeighborTable
from ..cache.index import sample_uncached, sample_uncached_shared

__all__ = ["DEFAULT_DEFENSIVE", "IndexParticles", "IndexProposal", "ParticleProposal"]

#: Least probability the proposal ``r_n`` gives to the indices outside the cache.
DEFAULT_DEFENSIVE = 0.1


@runtime_checkable
class ParticleProposal(Protocol):
    """What :class:`~pyro_mapa.MAPA_ELBO` needs of the distribution at a guide's index site:
    a Pyro distribution (its ``batch_shape`` and ``support`` are used too) that also offers
    the bound's particles."""

    def index_particles(self, num_neighbors: int, num_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``K + S`` particles and their log-weights ``log w_p``, both ``(K + S,) + batch_shape``."""


class IndexProposal(TorchDistribution):
    """``q(i | x_n)`` of a :class:`~pyro_mapa.cache.MAPAIndex`, with the bound's particles.

    :param q: the cached index posterior of the datapoints.
    :param defensive: least probability ``r_n`` puts on the uncached indices (when there
        are cached indices outside ``A_n`` and uncached ones).
    :param shared_tail: draw the batch's uncached indices from one shared stream
        (:func:`~pyro_mapa.cache.index.sample_uncached_shared`): each row's draws keep their
        distribution, so the bound and its gradient keep their expectation, and the batch's
        rows share the codes they decode there (docs/math.md, section 3).

    >>> table = NeighborTable(torch.tensor([[0, 2, 3]]), torch.tensor([[-0.1, -2.5, -3.0]]), torch.tensor([-5.0]))
    >>> proposal = IndexProposal(MAPAIndex(table, num_points=6))
    >>> values, log_weights = proposal.index_particles(num_neighbors=1, num_samples=2)
    >>> values[0], log_weights[0]  # the top neighbour, weight 1
    (tensor([0]), tensor([0.]))
    """

    arg_constraints = {}
    has_enumerate_support = False

    def __init__(self, q: MAPAIndex, defensive: float = DEFAULT_DEFENSIVE, shared_tail: bool = False,
                 validate_args=None):
        if not 0.0 <= defensive < 1.0:
            raise ValueError(f"defensive must lie in [0, 1), got {defensive}")
        self.q = q
        self.defensive = float(defensive)
        self.shared_tail = bool(shared_tail)
        super().__init__(q.batch_shape, torch.Size(), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self):
        return self.q.support

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.q.log_prob(value)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        return self.q.sample(sample_shape)

    def tail_share(self, num_neighbors: int) -> torch.Tensor:
        """``lambda_n``, the probability ``r_n`` puts on the uncached indices, per row of the
        batch (flattened): ``max(T_n / (Q_n + T_n), defensive)``, 1 if no cached index lies
        outside ``A_n``, 0 if every index is cached. Computed in log space from the cache's
        ``log T_n``, it is the same for a float32 and a float64 cache (docs/math.md, section 2)."""
        table = self.q.rows()
        log_q_rest = table.log_prob[:, num_neighbors:].logsumexp(1)
        if self.q.num_cached == self.q.num_points:
            return torch.zeros_like(log_q_rest)
        if num_neighbors >= self.q.num_cached:
            return torch.ones_like(log_q_rest)
        return (table.log_tail - torch.logaddexp(log_q_rest, table.log_tail)).exp().clamp_min(self.defensive)

    def index_particles(self, num_neighbors: int, num_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``K + S`` particles of the MAPA bound and their log-weights ``log w_p``: the
        ``K`` top neighbours ``A_n`` (``log w = 0``) and ``S`` draws ``m_s ~ r_n``
        (``log w = log S + log r_n(m_s)``).

        When ``B_n`` is empty (``K = N``) the ``K`` particles are all ``N`` indices
        (whatever the cache holds: exact enumeration needs no cache) and the sampled
        ones get a huge finite ``log w``, so they contribute exactly nothing.

        :returns: ``values`` and ``log_weights``, both of shape ``(K + S,) + batch_shape``.
        """
        table, num_points = self.q.rows(), self.q.num_points
        index, log_prob = table.index, table.log_prob
        batch = index.shape[0]
        if num_neighbors == num_points:  # K = N, exact enumeration: every index, whatever the cache holds
            top = torch.arange(num_points, device=index.device).unsqueeze(1).expand(-1, batch)
        elif num_neighbors > self.q.num_cached:
            raise ValueError(
                f"num_neighbors={num_neighbors} is larger than the {self.q.num_cached} neighbours the MAPA cache "
                f"holds per point; refit MAPAPosterior with num_cached >= K (or use K = N = {num_points})"
            )
        else:
            top = index[:, :num_neighbors].T
        values = [top]
        log_weights = [index.new_zeros(num_neighbors, batch, dtype=log_prob.dtype)]
        if num_samples:
            values_s, log_r = self._propose(table, num_neighbors, num_samples)
            values.append(values_s)
            log_weights.append(log_r + math.log(num_samples))
        shape = torch.Size([num_neighbors + num_samples]) + self.batch_shape
        return torch.cat(values).reshape(shape), torch.cat(log_weights).reshape(shape)

    def _propose(self, table: NeighborTable, num_neighbors: int, num_samples: int):
        """``S`` draws from ``r_n`` per row and their ``log r_n``."""
        index, log_prob, _ = table
        batch, num_points = index.shape[0], self.q.num_points
        rest_index, rest_log_prob = index[:, num_neighbors:], log_prob[:, num_neighbors:]
        num_uncached = num_points - self.q.num_cached
        if num_neighbors == num_points:
            # B_n is empty: a log-weight of sqrt(float max) makes exp(log p - log w) exactly 0,
            # and stays finite when Pyro sums it over sites (it flags infinite log-densities)
            huge = torch.finfo(log_prob.dtype).max ** 0.5
            return index[:, :1].T.expand(num_samples, batch), log_prob.new_full((num_samples, batch), huge)
        if rest_index.shape[1] == 0:
            log_r = log_prob.new_full((num_samples, batch), -math.log(num_uncached))
            return self._uncached(index, torch.ones_like(log_r, dtype=torch.bool)), log_r
        log_q_rest = rest_log_prob.logsumexp(1)
        pick = torch.multinomial((rest_log_prob - log_q_rest.unsqueeze(1)).exp(), num_samples, replacement=True)
        values = rest_index.gather(1, pick).T
        log_r = (rest_log_prob.gather(1, pick) - log_q_rest.unsqueeze(1)).T
        if num_uncached == 0:
            return values, log_r
        lam = self.tail_share(num_neighbors)
        from_tail = torch.rand(num_samples, batch, device=index.device) < lam
        values = torch.where(from_tail, self._uncached(index, from_tail), values)
        log_r = torch.where(from_tail, lam.log() - math.log(num_uncached), log_r + torch.log1p(-lam))
        return values, log_r

    def _uncached(self, index: torch.Tensor, from_tail: torch.Tensor) -> torch.Tensor:
        """Uniform uncached indices for the draws ``from_tail`` (``(S, B)``; the others' entries
        are unused). Shared: a row's ``j``-th draw from the tail takes the shared stream's ``j``-th
        index outside its cache, so the rows' tail draws coincide as far as their caches allow."""
        num_samples, num_points = from_tail.shape[0], self.q.num_points
        if not self.shared_tail:
            return sample_uncached(index, num_points, num_samples)
        rank = (from_tail.cumsum(0) - 1).clamp_min(0)  # which of the row's tail draws each one is
        return sample_uncached_shared(index, num_points, num_samples).gather(0, rank)


class IndexParticles(TorchDistribution):
    """Fixed index particles with given log-weights ``log w_p``, as a Pyro site's ``fn``.

    Under :class:`~pyro_mapa.MAPA_ELBO` the guide's index site holds these: its
    "log-density" at the particles is ``log w_p``, which the bound subtracts from
    ``log p(x_n, i_p)`` exactly as it subtracts ``log q`` for i.i.d. particles.
    """

    arg_constraints = {}
    has_rsample = False

    def __init__(self, values: torch.Tensor, log_weights: torch.Tensor, support: constraints.Constraint):
        if not isinstance(support, constraints.Constraint):
            raise TypeError(f"support must be a torch constraint (the index distribution's support), got {support!r}")
        self.values = values
        self.log_weights = log_weights
        self._support = support
        super().__init__(values.shape, torch.Size(), validate_args=False)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self):
        return self._support

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        if sample_shape:
            raise ValueError("IndexParticles holds fixed particles; it cannot draw new ones")
        return self.values

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if value is not self.values and not torch.equal(value, self.values):
            raise ValueError("IndexParticles gives log-weights only at its own particles")
        return self.log_weights
