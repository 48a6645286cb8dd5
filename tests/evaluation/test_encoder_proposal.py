"""The encoder fitted after training, as an importance-sampling proposal: against closed
forms and grid quadrature, and leaving the model alone."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_mapa.evaluation import (
    EncoderProposal,
    grid_log_likelihood,
    importance_log_likelihood,
)
from pyro_mapa.models import BernoulliLikelihood, NormalLikelihood


def mlp(sizes, seed, gain=1.0):
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.Tanh()]
    net = torch.nn.Sequential(*layers[:-1])
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(gain)
    return net


def continuous_model(decoder, prior, likelihood):
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", prior)
            pyro.sample("x", likelihood.distribution(decoder(z)), obs=x)

    return model


def linear_gaussian(seed, shift=0.0, gain=2.0):
    """f(z) = A z + b with orthogonal columns of A (each of norm ``gain``), prior N(shift, I),
    sigma = 0.5: its decoder, prior, likelihood, 2,000 draws of x, and the closed-form log p(x)."""
    g = torch.Generator().manual_seed(seed)
    A = gain * torch.linalg.qr(torch.randn(6, 2, generator=g, dtype=torch.float64))[0]
    b, sigma = torch.randn(6, generator=g, dtype=torch.float64), 0.5
    decoder = torch.nn.Linear(2, 6).double()
    with torch.no_grad():
        decoder.weight.copy_(A)
        decoder.bias.copy_(b)
    prior = dist.Normal(torch.full((2,), shift, dtype=torch.float64), 1.0).to_event(1)
    train = decoder(shift + torch.randn(2000, 2, generator=g, dtype=torch.float64)).detach()
    train = train + sigma * torch.randn(train.shape, generator=g, dtype=torch.float64)
    marginal = dist.MultivariateNormal(A @ prior.mean + b, A @ A.T + sigma**2 * torch.eye(6, dtype=torch.float64))
    return decoder, prior, NormalLikelihood(sigma), train, marginal.log_prob


def test_a_linear_gaussian_posterior_is_learned_and_scored_exactly(float64):
    """The posterior N(mu(x), diag) is in the family of a linear encoder, so after the fit the
    weights are nearly constant (ESS above 90% of the draws) and the estimate equals the
    closed-form marginal to 0.02 nats per point."""
    decoder, prior, likelihood, train, exact = linear_gaussian(0)
    x = train[:50]
    proposal = EncoderProposal(torch.nn.Linear(6, 4).double(), decoder, prior, likelihood, prior_weight=1e-3, lr=1e-2)
    proposal.fit(train, 1500, batch_size=200)
    estimate = importance_log_likelihood(continuous_model(decoder, prior, likelihood), proposal, x, num_particles=500)
    assert (estimate.value - exact(x)).abs().max() < 0.02
    assert estimate.ess.min() > 450


def test_set_model_moves_the_fit_and_the_defensive_prior_to_the_new_model(float64):
    """Fitted to one linear-Gaussian model, then set to another (other A, b, prior mean 2): the
    next fit follows the new model's posterior (closed form to 0.02 nats, ESS above 90%), and
    the defensive component is the new prior. Had the fit stayed on the old model, its posterior
    (other A, b) would be the proposal: the ESS check fails for it."""
    old_decoder, old_prior, likelihood, old_train, _ = linear_gaussian(0)
    proposal = EncoderProposal(torch.nn.Linear(6, 4).double(), old_decoder, old_prior, likelihood, prior_weight=1e-3,
                               lr=1e-2)
    proposal.fit(old_train, 1500, batch_size=200)
    decoder, prior, likelihood, train, exact = linear_gaussian(1, shift=2.0)
    proposal.set_model(decoder, prior)
    assert proposal.prior is prior
    proposal.fit(train, 1500, batch_size=200)
    x = train[:50]
    estimate = importance_log_likelihood(continuous_model(decoder, prior, likelihood), proposal, x, num_particles=500)
    assert (estimate.value - exact(x)).abs().max() < 0.02
    assert estimate.ess.min() > 450


@pytest.mark.parametrize("latent_dim", [1, 2])
def test_bernoulli_estimates_agree_with_grid_quadrature(float64, latent_dim):
    """A Bernoulli decoder (D = 20, a fixed random tanh network to logits): importance
    sampling with the fitted encoder agrees with the grid at every point within 3 of its
    standard errors (plus the grid's own 1e-3), and PSIS trusts the weights (median k-hat
    below 0.7)."""
    decoder = mlp([latent_dim, 16, 20], latent_dim, gain=2.0).double()
    for p in decoder.parameters():
        p.requires_grad_(False)
    likelihood = BernoulliLikelihood()
    prior = dist.Normal(torch.zeros(latent_dim, dtype=torch.float64), 1.0).to_event(1)
    g = torch.Generator().manual_seed(latent_dim)
    train = torch.bernoulli(torch.sigmoid(decoder(torch.randn(3000, latent_dim, generator=g, dtype=torch.float64))),
                            generator=g)
    x = train[:30]
    proposal = EncoderProposal(mlp([20, 32, 2 * latent_dim], 1).double(), decoder, prior, likelihood, lr=1e-2)
    proposal.fit(train, 800)
    estimate = importance_log_likelihood(continuous_model(decoder, prior, likelihood), proposal, x,
                                         num_particles=4000, chunk_size=1000, k_hat=True)
    grid = grid_log_likelihood(decoder, prior, likelihood, x, -7.0, 7.0, 4001 if latent_dim == 1 else 501)
    assert ((estimate.value - grid).abs() <= 3 * estimate.stderr + 1e-3).all()
    assert estimate.k_hat.median() < 0.7


def test_the_fit_leaves_the_model_and_the_param_store_alone():
    """Only the encoder moves: the decoder's values, gradients and requires_grad flags are
    as they were, and nothing enters Pyro's param store."""
    pyro.clear_param_store()
    decoder = mlp([2, 8, 5], 0)
    decoder[0].weight.requires_grad_(False)  # the user's own frozen layer stays frozen
    before = {name: p.detach().clone() for name, p in decoder.named_parameters()}
    flags = {name: p.requires_grad for name, p in decoder.named_parameters()}
    encoder = mlp([5, 8, 4], 1)
    encoder_before = [p.detach().clone() for p in encoder.parameters()]
    prior = dist.Normal(torch.zeros(2), 1.0).to_event(1)
    proposal = EncoderProposal(encoder, decoder, prior, NormalLikelihood(0.3))
    bound = proposal.fit(torch.randn(100, 5), 20, batch_size=10)
    assert bound == pytest.approx(bound) and bound < 0  # a finite bound
    for name, p in decoder.named_parameters():
        assert torch.equal(p, before[name]) and p.grad is None and p.requires_grad == flags[name]
    assert any(not torch.equal(a, b) for a, b in zip(encoder.parameters(), encoder_before))
    assert len(pyro.get_param_store()) == 0


