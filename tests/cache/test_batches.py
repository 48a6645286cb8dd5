"""Minibatches of neighbourhoods: the groups the cache says, and estimates that stay unbiased
(exact enumeration over the anchors, Monte Carlo, and MAPA_ELBO at K = N)."""

import pyro
import pytest
import torch
from toy_models import Empirical

from pyro_mapa import (
    MAPA_ELBO,
    MAPAGuide,
    MAPAPosterior,
    NeighborhoodBatches,
    NeighborTable,
)


def random_table(num_points=9, num_cached=4, seed=0):
    """Rows of distinct indices; row 3 does not hold point 3 (a duplicate image can push a
    point out of its own row)."""
    g = torch.Generator().manual_seed(seed)
    index = torch.stack([torch.randperm(num_points, generator=g)[:num_cached] for _ in range(num_points)])
    for n in range(num_points):
        if n != 3 and n not in index[n]:
            index[n, 0] = n
    index[3] = torch.tensor([i for i in range(num_points) if i != 3][:num_cached])
    return NeighborTable(index, torch.zeros(num_points, num_cached), torch.zeros(num_points))


def test_each_group_is_its_anchor_and_the_first_others_of_its_row():
    table = random_table()
    batches = NeighborhoodBatches(table, group_size=3)
    for a, group in enumerate(batches.members.tolist()):
        others = [i for i in table.index[a].tolist() if i != a][:2]
        assert group == [a, *others]
    counts = torch.zeros(9)
    for group in batches.members.tolist():
        for n in group:
            counts[n] += 1
    assert torch.allclose(batches.weights, 3 / counts)


@pytest.mark.parametrize("group_size", [1, 2, 5])
def test_the_weighted_batch_sum_is_unbiased_over_every_anchor(float64, group_size):
    """One group per batch (B = g), every anchor equally likely: the mean over anchors of
    ``(N / B) sum_slots w_n f_n`` is ``sum_n f_n`` exactly."""
    table = random_table()
    f = torch.randn(9, generator=torch.Generator().manual_seed(1))
    batches = NeighborhoodBatches(table, group_size)
    per_anchor = [(9 / group_size) * (batches.weights[group] * f[group]).sum() for group in batches.members]
    assert torch.stack(per_anchor).mean().item() == pytest.approx(f.sum().item(), abs=1e-12)


def test_sampled_batches_are_unbiased_by_monte_carlo(float64):
    table = random_table()
    batches = NeighborhoodBatches(table, 3, generator=torch.Generator().manual_seed(3))
    in_groups = torch.bincount(batches.members.reshape(-1), minlength=9).double()
    # large where a point is in many groups: unweighted batches would overcount it
    f = in_groups + torch.randn(9, generator=torch.Generator().manual_seed(2))
    estimates = []
    for _ in range(20000):
        idx, weights = batches.sample(6)
        estimates.append((9 / 6) * (weights * f[idx]).sum())
    estimates = torch.stack(estimates)
    stderr = estimates.std() / len(estimates) ** 0.5
    assert abs(estimates.mean() - f.sum()) < 4 * stderr


def test_mapa_bound_under_the_weights_averages_to_the_full_batch_bound(float64):
    """At K = N the bound is exact and deterministic: averaged over the N anchors, the weighted
    loss of one group's subsample equals the full batch's loss, and so does its gradient."""
    problem = Empirical(num_points=12)
    posterior = MAPAPosterior.fit(problem.data, scale=problem.sigma, num_cached=5)
    guide = MAPAGuide(problem.model, posterior, create_plates=problem.create_plates)
    elbo = MAPA_ELBO(num_neighbors=problem.N, num_samples=0)
    full = elbo.differentiable_loss(problem.model, guide, problem.data)
    batches = NeighborhoodBatches(posterior.table, group_size=4)
    losses = []
    for group in batches.members:
        with pyro.poutine.scale(scale=batches.weights[group]):
            losses.append(elbo.differentiable_loss(problem.model, guide, problem.data[group], group))
    average = torch.stack(losses).mean()
    assert torch.allclose(average, full, atol=1e-9, rtol=0)
    codes = pyro.param("codes").unconstrained()
    assert torch.allclose(torch.autograd.grad(average, codes)[0], torch.autograd.grad(full, codes)[0], atol=1e-9)


def test_bad_sizes_are_named():
    table = random_table()
    with pytest.raises(ValueError, match="group_size=0 must lie in"):
        NeighborhoodBatches(table, 0)
    with pytest.raises(ValueError, match=r"group_size=6 must lie in \[1, 5\]"):
        NeighborhoodBatches(table, 6)
    with pytest.raises(ValueError, match="batch_size=7 must be a multiple of group_size=2"):
        NeighborhoodBatches(table, 2).sample(7)
