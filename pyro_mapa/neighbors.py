"""Exact nearest neighbours under the MAPA kernel, by blocked matrix products.

For each query ``x`` the table keeps the ``K_c`` indices ``m`` of largest
``q(i = m | x) ∝ exp(-d(x, x_m) / T)`` with their normalised log-probabilities,
and ``log`` of the tail mass ``sum`` of ``q`` over the other ``N - K_c`` indices.
Queries are processed in row blocks of at most ``max_block_entries`` kernel
entries, so no ``N x N`` matrix is ever held: peak memory is
``O(N * K_c + max_block_entries)``. Tail terms smaller than ``e * tiny`` (``tiny``: the
dtype's smallest normal number) relative to a row's largest weight count as that.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from tqdm import tqdm

from .kernels import Kernel

__all__ = ["DEFAULT_BLOCK_ENTRIES", "NeighborTable", "exact_neighbors"]

#: Kernel entries per row block (2^24: 64 MiB in float32, 128 MiB in float64).
DEFAULT_BLOCK_ENTRIES = 2**24


class NeighborTable(NamedTuple):
    """Sparse MAPA index posterior of ``M`` points over ``N`` training indices.

    :param index: ``(M, K_c)`` training indices, by decreasing ``q``.
    :param log_prob: ``(M, K_c)`` normalised ``log q(i = m | x)`` of those indices.
    :param log_tail: ``(M,)`` ``log`` of the mass ``q`` puts on the other indices
        (``-inf`` when ``K_c = N``). It is floored near ``log((N - K_c) e tiny)``
        relative to the top weight (``tiny``: the dtype's smallest normal number,
        about ``e^-86`` in float32 and ``e^-707`` in float64); see :func:`exact_neighbors`.
    """

    index: torch.Tensor
    log_prob: torch.Tensor
    log_tail: torch.Tensor

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "NeighborTable":
        """Move the tables to ``device``; cast the log-probabilities to ``dtype``."""
        return NeighborTable(
            self.index.to(device=device),
            self.log_prob.to(device=device, dtype=dtype),
            self.log_tail.to(device=device, dtype=dtype),
        )


def _translated(queries: torch.Tensor, data: torch.Tensor, kernel: Kernel) -> tuple[torch.Tensor, torch.Tensor]:
    """Move both sets to the data's mean when the cancellation in
    ``|a|^2 + |b|^2 - 2 a.b`` (about ``2 eps |x|^2 / T`` in the log-weights) could matter;
    squared distances do not change under a common translation."""
    if kernel.name != "normal":  # binary data: bounded, and its distances are exact integers
        return queries, data
    largest = max(torch.linalg.vector_norm(t, dim=1).max().item() for t in (queries, data)) ** 2
    if largest * torch.finfo(data.dtype).eps / kernel.temperature < 1e-5:
        return queries, data
    center = data.mean(0)
    return queries - center, data - center


def exact_neighbors(
    queries: torch.Tensor,
    data: torch.Tensor,
    kernel: Kernel,
    num_neighbors: int,
    *,
    max_block_entries: int = DEFAULT_BLOCK_ENTRIES,
    progress: bool | None = None,
) -> NeighborTable:
    """The exact :class:`NeighborTable` of ``queries`` against ``data``.

    :param queries: ``(M, D)`` points whose index posterior is wanted.
    :param data: ``(N, D)`` training points.
    :param kernel: the MAPA kernel (log-weights ``-d / T``).
    :param num_neighbors: ``K_c``, the indices kept per query.
    :param max_block_entries: kernel entries computed at once (bounds memory).
    :param progress: show a progress bar; ``None`` shows one on a terminal only.
    """
    num_queries, num_points = queries.shape[0], data.shape[0]
    queries, data = _translated(queries, data, kernel)
    rows_per_block = max(1, min(num_queries, max_block_entries // num_points))
    index = torch.empty(num_queries, num_neighbors, dtype=torch.long, device=data.device)
    log_prob = torch.empty(num_queries, num_neighbors, dtype=data.dtype, device=data.device)
    log_tail = torch.empty(num_queries, dtype=data.dtype, device=data.device)
    # one buffer for every block: fresh large allocations cost page faults on each block
    buffer = torch.empty(rows_per_block, num_points, dtype=data.dtype, device=data.device)
    column_shift = kernel.column_shift(data)
    # e * tiny: exp is on its fast path from there up (at log(tiny) itself it is not)
    log_floor = math.log(torch.finfo(data.dtype).tiny) + 1.0
    starts = range(0, num_queries, rows_per_block)
    disable = None if progress is None else not progress
    for start in tqdm(starts, desc="MAPA neighbours", unit="block", disable=disable, leave=False):
        stop = min(start + rows_per_block, num_queries)
        logits = kernel.shifted_log_weights(queries[start:stop], data, buffer[: stop - start], column_shift)
        top = logits.topk(num_neighbors, dim=1, sorted=True)
        row_max = top.values[:, :1]
        # the tail: the entries outside the top K_c, relative to the row's maximum (no
        # overflow), in place. Terms below e * tiny (tiny: the smallest normal number)
        # are raised to it: exp's subnormal path is ten times slower, and they change
        # the tail mass by at most 3 N tiny relative to the largest weight.
        weights = logits.sub_(row_max).clamp_(min=log_floor).exp_().scatter_(1, top.indices, 0.0)
        tail = weights.sum(1).log_() + row_max[:, 0]
        log_norm = torch.logaddexp(top.values.logsumexp(1), tail)
        index[start:stop] = top.indices
        log_prob[start:stop] = top.values - log_norm.unsqueeze(1)
        log_tail[start:stop] = tail - log_norm
    return NeighborTable(index, log_prob, log_tail)
