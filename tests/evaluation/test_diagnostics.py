"""Diagnostics against ArviZ called directly, brute-force distances, and a bad proposal."""

import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_mapa import IWAE_ELBO, MAPA_ELBO, MAPAGuide, MAPAPosterior
from pyro_mapa.datasets import load_synthetic
from pyro_mapa.evaluation import (
    gaussian_index_log_posterior,
    importance_diagnostics,
    latent_to_index_log_posterior,
    posterior_distance,
    to_inference_data,
)
from pyro_mapa.evaluation.diagnostics import _arviz


def linear_gaussian(x, idx=None):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([1]).to_event(1))
        pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)


def shifted_guide(x, idx=None):
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(x * 0.8 + 0.5, 0.3).to_event(1))


def test_k_hat_and_ess_agree_with_arviz_on_the_same_weights(float64):
    x = torch.randn(6, 1)
    elbo = IWAE_ELBO(num_particles=400, max_plate_nesting=1)  # no guessing run: the same draws twice
    pyro.set_rng_seed(3)
    diagnostics = importance_diagnostics(linear_gaussian, shifted_guide, elbo, x)
    pyro.set_rng_seed(3)
    log_w = elbo.importance_weights(linear_gaussian, shifted_guide, x).log_weights.T.numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, k_hat = _arviz().psislw(log_w)
    assert np.allclose(diagnostics.k_hat.numpy(), k_hat)
    w = np.exp(log_w - log_w.max(1, keepdims=True))
    assert np.allclose(diagnostics.ess.numpy(), w.sum(1) ** 2 / (w**2).sum(1))
    assert diagnostics.num_draws == 400


def empirical_with_true_codes(num_points=300):
    """The empiricalized model of "absolute-value" at the true decoder and codes."""
    data = load_synthetic("absolute-value", num_train=num_points, num_test=1, seed=0, dtype=torch.float64)

    def model(x, idx=None):
        with pyro.plate("data", num_points, subsample=idx):
            i = pyro.sample("i", dist.Categorical(logits=torch.zeros(num_points)))
            pyro.sample("x", dist.Normal(data.decoder(data.train_codes[i]), data.sigma).to_event(1), obs=x)

    return data, model


def test_flags_a_cache_built_with_a_wrong_bandwidth(float64):
    """A bandwidth 70 times too small gives heavy-tailed weights almost everywhere; the
    default h = sqrt(2) sigma gives a median k-hat near 0.7 (MAPA's q uses noisy x_m in
    place of f(z_m), so it is a moderate, not a perfect, proposal: see RESULTS.md)."""
    data, model = empirical_with_true_codes()
    reports = {}
    for name, h in [("default", math.sqrt(2) * data.sigma), ("too narrow", 0.002)]:
        guide = MAPAGuide(model, MAPAPosterior.fit(data.train, bandwidth=h, num_cached=20))
        reports[name] = importance_diagnostics(model, guide, MAPA_ELBO(num_neighbors=1, num_samples=300), data.train)
    assert reports["too narrow"].k_hat.median() > 5.0
    assert len(reports["too narrow"].flagged) > 0.8 * 300
    assert reports["default"].k_hat.median() < 1.0
    assert reports["default"].ess.median() > 5 * reports["too narrow"].ess.median()
    assert "of 300 points have k-hat > 0.7" in reports["default"].report()


def test_posterior_distance_matches_brute_force(float64):
    data = torch.randn(40, 2)
    posterior = MAPAPosterior.fit(data, scale=0.4, num_cached=6)
    log_p = torch.log_softmax(-torch.cdist(data, data) ** 2 / 0.5, dim=1)  # some other posterior
    dense_q = torch.full((40, 40), 0.0)
    dense_q += (posterior.table.log_tail.exp() / 34).unsqueeze(1)
    dense_q.scatter_(1, posterior.table.index, posterior.table.log_prob.exp())
    distance = posterior_distance(posterior.table, log_p)
    p = log_p.exp()
    assert torch.allclose(distance.total_variation, 0.5 * (p - dense_q).abs().sum(1))
    assert torch.allclose(distance.kl, (p * (log_p - dense_q.log())).sum(1))
    same = posterior_distance(log_p, log_p)
    assert same.mean_total_variation == pytest.approx(0.0, abs=1e-12) and same.mean_kl == pytest.approx(0.0, abs=1e-12)