def test_the_proposal_mixes_the_encoder_and_the_prior():
    """r(z | x) = w_0 p(z) + (1 - w_0) N(mu(x), inflation^2 sigma(x)^2), by its density."""
    encoder, decoder = mlp([3, 8, 4], 0), mlp([2, 8, 3], 1)
    prior = dist.Normal(torch.zeros(2), 1.0).to_event(1)
    proposal = EncoderProposal(encoder, decoder, prior, NormalLikelihood(0.3), prior_weight=0.2, inflation=1.5)
    x = torch.randn(4, 3)
    fn = pyro.poutine.trace(proposal).get_trace(x).nodes["z"]["fn"]
    fn = fn.base_dist if isinstance(fn, dist.ExpandedDistribution) else fn
    loc, log_scale = encoder(x).detach().chunk(2, -1)
    z = torch.randn(7, 4, 2)
    expected = torch.logaddexp(
        dist.Normal(loc, 1.5 * log_scale.exp()).to_event(1).log_prob(z) + torch.tensor(0.8).log(),
        prior.log_prob(z) + torch.tensor(0.2).log(),
    )
    assert torch.allclose(fn.log_prob(z), expected, atol=1e-5)


@pytest.mark.parametrize("kwargs, match", [({"prior_weight": 1.0}, "prior_weight"), ({"inflation": 0.0}, "inflation"),
                                           ({"num_particles": 0}, "num_particles")])
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EncoderProposal(mlp([3, 4], 0), mlp([2, 3], 1), dist.Normal(torch.zeros(2), 1.0).to_event(1), 0.1, **kwargs)


