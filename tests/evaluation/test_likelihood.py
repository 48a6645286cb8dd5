"""The log-likelihood estimator against probabilistic PCA's closed form; decode; counting."""


import pyro
import pyro.distributions as dist
import pytest
import torch
from toy_models import Empirical

from pyro_mapa import MAPA_ELBO, MAPAGuide, MAPAPosterior, decode
from pyro_mapa.evaluation import empirical_log_likelihood, importance_log_likelihood
from pyro_mapa.models import BernoulliLikelihood
from pyro_mapa.models.counting import PassCounter

N, D, d, SIGMA = 8, 4, 2, 0.5


@pytest.fixture
def ppca(float64):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(d, D, generator=g, dtype=torch.float64)
    b = torch.randn(D, generator=g, dtype=torch.float64)
    x = torch.randn(N, d, generator=g, dtype=torch.float64) @ w + b + SIGMA * torch.randn(N, D, generator=g, dtype=torch.float64)

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros(d), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ w + b, SIGMA).to_event(1), obs=x)

    def prior(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(torch.zeros(d), 1.0).to_event(1))

    def posterior(x):  # z | x ~ N(S W (x - b) / sigma^2, S), S = (I + W W^T / sigma^2)^-1
        cov = torch.linalg.inv(torch.eye(d) + w @ w.T / SIGMA**2)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.MultivariateNormal((x - b) @ w.T @ cov / SIGMA**2, covariance_matrix=cov))

    exact = dist.MultivariateNormal(b, w.T @ w + SIGMA**2 * torch.eye(D)).log_prob(x)
    return model, prior, posterior, x, exact


def test_prior_proposal_agrees_with_the_closed_form(ppca):
    model, prior, _, x, exact = ppca
    estimate = importance_log_likelihood(model, prior, x, num_particles=20000, chunk_size=3000)
    assert torch.all((estimate.value - exact).abs() < 4 * estimate.stderr + 1e-3)
    assert torch.all(estimate.stderr < 0.2)


def test_true_posterior_proposal_is_exact(ppca):
    model, _, posterior, x, exact = ppca
    estimate = importance_log_likelihood(model, posterior, x, num_particles=30, chunk_size=7)
    assert torch.allclose(estimate.value, exact, atol=1e-8)
    assert torch.all(estimate.stderr < 1e-6)


def test_a_point_mass_proposal_is_refused(ppca):
    model, _, _, x, _ = ppca

    def delta(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Delta(torch.zeros(len(x), d)).to_event(1))

    with pytest.raises(ValueError, match="point mass"):
        importance_log_likelihood(model, delta, x, num_particles=4)


def test_empirical_log_likelihood_is_the_exact_bound(float64):
    problem = Empirical()
    posterior = MAPAPosterior.fit(problem.data, scale=problem.sigma, num_cached=problem.N)
    guide = MAPAGuide(problem.model, posterior, create_plates=problem.create_plates)
    loss = MAPA_ELBO(num_neighbors=problem.N, num_samples=0).loss(problem.model, guide, problem.data)
    value = empirical_log_likelihood(problem.net, pyro.param("codes"), problem.data, problem.sigma, chunk_size=7)
    assert value.sum().item() == pytest.approx(-loss, abs=1e-8)


@pytest.mark.parametrize("chunk_size", [None, 1, 7, 37, 100])
def test_empirical_log_likelihood_decodes_each_code_once_in_chunks_and_equals_brute_force(float64, chunk_size):
    g = torch.Generator().manual_seed(1)
    codes, x = torch.randn(37, 3, generator=g), torch.bernoulli(torch.full((5, 20), 0.3), generator=g)
    net, seen = torch.nn.Linear(3, 20), []
    net.register_forward_hook(lambda module, inputs, output: seen.append(len(inputs[0])))
    with torch.no_grad():  # torch's Bernoulli on every (point, code) pair, one logsumexp
        expected = dist.Bernoulli(logits=net(codes)).log_prob(x[:, None]).sum(-1).logsumexp(-1) - torch.log(torch.tensor(37.0))
    seen.clear()
    value = empirical_log_likelihood(net, codes, x, BernoulliLikelihood(), chunk_size=chunk_size)
    assert torch.allclose(value, expected, atol=1e-10)
    assert sum(seen) == 37 and max(seen) <= (chunk_size or 37)


