"""The MAPA kernel: log-weights ``-d(x_n, x_m) / T`` between observations (SPEC section 2).

* Gaussian likelihood: ``d = ||x_n - x_m||^2`` and ``T = 2 h^2``; by default
  ``h^2 = 2 sigma^2`` because both points carry noise of scale ``sigma``.
* Bernoulli likelihood: ``d = Hamming(x_n, x_m)`` and ``T = 1 / log((1 - eps) / eps)``,
  so that ``q(i = m | x_n) ∝ (eps / (1 - eps))^Hamming``, with a flip probability
  ``eps`` (default :data:`DEFAULT_FLIP_PROB`).
* Any other observation model: a user distance ``d`` and a temperature ``T``.

``bandwidth="auto"`` picks ``T`` from the data (any likelihood): the ``T`` at which
the median, over points, of the perplexity ``exp(H[q(. | x_n)])`` of the index
posterior equals ``perplexity`` (a t-SNE style calibration, solved by bisection in
``log T`` on up to :data:`AUTO_MAX_POINTS` points against all ``N``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from ._checks import check_positive

__all__ = [
    "AUTO_MAX_POINTS",
    "DEFAULT_FLIP_PROB",
    "DISTANCES",
    "Kernel",
    "custom_kernel_name",
    "hamming",
    "make_kernel",
    "median_perplexity",
    "squared_euclidean",
]

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Default Bernoulli flip probability ``eps``: two copies of one binary mean differ
#: in a tenth of their bits before a neighbour is down-weighted by ``e^-2.2``.
DEFAULT_FLIP_PROB = 0.1
#: Points (drawn without replacement, seed 0) that ``bandwidth="auto"`` calibrates on.
AUTO_MAX_POINTS = 512


def squared_euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise ``||a_i - b_j||^2`` as one matrix product (``len(a) x len(b)``).

    >>> squared_euclidean(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]]))
    tensor([[25.]])
    """
    out = torch.addmm((b * b).sum(1).unsqueeze(0), a, b.T, alpha=-2.0)
    out += (a * a).sum(1, keepdim=True)
    return out.clamp_min_(0.0)


