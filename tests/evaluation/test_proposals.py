"""The neighbour-Laplace proposal against closed forms and grid quadrature."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_mapa.datasets import load_synthetic
from pyro_mapa.evaluation import (
    grid_log_likelihood,
    importance_log_likelihood,
    laplace_mixture_proposal,
)


def continuous_model(decoder, prior, sigma):
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", prior)
            pyro.sample("x", dist.Normal(decoder(z), sigma).to_event(1), obs=x)

    return model


def test_a_linear_decoder_gets_its_exact_posterior(float64):
    """f(z) = A z + b: the Gauss-Newton step lands on the posterior mean from any code and
    the Laplace covariance is the posterior's, so with no inflation and a small prior weight
    the weights are almost constant and 50 draws give the closed-form marginal."""
    g = torch.Generator().manual_seed(0)
    A, b, sigma = torch.randn(5, 2, generator=g), torch.randn(5, generator=g), 0.3
    decoder = lambda z: z @ A.T + b  # noqa: E731
    prior = dist.Normal(torch.zeros(2), 1.0).to_event(1)
    codes = torch.randn(200, 2, generator=g)
    x = decoder(torch.randn(20, 2, generator=g)) + sigma * torch.randn(20, 5, generator=g)
    proposal = laplace_mixture_proposal(decoder, codes, sigma, num_anchors=8, prior_weight=1e-6, inflation=1.0)
    estimate = importance_log_likelihood(continuous_model(decoder, prior, sigma), proposal, x, num_particles=50)
    exact = dist.MultivariateNormal(b, A @ A.T + sigma**2 * torch.eye(5)).log_prob(x)
    assert torch.allclose(estimate.value, exact, atol=1e-4)
    assert estimate.stderr.max() < 1e-4


def test_agrees_with_grid_quadrature_on_a_nonlinear_decoder(float64):
    """absolute-value at its true decoder and a GMM-free N(0, 1) prior: the estimate with
    2,000 draws is within 0.01 nats per point of a 20,001-point grid, on average, and
    within 0.05 at every point."""
    data = load_synthetic("absolute-value", num_train=500, num_test=100, seed=0, dtype=torch.float64)
    prior = dist.Normal(torch.zeros(1), 1.0).to_event(1)
    proposal = laplace_mixture_proposal(data.decoder, data.train_codes, data.sigma, prior=prior)
    model = continuous_model(data.decoder, prior, data.sigma)
    estimate = importance_log_likelihood(model, proposal, data.test, num_particles=2000, chunk_size=500)
    grid = grid_log_likelihood(data.decoder, prior, data.sigma, data.test, -8.0, 8.0, 20001)
    assert abs((estimate.value - grid).mean()) < 0.01
    assert (estimate.value - grid).abs().max() < 0.05
    assert torch.allclose(grid, data.log_likelihood(data.test), atol=1e-3)  # and the grid is the truth


def test_the_grid_refuses_three_latent_dimensions():
    prior = dist.Normal(torch.zeros(3), 1.0).to_event(1)
    with pytest.raises(ValueError, match="d <= 2"):
        grid_log_likelihood(lambda z: z, prior, 0.1, torch.zeros(1, 3), -1.0, 1.0)


@pytest.mark.parametrize("kwargs, match", [({"prior_weight": 0.0}, "prior_weight"), ({"inflation": -1.0}, "inflation")])
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        laplace_mixture_proposal(lambda z: z.expand(-1, 2), torch.zeros(3, 1), 0.1, **kwargs)


def test_anchors_are_the_codes_that_decode_nearest_x_weighted_by_the_likelihood():
    """The anchors are the codes whose decoded means are nearest x, whatever training point
    they belong to, weighted by N(x; f(c_m), sigma^2 I); the prior takes w_0 of the mass."""
    codes = torch.tensor([[-1.0], [0.0], [1.0], [5.0]])
    decoder = lambda z: torch.cat([z, 2 * z], -1)  # noqa: E731
    x = torch.tensor([[0.1, 0.2]])
    proposal = laplace_mixture_proposal(decoder, codes, 0.5, num_anchors=3, prior_weight=0.2)
    fn = pyro.poutine.trace(proposal).get_trace(x).nodes["z"]["fn"]
    fn = fn.base_dist if isinstance(fn, dist.ExpandedDistribution) else fn  # the plate may wrap it
    assert fn.weight == 0.2
    anchors = fn.main
    log_lik = dist.Normal(decoder(codes[:3]), 0.5).to_event(1).log_prob(x)  # codes 0, 1, 2; not 5
    weights = anchors.mixture_distribution.probs[0].sort().values
    assert torch.allclose(weights, log_lik.softmax(-1).sort().values, atol=1e-7)
    # a linear decoder: one Gauss-Newton step from each anchor lands on the posterior mode, 2 / 21
    posterior_mode = (decoder(torch.ones(1, 1)) @ x.T / 0.25 / (1 + 5 / 0.25)).item()
    assert torch.allclose(anchors.component_distribution.loc[0, :, 0], torch.tensor(posterior_mode), atol=1e-5)
    z = torch.tensor([[[0.3]], [[-2.0]]])
    expected = torch.logaddexp(anchors.log_prob(z) + math.log(0.8), fn.defensive.log_prob(z) + math.log(0.2))
    assert torch.allclose(fn.log_prob(z), expected)
    draws = fn.sample(torch.Size([20000]))
    assert abs((draws.squeeze() < -1.5).float().mean().item() - 0.2 * dist.Normal(0.0, 1.0).cdf(torch.tensor(-1.5)).item()) < 0.005


def test_a_steep_decoder_with_a_rank_deficient_jacobian_in_float32():
    """A float32 decoder of z_1 + z_2 only, with gain 30 (sigma = 0.05, D = 64): the d x d
    precision J^T J / sigma^2 + I has eigenvalues near 10^7 and 1, which a float32 Cholesky
    factorisation cannot resolve; the proposal still samples and scores finite values."""
    g = torch.Generator().manual_seed(1)
    direction = torch.randn(64, generator=g)
    decoder = lambda z: 30.0 * torch.tanh(z.sum(-1, keepdim=True)) * direction  # noqa: E731
    codes = torch.randn(200, 2, generator=g)
    proposal = laplace_mixture_proposal(decoder, codes, 0.05)
    x = decoder(torch.randn(50, 2, generator=g)) + 0.05 * torch.randn(50, 64, generator=g)
    node = pyro.poutine.trace(proposal).get_trace(x).nodes["z"]
    assert node["value"].dtype == torch.float32
    assert torch.isfinite(node["fn"].log_prob(node["value"])).all()


def test_the_grid_matches_a_two_dimensional_closed_form(float64):
    """A linear decoder and a N(0, I) prior in d = 2: p(x) = N(x; b, A A^T + sigma^2 I)."""
    g = torch.Generator().manual_seed(0)
    A, b, sigma = torch.randn(4, 2, generator=g), torch.randn(4, generator=g), 0.5
    prior = dist.Normal(torch.zeros(2), 1.0).to_event(1)
    x = torch.randn(7, 4, generator=g)
    grid = grid_log_likelihood(lambda z: z @ A.T + b, prior, sigma, x, -8.0, 8.0, 401)
    exact = dist.MultivariateNormal(b, A @ A.T + sigma**2 * torch.eye(4)).log_prob(x)
    assert torch.allclose(grid, exact, atol=1e-6)


@pytest.mark.parametrize(
    "prior, x, low, high, num_points, match",
    [
        (dist.Normal(0.0, 1.0), torch.zeros(1, 1), -1.0, 1.0, 11, "event shape"),
        (dist.Normal(torch.zeros(1), 1.0).to_event(1), torch.zeros(3), -1.0, 1.0, 11, "matrix"),
        (dist.Normal(torch.zeros(1), 1.0).to_event(1), torch.zeros(1, 1), 1.0, 1.0, 11, "low < high"),
        (dist.Normal(torch.zeros(1), 1.0).to_event(1), torch.zeros(1, 1), -1.0, 1.0, 0, "num_points"),
    ],
)
def test_the_grid_names_bad_input(prior, x, low, high, num_points, match):
    with pytest.raises(ValueError, match=match):
        grid_log_likelihood(lambda z: z, prior, 0.1, x, low, high, num_points)


@pytest.mark.parametrize("latent_dim", [1, 2])
def test_bernoulli_curvature_agrees_with_grid_quadrature(float64, latent_dim):
    """A Bernoulli decoder (D = 20, a fixed random tanh network to logits), codes drawn from
    the prior: importance sampling with the Fisher-weighted Laplace mixture agrees with the
    grid at every point within 3 of its standard errors (plus the grid's own 1e-3), and the
    weights are well behaved (relative standard error below 5%)."""
    from pyro_mapa.models import BernoulliLikelihood

    g = torch.Generator().manual_seed(latent_dim)
    w1, w2 = 2 * torch.randn(latent_dim, 16, generator=g), 2 * torch.randn(16, 20, generator=g)
    decoder = lambda z: torch.tanh(z @ w1) @ w2  # noqa: E731
    likelihood = BernoulliLikelihood()
    prior = dist.Normal(torch.zeros(latent_dim), 1.0).to_event(1)
    codes = torch.randn(400, latent_dim, generator=g)
    x = torch.bernoulli(torch.sigmoid(decoder(torch.randn(30, latent_dim, generator=g))), generator=g)

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", prior)
            pyro.sample("x", likelihood.distribution(decoder(z)), obs=x)

    proposal = laplace_mixture_proposal(decoder, codes, likelihood, prior=prior)
    estimate = importance_log_likelihood(model, proposal, x, num_particles=4000, chunk_size=1000)
    grid = grid_log_likelihood(decoder, prior, likelihood, x, -7.0, 7.0, 4001 if latent_dim == 1 else 501)
    assert ((estimate.value - grid).abs() <= 3 * estimate.stderr + 1e-3).all()
    assert estimate.stderr.max() < 0.05


def test_the_mixture_draws_each_sample_from_its_own_component(float64):
    """The proposal's Gaussian mixture samples (one component per draw) against its own density:
    per batch element, the mean and covariance of 40,000 draws agree with the mixture's
    closed forms within Monte Carlo error, and every draw has finite density."""
    from pyro_mapa.evaluation.mixtures import GaussianMixture

    g = torch.Generator().manual_seed(6)
    loc = 3 * torch.randn(2, 3, 2, generator=g)  # (batch, K, d)
    tril = torch.linalg.cholesky(torch.eye(2) + 0.5 * torch.rand(2, 3, 2, 2, generator=g) @ torch.rand(2, 3, 2, 2, generator=g).mT)
    weights = torch.softmax(torch.randn(2, 3, generator=g), -1)
    mixture = GaussianMixture(dist.Categorical(weights), dist.MultivariateNormal(loc, scale_tril=tril))
    draws = mixture.sample((40000,))
    assert draws.shape == (40000, 2, 2) and torch.isfinite(mixture.log_prob(draws)).all()
    mean = (weights.unsqueeze(-1) * loc).sum(1)
    second = (weights[..., None, None] * (tril @ tril.mT + loc.unsqueeze(-1) @ loc.unsqueeze(-2))).sum(1)
    cov = second - mean.unsqueeze(-1) @ mean.unsqueeze(-2)
    se = (cov.diagonal(dim1=-2, dim2=-1) / 40000).sqrt()
    assert ((draws.mean(0) - mean).abs() < 4 * se).all()
    empirical_cov = torch.stack([torch.cov(draws[:, b].T) for b in range(2)])
    assert torch.allclose(empirical_cov, cov, rtol=0.05, atol=0.05)
    reference = dist.MixtureSameFamily(dist.Categorical(weights), dist.MultivariateNormal(loc, scale_tril=tril))
    points = 5 * torch.randn(7, 2, 2, generator=g)
    assert torch.allclose(mixture.log_prob(points), reference.log_prob(points), atol=1e-10)
    assert torch.allclose(mixture.log_prob(points[:, :1]), reference.log_prob(points[:, :1]), atol=1e-10)  # broadcast
    shared = GaussianMixture(dist.Categorical(weights[0]), dist.MultivariateNormal(loc[0], scale_tril=tril[0]))
    shared_reference = dist.MixtureSameFamily(dist.Categorical(weights[0]), dist.MultivariateNormal(loc[0], scale_tril=tril[0]))
    assert torch.allclose(shared.log_prob(points), shared_reference.log_prob(points), atol=1e-10)  # one for all points


def test_anchors_from_a_mapa_cache(float64):
    """anchors=posterior.encode: the anchors are x's cached neighbours, weighted by q(i | x)
    renormalised over the top K (MAPAIndex.top), and the estimate still agrees with the grid
    (within 0.01 nats per point on average, 0.05 at every point)."""
    from pyro_mapa import Kernel, MAPAPosterior

    data = load_synthetic("absolute-value", num_train=500, num_test=100, seed=0, dtype=torch.float64)
    prior = dist.Normal(torch.zeros(1), 1.0).to_event(1)
    posterior = MAPAPosterior.fit(data.train, kernel=Kernel.gaussian(sigma=data.sigma), num_cached=32, progress=False)
    proposal = laplace_mixture_proposal(data.decoder, data.train_codes, data.sigma, prior=prior, anchors=posterior.encode)
    fn = pyro.poutine.trace(proposal).get_trace(data.test[:3]).nodes["z"]["fn"]
    fn = fn.base_dist if isinstance(fn, dist.ExpandedDistribution) else fn
    _, log_weights = posterior.encode(data.test[:3]).top(16)
    assert torch.allclose(fn.main.mixture_distribution.logits.log_softmax(-1), log_weights)
    model = continuous_model(data.decoder, prior, data.sigma)
    estimate = importance_log_likelihood(model, proposal, data.test, num_particles=2000, chunk_size=500)
    grid = grid_log_likelihood(data.decoder, prior, data.sigma, data.test, -8.0, 8.0, 20001)
    assert abs((estimate.value - grid).mean()) < 0.01
    assert (estimate.value - grid).abs().max() < 0.05


def test_a_shared_mixture_is_as_precise_as_torchs_far_from_the_origin():
    """A prior-like mixture (no batch shape) of narrow components (sd about 0.01) 20 away from the
    origin, scored at draws near them: in float64 it is torch's density to 1e-9, and in float32
    its rounding error is no larger than torch's own float32 one (about 1e-3 nats here) plus 2e-4."""
    from pyro_mapa.evaluation.mixtures import GaussianMixture

    g = torch.Generator().manual_seed(0)
    k, d = 20, 10
    loc = 20 + torch.randn(k, d, generator=g, dtype=torch.float64)
    spread = 0.01 * torch.randn(k, d, d, generator=g, dtype=torch.float64)
    tril = torch.linalg.cholesky(spread @ spread.mT + 1e-4 * torch.eye(d, dtype=torch.float64))
    weights = torch.softmax(torch.randn(k, generator=g, dtype=torch.float64), -1)
    z = loc[torch.randint(0, k, (2000,), generator=g)] + 0.02 * torch.randn(2000, d, generator=g, dtype=torch.float64)

    def both(dtype):
        mixture, normal = dist.Categorical(weights.to(dtype)), dist.MultivariateNormal(loc.to(dtype), scale_tril=tril.to(dtype))
        value = z.to(dtype)
        return GaussianMixture(mixture, normal).log_prob(value).double(), dist.MixtureSameFamily(mixture, normal).log_prob(value).double()

    ours, reference = both(torch.float64)
    assert torch.allclose(ours, reference, atol=1e-9, rtol=0)
    ours32, torch32 = both(torch.float32)
    assert (ours32 - reference).abs().max() <= (torch32 - reference).abs().max() + 2e-4
