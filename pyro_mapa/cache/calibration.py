"""The automatic temperature: ``T`` at which ``q(. | x_n)`` has a target median perplexity.

The perplexity ``exp(H[q(. | x_n)])`` of a point's index posterior grows monotonically
with ``T`` (from its number of nearest ties at ``T -> 0`` to ``N``), so the ``T`` at
which its median over points equals the target is found by bisection in ``log T``
(docs/math.md, section 2).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

__all__ = ["auto_temperature", "median_perplexity"]


def median_perplexity(log_weights: torch.Tensor, temperature: float = 1.0) -> float:
    """Median over rows of ``exp(H[softmax(log_weights / temperature)])``.

    >>> median_perplexity(torch.zeros(3, 4))  # uniform over 4
    4.0
    """
    log_q = torch.log_softmax(log_weights / temperature, dim=-1)
    entropy = -(log_q.exp() * log_q).sum(-1)
    return float(entropy.exp().median())


def auto_temperature(
    data: torch.Tensor,
    distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    perplexity: float,
    max_points: int,
) -> float:
    """``T`` such that the median perplexity of ``softmax(-distance(x_n, data) / T)`` over up
    to ``max_points`` points ``x_n`` (drawn without replacement, seed 0) is ``perplexity``."""
    num_points = data.shape[0]
    if not 1.0 < perplexity < num_points:
        raise ValueError(f"perplexity must lie in (1, N={num_points}) for bandwidth='auto', got {perplexity}")
    generator = torch.Generator().manual_seed(0)
    rows = torch.randperm(num_points, generator=generator)[:max_points].to(data.device)
    neg_d = -torch.as_tensor(distance(data[rows], data)).double()
    if neg_d.shape != (len(rows), num_points) or not torch.isfinite(neg_d).all():
        raise ValueError(
            f"bandwidth='auto': the distance returned shape {tuple(neg_d.shape)} for {len(rows)} x {num_points} "
            "points, or non-finite values; it must return one finite distance per pair"
        )
    # as T -> 0 the perplexity of a row falls to its number of nearest ties (duplicates)
    ties = (neg_d == neg_d.max(1, keepdim=True).values).sum(1).double().median().item()
    if ties >= perplexity:
        raise ValueError(
            f"bandwidth='auto' cannot reach perplexity={perplexity}: the median point has {ties:.0f} exact "
            "duplicates (or equidistant nearest neighbours); raise perplexity or give the bandwidth"
        )
    positive = -neg_d[neg_d < 0]
    log_t = math.log(float(positive.median())) if positive.numel() else 0.0
    lo, hi = log_t - 1.0, log_t + 1.0
    for _ in range(200):  # bracket the target: T spans e^{+-400} at most
        if median_perplexity(neg_d, math.exp(lo)) <= perplexity:
            break
        lo -= 2.0
    for _ in range(200):
        if median_perplexity(neg_d, math.exp(hi)) >= perplexity:
            break
        hi += 2.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if median_perplexity(neg_d, math.exp(mid)) < perplexity:
            lo = mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))