def hamming(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise Hamming distance of binary vectors.

    For 0/1 vectors the Hamming distance equals the squared Euclidean distance, so
    this is one matrix product too (exact in floating point up to ``2^24`` bits).

    >>> hamming(torch.tensor([[0.0, 1.0, 1.0]]), torch.tensor([[1.0, 1.0, 0.0]]))
    tensor([[2.]])
    """
    return squared_euclidean(a, b).round_()


def custom_kernel_name(distance: Distance) -> str:
    """``"custom:<module>.<qualname>"``: how a user distance is named in fingerprints."""
    return f"custom:{getattr(distance, '__module__', '')}.{getattr(distance, '__qualname__', '')}"


#: The distance of each built-in likelihood.
DISTANCES: dict[str, Distance] = {"normal": squared_euclidean, "bernoulli": hamming}


@dataclass(frozen=True)
class Kernel:
    """Log-weights ``-distance(a, b) / temperature``, with a name that fingerprints it."""

    name: str
    distance: Distance
    temperature: float

    def log_weights(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``-d(a_i, b_j) / T`` for all pairs (``len(a) x len(b)``)."""
        return self.distance(a, b).to(a.dtype) / -self.temperature

    def column_shift(self, b: torch.Tensor) -> torch.Tensor | None:
        """``-|b_j|^2 / T`` for the built-in kernels (computed once per data set), else ``None``."""
        if self.name in DISTANCES:
            return torch.linalg.vector_norm(b, dim=1).square_().div_(-self.temperature).unsqueeze(0)
        return None

    def shifted_log_weights(
        self, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, column_shift: torch.Tensor | None
    ) -> torch.Tensor:
        """``-d(a_i, b_j) / T + c_i`` written into ``out``, for some per-row constants ``c_i``.

        Neighbours and normalised probabilities do not depend on ``c_i``. For the
        built-in kernels ``d = |a|^2 + |b|^2 - 2 a.b``, so dropping ``c_i = |a_i|^2 / T``
        leaves one fused matrix product, ``(2 a.b - |b|^2) / T``, written in place
        (finite for finite data; ``column_shift`` is :meth:`column_shift` of ``b``).
        A user distance is checked for shape and NaN.
        """
        if column_shift is not None:
            return torch.addmm(column_shift, a, b.T, alpha=2.0 / self.temperature, out=out)
        weights = self.log_weights(a, b)
        if weights.shape != out.shape:
            raise ValueError(
                f"the distance of kernel {self.name!r} returned shape {tuple(weights.shape)} for "
                f"{len(a)} x {len(b)} points; it must return one distance per pair"
            )
        if torch.isnan(weights).any():
            raise ValueError(f"the distance of kernel {self.name!r} returned NaN")
        return out.copy_(weights)

    def describe(self) -> dict:
        """Settings that identify the kernel (stored in and checked by saved caches)."""
        return {"name": self.name, "temperature": self.temperature}


def median_perplexity(log_weights: torch.Tensor, temperature: float = 1.0) -> float:
    """Median over rows of ``exp(H[softmax(log_weights / temperature)])``."""
    log_q = torch.log_softmax(log_weights / temperature, dim=-1)
    entropy = -(log_q.exp() * log_q).sum(-1)
    return float(entropy.exp().median())


def _auto_temperature(data: torch.Tensor, distance: Distance, perplexity: float) -> float:
    num_points = data.shape[0]
    if not 1.0 < perplexity < num_points:
        raise ValueError(f"perplexity must lie in (1, N={num_points}) for bandwidth='auto', got {perplexity}")
    generator = torch.Generator().manual_seed(0)
    rows = torch.randperm(num_points, generator=generator)[:AUTO_MAX_POINTS].to(data.device)
    neg_d = -distance(data[rows], data).double()
    # bisection in log T: the perplexity grows monotonically with T
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


def make_kernel(
    data: torch.Tensor,
    likelihood: str,
    scale: float | None,
    bandwidth: float | str | None,
    distance: Distance | None,
    temperature: float | None,
    perplexity: float,
) -> Kernel:
    """Resolve the user's settings into a :class:`Kernel` (see the module docstring)."""
    if bandwidth is not None and not isinstance(bandwidth, str):
        bandwidth = check_positive(bandwidth, "bandwidth")
    elif bandwidth is not None and bandwidth != "auto":
        raise ValueError(f"bandwidth must be a positive number or 'auto', got {bandwidth!r}")
    if likelihood == "normal":
        if distance is not None or temperature is not None:
            raise ValueError("distance and temperature are for likelihood='custom'")
        name, dist_fn = "normal", DISTANCES["normal"]
        if bandwidth is None and scale is None:
            raise ValueError(
                "likelihood='normal' needs scale (the observation noise sigma), a bandwidth h, or bandwidth='auto'"
            )
        if isinstance(bandwidth, float):
            temperature = 2.0 * bandwidth**2
        elif bandwidth is None:
            temperature = 4.0 * check_positive(scale, "scale") ** 2  # T = 2 h^2, h^2 = 2 sigma^2
    elif likelihood == "bernoulli":
        if distance is not None or temperature is not None:
            raise ValueError("distance and temperature are for likelihood='custom'")
        if isinstance(bandwidth, float):
            raise ValueError("likelihood='bernoulli' takes scale (the flip probability eps), not a bandwidth")
        name, dist_fn = "bernoulli", DISTANCES["bernoulli"]
        if bandwidth is None:
            eps = DEFAULT_FLIP_PROB if scale is None else check_positive(scale, "scale")
            if not eps < 0.5:
                raise ValueError(f"scale is the Bernoulli flip probability eps and must lie in (0, 0.5), got {eps}")
            temperature = 1.0 / math.log((1.0 - eps) / eps)
    elif likelihood == "custom":
        if distance is None or not callable(distance):
            raise ValueError("likelihood='custom' needs distance=callable(a, b) -> (len(a), len(b)) distances")
        if scale is not None or isinstance(bandwidth, float):
            raise ValueError("likelihood='custom' takes temperature (or bandwidth='auto'), not scale or bandwidth")
        name, dist_fn = custom_kernel_name(distance), distance
        if bandwidth is None:
            if temperature is None:
                raise ValueError("likelihood='custom' needs temperature T (log-weights are -d / T) or bandwidth='auto'")
            temperature = check_positive(temperature, "temperature")
    else:
        raise ValueError(f"likelihood must be 'normal', 'bernoulli' or 'custom', got {likelihood!r}")
    if bandwidth == "auto":
        temperature = _auto_temperature(data, dist_fn, perplexity)
    return Kernel(name, dist_fn, float(temperature))
