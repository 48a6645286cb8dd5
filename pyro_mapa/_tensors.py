"""Tensor arithmetic that several rooms share: row chunks and pairwise squared distances."""

from __future__ import annotations

import math

import torch

__all__ = ["row_chunks", "squared_distances"]

#: Entries per chunk of :func:`row_chunks` (8 MiB of float64).
CHUNK_ENTRIES = 2**20


def row_chunks(data: torch.Tensor, max_entries: int = CHUNK_ENTRIES, row_size: int | None = None) -> tuple[torch.Tensor, ...]:
    """``data`` split into views of consecutive rows, each chunk of at most ``max_entries``
    entries (at least one row), a row counting ``row_size`` entries (default: its own length,
    or what one row makes downstream, e.g. a row of a pairwise matrix): passes over large
    data without a full-size temporary.

    >>> [len(chunk) for chunk in row_chunks(torch.zeros(10, 4), max_entries=12)]
    [3, 3, 3, 1]
    """
    return data.split(max(1, max_entries // max(1, row_size or data.shape[-1])))


def squared_distances(a: torch.Tensor, b: torch.Tensor, *, precise: bool = False) -> torch.Tensor:
    """Pairwise ``||a_i - b_j||^2`` (``len(a) x len(b)``) by ``|a|^2 - 2 a.b + |b|^2``:
    one matrix product.

    The expansion loses about ``eps |x|^2`` to cancellation. The default works in the
    inputs' dtype (fast: the neighbour search, where the caller removes a common offset
    first). ``precise=True`` moves both sets by ``b``'s mean (distances do not change under
    a common translation) and works in float64 with autocast off, which loses about
    ``1e-16 |x - mean|^2``: nothing against float32 data's own precision. It gives ``inf``
    for a row of ``a`` with a non-finite entry (so that one bad observation stays in its
    row); the result has ``a``'s dtype.

    >>> squared_distances(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]]))
    tensor([[25.]])
    """
    if not precise:
        out = torch.addmm((b * b).sum(1).unsqueeze(0), a, b.T, alpha=-2.0)
        out += (a * a).sum(1, keepdim=True)
        return out.clamp_min_(0.0)
    with torch.autocast(a.device.type, enabled=False):
        x, y = a.double(), b.double()
        center = y.detach().mean(0)
        x, y = x - center, y - center
        pairs = x.pow(2).sum(-1, keepdim=True) - 2 * x @ y.T + y.pow(2).sum(-1)
        pairs = torch.where(x.isfinite().all(-1, keepdim=True), pairs.clamp_min(0), math.inf)
    return pairs.to(a.dtype)
