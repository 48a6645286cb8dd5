"""Starting values for the codes of an empiricalized model.

Codes drawn near 0 (say ``0.1 * randn``) all decode to nearly the same point, so the
model's index posterior ``p(i = m | x_n)`` is nearly uniform, and the exact log marginal
(and any good estimate of it, the MAPA bound included) pulls every code towards the
same place. Training then sits on a plateau at its initial log-likelihood for hundreds of
steps. Starting the codes at the data's
principal components, the usual start of a GPLVM, breaks that symmetry: observations
that are close start with codes that are close.
"""

from __future__ import annotations

import torch

from .._checks import as_data_tensor, check_count
from .._tensors import row_chunks

__all__ = ["pca_codes"]


def pca_codes(data, latent_dim: int, scale: float = 1.0) -> torch.Tensor:
    """The scores of ``data`` (``N x D``) on its top ``latent_dim`` principal components,
    each scaled to standard deviation ``scale``: starting codes ``z_1..z_N``.

    Each component's sign is fixed so that its largest loading is positive, which makes
    the result deterministic. The covariance is accumulated in float64 over row chunks;
    the result has the data's dtype and device.

    :param data: the training points the codes belong to, in the model's order.
    :param latent_dim: ``d``, the codes' dimension (at most ``D`` and ``N - 1``).
    :param scale: standard deviation of each code dimension (1 suits an ``N(0, I)`` prior).
    :raises ValueError: if the data have fewer than ``latent_dim`` directions of variance.

    >>> data = torch.tensor([[0.0, 0.0], [1.0, 1.1], [2.0, 1.9], [3.0, 3.0]])
    >>> codes = pca_codes(data, 1)
    >>> codes.squeeze(-1).round(decimals=2), codes.std().item()
    (tensor([-1.1700, -0.3500,  0.3500,  1.1700]), 1.0)
    """
    data = as_data_tensor(data)
    latent_dim = check_count(latent_dim, "latent_dim")
    num_points, obs_dim = data.shape
    if latent_dim > min(obs_dim, num_points - 1):
        raise ValueError(
            f"latent_dim={latent_dim} needs at least {latent_dim} features and {latent_dim + 1} points; "
            f"data has shape {tuple(data.shape)}"
        )
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    chunks = row_chunks(data)  # views: no float64 copy of all the data at once
    mean = sum(chunk.double().sum(0) for chunk in chunks) / num_points
    covariance = data.new_zeros(obs_dim, obs_dim, dtype=torch.float64)
    for chunk in chunks:
        centred = chunk.double() - mean
        covariance += centred.T @ centred
    variances, components = torch.linalg.eigh(covariance / (num_points - 1))  # ascending
    variances, components = variances.flip(0)[:latent_dim], components.flip(1)[:, :latent_dim]
    if variances[-1] <= 1e-12 * variances[0].clamp_min(1e-300):
        raise ValueError(
            f"the data have fewer than latent_dim={latent_dim} directions of variance "
            f"(principal variances {variances.tolist()}); use a smaller latent_dim"
        )
    largest = components.abs().argmax(0)
    components = components * components[largest, torch.arange(latent_dim)].sign()
    scores = torch.cat([(chunk.double() - mean) @ components for chunk in chunks])
    return (scale * scores / variances.sqrt()).to(data.dtype)
