"""pca_codes against scikit-learn's PCA, its sign convention, dtypes and bad input."""

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from pyro_mapa import pca_codes


def correlated(num_points=400, obs_dim=6, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(obs_dim, obs_dim, generator=g, dtype=dtype)
    return torch.randn(num_points, obs_dim, generator=g, dtype=dtype) @ mixing + 5.0


@pytest.mark.parametrize("latent_dim", [1, 3])
def test_scores_are_sklearns_pca_scores_standardised(latent_dim):
    data = correlated()
    codes = pca_codes(data, latent_dim, scale=2.0)
    reference = PCA(latent_dim).fit_transform(data.numpy())
    reference = 2.0 * reference / reference.std(0, ddof=1)
    # principal directions are defined up to sign: compare each column up to its sign
    signs = np.sign((reference * codes.numpy()).sum(0))
    np.testing.assert_allclose(codes.numpy(), reference * signs, atol=1e-10)
    np.testing.assert_allclose(codes.std(0).numpy(), 2.0, rtol=1e-12)
    np.testing.assert_allclose(codes.mean(0).numpy(), 0.0, atol=1e-10)


def test_sign_is_fixed_by_the_largest_loading():
    """Flipping the data flips the scores: the sign comes from the components, not from chance."""
    data = correlated()
    assert torch.allclose(pca_codes(-data, 2), -pca_codes(data, 2), atol=1e-10)
    line = torch.linspace(0, 1, 50).unsqueeze(-1) * torch.tensor([[1.0, 3.0]])  # loading (0.32, 0.95): positive
    codes = pca_codes(line, 1).squeeze(-1)
    assert torch.all(codes.diff() > 0)


def test_keeps_the_datas_dtype_and_agrees_across_dtypes():
    data = correlated()
    codes32 = pca_codes(data.float(), 2)
    assert codes32.dtype == torch.float32
    assert torch.allclose(codes32.double(), pca_codes(data, 2), atol=1e-4)


@pytest.mark.parametrize(
    "data, latent_dim, match",
    [
        (torch.randn(10, 2), 3, "latent_dim=3 needs at least 3 features"),
        (torch.randn(3, 5), 3, "needs at least 3 features and 4 points"),
        (torch.randn(10, 2), 0, "latent_dim"),
        (torch.tensor([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]]), 2, "fewer than latent_dim=2 directions of variance"),
        (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), 1, "NaN"),
        (torch.randn(10), 1, "must be 2-D"),
    ],
)
def test_bad_input_is_named(data, latent_dim, match):
    with pytest.raises(ValueError, match=match):
        pca_codes(data, latent_dim)


def test_scale_must_be_positive():
    with pytest.raises(ValueError, match="scale must be positive"):
        pca_codes(torch.randn(10, 2), 1, scale=0.0)
