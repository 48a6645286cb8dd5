"""Count forward passes where they happen: rows through a module's ``forward``."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

__all__ = ["PassCounter"]


class PassCounter:
    """Counts the rows (inputs ``x`` of shape ``(..., features)``) that go through
    ``module.forward``, by a forward hook, so every method's cost is measured alike.

    >>> net = torch.nn.Linear(2, 3)
    >>> counter = PassCounter(net)
    >>> _ = net(torch.zeros(5, 4, 2))
    >>> counter.count
    20
    """

    def __init__(self, module: torch.nn.Module):
        self.count = 0
        self._paused = False
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output) -> None:
        if not self._paused:
            self.count += inputs[0].shape[:-1].numel()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Passes inside this context are not counted (evaluation, not training).

        >>> counter = PassCounter(net := torch.nn.Linear(2, 3))
        >>> with counter.paused():
        ...     _ = net(torch.zeros(5, 2))
        ...     counter.count
        0
        """
        was_paused, self._paused = self._paused, True
        try:
            yield
        finally:
            self._paused = was_paused

    def remove(self) -> None:
        """Detach the hook."""
        self._handle.remove()
