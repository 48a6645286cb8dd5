"""IWAE_ELBO against the closed form of a linear-Gaussian model, and against Trace_ELBO."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import RenyiELBO, Trace_ELBO

from pyro_mapa import IWAE_ELBO

N, D, SIGMA = 20, 3, 0.5
W = torch.tensor([1.0, -2.0, 0.5])


def model(x, idx=None):
    with pyro.plate("data", N, subsample=idx):
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([1]).to_event(1))
        pyro.sample("x", dist.Normal(z * W, SIGMA).to_event(1), obs=x)


def posterior_moments(x):
    """z | x ~ N(m, s^2) with precision 1 + |W|^2 / sigma^2."""
    precision = 1 + (W**2).sum() / SIGMA**2
    return (x @ W / SIGMA**2 / precision).unsqueeze(-1), precision.rsqrt()


def make_guide(shift=0.0, sd_factor=1.0):
    def guide(x, idx=None):
        mean, sd = posterior_moments(x)
        with pyro.plate("data", N, subsample=idx):
            pyro.sample("z", dist.Normal(mean + shift, sd * sd_factor).to_event(1))

    return guide


def exact_log_marginal(x):
    cov = torch.outer(W, W) + SIGMA**2 * torch.eye(D)
    return dist.MultivariateNormal(torch.zeros(D), cov).log_prob(x)


@pytest.fixture
def data(float64):
    global W
    W = W.double()
    return exact_data()


def exact_data():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(N, 1, generator=g, dtype=torch.float64)
    return z * W + SIGMA * torch.randn(N, D, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("num_particles", [1, 7])
def test_exact_with_the_true_posterior(data, num_particles):
    loss = IWAE_ELBO(num_particles=num_particles).loss(model, make_guide(), data)
    assert loss == pytest.approx(-exact_log_marginal(data).sum().item(), abs=1e-8)


def test_exact_under_subsampling(data):
    """Per datapoint, then scaled by N / batch: the subsample's share of log p(X)."""
    idx = torch.tensor([3, 17, 5, 0])
    loss = IWAE_ELBO(num_particles=5).loss(model, make_guide(), data[idx], idx)
    assert loss == pytest.approx(-(N / 4) * exact_log_marginal(data[idx]).sum().item(), abs=1e-8)
    # Pyro's RenyiELBO(alpha=0) takes one logsumexp over the minibatch: not this bound
    renyi = RenyiELBO(alpha=0.0, num_particles=5).loss(model, make_guide(shift=0.3), data[idx], idx)
    ours = IWAE_ELBO(num_particles=5).loss(model, make_guide(shift=0.3), data[idx], idx)
    assert abs(renyi - ours) > 1.0


def test_between_trace_elbo_and_the_truth_on_average(data):
    """A poor guide: E[IWAE_20] > E[Trace_ELBO] by many standard errors, and < log p(X)."""
    guide = make_guide(shift=0.4, sd_factor=1.8)
    repeats = 200
    iwae = torch.tensor([-IWAE_ELBO(num_particles=20).loss(model, guide, data) for _ in range(repeats)])
    elbo = torch.tensor([-Trace_ELBO().loss(model, guide, data) for _ in range(repeats)])
    truth = exact_log_marginal(data).sum().item()
    se = math.sqrt(iwae.var() / repeats + elbo.var() / repeats)
    assert iwae.mean() - elbo.mean() > 5 * se
    assert iwae.mean() < truth


def test_one_particle_equals_trace_elbo_in_expectation(data):
    guide = make_guide(shift=0.4, sd_factor=1.8)
    repeats = 400
    iwae = torch.tensor([-IWAE_ELBO(num_particles=1).loss(model, guide, data) for _ in range(repeats)])
    elbo = torch.tensor([-Trace_ELBO().loss(model, guide, data) for _ in range(repeats)])
    se = math.sqrt(iwae.var() / repeats + elbo.var() / repeats)
    assert abs(iwae.mean() - elbo.mean()) < 3 * se


def test_gradients_match_the_closed_form(data):
    """With the true posterior as guide the bound is log p(X) exactly, so the gradient
    with respect to a model parameter equals that of the closed form."""

    def model_with_param(x, idx=None):
        w = pyro.param("w", W.clone())
        with pyro.plate("data", N, subsample=idx):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([1]).to_event(1))
            pyro.sample("x", dist.Normal(z * w, SIGMA).to_event(1), obs=x)

    def guide(x, idx=None):
        w = pyro.param("w", W.clone())
        precision = 1 + (w**2).sum() / SIGMA**2
        with pyro.plate("data", N, subsample=idx):
            pyro.sample("z", dist.Normal((x @ w / SIGMA**2 / precision).unsqueeze(-1), precision.rsqrt()).to_event(1))

    loss = IWAE_ELBO(num_particles=4).differentiable_loss(model_with_param, guide, data)
    w = pyro.param("w").unconstrained()
    (grad,) = torch.autograd.grad(loss, w)
    w_ref = W.clone().requires_grad_()
    cov = torch.outer(w_ref, w_ref) + SIGMA**2 * torch.eye(D)
    (expected,) = torch.autograd.grad(-dist.MultivariateNormal(torch.zeros(D), cov).log_prob(data).sum(), w_ref)
    assert torch.allclose(grad, expected, atol=1e-8)


def test_refuses_a_non_reparameterized_guide(data):
    def discrete_model(x, idx=None):
        with pyro.plate("data", N, subsample=idx):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(c.unsqueeze(-1) * W, SIGMA).to_event(1), obs=x)

    def discrete_guide(x, idx=None):
        with pyro.plate("data", N, subsample=idx):
            pyro.sample("c", dist.Bernoulli(0.3))

    with pytest.raises(ValueError, match="reparameterized.*'c'"):
        IWAE_ELBO(num_particles=3).loss(discrete_model, discrete_guide, data)


def test_refuses_a_global_latent(data):
    def global_model(x, idx=None):
        scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
        with pyro.plate("data", N, subsample=idx):
            pyro.sample("x", dist.Normal(torch.zeros(D), scale[..., None, None]).to_event(1), obs=x)

    def global_guide(x, idx=None):
        pyro.sample("scale", dist.LogNormal(0.0, 0.5))

    with pytest.raises(ValueError, match="share no pyro.plate"):
        IWAE_ELBO(num_particles=3).loss(global_model, global_guide, data)
