"""Exact nearest neighbours under the MAPA kernel, by blocked matrix products.

For each query ``x`` the table keeps the ``K_c`` indices ``m`` of largest
``q(i = m | x) ∝ exp(-d(x, x_m) / T)`` with their normalised log-probabilities,
and ``log`` of the tail mass ``sum`` of ``q`` over the other ``N - K_c`` indices.
Queries are processed in row blocks of at most ``max_block_entries`` kernel
entries, so no ``N x N`` matrix is ever held: peak memory is
``O(N * K_c + max_block_entries)``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from .kernels import Kernel

__all__ = ["DEFAULT_BLOCK_ENTRIES", "NeighborTable", "exact_neighbors"]

#: Kernel entries per row block (2^24: 64 MiB in float32, 128 MiB in float64).
DEFAULT_BLOCK_ENTRIES = 2**24


class NeighborTable(NamedTuple):
    """Sparse MAPA index posterior of ``M`` points over ``N`` training indices.

    :param index: ``(M, K_c)`` training indices, by decreasing ``q``.
    :param log_prob: ``(M, K_c)`` normalised ``log q(i = m | x)`` of those indices.
    :param log_tail: ``(M,)`` ``log`` of the mass ``q`` puts on the other indices
        (``-inf`` when ``K_c = N``).
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
    rows_per_block = max(1, max_block_entries // num_points)
    index = torch.empty(num_queries, num_neighbors, dtype=torch.long, device=data.device)
    log_prob = torch.empty(num_queries, num_neighbors, dtype=data.dtype, device=data.device)
    log_tail = torch.empty(num_queries, dtype=data.dtype, device=data.device)
    starts = range(0, num_queries, rows_per_block)
    disable = None if progress is None else not progress
    for start in tqdm(starts, desc="MAPA neighbours", unit="block", disable=disable, leave=False):
        stop = min(start + rows_per_block, num_queries)
        logits = kernel.log_weights(queries[start:stop], data)
        if logits.shape != (stop - start, num_points):
            raise ValueError(
                f"the distance of kernel {kernel.name!r} returned shape {tuple(logits.shape)} for "
                f"{stop - start} x {num_points} points; it must return one distance per pair"
            )
        if torch.isnan(logits).any():
            raise ValueError(f"the distance of kernel {kernel.name!r} returned NaN")
        top = logits.topk(num_neighbors, dim=1, sorted=True)
        # the tail: every entry that is not among the top K_c, in log space so that
        # a tiny tail keeps its relative precision
        tail = logits.scatter_(1, top.indices, -float("inf")).logsumexp(1)
        log_norm = torch.logaddexp(top.values.logsumexp(1), tail)
        index[start:stop] = top.indices
        log_prob[start:stop] = top.values - log_norm.unsqueeze(1)
        log_tail[start:stop] = tail - log_norm
    return NeighborTable(index, log_prob, log_tail)
