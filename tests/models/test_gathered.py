"""GatheredNormal against torch's Normal on the gathered means, and inside MAPA_ELBO."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Predictive
from toy_models import GatheredEmpirical

from pyro_mapa import MAPA_ELBO, GatheredNormal, MAPAGuide, MAPAPosterior
from pyro_mapa.models import gathered


def reference(loc, scale, index):
    return dist.Normal(loc[index], scale).to_event(1)


@pytest.mark.parametrize("path", ["expand", "gather"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [0.3, "vector"])
def test_log_prob_and_gradients_match_normal(monkeypatch, path, dtype, scale):
    """Both ways of computing it, far from the origin (where the expansion could cancel)."""
    monkeypatch.setattr(gathered, "MATMUL_ADVANTAGE", 10**9 if path == "expand" else 0)
    g = torch.Generator().manual_seed(1)
    loc = (100.0 + torch.randn(7, 4, generator=g, dtype=dtype)).requires_grad_()
    scale = torch.rand(4, generator=g, dtype=dtype) + 0.2 if scale == "vector" else scale
    index = torch.randint(0, 7, (3, 5), generator=g)  # (particles, batch)
    x = 100.0 + torch.randn(5, 4, generator=g, dtype=dtype)
    ours = GatheredNormal(loc, scale, index).log_prob(x)
    theirs = reference(loc, scale, index).log_prob(x)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert ours.shape == (3, 5) and ours.dtype == dtype
    assert torch.allclose(ours, theirs, rtol=tol, atol=tol)
    (g_ours,) = torch.autograd.grad(ours.square().sum(), loc)
    (g_theirs,) = torch.autograd.grad(theirs.square().sum(), loc)
    assert torch.allclose(g_ours, g_theirs, rtol=tol, atol=10 * tol)


def test_samples_have_the_gathered_mean_and_variance():
    loc, scale = torch.tensor([[0.0, 1.0], [3.0, -2.0]]), torch.tensor([0.5, 2.0])
    index = torch.tensor([1, 0, 1])
    draws = GatheredNormal(loc, scale, index).sample((20000,))
    assert draws.shape == (20000, 3, 2)
    se = scale / math.sqrt(20000)
    assert ((draws.mean(0) - loc[index]).abs() < 4 * se).all()
    assert ((draws.var(0) / scale**2 - 1).abs() < 4 * math.sqrt(2 / 20000)).all()


def test_expand_broadcasts_the_index():
    loc, index = torch.randn(4, 3), torch.tensor([0, 3])
    expanded = GatheredNormal(loc, 0.7, index).expand((5, 2))
    assert expanded.batch_shape == (5, 2) and expanded.event_shape == (3,)
    x = torch.randn(2, 3)
    assert torch.allclose(expanded.log_prob(x), reference(loc, 0.7, index.expand(5, 2)).log_prob(x))


def test_mapa_elbo_with_gathered_normal_is_the_exact_marginal(float64):
    """K = N, subsampled: the bound equals the direct logsumexp over all codes, gradients too."""
    problem = GatheredEmpirical()
    posterior = MAPAPosterior.fit(problem.data, scale=problem.sigma, num_cached=problem.N)
    guide = MAPAGuide(problem.model, posterior, create_plates=problem.create_plates)
    idx = torch.tensor([3, 17, 17, 28])
    loss = MAPA_ELBO(num_neighbors=problem.N, num_samples=2).differentiable_loss(
        problem.model, guide, problem.data[idx], idx
    )
    direct = -problem.N / len(idx) * problem.exact_log_marginal(problem.data[idx]).sum()
    assert torch.allclose(loss, direct, atol=1e-8, rtol=0)
    params = [pyro.param("codes").unconstrained(), *problem.net.parameters()]
    for a, b in zip(torch.autograd.grad(loss, params), torch.autograd.grad(direct, params)):
        assert torch.allclose(a, b, atol=1e-8)


def test_predictive_draws_observations(float64):
    problem = GatheredEmpirical()
    posterior = MAPAPosterior.fit(problem.data, scale=problem.sigma, num_cached=5)
    guide = MAPAGuide(problem.model, posterior, create_plates=problem.create_plates)
    samples = Predictive(problem.model, guide=guide, num_samples=3, return_sites=["i", "x"])(None)
    assert samples["i"].shape == (3, problem.N) and samples["x"].shape == (3, problem.N, 2)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"loc must hold \(U, D\) distinct rows"):
        GatheredNormal(torch.zeros(3), 1.0, torch.tensor([0]))
    with pytest.raises(ValueError, match="shared by all rows"):
        GatheredNormal(torch.zeros(3, 2), torch.ones(3, 2), torch.tensor([0]))
    with pytest.raises(ValueError, match="int64"):
        GatheredNormal(torch.zeros(3, 2), 1.0, torch.tensor([0.0]))
    with pytest.raises(ValueError, match="int64"):
        GatheredNormal(torch.zeros(3, 2), 1.0, torch.tensor([0], dtype=torch.uint8))
    for bad in (-1, 3):
        with pytest.raises(ValueError, match=r"rows of loc in \[0, 3\)"):
            GatheredNormal(torch.zeros(3, 2), 1.0, torch.tensor([0, bad]), validate_args=True)
    with pytest.raises(ValueError, match="scale"):
        GatheredNormal(torch.zeros(3, 2), -1.0, torch.tensor([0]), validate_args=True)
    with pytest.raises(ValueError, match="support"):
        GatheredNormal(torch.zeros(3, 2), 1.0, torch.tensor([0]), validate_args=True).log_prob(
            torch.tensor([[float("nan"), 0.0]])
        )


@pytest.mark.parametrize("path", ["expand", "gather"])
def test_spread_data_in_float32_and_low_precision_matmul(monkeypatch, path):
    """Data spread over many sigmas (digits-like, sigma small): float32 stays as close to a
    float64 reference as torch's own Normal, also under a bfloat16 autocast."""
    monkeypatch.setattr(gathered, "MATMUL_ADVANTAGE", 10**9 if path == "expand" else 0)
    g = torch.Generator().manual_seed(2)
    loc, x = 16 * torch.rand(50, 64, generator=g), 16 * torch.rand(20, 64, generator=g)
    index = torch.randint(0, 50, (5, 20), generator=g)
    exact = reference(loc.double(), 0.05, index).log_prob(x.double())
    torch_error = (reference(loc, 0.05, index).log_prob(x).double() - exact).abs().max()
    for autocast in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            ours = GatheredNormal(loc, 0.05, index).log_prob(x)
        assert (ours.double() - exact).abs().max() <= 2 * torch_error, (autocast, torch_error)


def test_a_non_finite_observation_spoils_only_its_own_row(monkeypatch):
    loc, index = torch.tensor([[0.0, 0.0], [1.0, 2.0]]), torch.tensor([1, 0, 1])
    x = torch.tensor([[1.0, 1.0], [float("inf"), 1.0], [2.0, 2.0]])
    expected = reference(loc, 0.5, index).log_prob(x)
    for advantage in (0, 10**9):
        monkeypatch.setattr(gathered, "MATMUL_ADVANTAGE", advantage)
        ours = GatheredNormal(loc, 0.5, index).log_prob(x)
        assert torch.equal(ours.isinf(), torch.tensor([False, True, False]))
        assert torch.allclose(ours[[0, 2]], expected[[0, 2]])
