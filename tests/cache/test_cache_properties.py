"""Property tests of the cache over random small data (hypothesis): every row normalises,
and float32 agrees with a float64 brute force, for bandwidths down to sigma = 1e-3."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_mapa import MAPAPosterior


def brute_force(data: torch.Tensor, sigma: float) -> torch.Tensor:
    """Dense log q in float64 by direct differences: T = 4 sigma^2."""
    x = data.double()
    return torch.log_softmax(-((x[:, None] - x[None]) ** 2).sum(-1) / (4 * sigma**2), dim=-1)


@st.composite
def problems(draw):
    num_points = draw(st.integers(3, 40))
    dim = draw(st.integers(1, 30))
    seed = draw(st.integers(0, 2**31 - 1))
    data = torch.rand(num_points, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    if draw(st.booleans()):  # near-twins, the hard case for the fused product
        data = torch.cat([data, data + 1e-4 * torch.rand(data.shape, generator=torch.Generator().manual_seed(seed + 1),
                                                         dtype=torch.float64)])
    sigma = 10 ** draw(st.floats(-3.0, 0.0))
    num_cached = draw(st.integers(1, len(data)))
    return data, sigma, num_cached


@settings(max_examples=60, deadline=None, derandomize=True)
@given(problems())
def test_rows_normalise_and_float32_agrees_with_a_float64_brute_force(problem):
    data, sigma, num_cached = problem
    dense = brute_force(data, sigma)
    for dtype, normalisation in ((torch.float64, 1e-5), (torch.float32, 1e-3)):
        table = MAPAPosterior.fit(data.to(dtype), scale=sigma, num_cached=num_cached).table
        total = torch.logaddexp(table.log_prob.double().logsumexp(1), table.log_tail.double())
        assert total.abs().max() < normalisation
        expected = dense.gather(1, table.index)
        carries_mass = expected > math.log(1e-6)  # the entries that matter (the rest underflow differently)
        assert (table.log_prob.double() - expected)[carries_mass].abs().max() < 1e-3