def test_empirical_log_likelihood_chunks_by_entries_by_default(monkeypatch):
    from pyro_mapa.evaluation import likelihood

    monkeypatch.setattr(likelihood, "DECODE_ENTRIES", 100)  # rows of max(len(x), D) = 20 entries: 5 codes a chunk
    codes, x = torch.randn(37, 3), torch.bernoulli(torch.full((5, 20), 0.3))
    net, seen = torch.nn.Linear(3, 20), []
    net.register_forward_hook(lambda module, inputs, output: seen.append(len(inputs[0])))
    value = empirical_log_likelihood(net, codes, x, BernoulliLikelihood())
    assert seen == [5] * 7 + [2]
    assert torch.allclose(value, empirical_log_likelihood(net, codes, x, BernoulliLikelihood(), chunk_size=37), atol=1e-5)


def test_empirical_log_likelihood_refuses_a_bad_chunk_size():
    with pytest.raises(ValueError, match="chunk_size"):
        empirical_log_likelihood(torch.nn.Linear(1, 2), torch.zeros(3, 1), torch.zeros(2, 2), 0.5, chunk_size=0)


def test_decode_equals_the_decoder_on_gathered_codes_and_counts_distinct_indices():
    net = torch.nn.Linear(2, 3)
    codes = torch.randn(10, 2, requires_grad=True)
    i = torch.tensor([[1, 4, 4], [1, 1, 9]])
    counter = PassCounter(net)
    out = decode(net, codes, i)
    assert counter.count == 3
    counter.remove()
    expected = net(codes[i])
    assert torch.allclose(out, expected)
    (g1,) = torch.autograd.grad(out.sum(), codes)
    (g2,) = torch.autograd.grad(expected.sum(), codes)
    assert torch.allclose(g1, g2)
    assert counter.count == 3  # removed: the later passes are not counted


def test_the_effective_sample_size_tells_a_good_proposal_from_a_poor_one(float64):
    """z ~ N(0, 1), x ~ N(z, 0.1^2): the exact posterior gives every draw the same weight
    (ESS = P); the prior as the proposal gives an ESS of a few percent of P."""
    import pyro.distributions as dist

    def model(x):
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(pyro.sample("z", dist.Normal(0.0, 1.0)), 0.1), obs=x)

    def exact(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(x / 1.01, (0.01 / 1.01) ** 0.5))

    def prior(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(torch.zeros(len(x)), 1.0))

    x = torch.tensor([0.0, 1.0, 2.0])
    good = importance_log_likelihood(model, exact, x, num_particles=400, max_plate_nesting=1)
    poor = importance_log_likelihood(model, prior, x, num_particles=400, max_plate_nesting=1)
    assert torch.allclose(good.ess, torch.full((3,), 400.0))
    assert (poor.ess < 0.2 * 400).all()


def test_k_hat_flags_a_proposal_far_too_narrow_and_not_the_exact_posterior(float64):
    """Issue 15: a standard error computed from the weights cannot show that one weight
    dominates; PSIS's k-hat can. Linear-Gaussian z ~ N(0, 1), x ~ N(z, 0.5^2)."""
    import pyro.distributions as dist

    def model(x):
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(pyro.sample("z", dist.Normal(0.0, 1.0)), 0.5), obs=x)

    def posterior(x, width=1.0):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(x / 1.25, width * (0.25 / 1.25) ** 0.5))

    x = torch.linspace(-2, 2, 20)
    exact = importance_log_likelihood(model, posterior, x, num_particles=1000, max_plate_nesting=1, k_hat=True)
    assert exact.k_hat.median() < 0.5
    with pytest.warns(UserWarning, match="median Pareto k-hat .* > 0.7"):
        narrow = importance_log_likelihood(model, lambda x: posterior(x, 0.1), x, num_particles=1000,
                                           max_plate_nesting=1, k_hat=True)
    assert narrow.k_hat.median() > 0.7
    assert narrow.stderr.mean() < 0.5  # what the standard error alone said
