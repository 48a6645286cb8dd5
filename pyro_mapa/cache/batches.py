r"""Minibatches of neighbourhoods, weighted so that the bound's gradient stays unbiased
(docs/math.md, section 3, "Minibatches of neighbourhoods").

A uniform minibatch of ``B`` points makes MAPA decode about ``B (K + S)`` distinct codes a step:
the particles of unrelated points rarely coincide. A batch of ``G = B / g`` *groups* instead,
each an anchor ``a`` drawn uniformly and the ``g - 1`` most probable other indices of ``a``'s
cached row, puts near neighbours side by side, and their particles (drawn from overlapping
rows) share codes.

The group of anchor ``a`` holds ``a`` and the ``g - 1`` first cached indices of row ``a`` other
than ``a``. Point ``n`` belongs to ``c_n >= 1`` of the ``N`` groups (its own, and those of the
anchors that cache it), so it enters a batch ``G c_n / N`` times in expectation, where a
uniform batch of ``B`` holds it ``B / N`` times. Scaling its terms by ``w_n = g / c_n`` on top
of the plate's ``N / B`` makes every batch's estimate of ``sum_n f_n`` unbiased:

.. math::
    E\Big[\sum_{\text{slots } s} \frac{N}{B} w_{n_s} f_{n_s}\Big]
    = \sum_n \frac{G c_n}{N} \cdot \frac{N}{G g} \cdot \frac{g}{c_n} f_n = \sum_n f_n .
"""

from __future__ import annotations

import torch

from .neighbors import NeighborTable

__all__ = ["NeighborhoodBatches"]


class NeighborhoodBatches:
    """Draws minibatches of neighbourhoods of ``group_size`` points from a cache's table.

    :param table: the training points' :class:`~pyro_mapa.cache.NeighborTable`
        (``MAPAPosterior.table``: row ``n`` is point ``n``'s).
    :param group_size: ``g``, at most ``K_c + 1``; 1 gives uniform batches.
    :param generator: the torch generator of the anchors' draws (``None``: torch's global one).

    :meth:`sample` returns a batch's indices and each slot's weight ``w_n = g / c_n``: run
    the step under ``pyro.poutine.scale(scale=weights)`` with the data plate subsampled by the
    indices.

    >>> table = NeighborTable(torch.tensor([[0, 1], [1, 0], [2, 1]]), torch.zeros(3, 2), torch.zeros(3))
    >>> batches = NeighborhoodBatches(table, group_size=2)
    >>> batches.members.tolist(), [round(w, 3) for w in batches.weights.tolist()]  # 1 is in three groups
    ([[0, 1], [1, 0], [2, 1]], [1.0, 0.667, 2.0])
    """

    def __init__(self, table: NeighborTable, group_size: int, generator: torch.Generator | None = None) -> None:
        num_points, num_cached = table.index.shape
        if not 1 <= group_size <= min(num_cached + 1, num_points):
            raise ValueError(f"group_size={group_size} must lie in [1, {min(num_cached + 1, num_points)}] "
                             f"(the anchor and its K_c={num_cached} cached neighbours, at most N={num_points})")
        self.group_size, self.generator = group_size, generator
        anchors = torch.arange(num_points, device=table.index.device)
        is_anchor = table.index == anchors.unsqueeze(-1)
        # the row's first g - 1 indices other than the anchor (a stable sort moves the anchor last)
        others = table.index.gather(1, is_anchor.to(torch.uint8).argsort(dim=1, stable=True)[:, :group_size - 1])
        #: ``(N, g)``: group ``a`` is the anchor ``a``, then its ``g - 1`` first cached others
        self.members = torch.cat([anchors.unsqueeze(-1), others], dim=1)
        counts = torch.bincount(self.members.reshape(-1), minlength=num_points)
        #: ``(N,)``: ``w_n = g / c_n``, ``c_n`` the groups that hold point ``n``
        self.weights = group_size / counts.to(torch.get_default_dtype())

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B,)`` indices, ``B / g`` groups one after the other, and their ``(B,)`` weights;
        ``B = batch_size``, a multiple of ``g``."""
        if batch_size < self.group_size or batch_size % self.group_size:
            raise ValueError(f"batch_size={batch_size} must be a multiple of group_size={self.group_size}")
        anchors = torch.randint(0, len(self.members), (batch_size // self.group_size,), generator=self.generator,
                                device=self.members.device)
        idx = self.members[anchors].reshape(-1)
        return idx, self.weights[idx]