@pytest.mark.parametrize("gain, fit_steps", [(2.0, 0), (30.0, 300)])
def test_refinement_fits_each_points_own_posterior(float64, gain, fit_steps):
    """An encoder far from every posterior, refined per point: a random one (posterior sd 0.24; the
    encoder's means 16 sds off, its scales up to 29 times too wide), and one fitted briefly to sharp
    posteriors (sd 0.017; means 45 sds off, scales 24 to 90 times too wide). Each row's Gaussian
    reaches the closed-form posterior ``N(Sigma (m + A^T (x - b) / sigma^2), Sigma)``,
    ``Sigma = (I + A^T A / sigma^2)^{-1}`` (diagonal: A's columns are orthogonal), to 0.1 of the
    posterior's sd in its mean and 5% in its sd; the estimate then equals the closed-form marginal
    to 0.01 nats with an ESS above 90% of the draws, where the unrefined encoder's is off by nats."""
    decoder, prior, likelihood, train, exact = linear_gaussian(0, gain=gain)
    x = train[:50]
    proposal = EncoderProposal(mlp([6, 4], 3), decoder, prior, likelihood, prior_weight=1e-3, lr=1e-2)
    if fit_steps:
        proposal.fit(train, fit_steps, batch_size=200)
    model = continuous_model(decoder, prior, likelihood)
    before = importance_log_likelihood(model, proposal, x, num_particles=500)
    assert (before.value - exact(x)).abs().max() > 1.0
    refined = proposal.refined(x, 2000, lr=0.1)
    A, b, sigma = decoder.weight.detach(), decoder.bias.detach(), 0.5
    covariance = torch.linalg.inv(torch.eye(2) + A.T @ A / sigma**2)
    mean, sd = (prior.mean + (x - b) @ A / sigma**2) @ covariance, covariance.diagonal().sqrt()
    assert ((refined.loc - mean).abs() / sd).max() < 0.1
    assert ((refined.scale / sd - 1).abs() < 0.05).all()
    after = importance_log_likelihood(model, refined, x, num_particles=500)
    assert (after.value - exact(x)).abs().max() < 0.01
    assert after.ess.min() > 450


def test_refinement_leaves_the_model_the_encoder_and_the_param_store_alone():
    pyro.clear_param_store()
    decoder, encoder = mlp([2, 8, 5], 0), mlp([5, 8, 4], 1)
    before = [p.detach().clone() for p in [*decoder.parameters(), *encoder.parameters()]]
    proposal = EncoderProposal(encoder, decoder, dist.Normal(torch.zeros(2), 1.0).to_event(1), NormalLikelihood(0.3))
    x = torch.randn(6, 5)
    refined = proposal.refined(x, 30)
    assert not torch.allclose(refined.loc, encoder(x).detach()[:, :2])  # the rows' own fits moved
    after = [*decoder.parameters(), *encoder.parameters()]
    assert all(torch.equal(a, b) and a.grad is None and a.requires_grad for a, b in zip(after, before))
    assert len(pyro.get_param_store()) == 0
    refined(x.clone())  # the same points, another tensor
    with pytest.raises(ValueError, match="refined for"):
        refined(x[:3])
    with pytest.raises(ValueError, match="refined for"):
        refined(x + 1.0)
    x[0] += 1.0  # the very tensor refined for, changed in place
    with pytest.raises(ValueError, match="refined for"):
        refined(x)
