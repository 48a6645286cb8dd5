"""The cache against a dense N x N brute force (SPEC section 2)."""

import math

import pytest
import torch

from pyro_mapa import MAPAPosterior
from pyro_mapa.cache.calibration import median_perplexity
from pyro_mapa.cache.kernels import DEFAULT_FLIP_PROB


def brute_force(data, queries, log_weight):
    """Dense log q(i = m | x) for every query and training index."""
    return torch.log_softmax(log_weight(queries[:, None, :], data[None, :, :]), dim=-1)


def gaussian_log_weight(h):
    return lambda a, b: -((a - b) ** 2).sum(-1) / (2 * h**2)


def bernoulli_log_weight(eps):
    return lambda a, b: (a != b).sum(-1) * math.log(eps / (1 - eps))


def l1(a, b):
    return (a[:, None, :] - b[None, :, :]).abs().sum(-1)


def assert_matches_dense(table, dense, exact_index=True):
    """Neighbours and log-probabilities equal the dense ones (to 1e-6); the tail is
    the rest of the mass; with ties, the kept set dominates the rest."""
    k = table.index.shape[1]
    assert torch.allclose(dense.gather(1, table.index), table.log_prob, atol=1e-6, rtol=0)
    top = dense.topk(k, dim=1)
    assert torch.allclose(table.log_prob, top.values, atol=1e-6, rtol=0)
    if exact_index:
        assert torch.equal(table.index, top.indices)
    tail = dense.clone().scatter_(1, table.index, -math.inf).logsumexp(1)
    assert torch.allclose(table.log_tail, tail, atol=1e-6, rtol=0)
    assert torch.allclose(torch.logaddexp(table.log_prob.logsumexp(1), table.log_tail), torch.zeros(len(dense)))


@pytest.mark.parametrize("num_neighbors", [1, 7, 60])
@pytest.mark.parametrize("max_block_entries", [60 * 7, 2**24])
def test_normal_matches_brute_force(float64, num_neighbors, max_block_entries):
    data = torch.randn(60, 3)
    posterior = MAPAPosterior.fit(
        data, scale=0.3, num_cached=num_neighbors, max_block_entries=max_block_entries
    )
    h = math.sqrt(2) * 0.3
    assert_matches_dense(posterior.table, brute_force(data, data, gaussian_log_weight(h)))
    assert torch.equal(posterior.table.index[:, 0], torch.arange(60))  # each point is its own top neighbour


def test_explicit_bandwidth_matches_brute_force(float64):
    data = torch.randn(50, 4)
    posterior = MAPAPosterior.fit(data, bandwidth=0.7, num_cached=10)
    assert_matches_dense(posterior.table, brute_force(data, data, gaussian_log_weight(0.7)))


@pytest.mark.parametrize("eps", [None, 0.02, 0.3])
def test_bernoulli_matches_brute_force(float64, eps):
    data = (torch.rand(80, 12) < 0.4).double()
    posterior = MAPAPosterior.fit(data, likelihood="bernoulli", scale=eps, num_cached=9)
    dense = brute_force(data, data, bernoulli_log_weight(eps or DEFAULT_FLIP_PROB))
    # Hamming distances tie: the kept indices may differ from topk's, their values may not
    assert_matches_dense(posterior.table, dense, exact_index=False)


def test_custom_distance_matches_brute_force(float64):
    data = torch.randn(40, 3)
    posterior = MAPAPosterior.fit(data, likelihood="custom", distance=l1, temperature=0.5, num_cached=6)
    dense = brute_force(data, data, lambda a, b: -(a - b).abs().sum(-1) / 0.5)
    assert_matches_dense(posterior.table, dense)


def test_query_equals_fit_on_the_same_points(float64):
    data = torch.randn(70, 5)
    posterior = MAPAPosterior.fit(data, scale=0.5, num_cached=8)
    queried = posterior.query(data)
    for a, b in zip(queried, posterior.table):
        assert torch.equal(a, b)


