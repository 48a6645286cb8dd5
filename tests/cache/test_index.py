"""MAPAIndex: a proper distribution over N indices, checked against a dense reference."""

import torch
from toy_tables import dense_q, random_table

from pyro_mapa import MAPAIndex
from pyro_mapa.cache.index import sample_uncached


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


def test_dense_log_prob_is_the_dense_reference():
    table = random_table()
    assert torch.allclose(table.dense_log_prob(12).exp().double(), dense_q(table, 12), atol=1e-6)


def test_dense_log_prob_of_a_batched_table():
    table = random_table(batch=6)
    batched = type(table)(*(t.reshape(2, 3, *t.shape[1:]) for t in table))
    assert torch.equal(batched.dense_log_prob(12).reshape(6, 12), table.dense_log_prob(12))
