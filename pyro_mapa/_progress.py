"""The one switch for progress bars: ``progress=None`` shows one on a terminal only."""

from __future__ import annotations

from typing import Iterable

from tqdm import tqdm

__all__ = ["progress_bar"]


def progress_bar(iterable: Iterable | None = None, *, progress: bool | None, **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)``, shown when ``progress`` is true, hidden when it is
    false, and on a terminal only when it is ``None`` (tqdm's ``disable=None``)."""
    return tqdm(iterable, disable=None if progress is None else not progress, **kwargs)