def test_query_of_new_points_matches_brute_force(float64):
    data, new = torch.randn(70, 5), torch.randn(9, 5)
    posterior = MAPAPosterior.fit(data, scale=0.5, num_cached=8)
    assert_matches_dense(posterior.query(new), brute_force(data, new, gaussian_log_weight(math.sqrt(2) * 0.5)))


def test_full_cache_has_empty_tail(float64):
    data = torch.randn(20, 2)
    posterior = MAPAPosterior.fit(data, scale=0.5, num_cached=20)
    assert torch.all(posterior.table.log_tail == -math.inf)
    assert torch.allclose(posterior.table.log_prob.logsumexp(1), torch.zeros(20))


def test_float32_agrees_with_float64():
    data = torch.randn(100, 6)
    p32 = MAPAPosterior.fit(data, scale=0.4, num_cached=10)
    p64 = MAPAPosterior.fit(data.double(), scale=0.4, num_cached=10)
    assert p32.table.log_prob.dtype == torch.float32
    assert torch.allclose(p32.table.log_prob.double(), p64.table.log_prob, atol=1e-4)
    assert (p32.table.index == p64.table.index).float().mean() > 0.99


def test_auto_bandwidth_hits_the_target_perplexity(float64):
    """The documented rule: median perplexity of q(. | x_n) over points equals the target."""
    data = torch.randn(300, 3)
    posterior = MAPAPosterior.fit(data, bandwidth="auto", perplexity=12.0, num_cached=5)
    dense = -torch.cdist(data, data) ** 2 / posterior.temperature
    assert median_perplexity(dense) == pytest.approx(12.0, rel=1e-6)


def test_auto_bandwidth_for_bernoulli(float64):
    data = (torch.rand(200, 16) < 0.5).double()
    posterior = MAPAPosterior.fit(data, likelihood="bernoulli", bandwidth="auto", perplexity=5.0, num_cached=5)
    dense = -(data[:, None] != data[None]).sum(-1) / posterior.temperature
    assert median_perplexity(dense) == pytest.approx(5.0, rel=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(float64):
    data = torch.randn(200, 4)
    cpu = MAPAPosterior.fit(data, scale=0.3, num_cached=10)
    gpu = MAPAPosterior.fit(data.cuda(), scale=0.3, num_cached=10)
    assert gpu.table.index.is_cuda
    assert torch.allclose(gpu.table.log_prob.cpu(), cpu.table.log_prob, atol=1e-8)


def test_float32_far_from_the_origin_agrees_with_float64():
    """Squared distances by matrix products cancel badly at large offsets unless translated."""
    data = 0.3 * torch.randn(200, 2, dtype=torch.float64) + 1000.0
    p32 = MAPAPosterior.fit(data.float(), scale=0.1, num_cached=5)
    p64 = MAPAPosterior.fit(data, scale=0.1, num_cached=5)
    assert (p32.table.index == p64.table.index).float().mean() > 0.99
    assert torch.allclose(p32.table.log_prob.double(), p64.table.log_prob, atol=1e-2)


def test_float32_near_twins_with_a_small_scale_agree_with_float64():
    """Issue 12: data in [0, 1]^784 and near-twins 3e-5 away, sigma = 1e-3, float32: the fused
    product lost up to 23 nats and 0.69 of normalisation. The cached candidates' values are now
    recomputed by differences: within 1e-3 nats of float64 on every entry that carries mass."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(150, 784, generator=g, dtype=torch.float64)
    x = torch.cat([x, x + 3e-5 * torch.randn(x.shape, generator=g, dtype=torch.float64)])
    p64 = MAPAPosterior.fit(x, scale=1e-3, num_cached=8)
    p32 = MAPAPosterior.fit(x.float(), scale=1e-3, num_cached=8)
    carries_mass = p64.table.log_prob > -50
    assert torch.equal(p32.table.index[:, :2], p64.table.index[:, :2])  # itself and its twin
    assert (p32.table.log_prob.double() - p64.table.log_prob)[carries_mass].abs().max() < 1e-3
    total = torch.logaddexp(p32.table.log_prob.double().logsumexp(1), p32.table.log_tail.double())
    assert total.abs().max() < 1e-5
