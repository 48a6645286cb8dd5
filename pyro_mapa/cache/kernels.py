"""The MAPA kernel: log-weights ``-d(x_n, x_m) / T`` between observations (docs/math.md, section 2).

A :class:`Kernel` is an object; its constructors say what it computes:

* :meth:`Kernel.gaussian`: ``d = ||x_n - x_m||^2`` and ``T = 2 h^2``; by default
  ``h^2 = 2 sigma^2``, because both points carry noise of scale ``sigma``.
* :meth:`Kernel.bernoulli`: ``d = Hamming(x_n, x_m)`` and ``T = 1 / log((1 - eps) / eps)``,
  so that ``q(i = m | x_n) ∝ (eps / (1 - eps))^Hamming``, with a flip probability
  ``eps`` (default :data:`DEFAULT_FLIP_PROB`).
* :meth:`Kernel.custom`: any other observation model, a user distance ``d`` and a
  temperature ``T``.
* :meth:`Kernel.auto`: any of these distances with ``T`` picked from the data, the ``T``
  at which the median, over points, of the perplexity ``exp(H[q(. | x_n)])`` equals
  ``perplexity`` (a t-SNE style calibration, solved by bisection in ``log T`` on up to
  :data:`AUTO_MAX_POINTS` points against all ``N``; :mod:`pyro_mapa.cache.calibration`).

Behaviour that differs between kernels (which data they accept, whether the search may
use the fused matrix product, whether it may translate the data) is a method of the
kernel, so that the neighbour search and the cache never ask which kernel they hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import torch

from .._checks import as_data_tensor, check_positive
from .._tensors import squared_distances
from .calibration import auto_temperature

__all__ = ["AUTO_MAX_POINTS", "DEFAULT_FLIP_PROB", "BernoulliKernel", "CustomKernel", "GaussianKernel", "Kernel"]

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Default Bernoulli flip probability ``eps``: two copies of one binary mean differ
#: in a tenth of their bits before a neighbour is down-weighted by ``e^-2.2``.
DEFAULT_FLIP_PROB = 0.1
#: Points (drawn without replacement, seed 0) that :meth:`Kernel.auto` calibrates on.
AUTO_MAX_POINTS = 512
#: Points whose distances identify a custom kernel's distance in a saved cache.
PROBE_POINTS = 8


@dataclass(frozen=True, kw_only=True)
class Kernel:
    """Log-weights ``-distance(a, b) / temperature`` between observations.

    Build one with :meth:`gaussian`, :meth:`bernoulli`, :meth:`custom` or :meth:`auto`.
    A kernel from :meth:`auto` has ``temperature=None`` until :meth:`calibrated` fits it
    to data (which :meth:`~pyro_mapa.MAPAPosterior.fit` does).

    >>> Kernel.gaussian(sigma=0.5).temperature  # T = 2 h^2 = 4 sigma^2
    1.0
    >>> Kernel.gaussian(sigma=0.5).log_weights(torch.tensor([[0.0]]), torch.tensor([[1.0], [2.0]]))
    tensor([[-1., -4.]])
    """

    temperature: float | None = None
    perplexity: float | None = None

    #: whether the kernel needs 0/1 data
    binary = False

    def __post_init__(self):
        if type(self) is Kernel:
            raise TypeError("Kernel is abstract: build one with Kernel.gaussian, .bernoulli, .custom or .auto")
        if self.temperature is not None:
            object.__setattr__(self, "temperature", check_positive(self.temperature, "temperature"))
        elif self.perplexity is None:
            raise ValueError(f"{type(self).__name__} needs a temperature, or a perplexity to calibrate it on data")

    # -- constructors -------------------------------------------------------------

    @staticmethod
    def gaussian(sigma: float | None = None, *, bandwidth: float | None = None) -> "GaussianKernel":
        """``d = ||x_n - x_m||^2``, ``T = 2 h^2`` with ``h = bandwidth``, or ``h = sqrt(2) sigma``
        from the observation noise ``sigma`` (give one of the two)."""
        if sigma is not None and bandwidth is not None:
            raise ValueError("Kernel.gaussian takes sigma or bandwidth, not both")
        if bandwidth is not None:
            return GaussianKernel(temperature=2.0 * check_positive(bandwidth, "bandwidth") ** 2)
        if sigma is None:
            raise ValueError("Kernel.gaussian needs sigma (the observation noise) or bandwidth (h); Kernel.auto calibrates T")
        return GaussianKernel(temperature=4.0 * check_positive(sigma, "sigma") ** 2)  # T = 2 h^2, h^2 = 2 sigma^2

    @staticmethod
    def bernoulli(eps: float = DEFAULT_FLIP_PROB) -> "BernoulliKernel":
        """``d = Hamming``, ``q ∝ (eps / (1 - eps))^d``: ``T = 1 / log((1 - eps) / eps)``."""
        eps = check_positive(eps, "eps")
        if not eps < 0.5:
            raise ValueError(f"eps is the Bernoulli flip probability and must lie in (0, 0.5), got {eps}")
        return BernoulliKernel(temperature=1.0 / math.log((1.0 - eps) / eps))

    @staticmethod
    def custom(distance: Distance, temperature: float) -> "CustomKernel":
        """Your ``distance(a, b) -> (len(a), len(b))`` and temperature ``T``."""
        return CustomKernel(user_distance=_check_distance(distance), temperature=check_positive(temperature, "temperature"))

    @staticmethod
    def auto(distance: str | Distance = "gaussian", perplexity: float = 10.0) -> "Kernel":
        """The ``distance`` of ``"gaussian"``, ``"bernoulli"`` or a callable, with ``T``
        calibrated on the data so that the median perplexity of ``q(. | x_n)`` is ``perplexity``."""
        perplexity = float(perplexity)  # its range, (1, N), is checked against the data by the calibration
        if distance in ("gaussian", "normal"):
            return GaussianKernel(perplexity=perplexity)
        if distance == "bernoulli":
            return BernoulliKernel(perplexity=perplexity)
        return CustomKernel(user_distance=_check_distance(distance), perplexity=perplexity)

    @staticmethod
    def from_likelihood(
        likelihood: str = "normal",
        *,
        scale: float | None = None,
        bandwidth: float | str | None = None,
        distance: Distance | None = None,
        temperature: float | None = None,
        perplexity: float = 10.0,
    ) -> "Kernel":
        """The shorthand of :meth:`~pyro_mapa.MAPAPosterior.fit`: ``likelihood="normal"``
        (``scale=sigma`` or ``bandwidth=h``), ``"bernoulli"`` (``scale=eps``) or ``"custom"``
        (``distance``, ``temperature``); ``bandwidth="auto"`` calibrates ``T`` for any of them."""
        if bandwidth is not None and not isinstance(bandwidth, str):
            bandwidth = check_positive(bandwidth, "bandwidth")
        elif isinstance(bandwidth, str) and bandwidth != "auto":
            raise ValueError(f"bandwidth must be a positive number or 'auto', got {bandwidth!r}")
        auto = bandwidth == "auto"
        if scale is not None and bandwidth is not None:
            raise ValueError(
                f"give scale or bandwidth, not both (got scale={scale!r}, bandwidth={bandwidth!r}): "
                "the bandwidth would override the scale"
            )
        if likelihood in ("normal", "bernoulli") and (distance is not None or temperature is not None):
            raise ValueError("distance and temperature are for likelihood='custom'")
        if likelihood == "normal":
            if auto:
                return Kernel.auto("gaussian", perplexity)
            if bandwidth is None:
                if scale is None:
                    raise ValueError(
                        "likelihood='normal' needs scale (the observation noise sigma), a bandwidth h, or bandwidth='auto'"
                    )
                return Kernel.gaussian(check_positive(scale, "scale"))
            return Kernel.gaussian(bandwidth=bandwidth)
        if likelihood == "bernoulli":
            if bandwidth is not None and not auto:
                raise ValueError("likelihood='bernoulli' takes scale (the flip probability eps), not a bandwidth")
            if auto:
                return Kernel.auto("bernoulli", perplexity)
            eps = DEFAULT_FLIP_PROB if scale is None else check_positive(scale, "scale")
            if not eps < 0.5:
                raise ValueError(f"scale is the Bernoulli flip probability eps and must lie in (0, 0.5), got {eps}")
            return Kernel.bernoulli(eps)
        if likelihood == "custom":
            if distance is None or not callable(distance):
                raise ValueError("likelihood='custom' needs distance=callable(a, b) -> (len(a), len(b)) distances")
            if scale is not None or (bandwidth is not None and not auto):
                raise ValueError("likelihood='custom' takes temperature (or bandwidth='auto'), not scale or bandwidth")
            if auto:
                return Kernel.auto(distance, perplexity)
            if temperature is None:
                raise ValueError("likelihood='custom' needs temperature T (log-weights are -d / T) or bandwidth='auto'")
            return Kernel.custom(distance, temperature)
        raise ValueError(f"likelihood must be 'normal', 'bernoulli' or 'custom', got {likelihood!r}")

    @staticmethod
    def class_of(settings: dict) -> type["Kernel"]:
        """The class of the kernel that :meth:`describe` described (a saved cache's)."""
        return {GaussianKernel.name: GaussianKernel, BernoulliKernel.name: BernoulliKernel}.get(
            settings["name"], CustomKernel
        )

    @staticmethod
    def from_settings(settings: dict, distance: Distance | None = None) -> "Kernel":
        """The kernel that :meth:`describe` described, with the user's ``distance`` for a custom one."""
        cls = Kernel.class_of(settings)
        if cls is CustomKernel:
            return CustomKernel(user_distance=_check_distance(distance), temperature=settings["temperature"])
        return cls(temperature=settings["temperature"])

    # -- what every kernel does ---------------------------------------------------

    name = "kernel"

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``d(a_i, b_j)`` for all pairs (``len(a) x len(b)``)."""
        raise NotImplementedError

    def log_weights(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``-d(a_i, b_j) / T`` for all pairs (``len(a) x len(b)``)."""
        return torch.as_tensor(self.distance(a, b)).to(a.dtype) / -self._calibrated_temperature()

    def check_data(self, data, name: str = "data") -> torch.Tensor:
        """``data`` as an ``N x D`` floating tensor of finite values this kernel accepts."""
        return as_data_tensor(data, name, binary=self.binary)

    def check_range(self, data: torch.Tensor, name: str = "data") -> torch.Tensor:
        """``data`` if the kernel's arithmetic holds on its values (any, by default)."""
        return data

    def calibrated(self, data: torch.Tensor) -> "Kernel":
        """This kernel with ``T`` fitted to ``data`` if it has none (:meth:`auto`)."""
        if self.temperature is not None:
            return self
        temperature = auto_temperature(data, self.distance, self.perplexity, AUTO_MAX_POINTS)
        return replace(self, temperature=temperature, perplexity=None)  # T is what identifies it from now on

    def prepared(self, queries: torch.Tensor, data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two point sets as the search should see them (the same by default)."""
        return queries, data

    def column_shift(self, b: torch.Tensor) -> torch.Tensor | None:
        """Per-column constants of the fused search (:meth:`shifted_log_weights`), or ``None``."""
        return None

    def cancels(self, queries: torch.Tensor, data: torch.Tensor, tolerance: float) -> bool:
        """Whether the search's values may have lost ``tolerance`` nats that
        :meth:`candidate_log_weights` recovers for the cached candidates (no by default: the
        values are the kernel's own)."""
        return False

    def candidate_log_weights(self, queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """``-d(a_i, c_ik) / T`` for each query ``a_i`` and its candidates ``c_ik`` (``(rows, K_c, D)``)."""
        raise NotImplementedError

    def shifted_log_weights(
        self, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, column_shift: torch.Tensor | None
    ) -> torch.Tensor:
        """``-d(a_i, b_j) / T + c_i`` written into ``out``, for some per-row constants ``c_i``
        (neighbours and normalised probabilities do not depend on them). Here ``c_i = 0``,
        and the distance is checked for shape and NaN."""
        weights = self.log_weights(a, b)
        if weights.shape != out.shape:
            raise ValueError(
                f"the distance of kernel {self.name!r} returned shape {tuple(weights.shape)} for "
                f"{len(a)} x {len(b)} points; it must return one distance per pair"
            )
        if not torch.isfinite(weights).all():
            raise ValueError(
                f"the distance of kernel {self.name!r} returned NaN or infinite values; it must return "
                "finite distances (a very large one gives a weight of about 0)"
            )
        return out.copy_(weights)

    def describe(self) -> dict:
        """Settings that identify the kernel (stored in and checked by saved caches)."""
        return {"name": self.name, "temperature": self._calibrated_temperature()}

    def data_settings(self, data: torch.Tensor) -> dict:
        """Settings that identify what the kernel computes on ``data`` beyond :meth:`describe`
        (none for the built-in kernels, whose distance its name fixes)."""
        return {}

    def _calibrated_temperature(self) -> float:
        if self.temperature is None:
            raise ValueError("this kernel's temperature is calibrated on data: call kernel.calibrated(data) first")
        return self.temperature


def _check_distance(distance) -> Distance:
    if distance is None or not callable(distance):
        raise ValueError("a custom kernel needs distance=callable(a, b) -> (len(a), len(b)) distances")
    return distance


@dataclass(frozen=True, kw_only=True)
class _SquaredEuclidean(Kernel):
    """Kernels whose distance is ``|a|^2 + |b|^2 - 2 a.b``: the search drops ``c_i = |a_i|^2 / T``
    and is left with one fused matrix product, ``(2 a.b - |b|^2) / T``, written in place."""

    def check_range(self, data: torch.Tensor, name: str = "data") -> torch.Tensor:
        """Refuse values whose squared distances overflow the dtype."""
        largest = max(abs(float(data.max())), abs(float(data.min())))
        if 4 * largest**2 * data.shape[1] >= torch.finfo(data.dtype).max:
            raise ValueError(
                f"{name} holds values up to {largest:.3g}: squared distances between its points overflow "
                f"{data.dtype}; rescale the data (and sigma with it) or use float64"
            )
        if 2.0 / self._calibrated_temperature() >= torch.finfo(data.dtype).max:
            raise ValueError(
                f"the kernel's temperature T = {self.temperature:.3g} is too small for {data.dtype} (2 / T "
                "overflows); rescale the data and sigma together, or use float64"
            )
        return data

    def column_shift(self, b: torch.Tensor) -> torch.Tensor:
        """``-|b_j|^2 / T``, computed once per data set."""
        temperature = self._calibrated_temperature()
        return torch.linalg.vector_norm(b, dim=1).square_().div_(-temperature).unsqueeze(0)

    def shifted_log_weights(self, a, b, out, column_shift):
        return torch.addmm(column_shift, a, b.T, alpha=2.0 / self._calibrated_temperature(), out=out)


@dataclass(frozen=True, kw_only=True)
class GaussianKernel(_SquaredEuclidean):
    """``d = ||x_n - x_m||^2`` (:meth:`Kernel.gaussian`)."""

    name = "normal"

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return squared_distances(a, b)

    def prepared(self, queries: torch.Tensor, data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both sets moved to the data's mean when the cancellation in ``|a|^2 + |b|^2 - 2 a.b``
        (about ``2 eps |x|^2 / T`` in the log-weights) could matter; squared distances do not
        change under a common translation."""
        if not self.cancels(queries, data, tolerance=1e-5):
            return queries, data
        center = data.mean(0)
        centred = data - center
        return (centred if queries is data else queries - center), centred  # fit: one copy, not two

    def cancels(self, queries: torch.Tensor, data: torch.Tensor, tolerance: float) -> bool:
        """Whether ``2 eps |x|^2 / T`` reaches ``tolerance`` nats (float32 data far out or a small ``T``)."""
        largest = max(torch.linalg.vector_norm(t, dim=1).max().item() for t in (queries, data)) ** 2
        return 2 * largest * torch.finfo(data.dtype).eps / self._calibrated_temperature() >= tolerance

    def candidate_log_weights(self, queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """``-||a_i - c_ik||^2 / T`` by differences: no cancellation."""
        return (queries.unsqueeze(1) - candidates).pow(2).sum(-1) / -self._calibrated_temperature()


@dataclass(frozen=True, kw_only=True)
class BernoulliKernel(_SquaredEuclidean):
    """``d = Hamming`` on 0/1 data (:meth:`Kernel.bernoulli`): for binary vectors the squared
    Euclidean distance, exact integers in floating point up to ``2^24`` bits."""

    name = "bernoulli"
    binary = True

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Pairwise Hamming distances.

        >>> Kernel.bernoulli().distance(torch.tensor([[0.0, 1.0, 1.0]]), torch.tensor([[1.0, 1.0, 0.0]]))
        tensor([[2.]])
        """
        return squared_distances(a, b).round_()


@dataclass(frozen=True, kw_only=True)
class CustomKernel(Kernel):
    """A user's distance (:meth:`Kernel.custom`), named ``custom:<module>.<qualname>``."""

    user_distance: Distance

    @property
    def name(self) -> str:
        d = self.user_distance
        return f"custom:{getattr(d, '__module__', '')}.{getattr(d, '__qualname__', '')}"

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.user_distance(a, b)

    def describe(self) -> dict:
        """``"custom"`` and ``T``: a user distance is identified by what it computes
        (:meth:`data_settings`), not by its name."""
        return {"name": "custom", "temperature": self._calibrated_temperature()}

    def data_settings(self, data: torch.Tensor) -> dict:
        """The distances among the first (up to) 8 points, ``distance_probe``: what the
        distance computes, so that a cache loaded with another distance is refused."""
        probe = data[:PROBE_POINTS]
        return {"distance_probe": torch.as_tensor(self.distance(probe, probe)).detach().double().cpu().flatten().tolist()}
