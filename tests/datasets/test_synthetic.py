"""Synthetic data sets: shapes, seeds, ground truth, and the true log-likelihood."""

import math

import pyro.distributions as dist
import pytest
import torch

from pyro_mapa.datasets import SYNTHETIC_DATASETS, SyntheticData, load_synthetic


@pytest.mark.parametrize("name", SYNTHETIC_DATASETS)
def test_shapes_seeds_and_noise(name):
    data = load_synthetic(name, num_train=400, num_test=50, seed=3)
    assert data.train.shape[0] == 400 and data.test.shape[0] == 50
    assert data.train_codes.shape == (400, data.latent_dim)
    again = load_synthetic(name, num_train=400, num_test=50, seed=3)
    assert torch.equal(data.train, again.train)
    assert not torch.equal(data.train, load_synthetic(name, num_train=400, num_test=50, seed=4).train)
    # the observations are the decoder's output plus noise of scale sigma
    residual = data.train.double() - data.decoder(data.train_codes.double())
    assert residual.std().item() == pytest.approx(data.sigma, rel=0.1)


def test_embedded_dimensions():
    data = load_synthetic("embedded", num_train=10, num_test=5, latent_dim=3, obs_dim=40)
    assert data.train.shape == (10, 40) and data.latent_dim == 3


def test_non_identifiable_pair_has_the_same_observations_and_mirrored_codes():
    a = load_synthetic("non-identifiable-a", num_train=200, num_test=20, seed=1)
    b = load_synthetic("non-identifiable-b", num_train=200, num_test=20, seed=1)
    assert torch.equal(a.train, b.train)
    assert torch.equal(a.train_codes, -b.train_codes)
    assert torch.allclose(a.decoder(a.train_codes), b.decoder(b.train_codes))
    assert torch.allclose(a.log_likelihood(a.test), b.log_likelihood(b.test))
    assert not torch.allclose(a.decoder(a.train_codes), a.decoder(b.train_codes))


@pytest.mark.parametrize("latent_dim, tol", [(1, 1e-6), (2, 1e-6), (3, 0.1)])
def test_log_likelihood_of_a_linear_decoder_is_the_gaussian_closed_form(latent_dim, tol):
    """x = W z + noise has p(x) = N(0, W W^T + sigma^2 I): grid (d <= 2) and 2^16-sample Monte Carlo (d = 3)."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(latent_dim, 4, generator=g, dtype=torch.float64) * 0.5
    sigma = 0.4
    x = torch.randn(30, 4, generator=g, dtype=torch.float64)
    data = SyntheticData("linear", x, x, sigma, x[:, :latent_dim], x[:, :latent_dim], lambda z: z @ w)
    exact = dist.MultivariateNormal(torch.zeros(4, dtype=torch.float64), w.T @ w + sigma**2 * torch.eye(4)).log_prob(x)
    assert torch.allclose(data.log_likelihood(x), exact, atol=tol)


def test_true_log_likelihood_of_spiral_beats_a_broad_gaussian():
    data = load_synthetic("spiral-dots", num_train=2000, num_test=500)
    true_ll = data.log_likelihood(data.test).mean().item()
    fit = dist.MultivariateNormal(data.train.mean(0), torch.cov(data.train.T))
    assert true_ll > fit.log_prob(data.test).mean().item() + 1.0
    assert math.isfinite(true_ll)


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown synthetic data set 'moons'"):
        load_synthetic("moons")
