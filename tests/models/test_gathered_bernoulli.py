"""GatheredBernoulli against torch's Bernoulli on the gathered logits, and inside MAPA_ELBO."""


import pyro
import pyro.distributions as dist
import pytest
import torch
from toy_models import BernoulliEmpirical

from pyro_mapa import (
    MAPA_ELBO,
    GatheredBernoulli,
    Kernel,
    MAPAGuide,
    MAPAPosterior,
)
from pyro_mapa.models import gathered


@pytest.mark.parametrize("path", ["expand", "gather"])
@pytest.mark.parametrize("spread", [1.0, 30.0])  # logits near 0, and far from it (cancellation in x.l - softplus)
def test_log_prob_and_gradients_match_bernoulli(monkeypatch, float64, path, spread):
    monkeypatch.setattr(gathered, "MATMUL_ADVANTAGE", 10**9 if path == "expand" else 0)
    g = torch.Generator().manual_seed(2)
    logits = (spread * torch.randn(7, 50, generator=g)).requires_grad_()
    index = torch.randint(0, 7, (4, 6), generator=g)  # (particles, batch)
    x = (torch.rand(6, 50, generator=g) < 0.5).double()
    ours = GatheredBernoulli(logits, index).log_prob(x)
    theirs = dist.Bernoulli(logits=logits[index]).to_event(1).log_prob(x)
    assert ours.shape == (4, 6)
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-5)
    (g_ours,) = torch.autograd.grad(ours.square().sum(), logits)
    (g_theirs,) = torch.autograd.grad(theirs.square().sum(), logits)
    assert torch.allclose(g_ours, g_theirs, rtol=1e-6, atol=1e-5)


def test_float32_expansion_keeps_its_precision(monkeypatch):
    """The all-pairs product runs in float64: in float32, 784 logits of size 30 would cancel to ~1e-2."""
    monkeypatch.setattr(gathered, "MATMUL_ADVANTAGE", 10**9)
    g = torch.Generator().manual_seed(3)
    logits = 30 * torch.randn(5, 784, generator=g, dtype=torch.float64)
    x = (torch.rand(3, 784, generator=g) < 0.5).double()
    index = torch.arange(5).unsqueeze(-1).expand(5, 3)
    exact = dist.Bernoulli(logits=logits[index]).to_event(1).log_prob(x)
    ours = GatheredBernoulli(logits.float(), index).log_prob(x.float())
    assert torch.allclose(ours.double(), exact, rtol=1e-6, atol=0)


def test_samples_have_the_gathered_probabilities():
    logits, index = torch.tensor([[0.0, 2.0], [-1.0, 0.5]]), torch.tensor([1, 0, 1])
    draws = GatheredBernoulli(logits, index).sample((20000,))
    assert draws.shape == (20000, 3, 2) and ((draws == 0) | (draws == 1)).all()
    p = torch.sigmoid(logits[index])
    assert ((draws.mean(0) - p).abs() < 4 * (p * (1 - p) / 20000).sqrt()).all()


def test_expand_and_bad_arguments():
    logits, index = torch.randn(4, 3), torch.tensor([0, 3])
    expanded = GatheredBernoulli(logits, index).expand((5, 2))
    x = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert torch.allclose(expanded.log_prob(x), dist.Bernoulli(logits=logits[index.expand(5, 2)]).to_event(1).log_prob(x))
    with pytest.raises(ValueError, match=r"logits must hold \(U, D\) distinct rows"):
        GatheredBernoulli(torch.zeros(3), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"rows of logits in \[0, 4\)"):
        GatheredBernoulli(logits, torch.tensor([4]), validate_args=True)


@pytest.mark.parametrize("idx", [None, torch.tensor([3, 17, 17, 24])])
def test_mapa_elbo_with_k_equal_n_is_the_direct_logsumexp(float64, idx):
    """A Bernoulli model, full batch and subsampled: the bound with K = N is the exact marginal."""
    problem = BernoulliEmpirical()
    posterior = MAPAPosterior.fit(problem.data, kernel=Kernel.bernoulli(), num_cached=5)
    guide = MAPAGuide(problem.model, posterior, create_plates=problem.create_plates)
    x = problem.data if idx is None else problem.data[idx]
    loss = MAPA_ELBO(num_neighbors=problem.N, num_samples=3).differentiable_loss(problem.model, guide, x, idx)
    direct = -(problem.N / len(x)) * problem.exact_log_marginal(x).sum()
    assert torch.allclose(loss, direct, atol=1e-8, rtol=0)
    params = [pyro.param("codes").unconstrained(), *problem.net.parameters()]
    for a, b in zip(torch.autograd.grad(loss, params), torch.autograd.grad(direct, params)):
        assert torch.allclose(a, b, atol=1e-8)
