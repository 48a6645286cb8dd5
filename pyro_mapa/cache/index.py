"""The MAPA index posterior ``q(i | x_n)`` as a Pyro distribution over training indices.

:class:`MAPAIndex` holds a :class:`~pyro_mapa.cache.NeighborTable` row per datapoint:
its ``K_c`` cached indices keep their probabilities and the other ``N - K_c`` indices
share the tail mass uniformly (docs/math.md, section 2). It is an ordinary distribution
(``log_prob``, ``sample``); the bound's proposal built on it lives in
:mod:`pyro_mapa.infer.proposal`.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution, constraints

from .neighbors import NeighborTable

__all__ = ["MAPAIndex", "sample_uncached", "sample_uncached_shared"]


def sample_uncached(index: torch.Tensor, num_points: int, num_draws: int) -> torch.Tensor:
    """Uniform draws from the indices *not* in each row of ``index``.

    ``index`` is ``(B, K_c)``; returns ``(num_draws, B)``. With the row's cached
    indices sorted, ``c_j - j`` counts the uncached indices below ``c_j``, so the
    ``r``-th uncached index is ``r + #{j : c_j - j <= r}`` (one ``searchsorted``).
    """
    batch, num_cached = index.shape
    below = index.sort(dim=1).values - torch.arange(num_cached, device=index.device)
    rank = torch.randint(0, num_points - num_cached, (batch, num_draws), device=index.device)
    return (rank + torch.searchsorted(below, rank, right=True)).T


def sample_uncached_shared(index: torch.Tensor, num_points: int, num_draws: int) -> torch.Tensor:
    """Uniform draws from the indices *not* in each row of ``index``, which the rows take
    from one shared stream of candidates, so that rows draw the same indices where their
    caches allow.

    ``index`` is ``(B, K_c)``; returns ``(num_draws, B)``. Candidates ``u_1, u_2, ...`` are
    drawn uniformly from all ``num_points`` indices, once for the batch; row ``b``'s ``j``-th
    draw is the ``j``-th candidate outside its cache. A candidate is uniform, and given that it
    lies outside the row's cache it is uniform over the row's uncached indices, independently
    of the others: each row's draws are i.i.d. uniform over its uncached indices, as
    :func:`sample_uncached`'s are; only the rows' draws are no longer independent of one another
    (docs/math.md, section 3). A row whose cache holds too many of the candidates gets its
    missing draws from :func:`sample_uncached`.
    """
    batch, num_cached = index.shape
    # enough candidates for every row in expectation (a share K_c / N of them is cached), and a margin
    num_candidates = num_draws + math.ceil(num_draws * num_cached / max(num_points - num_cached, 1)) + 8
    candidates = torch.randint(0, num_points, (num_candidates,), device=index.device)
    if num_cached:
        cached_sorted = index.sort(dim=1).values
        position = torch.searchsorted(cached_sorted, candidates.expand(batch, -1).contiguous())
        cached = cached_sorted.gather(1, position.clamp_max(num_cached - 1)) == candidates
    else:
        cached = torch.zeros(batch, num_candidates, dtype=torch.bool, device=index.device)
    # each row's uncached candidates first, in stream order (a stable sort of 0 = uncached, 1 = cached)
    order = torch.sort(cached.to(torch.uint8), dim=1, stable=True).indices[:, :num_draws]
    draws = candidates[order]
    missing = (~cached).sum(1, keepdim=True) <= torch.arange(num_draws, device=index.device)
    # drawn whether needed or not: no host sync on an accelerator to ask
    return torch.where(missing, sample_uncached(index, num_points, num_draws).T, draws).T


class MAPAIndex(TorchDistribution):
    r"""Sparse MAPA index posterior ``q(i | x_n)`` over ``N`` training indices.

    Batch shape is the shape of ``table.log_tail``; each value is an index in
    ``{0, ..., N - 1}``.

    :param table: a :class:`~pyro_mapa.cache.NeighborTable` (one row per datapoint).
    :param num_points: ``N``, the number of training codes.

    >>> table = NeighborTable(torch.tensor([[0, 2]]), torch.tensor([[-0.1, -2.5]]), torch.tensor([-5.0]))
    >>> q = MAPAIndex(table, num_points=4)
    >>> q.log_prob(torch.tensor([0, 1])).exp()  # cached, then one of two uncached
    tensor([0.9048, 0.0034])
    """

    arg_constraints = {}
    has_enumerate_support = False

    def __init__(self, table: NeighborTable, num_points: int, validate_args=None):
        self.table = table
        self.num_points = int(num_points)
        super().__init__(table.log_tail.shape, torch.Size(), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self):
        return constraints.integer_interval(0, self.num_points - 1)

    @property
    def num_cached(self) -> int:
        """``K_c``, the cached indices per row."""
        return self.table.index.shape[-1]

    def rows(self) -> NeighborTable:
        """The table with its batch dimensions flattened into one: ``(B, K_c)``, ``(B, K_c)``, ``(B,)``."""
        index, log_prob, log_tail = self.table
        return NeighborTable(index.reshape(-1, self.num_cached), log_prob.reshape(-1, self.num_cached), log_tail.reshape(-1))

    def top(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` most probable indices of each row (at most ``K_c``) and their ``log q``
        renormalised over those ``k``: ``batch_shape + (k,)`` each."""
        if not 1 <= k <= self.num_cached:
            raise ValueError(f"k={k} must lie in [1, K_c={self.num_cached}] (the indices the cache holds)")
        index, log_prob = self.table.index[..., :k], self.table.log_prob[..., :k]
        return index, log_prob - log_prob.logsumexp(-1, keepdim=True)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        index, log_prob, _ = self.table
        hit = value.unsqueeze(-1) == index
        cached = torch.where(hit, log_prob, torch.zeros_like(log_prob)).sum(-1)
        return torch.where(hit.any(-1), cached, self.table.uncached_log_prob(self.num_points))

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            index, log_prob, log_tail = self.rows()
            num_draws = math.prod(sample_shape)
            draws = index.gather(1, torch.multinomial(log_prob.exp(), num_draws, replacement=True)).T
            if self.num_points > self.num_cached:
                from_tail = torch.rand(num_draws, index.shape[0], device=index.device) < log_tail.exp()
                draws = torch.where(from_tail, sample_uncached(index, self.num_points, num_draws), draws)
            return draws.reshape(torch.Size(sample_shape) + self.batch_shape)
