"""MAPAIndex: a proper distribution over N indices, and the proposal r_n by enumeration."""

import math

import pytest
import torch

from pyro_mapa import MAPAIndex, NeighborTable
from pyro_mapa.index_distribution import _sample_uncached


def random_table(batch=3, num_points=12, num_cached=5, tail=0.2):
    """Rows whose cached indices carry mass 1 - tail."""
    index = torch.stack([torch.randperm(num_points)[:num_cached] for _ in range(batch)])
    log_prob = torch.log_softmax(torch.randn(batch, num_cached), -1) + math.log1p(-tail)
    log_prob = log_prob.sort(dim=1, descending=True).values
    return NeighborTable(index, log_prob, torch.full((batch,), math.log(tail)))


def dense_q(table, num_points):
    q = torch.full((len(table.index), num_points), 0.0, dtype=torch.float64)
    num_uncached = num_points - table.index.shape[1]
    if num_uncached:
        q += (table.log_tail.exp() / num_uncached).unsqueeze(1).double()
    return q.scatter(1, table.index, table.log_prob.exp().double())


def dense_r(table, num_points, num_neighbors, defensive):
    """The proposal r_n of MAPAIndex.particles, written out over all N indices."""
    q = dense_q(table, num_points)
    cached = torch.zeros_like(q, dtype=torch.bool).scatter(1, table.index, True)
    in_a = torch.zeros_like(cached).scatter(1, table.index[:, :num_neighbors], True)
    rest = cached & ~in_a
    mass_rest = (q * rest).sum(1, keepdim=True)
    mass_tail = (q * ~cached).sum(1, keepdim=True)
    lam = torch.where(rest.any(1, keepdim=True), (mass_tail / (mass_rest + mass_tail)).clamp_min(defensive), 1.0)
    lam = torch.where((~cached).any(1, keepdim=True), lam, 0.0)
    r = torch.where(rest, (1 - lam) * q / mass_rest, 0.0) + torch.where(~cached, lam / (~cached).sum(1, keepdim=True), 0.0)
    return r


def test_log_prob_sums_to_one_over_all_indices():
    table = random_table()
    q = MAPAIndex(table, num_points=12)
    values = torch.arange(12).unsqueeze(-1).expand(12, 3)
    assert torch.allclose(q.log_prob(values).exp().sum(0), torch.ones(3), atol=1e-6)
    assert torch.allclose(q.log_prob(values).exp().T.double(), dense_q(table, 12), atol=1e-6)


def test_sample_frequencies_match_log_prob():
    table = random_table(batch=2)
    q = MAPAIndex(table, num_points=12)
    draws = q.sample((40000,))
    assert draws.shape == (40000, 2)
    freq = torch.stack([torch.bincount(draws[:, b], minlength=12) for b in range(2)]).double() / 40000
    p = dense_q(table, 12)
    assert torch.all((freq - p).abs() < 4 * (p * (1 - p) / 40000).sqrt() + 1e-3)


def test_uncached_sampler_is_uniform_on_the_rest():
    index = torch.tensor([[1, 3, 7], [0, 1, 2]])
    draws = _sample_uncached(index, 9, 30000)
    for row, allowed in enumerate([[0, 2, 4, 5, 6, 8], [3, 4, 5, 6, 7, 8]]):
        counts = torch.bincount(draws[:, row], minlength=9).double() / 30000
        expected = torch.zeros(9, dtype=torch.float64)
        expected[allowed] = 1 / 6
        assert torch.allclose(counts, expected, atol=0.015)


@pytest.mark.parametrize("num_neighbors", [1, 3, 5])
@pytest.mark.parametrize("defensive", [0.0, 0.1, 0.9])
def test_proposal_matches_its_formula(num_neighbors, defensive):
    """Draws from r_n have the frequencies of r_n, which puts mass 1 on B_n, and the
    reported log-weights are log S + log r_n(m_s)."""
    table = random_table(batch=2, num_cached=5, tail=0.05)
    q = MAPAIndex(table, num_points=12, defensive=defensive)
    num_samples = 20000
    values, log_w = q.particles(num_neighbors, num_samples)
    r = dense_r(table, 12, num_neighbors, defensive)
    assert torch.allclose(r.sum(1), torch.ones(2, dtype=torch.float64))
    assert torch.all(r.gather(1, table.index[:, :num_neighbors]) == 0)
    assert torch.equal(values[:num_neighbors], table.index[:, :num_neighbors].T)
    assert torch.all(log_w[:num_neighbors] == 0)
    sampled = values[num_neighbors:]
    expected_log_w = r.T.gather(0, sampled).log() + math.log(num_samples)
    assert torch.allclose(log_w[num_neighbors:].double(), expected_log_w, atol=1e-5)
    freq = torch.stack([torch.bincount(sampled[:, b], minlength=12) for b in range(2)]).double() / num_samples
    assert torch.all((freq - r).abs() < 4 * (r * (1 - r) / num_samples).sqrt() + 1e-3)


def test_full_cache_sampled_particles_weigh_nothing():
    index = torch.arange(4).repeat(2, 1)
    table = NeighborTable(index, torch.log_softmax(torch.randn(2, 4), -1), torch.full((2,), -math.inf))
    _, log_w = MAPAIndex(table, num_points=4).particles(4, 3)
    log_p = torch.zeros(7, 2)
    assert torch.all((log_p - log_w)[4:].exp() == 0)
    assert torch.isfinite(log_w).all()
