"""The MAPA index posterior ``q(i | x_n)`` as a Pyro distribution, and its particles.

:class:`MAPAIndex` is what :class:`~pyro_mapa.MAPAGuide` samples at the model's
index site. On its own (``Trace_ELBO``, ``Predictive``) it is an ordinary
distribution over the ``N`` training indices. Under :class:`~pyro_mapa.MAPA_ELBO`
its :meth:`MAPAIndex.particles` gives, per datapoint ``n``, the ``K`` top
neighbours ``A_n`` (log-weight 0) and ``S`` draws ``m_s`` from the proposal
``r_n`` on the other indices ``B_n`` (log-weight ``log S + log r_n(m_s)``), which
:class:`IndexParticles` carries into the trace (SPEC section 3).
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution, constraints

from .neighbors import NeighborTable

__all__ = ["DEFAULT_DEFENSIVE", "IndexParticles", "MAPAIndex"]

#: Least probability the proposal ``r_n`` gives to the indices outside the cache.
DEFAULT_DEFENSIVE = 0.1


def _sample_uncached(index: torch.Tensor, num_points: int, num_draws: int) -> torch.Tensor:
    """Uniform draws from the indices *not* in each row of ``index``.

    ``index`` is ``(B, K_c)``; returns ``(num_draws, B)``. With the row's cached
    indices sorted, ``c_j - j`` counts the uncached indices below ``c_j``, so the
    ``r``-th uncached index is ``r + #{j : c_j - j <= r}`` (one ``searchsorted``).
    """
    batch, num_cached = index.shape
    below = index.sort(dim=1).values - torch.arange(num_cached, device=index.device)
    rank = torch.randint(0, num_points - num_cached, (batch, num_draws), device=index.device)
    return (rank + torch.searchsorted(below, rank, right=True)).T


class MAPAIndex(TorchDistribution):
    r"""Sparse MAPA index posterior ``q(i | x_n)`` over ``N`` training indices.

    The ``K_c`` cached indices of each row keep their probabilities; the other
    ``N - K_c`` indices share the tail mass uniformly. Batch shape is the shape of
    ``table.log_tail``; each value is an index in ``{0, ..., N - 1}``.

    :param table: a :class:`~pyro_mapa.NeighborTable` (one row per datapoint).
    :param num_points: ``N``, the number of training codes.
    :param defensive: least probability the proposal ``r_n`` puts on the uncached
        indices (when there are cached indices outside ``A_n`` and uncached ones).

    >>> table = NeighborTable(torch.tensor([[0, 2]]), torch.tensor([[-0.1, -2.5]]), torch.tensor([-5.0]))
    >>> q = MAPAIndex(table, num_points=4)
    >>> q.log_prob(torch.tensor([0, 1])).exp()  # cached, then one of two uncached
    tensor([0.9048, 0.0034])
    """

    arg_constraints = {}
    has_enumerate_support = False

    def __init__(self, table: NeighborTable, num_points: int, defensive: float = DEFAULT_DEFENSIVE, validate_args=None):
        if not 0.0 <= defensive < 1.0:
            raise ValueError(f"defensive must lie in [0, 1), got {defensive}")
        self.table = table
        self.num_points = int(num_points)
        self.defensive = float(defensive)
        super().__init__(table.log_tail.shape, torch.Size(), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self):
        return constraints.integer_interval(0, self.num_points - 1)

    @property
    def num_cached(self) -> int:
        """``K_c``, the cached indices per row."""
        return self.table.index.shape[-1]

    def _rows(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        index, log_prob, log_tail = self.table
        return (
            index.reshape(-1, self.num_cached),
            log_prob.reshape(-1, self.num_cached),
            log_tail.reshape(-1),
        )

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        index, log_prob, log_tail = self.table
        hit = value.unsqueeze(-1) == index
        cached = torch.where(hit, log_prob, torch.zeros_like(log_prob)).sum(-1)
        num_uncached = self.num_points - self.num_cached
        uncached = log_tail - math.log(num_uncached) if num_uncached else torch.full_like(log_tail, -math.inf)
        return torch.where(hit.any(-1), cached, uncached)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            index, log_prob, log_tail = self._rows()
            num_draws = math.prod(sample_shape)
            draws = index.gather(1, torch.multinomial(log_prob.exp(), num_draws, replacement=True)).T
            if self.num_points > self.num_cached:
                from_tail = torch.rand(num_draws, index.shape[0], device=index.device) < log_tail.exp()
                draws = torch.where(from_tail, _sample_uncached(index, self.num_points, num_draws), draws)
            return draws.reshape(torch.Size(sample_shape) + self.batch_shape)

    def particles(self, num_neighbors: int, num_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        r"""The ``K + S`` particles of the MAPA bound and their log-weights ``log w_p``.

        With ``A_n`` the top ``K`` cached indices, ``C`` the other cached ones (mass
        ``Q_n``) and ``U`` the ``N - K_c`` uncached ones (mass ``T_n``), the proposal is

        .. math::
            r_n(m) = (1 - \lambda_n)\, q(m | x_n) / Q_n \;(m \in C), \qquad
            r_n(m) = \lambda_n / |U| \;(m \in U),

        with ``lambda_n = max(T_n / (Q_n + T_n), defensive)`` (1 if ``C`` is empty,
        0 if ``U`` is), so every index of ``B_n = C ∪ U`` has positive probability.
        When ``B_n`` is empty (``K = N``) the ``K`` particles are all ``N`` indices
        (whatever the cache holds: exact enumeration needs no cache) and the sampled
        ones get a huge finite ``log w``, so they contribute exactly nothing.

        :returns: ``values`` and ``log_weights``, both of shape
            ``(K + S,) + batch_shape``.
        """
        index, log_prob, log_tail = self._rows()
        batch = index.shape[0]
        if num_neighbors == self.num_points:  # K = N, exact enumeration: every index, whatever the cache holds
            top = torch.arange(self.num_points, device=index.device).unsqueeze(1).expand(-1, batch)
        elif num_neighbors > self.num_cached:
            raise ValueError(
                f"num_neighbors={num_neighbors} is larger than the {self.num_cached} neighbours the MAPA cache "
                f"holds per point; refit MAPAPosterior with num_neighbors >= K (or use K = N = {self.num_points})"
            )
        else:
            top = index[:, :num_neighbors].T
        values = [top]
        log_weights = [index.new_zeros(num_neighbors, batch, dtype=log_prob.dtype)]
        if num_samples:
            values_s, log_r = self._propose(index, log_prob, log_tail, num_neighbors, num_samples)
            values.append(values_s)
            log_weights.append(log_r + math.log(num_samples))
        shape = torch.Size([num_neighbors + num_samples]) + self.batch_shape
        return torch.cat(values).reshape(shape), torch.cat(log_weights).reshape(shape)

    def _propose(self, index, log_prob, log_tail, num_neighbors, num_samples):
        """``S`` draws from ``r_n`` per row and their ``log r_n``."""
        batch = index.shape[0]
        rest_index, rest_log_prob = index[:, num_neighbors:], log_prob[:, num_neighbors:]
        num_uncached = self.num_points - self.num_cached
        if num_neighbors == self.num_points:
            # B_n is empty: a log-weight of sqrt(float max) makes exp(log p - log w) exactly 0,
            # and stays finite when Pyro sums it over sites (it flags infinite log-densities)
            huge = torch.finfo(log_prob.dtype).max ** 0.5
            return index[:, :1].T.expand(num_samples, batch), log_prob.new_full((num_samples, batch), huge)
        if rest_index.shape[1] == 0:
            log_r = log_prob.new_full((num_samples, batch), -math.log(num_uncached))
            return _sample_uncached(index, self.num_points, num_samples), log_r
        log_q_rest = rest_log_prob.logsumexp(1)
        pick = torch.multinomial((rest_log_prob - log_q_rest.unsqueeze(1)).exp(), num_samples, replacement=True)
        values = rest_index.gather(1, pick).T
        log_r = (rest_log_prob.gather(1, pick) - log_q_rest.unsqueeze(1)).T
        if num_uncached == 0:
            return values, log_r
        lam = (log_tail - torch.logaddexp(log_q_rest, log_tail)).exp().clamp_min(self.defensive)
        from_tail = torch.rand(num_samples, batch, device=index.device) < lam
        values = torch.where(from_tail, _sample_uncached(index, self.num_points, num_samples), values)
        log_r = torch.where(from_tail, lam.log() - math.log(num_uncached), log_r + torch.log1p(-lam))
        return values, log_r


class IndexParticles(TorchDistribution):
    """Fixed index particles with given log-weights ``log w_p``, as a Pyro site's ``fn``.

    Under :class:`~pyro_mapa.MAPA_ELBO` the guide's index site holds these: its
    "log-density" at the particles is ``log w_p``, which the bound subtracts from
    ``log p(x_n, i_p)`` exactly as it subtracts ``log q`` for i.i.d. particles.
    """

    arg_constraints = {}
    has_rsample = False

    def __init__(self, values: torch.Tensor, log_weights: torch.Tensor, num_points: int):
        self.values = values
        self.log_weights = log_weights
        self.num_points = num_points
        super().__init__(values.shape, torch.Size(), validate_args=False)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self):
        return constraints.integer_interval(0, self.num_points - 1)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        if sample_shape:
            raise ValueError("IndexParticles holds fixed particles; it cannot draw new ones")
        return self.values

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if value is not self.values and not torch.equal(value, self.values):
            raise ValueError("IndexParticles gives log-weights only at its own particles")
        return self.log_weights
