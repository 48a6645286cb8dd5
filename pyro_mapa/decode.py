"""Run a decoder on the distinct codes an index tensor refers to, then gather.

In the empiricalized model the decoder runs on *codes*, not on datapoints: a step whose
particles refer to ``U`` distinct indices needs ``U`` decoder passes, however many
particles share them. ``decode(decoder, codes, i)`` equals ``decoder(codes[i])``,
gradients included, at that cost.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["decode"]


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
    unique, inverse = torch.unique(i, return_inverse=True)
    return decoder(codes[unique])[inverse]
