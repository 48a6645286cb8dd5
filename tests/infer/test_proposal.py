"""The bound's proposal r_n by enumeration: draws, frequencies and log-weights."""

import math

import pytest
import torch
from toy_tables import dense_q, random_table

from pyro_mapa import IndexProposal, MAPAIndex, NeighborTable


def dense_r(table, num_points, num_neighbors, defensive):
    """The proposal r_n of IndexProposal.index_particles, written out over all N indices."""
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


@pytest.mark.parametrize("shared_tail", [False, True], ids=["own-tail", "shared-tail"])
@pytest.mark.parametrize("num_neighbors", [1, 3, 5])
@pytest.mark.parametrize("defensive", [0.0, 0.1, 0.9])
def test_proposal_matches_its_formula(num_neighbors, defensive, shared_tail):
    """Draws from r_n have the frequencies of r_n, which puts mass 1 on B_n, and the
    reported log-weights are log S + log r_n(m_s); with the rows' uncached draws from one
    shared stream too."""
    table = random_table(batch=2, num_cached=5, tail=0.05)
    q = IndexProposal(MAPAIndex(table, num_points=12), defensive, shared_tail)
    num_samples = 20000
    values, log_w = q.index_particles(num_neighbors, num_samples)
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


@pytest.mark.parametrize("shared_tail", [False, True], ids=["own-tail", "shared-tail"])
def test_each_rows_estimate_is_unbiased(shared_tail):
    """p_hat_n = (1/N) sum_p l_{n i_p} / w_p from one call's particles, averaged over 4,000
    independent calls, matches (1/N) sum_m l_nm within 3 standard errors for every row of the
    batch: sharing the uncached draws between rows leaves each row's estimate unbiased."""
    torch.manual_seed(0)
    table = random_table(batch=6, num_points=40, num_cached=5, tail=0.3)
    likelihood = torch.rand(6, 40, dtype=torch.float64) + 0.05 * torch.arange(40)  # l_nm > 0
    q = IndexProposal(MAPAIndex(table, num_points=40), defensive=0.5, shared_tail=shared_tail)
    estimates = []
    for _ in range(4000):
        values, log_w = q.index_particles(1, 3)
        estimates.append((likelihood.T.gather(0, values).log() - log_w.double()).exp().sum(0) / 40)
    estimates = torch.stack(estimates)
    exact = likelihood.mean(1)
    se = estimates.std(0) / math.sqrt(len(estimates))
    assert torch.all((estimates.mean(0) - exact).abs() < 3 * se), (estimates.mean(0), exact, se)
    assert torch.all(se < 0.02 * exact)  # the test has power


@pytest.mark.parametrize("num_neighbors", [1, 3], ids=["K<K_c", "K=K_c"])
def test_shared_tail_draws_are_independent_within_a_row(num_neighbors):
    """The joint law of a row's S = 3 draws from the shared stream is r_n^3: the frequencies of
    the 7^3 triples over 10,000 calls, within 4 standard errors (the mean of p_hat alone would
    miss a row whose draws repeat one another)."""
    table = random_table(batch=3, num_points=7, num_cached=3, tail=0.5)
    q = IndexProposal(MAPAIndex(table, num_points=7), defensive=0.5, shared_tail=True)
    calls = 10000
    draws = torch.stack([q.index_particles(num_neighbors, 3)[0][num_neighbors:] for _ in range(calls)])
    r = dense_r(table, 7, num_neighbors, 0.5)
    for row in range(3):
        triples = draws[:, 0, row] * 49 + draws[:, 1, row] * 7 + draws[:, 2, row]
        freq = torch.bincount(triples, minlength=343).double() / calls
        p = (r[row, :, None, None] * r[row, None, :, None] * r[row, None, None, :]).flatten()
        assert torch.all((freq - p).abs() < 4 * (p * (1 - p) / calls).sqrt() + 1e-3), row


def test_shared_tail_draws_coincide_between_rows():
    """What the option is for: the rows' uncached draws are the same indices (the distinct
    uncached indices of a 100-row batch fall from about 100 to a handful)."""
    table = random_table(batch=100, num_points=5000, num_cached=5, tail=0.3)
    distinct = {}
    for shared_tail in (False, True):
        q = IndexProposal(MAPAIndex(table, num_points=5000), defensive=0.1, shared_tail=shared_tail)
        values, _ = q.index_particles(1, 10)
        uncached = (values.T.unsqueeze(-1) != table.index.unsqueeze(1)).all(-1)  # (rows, K + S)
        distinct[shared_tail] = len(values.T[uncached].unique())
    assert distinct[False] > 60 and distinct[True] <= 12, distinct


def test_full_cache_sampled_particles_weigh_nothing():
    index = torch.arange(4).repeat(2, 1)
    table = NeighborTable(index, torch.log_softmax(torch.randn(2, 4), -1), torch.full((2,), -math.inf))
    _, log_w = IndexProposal(MAPAIndex(table, num_points=4)).index_particles(4, 3)
    log_p = torch.zeros(7, 2)
    assert torch.all((log_p - log_w)[4:].exp() == 0)
    assert torch.isfinite(log_w).all()


def test_the_tail_share_agrees_with_the_formula():
    """lambda_n from tail_share against dense_r's mass on the uncached indices."""
    table = random_table(batch=3, num_cached=5, tail=0.05)
    for num_neighbors in (1, 3, 5):
        for defensive in (0.0, 0.3):
            r = dense_r(table, 12, num_neighbors, defensive)
            uncached = torch.ones_like(r, dtype=torch.bool).scatter(1, table.index, False)
            lam = IndexProposal(MAPAIndex(table, num_points=12), defensive).tail_share(num_neighbors)
            assert torch.allclose(lam.double(), (r * uncached).sum(1), atol=1e-6)


@pytest.mark.parametrize("kernel", ["bernoulli", "gaussian"])
def test_float32_and_float64_caches_give_the_same_proposal(kernel):
    """Issue 15: binary 784-pixel images with the sharp default kernel put q(n | x_n) near 1
    and a tail near e^-176, below float32's old floor (e^-75 relative to the top weight): the
    float32 tail sat on the floor and lambda_n was 1 there, the defensive 0.1 in float64. Now
    the log tails agree to 1e-3 of themselves and lambda_n to 1e-3, whatever the dtype."""
    from pyro_mapa import MAPAPosterior
    from pyro_mapa.cache import Kernel

    g = torch.Generator().manual_seed(0)
    prototypes = (torch.rand(20, 784, generator=g) < 0.3).double()
    x = (prototypes[torch.randint(0, 20, (400,), generator=g)] + (torch.rand(400, 784, generator=g, dtype=torch.float64) < 0.05)) % 2
    if kernel == "bernoulli":
        fit = lambda data: MAPAPosterior.fit(data, kernel=Kernel.bernoulli(eps=0.1), num_cached=8)  # noqa: E731
    else:
        fit = lambda data: MAPAPosterior.fit(data, kernel=Kernel.gaussian(bandwidth=0.5), num_cached=8)  # noqa: E731
    p64, p32 = fit(x), fit(x.float())
    assert p64.table.log_tail.max() < -100  # far below the old float32 floor
    assert torch.allclose(p32.table.log_tail.double(), p64.table.log_tail, rtol=1e-3, atol=0)
    for num_neighbors in (1, 4):
        lam64 = IndexProposal(p64.index_distribution()).tail_share(num_neighbors)
        lam32 = IndexProposal(p32.index_distribution()).tail_share(num_neighbors)
        assert (lam32.double() - lam64).abs().max() < 1e-3
