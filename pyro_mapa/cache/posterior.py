"""The MAPA cache: the model-agnostic index posterior of a data set (docs/math.md, section 2).

:meth:`MAPAPosterior.fit` computes, once per data set, each training point's
``K_c`` most probable indices under ``q(i = m | x_n) ∝ exp(-d(x_n, x_m) / T)``
(the point itself included), their normalised log-probabilities and the log tail
mass. The cache is saved with a fingerprint of the data and the settings, and a
load refuses any other data (:mod:`pyro_mapa.cache.storage`).
"""

from __future__ import annotations

import os
import warnings
from typing import Callable

import torch
import torch.distributed as dist

from .._checks import as_data_tensor, check_num_neighbors
from .approximate import approximate_neighbors
from .distributed import check_same_inputs, from_rank_zero, gather_rows, shared_kernel
from .index import MAPAIndex
from .kernels import PROBE_POINTS, CustomKernel, Kernel
from .neighbors import DEFAULT_BLOCK_ENTRIES, NeighborTable, exact_neighbors
from .storage import fingerprint, read_cache_file, write_cache_file

__all__ = ["MAPAPosterior"]


class MAPAPosterior:
    """A cached MAPA index posterior over a training set of ``N`` points.

    Build it with :meth:`fit` or :meth:`load`; :meth:`index_distribution` gives
    ``q(i | x_n)`` for training points, :meth:`query` for new points.

    >>> data = torch.tensor([[0.0], [0.1], [3.0]], dtype=torch.float64)
    >>> posterior = MAPAPosterior.fit(data, kernel=Kernel.gaussian(sigma=0.1), num_cached=2)
    >>> posterior.table.index
    tensor([[0, 1],
            [1, 0],
            [2, 1]])
    """

    def __init__(self, data: torch.Tensor, kernel: Kernel, table: NeighborTable, fingerprint: str,
                 search: str = "exact"):
        self.data = data
        self.kernel = kernel
        self.table = table
        self.fingerprint = fingerprint
        self.search = search  # how the table was found: "exact", or "faiss" (approximate)

    # -- construction -------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        data,
        likelihood: str | None = None,
        *,
        kernel: Kernel | None = None,
        scale: float | None = None,
        bandwidth: float | str | None = None,
        num_cached: int = 64,
        distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        temperature: float | None = None,
        perplexity: float | None = None,
        max_block_entries: int = DEFAULT_BLOCK_ENTRIES,
        progress: bool | None = None,
        distributed: bool = False,
        search: str = "exact",
    ) -> "MAPAPosterior":
        """Compute the cache of ``data`` (``N x D``, any device, float32 or float64).

        Give the kernel as an object (``kernel=Kernel.gaussian(sigma=0.1)``, see
        :class:`~pyro_mapa.cache.Kernel`) or by the shorthand of
        :meth:`~pyro_mapa.cache.Kernel.from_likelihood`:

        :param likelihood: ``"normal"`` (the default; ``d = ||x_n - x_m||^2``, ``T = 2 h^2``),
            ``"bernoulli"`` (``d = Hamming``, ``T = 1 / log((1 - eps) / eps)``) or
            ``"custom"`` (your ``distance`` and ``temperature``).
        :param kernel: the kernel itself (then none of the shorthand's arguments).
        :param scale: ``sigma``, the fixed observation noise (normal; then
            ``h = sqrt(2) sigma``), or ``eps``, the flip probability (bernoulli;
            default 0.1).
        :param bandwidth: ``h`` (normal), or ``"auto"``: ``T`` such that the median
            perplexity of ``q(. | x_n)`` equals ``perplexity`` (any likelihood).
        :param num_cached: ``K_c``, the indices cached per point (itself included).
        :param distance: ``d(a, b) -> (len(a), len(b))`` for ``likelihood="custom"``.
        :param temperature: ``T`` for ``likelihood="custom"``.
        :param perplexity: target of ``bandwidth="auto"`` (default 10).
        :param max_block_entries: kernel entries computed at once (bounds memory).
        :param progress: progress bar; ``None`` shows one on a terminal only.
        :param distributed: called on every rank of an initialised ``torch.distributed`` process
            group with the same ``data``: each rank searches its share of the rows, and every
            rank returns the whole cache, the single-process one
            (:mod:`pyro_mapa.cache.distributed`; gloo on CPU, nccl with the data on each rank's GPU).
            With ``search="faiss"``, rank 0 builds the one index and table and sends the table to
            every rank.
        :param search: ``"exact"`` (blocked matrix products: the reference) or ``"faiss"``
            (approximate neighbours from a faiss HNSW index, the tail mass estimated from a
            uniform sample: :mod:`pyro_mapa.cache.approximate`; Gaussian and Bernoulli kernels;
            ``pip install pyro-mapa[faiss]``).
        """
        if search not in ("exact", "faiss"):
            raise ValueError(f"search must be 'exact' or 'faiss', got {search!r}")
        shorthand = (likelihood, scale, bandwidth, distance, temperature, perplexity)
        if kernel is not None and not isinstance(kernel, Kernel):
            raise TypeError(f"kernel must be a pyro_mapa.Kernel (e.g. Kernel.gaussian(sigma=...)), got {kernel!r}")
        if kernel is not None and any(v is not None for v in shorthand):
            raise ValueError("give the kernel either as kernel= or by likelihood=, scale=, bandwidth=, ..., not both")
        # the data first, then K_c, then the kernel's settings: the first problem is the one named
        data = kernel.check_data(data) if kernel is not None else as_data_tensor(data, binary=likelihood == "bernoulli")
        num_cached = check_num_neighbors(num_cached, data.shape[0], "num_cached")
        if kernel is None:
            kernel = Kernel.from_likelihood(
                likelihood or "normal", scale=scale, bandwidth=bandwidth, distance=distance,
                temperature=temperature, perplexity=10.0 if perplexity is None else perplexity,
            )
        if distributed:
            check_same_inputs(data, kernel, num_cached)
        kernel = kernel.calibrated(data)
        if distributed:
            kernel = shared_kernel(kernel)
        data = kernel.check_range(data)

        if search == "faiss" and distributed:  # one index, built on rank 0 and sent to all
            table = from_rank_zero(lambda: approximate_neighbors(data, kernel, num_cached, progress=progress), data.device)
        elif search == "faiss":
            table = approximate_neighbors(data, kernel, num_cached, progress=progress)
        elif distributed:
            shown = progress if dist.get_rank() == 0 else False  # one bar, on rank 0
            table = gather_rows(
                lambda rows: exact_neighbors(data[rows], data, kernel, num_cached,
                                             max_block_entries=max_block_entries, progress=shown),
                len(data), data.device,
            )
        else:
            table = exact_neighbors(data, data, kernel, num_cached, max_block_entries=max_block_entries, progress=progress)
        _warn_unless_nearest_to_itself(data, table, kernel)
        return cls(data, kernel, table, fingerprint(data, cls._settings(kernel, num_cached, data, search)), search)

    @staticmethod
    def _settings(kernel: Kernel, num_cached: int, data: torch.Tensor, search: str = "exact") -> dict:
        # an exact cache's settings stay what they were before approximate search existed
        extra = {} if search == "exact" else {"search": search}
        return {**kernel.describe(), **kernel.data_settings(data), "num_cached": num_cached, **extra}

    # -- properties ---------------------------------------------------------------

    @property
    def num_points(self) -> int:
        """``N``, the training points (and codes)."""
        return self.data.shape[0]

    @property
    def num_cached(self) -> int:
        """``K_c``, the indices cached per point."""
        return self.table.index.shape[1]

    @property
    def temperature(self) -> float:
        """``T`` of the log-weights ``-d / T``."""
        return self.kernel.temperature

    def __repr__(self) -> str:
        return (
            f"MAPAPosterior(kernel={self.kernel.name!r}, N={self.num_points}, K_c={self.num_cached}, search={self.search!r}, "
            f"T={self.temperature:.4g}, device={self.data.device}, dtype={self.table.log_prob.dtype})"
        )

    # -- use ----------------------------------------------------------------------

    def index_distribution(self, idx: torch.Tensor | None = None) -> MAPAIndex:
        """``q(i | x_n)`` for training points ``idx`` (all ``N`` if ``None``) as a
        :class:`~pyro_mapa.cache.MAPAIndex` of batch shape ``idx.shape``."""
        if idx is None:
            return MAPAIndex(self.table, self.num_points)
        idx = torch.as_tensor(idx, device=self.table.index.device)
        if idx.is_floating_point() or idx.dtype == torch.bool:
            raise TypeError(f"idx must hold integer indices into the training set, got dtype {idx.dtype}")
        if idx.numel() and (idx.min() < 0 or idx.max() >= self.num_points):
            raise IndexError(f"idx holds indices outside [0, N={self.num_points})")
        return MAPAIndex(NeighborTable(*(t[idx] for t in self.table)), self.num_points)

    def query(self, x_new, *, progress: bool | None = None) -> NeighborTable:
        """The index posterior ``q(i | x)`` over training indices for new points ``x``
        (``M x D``): how MAPA encodes data it has never seen, without an encoder."""
        x_new = self.kernel.check_data(x_new, "x_new")
        if x_new.shape[1] != self.data.shape[1]:
            raise ValueError(f"x_new has {x_new.shape[1]} features but the training data has {self.data.shape[1]}")
        x_new = self.kernel.check_range(x_new.to(device=self.data.device, dtype=self.data.dtype), "x_new")
        return exact_neighbors(x_new, self.data, self.kernel, self.num_cached, progress=progress)

    def encode(self, x_new, *, progress: bool | None = None) -> MAPAIndex:
        """``q(i | x)`` for new points ``x`` (``M x D``) as a distribution over the ``N``
        training indices (batch shape ``(M,)``): sample it, score it, or take its renormalised
        top ``k`` (:meth:`~pyro_mapa.cache.MAPAIndex.top`); :meth:`query` gives the raw table.

        >>> data = torch.tensor([[0.0], [0.1], [3.0]], dtype=torch.float64)
        >>> q = MAPAPosterior.fit(data, kernel=Kernel.gaussian(sigma=0.1), num_cached=2).encode([[0.02]])
        >>> q.batch_shape, q.top(1)[0]
        (torch.Size([1]), tensor([[0]]))
        """
        return MAPAIndex(self.query(x_new, progress=progress), self.num_points)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "MAPAPosterior":
        """A copy on ``device`` (e.g. ``"cuda"``) with the data and log-probabilities cast
        to ``dtype``; the fingerprint still matches the data (it hashes float64 values)."""
        data = self.data.to(device=device, dtype=dtype)
        return MAPAPosterior(data, self.kernel, self.table.to(device, dtype), self.fingerprint, self.search)

    # -- persistence --------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the cache (not the data) to ``path``, atomically: an existing file is
        replaced only once the new one is completely written."""
        settings = self._settings(self.kernel, self.num_cached, self.data, self.search)
        write_cache_file(path, self.table._asdict(), settings, self.fingerprint, self.num_points)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        data,
        *,
        distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> "MAPAPosterior":
        """Load a cache saved by :meth:`save` for ``data``; refuse other data.

        :param data: the very data the cache was built from (checked by fingerprint).
        :param distance: the distance, for a cache built with a custom kernel.
        :raises ValueError: if the file is not a complete MAPA cache, or was built
            from other data or settings.
        """
        payload = read_cache_file(path)
        settings, name = payload["settings"], payload["settings"]["name"]
        data = as_data_tensor(data, binary=Kernel.class_of(settings).binary)
        if fingerprint(data, settings) != payload["fingerprint"]:
            raise ValueError(
                f"{path} was built from other data or settings (N={payload['num_points']}, kernel {name!r}); "
                f"the data given has shape {tuple(data.shape)}. Refit with MAPAPosterior.fit for this data."
            )
        custom = Kernel.class_of(settings) is CustomKernel
        if custom and distance is None:
            raise ValueError(f"{path} was built with a custom distance; pass it as distance=")
        kernel = Kernel.from_settings(settings, distance)
        search = settings.get("search", "exact")
        current = cls._settings(kernel, payload["tensors"]["index"].shape[-1], data, search)
        if "distance_probe" in settings:
            stored, given = (torch.tensor(x["distance_probe"], dtype=torch.float64) for x in (settings, current))
            if stored.shape != given.shape or not torch.allclose(stored, given, rtol=1e-5, atol=1e-8):
                raise ValueError(
                    f"{path} was built with a distance that computes other values than the distance given "
                    f"({kernel.name[7:]}), on the first {PROBE_POINTS} points; pass the distance the cache was built with"
                )
        elif custom and kernel.name != name:  # format 1 knew a custom distance by its name only
            raise ValueError(f"{path} was built with the distance {name[7:]}, not {kernel.name[7:]}")
        table = _checked_table(NeighborTable(**payload["tensors"]), payload["num_points"], path)
        table = table.to(data.device, data.dtype)
        # an older format named its settings otherwise: re-fingerprint so that a save writes today's
        data_fingerprint = payload["fingerprint"] if current == settings else fingerprint(data, current)
        return cls(data, kernel, table, data_fingerprint, search)


def _warn_unless_nearest_to_itself(data: torch.Tensor, table: NeighborTable, kernel: Kernel) -> None:
    """Warn when, on a sample of (up to 256) points, a point's own log-weight ``-d(x, x) / T``
    is below that of its top neighbour (beyond rounding): a distance must be smallest at
    ``d(x, x)``, or every point's top neighbour is, say, its farthest."""
    rows = torch.arange(min(len(data), 256), device=data.device)
    own = kernel.log_weights(data[rows], data[rows]).diagonal()
    top = kernel.log_weights(data[rows], data[table.index[rows, 0]]).diagonal()
    worse = own < top - 1e-6 * top.abs().clamp_min(1.0)
    if worse.any():
        warnings.warn(
            f"{int(worse.sum())} of {len(rows)} points checked are not their own most probable index under the "
            f"kernel {kernel.name!r} (the first: point {int(worse.nonzero()[0])}): is its distance smallest at d(x, x)?",
            stacklevel=3,
        )


def _checked_table(table: NeighborTable, num_points: int, path) -> NeighborTable:
    """``table`` if it is a cache of ``num_points`` points over themselves: shapes, index range,
    and rows that normalise (cached mass plus tail is 1); a file whose checksum was recomputed
    after an edit would otherwise load."""
    index, log_prob, log_tail = table
    problems = []
    if index.dim() != 2 or index.shape[0] != num_points or log_prob.shape != index.shape or log_tail.shape != index.shape[:1]:
        problems.append(f"table shapes {tuple(index.shape)}, {tuple(log_prob.shape)}, {tuple(log_tail.shape)} for N={num_points}")
    elif index.dtype != torch.long or (index.numel() and (index.min() < 0 or index.max() >= num_points)):
        problems.append(f"indices outside [0, {num_points})")
    else:
        total = torch.logaddexp(log_prob.double().logsumexp(1), log_tail.double())
        if not (torch.isfinite(log_prob).all() and (total.abs() < 1e-3).all()):
            problems.append("rows whose probabilities do not sum to 1")
    if problems:
        raise ValueError(f"{path} is not a valid MAPA cache: {problems[0]}")
    return table
