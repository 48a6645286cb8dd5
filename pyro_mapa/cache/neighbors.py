"""Exact nearest neighbours under the MAPA kernel, by blocked matrix products.

For each query ``x`` the table keeps the ``K_c`` indices ``m`` of largest
``q(i = m | x) ∝ exp(-d(x, x_m) / T)`` with their normalised log-probabilities,
and ``log`` of the tail mass ``sum`` of ``q`` over the other ``N - K_c`` indices.
Queries are processed in row blocks of at most ``max_block_entries`` kernel
entries, so no ``N x N`` matrix is ever held: peak memory is
``O(N * K_c + max_block_entries)``. The tail is summed relative to its own largest term,
so that it is the same in float32 and float64 (to rounding) however small it is; terms
smaller than ``e * tiny`` of that (``tiny``: the dtype's smallest normal number) count as
that. Where
the fused product loses digits to cancellation (float32 data, a small ``T``), the cached
candidates' log-weights are recomputed exactly, by differences, once the search has found
them (:meth:`~pyro_mapa.cache.Kernel.cancels`, :data:`REFINE_TOLERANCE`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .._progress import progress_bar
from .kernels import Kernel

__all__ = ["DEFAULT_BLOCK_ENTRIES", "NeighborTable", "exact_neighbors"]

#: Kernel entries per row block (2^24: 64 MiB in float32, 128 MiB in float64).
DEFAULT_BLOCK_ENTRIES = 2**24
#: Nats the fused product may lose (``2 eps |x|^2 / T``) before the cached candidates'
#: log-weights are recomputed by differences.
REFINE_TOLERANCE = 1e-4


class NeighborTable(NamedTuple):
    """Sparse MAPA index posterior of ``M`` points over ``N`` training indices.

    :param index: ``(M, K_c)`` training indices, by decreasing ``q``.
    :param log_prob: ``(M, K_c)`` normalised ``log q(i = m | x)`` of those indices.
    :param log_tail: ``(M,)`` ``log`` of the mass ``q`` puts on the other indices
        (``-inf`` when ``K_c = N``), the same in float32 and float64 to rounding, however
        small (it is summed relative to its own largest term; see :func:`exact_neighbors`).
    """

    index: torch.Tensor
    log_prob: torch.Tensor
    log_tail: torch.Tensor

    def uncached_log_prob(self, num_points: int) -> torch.Tensor:
        """``log q(i = m | x)`` of each index ``m`` *outside* a row's cache: the tail mass
        spread uniformly over the ``N - K_c`` uncached indices (``-inf`` if there are none)."""
        num_uncached = num_points - self.index.shape[-1]
        if not num_uncached:
            return torch.full_like(self.log_tail, -math.inf)
        return self.log_tail - math.log(num_uncached)

    def dense_log_prob(self, num_points: int) -> torch.Tensor:
        """``log q(i = m | x)`` over all ``N`` indices (``batch x N``), the tail spread uniformly.

        >>> table = NeighborTable(torch.tensor([[1]]), torch.tensor([[-0.1]]), torch.tensor([-2.4]))
        >>> table.dense_log_prob(3).exp()
        tensor([[0.0454, 0.9048, 0.0454]])
        """
        dense = self.uncached_log_prob(num_points).unsqueeze(-1).expand(*self.index.shape[:-1], num_points).clone()
        return dense.scatter_(-1, self.index, self.log_prob)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "NeighborTable":
        """Move the tables to ``device``; cast the log-probabilities to ``dtype``."""
        return NeighborTable(
            self.index.to(device=device),
            self.log_prob.to(device=device, dtype=dtype),
            self.log_tail.to(device=device, dtype=dtype),
        )


def exact_neighbors(
    queries: torch.Tensor,
    data: torch.Tensor,
    kernel: Kernel,
    num_cached: int,
    *,
    max_block_entries: int = DEFAULT_BLOCK_ENTRIES,
    progress: bool | None = None,
) -> NeighborTable:
    """The exact :class:`NeighborTable` of ``queries`` against ``data``.

    :param queries: ``(M, D)`` points whose index posterior is wanted.
    :param data: ``(N, D)`` training points.
    :param kernel: the MAPA kernel (log-weights ``-d / T``), calibrated.
    :param num_cached: ``K_c``, the indices kept per query.
    :param max_block_entries: kernel entries computed at once (bounds memory).
    :param progress: show a progress bar; ``None`` shows one on a terminal only.

    >>> from pyro_mapa.cache import Kernel
    >>> data = torch.tensor([[0.0], [1.0], [3.0]])
    >>> table = exact_neighbors(torch.tensor([[0.9]]), data, Kernel.gaussian(bandwidth=1.0), num_cached=2)
    >>> table.index, table.log_prob.exp()
    (tensor([[1, 0]]), tensor([[0.5614, 0.3763]]))
    """
    num_queries, num_points = queries.shape[0], data.shape[0]
    queries, data = kernel.prepared(queries, data)
    refine = kernel.cancels(queries, data, tolerance=REFINE_TOLERANCE)  # even after moving to the mean
    rows_per_block = max(1, min(num_queries, max_block_entries // num_points))
    index = torch.empty(num_queries, num_cached, dtype=torch.long, device=data.device)
    log_prob = torch.empty(num_queries, num_cached, dtype=data.dtype, device=data.device)
    log_tail = torch.empty(num_queries, dtype=data.dtype, device=data.device)
    # one buffer for every block: fresh large allocations cost page faults on each block
    buffer = torch.empty(rows_per_block, num_points, dtype=data.dtype, device=data.device)
    column_shift = kernel.column_shift(data)
    # e * tiny: exp is on its fast path from there up (at log(tiny) itself it is not)
    log_floor = math.log(torch.finfo(data.dtype).tiny) + 1.0
    starts = range(0, num_queries, rows_per_block)
    for start in progress_bar(starts, progress=progress, desc="MAPA neighbours", unit="block", leave=False):
        stop = min(start + rows_per_block, num_queries)
        logits = kernel.shifted_log_weights(queries[start:stop], data, buffer[: stop - start], column_shift)
        top = logits.topk(min(num_cached + 1, num_points), dim=1, sorted=True)
        values, indices = top.values[:, :num_cached], top.indices[:, :num_cached]
        if num_cached < num_points:
            # the tail, relative to its own largest term (the (K_c + 1)-th weight), in place:
            # no term the tail's mass depends on underflows, whatever the dtype, so the tail
            # (and the proposal's lambda_n) is the same in float32 and float64 to rounding.
            # Terms below e * tiny of that (tiny: the smallest normal number) are raised to
            # it: exp's subnormal path is ten times slower, and they change the tail's mass
            # by at most 3 N tiny of itself.
            tail_max = top.values[:, num_cached:]
            weights = logits.sub_(tail_max).clamp_(min=log_floor).exp_().scatter_(1, indices, 0.0)
            tail = weights.sum(1).log_() + (tail_max.squeeze(1) - values[:, 0])  # relative to the row's largest
        else:
            tail = values.new_full((stop - start,), -math.inf)
        if refine:  # the candidates' exact values (the search found them; their log-weights lost digits)
            values = kernel.candidate_log_weights(queries[start:stop], data[indices])
            values, order = values.sort(dim=1, descending=True)
            indices = indices.gather(1, order)
        tail = tail + values[:, 0]
        log_norm = torch.logaddexp(values.logsumexp(1), tail)
        index[start:stop] = indices
        log_prob[start:stop] = values - log_norm.unsqueeze(1)
        log_tail[start:stop] = tail - log_norm
    return NeighborTable(index, log_prob, log_tail)
