"""MAPA training on several processes with PyTorch's own engine (docs/math.md, section 9).

Each rank holds the whole model (decoder and the ``N x d`` codes) and the whole cache, draws
its own minibatch (disjoint from the other ranks' within a step: torch's
``DistributedSampler``) and its own particles (its own seed), and computes the subsampled
bound's loss ``-(N / B) sum_{n in batch} L_n``. Averaging the ranks' gradients gives the
gradient of the same estimate on the union of the minibatches, so the step equals a
single-process step on that union with the same particles.

The decoder's gradient is averaged by ``torch.nn.parallel.DistributedDataParallel``. The
codes' gradient is dense in autograd (``N x d``) but non-zero only in the rows a step decoded;
``code_gradients="rows"`` leaves the codes out of DDP and all-gathers only those rows and their
indices (``torch.distributed.all_gather``), summing them into the dense gradient;
``"dense"`` lets DDP all-reduce the whole ``N x d`` tensor.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DistributedSampler

from .._checks import check_count
from .._collectives import all_gather_ragged

__all__ = ["CODE_GRADIENTS", "DataParallelStep", "minibatches", "process_group_size"]

#: How the codes' gradient travels between ranks.
CODE_GRADIENTS = ("rows", "dense")


def process_group_size() -> tuple[int, int]:
    """``(rank, world size)`` of the initialised process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def minibatches(num_points: int, batch_size: int, seed: int, epoch: int) -> Iterator[torch.Tensor]:
    """This rank's minibatches of one epoch: the indices ``0..N-1`` shuffled by ``seed + epoch``
    (the same order on every rank), dealt out to the ranks (``DistributedSampler``), then cut
    into batches of ``batch_size``; the last, short batch dropped, so that every rank takes
    the same number of steps."""
    rank, world = process_group_size()
    check_count(batch_size, "batch_size")
    if batch_size * world > num_points:
        raise ValueError(f"batch_size={batch_size} on {world} processes needs at least {batch_size * world} points, "
                         f"got N={num_points}")
    sampler = DistributedSampler(range(num_points), num_replicas=world, rank=rank, shuffle=True, seed=seed,
                                 drop_last=True)
    sampler.set_epoch(epoch)
    for batch in BatchSampler(sampler, batch_size, drop_last=True):
        yield torch.tensor(batch)


class DataParallelStep:
    """One optimiser step of ``loss`` (an ``ELBOModule`` such as ``MAPA_ELBO(K, S)(model, guide)``
    whose model has the codes as its parameter ``codes``), the gradient averaged over the
    ranks of the process group (or a plain step without one).

    :param loss: the ``ELBOModule``; its parameters are what the optimisers step.
    :param optimizer: a ``torch.optim`` optimiser over ``loss.parameters()``, or several (e.g.
        ``Adam`` for the decoder and ``SparseAdam`` for sparse codes: ``EmpiricalModel(sparse=True)``).
    :param code_gradients: ``"rows"`` (all-gather the rows a step touched) or ``"dense"``
        (DDP all-reduces the whole ``N x d`` gradient; not for sparse codes).
    """

    def __init__(self, loss: torch.nn.Module, optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
                 code_gradients: str = "rows"):
        if code_gradients not in CODE_GRADIENTS:
            raise ValueError(f"code_gradients must be one of {CODE_GRADIENTS}, got {code_gradients!r}")
        self.codes = loss.model.codes
        self.optimizers = [optimizer] if isinstance(optimizer, torch.optim.Optimizer) else list(optimizer)
        self.rank, self.world = process_group_size()
        self.gather_rows = code_gradients == "rows" and self.world > 1
        if getattr(loss.model, "sparse", False) and code_gradients == "dense" and self.world > 1:
            raise ValueError("sparse codes travel as rows: use code_gradients='rows' (DDP all-reduces dense tensors)")
        self.module = loss
        if self.world > 1:
            if self.gather_rows:
                # DDP's own switch for parameters it must leave alone (public since torch 1.8, named private);
                # it then leaves them out of its broadcast of rank 0's parameters too, so that is done here
                DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(loss, ["model.codes"])
                with torch.no_grad():
                    dist.broadcast(self.codes.data, src=0)
            self.module = DistributedDataParallel(loss)
        #: bytes of code gradient this rank sent at the last step
        self.code_bytes_sent = 0

    def __call__(self, x: torch.Tensor, idx: torch.Tensor) -> float:
        """Step on this rank's minibatch ``x = data[idx]``; returns this rank's loss."""
        for optimizer in self.optimizers:
            optimizer.zero_grad()
        loss = self.module(x, idx)
        loss.backward()
        if self.gather_rows:
            self._average_touched_rows()
        elif self.world > 1:
            self.code_bytes_sent = self.codes.numel() * self.codes.element_size()
        for optimizer in self.optimizers:
            optimizer.step()
        return loss.item()

    def _average_touched_rows(self) -> None:
        """``codes.grad`` <- the ranks' mean, sending only the non-zero rows and their indices."""
        if self.codes.grad is None:  # this rank's loss did not reach the codes; the others' may have
            self.codes.grad = torch.zeros_like(self.codes)
        grad = self.codes.grad
        if grad.is_sparse:  # sparse codes: the rows are the gradient's own indices
            grad = grad.coalesce()
            rows, values = grad.indices()[0], grad.values()
        else:  # the fastest pass over N x d measured (benchmarks/RESULTS.md): non-zero entries, then their rows
            rows = torch.unique(grad.reshape(-1).nonzero().squeeze(1) // grad.shape[1])
            values = grad[rows]
        all_rows = all_gather_ragged(rows)
        all_grads = all_gather_ragged(values, [len(r) for r in all_rows])
        longest = max(len(r) for r in all_rows)
        self.code_bytes_sent = longest * (rows.element_size() + grad.shape[1] * grad.element_size())
        if grad.is_sparse:
            summed = torch.cat(all_grads) / self.world
            self.codes.grad = torch.sparse_coo_tensor(torch.cat(all_rows).unsqueeze(0), summed, grad.shape).coalesce()
            return
        grad[rows] = 0  # the gradient is zero outside this rank's rows: now zero everywhere, without a pass over N x d
        for r, g in zip(all_rows, all_grads):
            grad.index_add_(0, r, g, alpha=1.0 / self.world)
