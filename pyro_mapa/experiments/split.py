"""The data a comparison runs on: train, validation and test points with their settings."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..datasets import load_digits, load_synthetic

__all__ = ["Split", "load_split"]


@dataclass
class Split:
    """Train, validation and test points with what the comparison needs to know."""

    name: str
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    sigma: float
    latent_dim: int
    true_test: float | None  # the true model's test log-likelihood, where known


def load_split(name: str, num_train: int = 1000, seed: int = 0) -> Split:
    """A synthetic set (500 validation, 500 test points) or ``"digits"`` (scikit-learn's
    1,797 8x8 images scaled to [0, 1]: 1,000 / 300 / 497, ``sigma = 0.2``, 2-D latent)."""
    if name == "digits":
        if num_train != 1000:
            raise ValueError(f"digits has a fixed split (1,000 / 300 / 497 points); num_train={num_train} cannot apply")
        x = load_digits(seed)
        return Split(name, x[:1000], x[1000:1300], x[1300:], 0.2, 2, None)
    data = load_synthetic(name, num_train=num_train, num_test=1000, seed=seed)
    test = data.test[500:]
    true = data.log_likelihood(test).mean().item()
    return Split(name, data.train, data.test[:500], test, data.sigma, data.latent_dim, true)
