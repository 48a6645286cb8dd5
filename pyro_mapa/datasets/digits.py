"""scikit-learn's handwritten digits: real data that installs with a package, nothing downloaded."""

from __future__ import annotations

import torch

__all__ = ["load_digits"]


def load_digits(seed: int = 0, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The 1,797 8x8 images of ``sklearn.datasets.load_digits`` as ``(1797, 64)`` grey
    levels in ``[0, 1]``, shuffled by ``seed``.

    >>> x = load_digits()
    >>> x.shape, float(x.min()), float(x.max())
    (torch.Size([1797, 64]), 0.0, 1.0)
    """
    from sklearn import datasets

    x = torch.as_tensor(datasets.load_digits().data / 16.0, dtype=dtype or torch.get_default_dtype())
    return x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))]
