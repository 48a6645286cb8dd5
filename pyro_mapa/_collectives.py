"""``torch.distributed`` collectives that several rooms share."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist

__all__ = ["all_gather_ragged"]


def all_gather_ragged(part: torch.Tensor, lengths: Sequence[int] | None = None) -> list[torch.Tensor]:
    """Every rank's ``part``, in rank order, where the first dimension differs between ranks.

    ``all_gather`` needs equal sizes (gloo has no ragged variant), so each part is padded to the
    longest and the received pieces are cut back. ``lengths``: every rank's first dimension when
    the caller knows them; otherwise they are all-gathered first.
    """
    if lengths is None:
        counts = [torch.zeros(1, dtype=torch.long, device=part.device) for _ in range(dist.get_world_size())]
        dist.all_gather(counts, torch.tensor([len(part)], device=part.device))
        lengths = [int(count.item()) for count in counts]
    padded = part.new_zeros((max(lengths),) + tuple(part.shape[1:]))
    padded[: len(part)] = part
    pieces = [torch.empty_like(padded) for _ in lengths]
    dist.all_gather(pieces, padded)
    return [piece[:length] for piece, length in zip(pieces, lengths)]
