"""MAPAIndex: a proper distribution over N indices, checked against a dense reference."""

import torch
from toy_tables import dense_q, random_table

from pyro_mapa import MAPAIndex
from pyro_mapa.cache.index import sample_uncached, sample_uncached_shared


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
    draws = sample_uncached(index, 9, 30000)
    for row, allowed in enumerate([[0, 2, 4, 5, 6, 8], [3, 4, 5, 6, 7, 8]]):
        counts = torch.bincount(draws[:, row], minlength=9).double() / 30000
        expected = torch.zeros(9, dtype=torch.float64)
        expected[allowed] = 1 / 6
        assert torch.allclose(counts, expected, atol=0.015)


def test_shared_uncached_draws_are_uniform_and_independent_within_a_row():
    """Each row's draws from the shared stream: never cached, uniform on the rest, and
    consecutive draws independent (pair frequencies 1/36); the stream's draws keep coming
    when a row's cache holds most indices (the second row: its first 30,000 draws must skip
    the 3 of 9 indices it caches)."""
    index = torch.tensor([[1, 3, 7], [0, 1, 2]])
    draws = sample_uncached_shared(index, 9, 30000)
    assert draws.shape == (30000, 2)
    for row, allowed in enumerate([[0, 2, 4, 5, 6, 8], [3, 4, 5, 6, 7, 8]]):
        counts = torch.bincount(draws[:, row], minlength=9).double() / 30000
        expected = torch.zeros(9, dtype=torch.float64)
        expected[allowed] = 1 / 6
        assert torch.allclose(counts, expected, atol=0.015)
        pairs = torch.bincount(draws[:-1, row] * 9 + draws[1:, row], minlength=81).double() / 29999
        expected_pairs = (expected.unsqueeze(1) * expected).flatten()
        assert torch.allclose(pairs, expected_pairs, atol=0.006)


def test_shared_uncached_draws_fall_back_when_the_stream_runs_short():
    """A cache of 7 of 9 indices rejects most candidates: about a third of the calls' streams
    hold fewer than the 30 draws asked for, and the fallback fills the last draws. They stay
    uniform on the row's 2 uncached indices and independent of one another (the last two
    equal half the time), and the row draws no cached index."""
    index = torch.tensor([[0, 1, 2, 3, 4, 5, 6], [2, 3, 4, 5, 6, 7, 8]])
    draws = torch.stack([sample_uncached_shared(index, 9, 30) for _ in range(4000)])  # (calls, 30, rows)
    for row, allowed in enumerate([[7, 8], [0, 1]]):
        assert set(draws[..., row].flatten().tolist()) == set(allowed)
        last, before = draws[:, -1, row], draws[:, -2, row]
        for value in allowed:
            assert abs((last == value).double().mean().item() - 0.5) < 0.03
        assert abs((last == before).double().mean().item() - 0.5) < 0.03


def test_shared_uncached_draws_without_a_cache():
    """K_c = 0: every index is uncached, the draws are the stream itself."""
    draws = sample_uncached_shared(torch.zeros(2, 0, dtype=torch.long), 5, 20000)
    assert torch.equal(draws[:, 0], draws[:, 1])
    assert torch.allclose(torch.bincount(draws[:, 0], minlength=5).double() / 20000, torch.full((5,), 0.2,
                          dtype=torch.float64), atol=0.015)


def test_rows_share_their_uncached_draws():
    """Rows whose caches miss the stream's candidates draw the same indices: at N = 1,000 and
    K_c = 5, two rows' first 3 draws coincide unless a cache holds one of the first candidates
    (0.5% of the time each); independent draws would coincide 0.1% of the time."""
    index = torch.stack([torch.randperm(1000)[:5] for _ in range(2)])
    shared = torch.stack([sample_uncached_shared(index, 1000, 3) for _ in range(2000)])
    assert (shared[..., 0] == shared[..., 1]).double().mean() > 0.95
    alone = torch.stack([sample_uncached(index, 1000, 3) for _ in range(2000)])
    assert (alone[..., 0] == alone[..., 1]).double().mean() < 0.01


def test_dense_log_prob_is_the_dense_reference():
    table = random_table()
    assert torch.allclose(table.dense_log_prob(12).exp().double(), dense_q(table, 12), atol=1e-6)


def test_dense_log_prob_of_a_batched_table():
    table = random_table(batch=6)
    batched = type(table)(*(t.reshape(2, 3, *t.shape[1:]) for t in table))
    assert torch.equal(batched.dense_log_prob(12).reshape(6, 12), table.dense_log_prob(12))
