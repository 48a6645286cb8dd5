"""The cache built by several processes: each rank searches its share of the query rows
against all the data, and every rank ends with the whole table (docs/math.md, section 2).

It runs on PyTorch's own engine, ``torch.distributed``, in a process group the caller has
initialised (``torchrun`` and ``init_process_group``: gloo on CPU, nccl with the data on each
rank's GPU). The rows are split into contiguous shares by ``torch.tensor_split``; the shares'
tables are gathered with ``all_gather`` (padded to the largest share, as the collective needs
equal sizes), so the result is the single-process table, row for row.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch
import torch.distributed as dist

from .._collectives import all_gather_ragged
from .._files import fingerprint
from .kernels import Kernel
from .neighbors import NeighborTable

__all__ = ["check_same_inputs", "from_rank_zero", "gather_rows", "rank_rows", "shared_kernel"]


def _require_group() -> None:
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "distributed=True needs an initialised torch.distributed process group: launch with torchrun and call "
            "torch.distributed.init_process_group('gloo') (or 'nccl' with the data on each rank's GPU) first"
        )


def check_same_inputs(data: torch.Tensor, kernel: Kernel, num_cached: int) -> None:
    """Refuse to go on unless every rank holds the same data (by fingerprint) and asks for the
    same kind of kernel, temperature (or none yet) and ``K_c`` (otherwise the gathered tables
    would not fit together)."""
    _require_group()
    mine = (fingerprint(data, {}), (type(kernel).__name__, kernel.temperature, num_cached))
    every = [None] * dist.get_world_size()
    dist.all_gather_object(every, mine)
    for what, position in (("data", 0), ("kernel or num_cached", 1)):
        differing = [rank for rank, other in enumerate(every) if other[position] != every[0][position]]
        if differing:
            raise ValueError(
                f"the ranks hold different {what} (rank {differing[0]}'s differs from rank 0's): every rank must pass "
                "the same N x D data, in the same order, and the same settings to MAPAPosterior.fit(..., distributed=True)"
            )


def shared_kernel(kernel: Kernel) -> Kernel:
    """``kernel`` with rank 0's temperature on every rank (the calibration is deterministic, but
    the ranks may sit on machines whose arithmetic differs in the last bits)."""
    temperature = torch.tensor([kernel.temperature], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        temperature = temperature.cuda()
    dist.broadcast(temperature, src=0)
    return replace(kernel, temperature=float(temperature.item()))


def rank_rows(num_rows: int, device: torch.device) -> torch.Tensor:
    """This rank's contiguous share of the ``num_rows`` query rows."""
    return torch.tensor_split(torch.arange(num_rows, device=device), dist.get_world_size())[dist.get_rank()]


def gather_rows(search: Callable[[torch.Tensor], NeighborTable], num_rows: int, device: torch.device) -> NeighborTable:
    """Every rank runs ``search`` on its rows (:func:`rank_rows`); every rank gets the table of
    all ``num_rows`` rows, in order."""
    lengths = [len(share) for share in torch.tensor_split(torch.arange(num_rows), dist.get_world_size())]
    table = search(rank_rows(num_rows, device))
    gathered = [torch.cat(all_gather_ragged(part.contiguous(), lengths)) for part in table]
    return NeighborTable(*gathered)


def from_rank_zero(search: Callable[[], NeighborTable], device: torch.device) -> NeighborTable:
    """Rank 0 runs ``search`` (an approximate index is built once, not split); every rank gets
    its table (``broadcast_object_list``)."""
    box = [search()._asdict() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return NeighborTable(**{name: part.to(device) for name, part in box[0].items()})