def test_inference_data_of_mapa_code_draws_works_with_arviz(float64):
    data, model = empirical_with_true_codes(num_points=50)
    guide = MAPAGuide(model, MAPAPosterior.fit(data.train, scale=data.sigma, num_cached=10))
    samples = pyro.infer.Predictive(model, guide=guide, num_samples=400, return_sites=["i"])(data.train)["i"]
    idata = to_inference_data({"z": data.train_codes[samples]}, num_chains=4)
    assert idata.posterior["z"].shape == (4, 100, 50, 1)
    assert idata.posterior["z"].dims == ("chain", "draw", "datapoint", "z_dim_0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = _arviz().summary(idata, var_names=["z"], kind="stats")
    assert len(summary) == 50
    # the posterior mean of a point's code is close to its true code (|z| is not identified: compare |z|)
    mean_abs = idata.posterior["z"].values.reshape(-1, 50).__abs__().mean(0)
    assert np.mean(np.abs(mean_abs - data.train_codes[:, 0].abs().numpy())) < 0.2


def test_to_inference_data_rejects_uneven_chains():
    with pytest.raises(ValueError, match="do not split into 3 chains"):
        to_inference_data({"z": torch.zeros(10, 4, 1)}, num_chains=3)


def test_gaussian_index_posterior_matches_a_loop_of_normal_densities(float64):
    x, means, sigma = torch.randn(5, 3), torch.randn(7, 3), 0.7
    log_lik = torch.tensor([[dist.Normal(m, sigma).log_prob(xj).sum().item() for m in means] for xj in x])
    expected = log_lik - log_lik.logsumexp(1, keepdim=True)  # the uniform 1/N prior cancels
    assert torch.allclose(gaussian_index_log_posterior(x, means, sigma), expected)
    with pytest.raises(ValueError, match="must share D"):
        gaussian_index_log_posterior(x, means[:, :2], sigma)


def test_the_exact_latent_posterior_pushed_to_indices_is_the_exact_index_posterior(float64):
    """Linear-Gaussian model z ~ N(0, 1), x | z ~ N(z, s^2): p(z | x) = N(x / (1 + s^2), s^2 / (1 + s^2))
    in closed form, and p(z_m | x) / p(z_m) ∝ N(x; z_m, s^2) exactly."""
    s, codes, x = 0.3, torch.randn(50, 1), torch.randn(4, 1)
    exact = dist.Normal(x / (1 + s**2), s / math.sqrt(1 + s**2)).to_event(1)
    pushed = latent_to_index_log_posterior(exact, codes)
    assert torch.allclose(pushed, gaussian_index_log_posterior(x, codes, s))
    assert torch.allclose(pushed.logsumexp(1), torch.zeros(4))
    # another prior: p(z) = N(1, 2^2) gives p(z | x) = N((4 x + s^2) / (4 + s^2), 4 s^2 / (4 + s^2))
    prior = dist.Normal(torch.ones(1), 2.0).to_event(1)
    exact = dist.Normal((4 * x + s**2) / (4 + s**2), 2 * s / math.sqrt(4 + s**2)).to_event(1)
    assert torch.allclose(latent_to_index_log_posterior(exact, codes, prior), gaussian_index_log_posterior(x, codes, s))
    # a wrong latent posterior is measurably far from it
    wrong = dist.Normal(-x, 0.1).to_event(1)
    assert posterior_distance(latent_to_index_log_posterior(wrong, codes), pushed).mean_total_variation > 0.5


def test_gaussian_index_posterior_far_from_the_origin(float64):
    """Data offset by 1e7 with sigma 0.1: the expansion |x|^2 - 2 x.m + |m|^2 would lose
    nats to cancellation; the direct differences are the reference."""
    g = torch.Generator().manual_seed(5)
    means = 1e7 + 0.3 * torch.randn(40, 3, generator=g)
    x = means[:6] + 0.1 * torch.randn(6, 3, generator=g)
    direct = torch.log_softmax(-0.5 * ((x[:, None] - means[None]) ** 2).sum(-1) / 0.1**2, dim=-1)
    assert torch.allclose(gaussian_index_log_posterior(x, means, 0.1), direct, atol=1e-6)
