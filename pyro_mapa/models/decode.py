"""Run a decoder on the distinct codes an index tensor refers to, then gather.

In the empiricalized model the decoder runs on *codes*, not on datapoints: a step whose
particles refer to ``U`` distinct indices needs ``U`` decoder passes, however many
particles share them. ``decode(decoder, codes, i)`` equals ``decoder(codes[i])``,
gradients included, at that cost.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["decode", "decode_unique"]


def decode_unique(
    decoder: Callable[[torch.Tensor], torch.Tensor], codes: torch.Tensor, i: torch.Tensor, sparse: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoder on the distinct indices of ``i``, and where each entry of ``i`` went.

    :param sparse: give ``codes`` a sparse gradient (only the rows used; for
        ``torch.optim.SparseAdam``), as ``torch.nn.functional.embedding(..., sparse=True)`` does.
    :returns: ``(outputs, inverse)``: ``U`` outputs, one per distinct index, and
        ``inverse`` of ``i``'s shape with ``outputs[inverse] == decoder(codes[i])``;
        feed both to :class:`~pyro_mapa.GatheredNormal` to skip the gather.

    >>> outputs, inverse = decode_unique(lambda z: 10 * z, torch.tensor([[0.0], [1.0], [2.0]]), torch.tensor([2, 2, 0]))
    >>> outputs.squeeze(-1), inverse
    (tensor([ 0., 20.]), tensor([1, 1, 0]))
    """
    unique, inverse = torch.unique(i, return_inverse=True)
    picked = torch.nn.functional.embedding(unique, codes, sparse=True) if sparse else codes[unique]
    return decoder(picked), inverse


def decode(decoder: Callable[[torch.Tensor], torch.Tensor], codes: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    """``decoder(codes[i])``, with one decoder pass per distinct index of ``i``.

    :param decoder: maps ``(M, d)`` codes to ``(M, ...)`` outputs.
    :param codes: ``(N, d)`` codes.
    :param i: integer indices of any shape.
    :returns: ``i.shape + output shape``.

    >>> codes = torch.tensor([[0.0], [1.0], [2.0]])
    >>> decode(lambda z: 10 * z, codes, torch.tensor([[2, 2], [0, 2]])).squeeze(-1)
    tensor([[20., 20.],
            [ 0., 20.]])
    """
    outputs, inverse = decode_unique(decoder, codes, i)
    return outputs[inverse]
