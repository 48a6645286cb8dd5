"""Small neighbour tables for the tests, and their dense reference."""

import math

import torch

from pyro_mapa import NeighborTable


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
