"""The MAPA cache: the model-agnostic index posterior of a data set (SPEC section 2).

:meth:`MAPAPosterior.fit` computes, once per data set, each training point's
``K_c`` most probable indices under ``q(i = m | x_n) ∝ exp(-d(x_n, x_m) / T)``
(the point itself included), their normalised log-probabilities and the log tail
mass. The cache is saved with a fingerprint of the data and the settings, and a
load refuses any other data.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable

import torch

from ._checks import as_data_tensor, check_num_neighbors
from .index_distribution import DEFAULT_DEFENSIVE, MAPAIndex
from .kernels import DISTANCES, Kernel, custom_kernel_name, make_kernel
from .neighbors import DEFAULT_BLOCK_ENTRIES, NeighborTable, exact_neighbors

__all__ = ["MAPAPosterior"]

_FORMAT = "pyro-mapa-cache/1"


def _fingerprint(data: torch.Tensor, settings: dict) -> str:
    """SHA-256 of the data's values (as float64, so float32 and float64 copies of the
    same numbers agree), its shape, and the kernel settings."""
    digest = hashlib.sha256(repr((tuple(data.shape), sorted(settings.items()))).encode())
    rows_per_chunk = max(1, 2**20 // data.shape[1])
    for start in range(0, data.shape[0], rows_per_chunk):
        chunk = data[start : start + rows_per_chunk].detach().to("cpu", torch.float64).contiguous()
        digest.update(chunk.numpy().tobytes())
    return digest.hexdigest()


def _tensor_digest(tensors: dict[str, torch.Tensor], fingerprint: str) -> str:
    """SHA-256 of the tables, tied to the data's fingerprint."""
    digest = hashlib.sha256(fingerprint.encode())
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class MAPAPosterior:
    """A cached MAPA index posterior over a training set of ``N`` points.

    Build it with :meth:`fit` or :meth:`load`; :meth:`index_distribution` gives
    ``q(i | x_n)`` for training points, :meth:`query` for new points.

    >>> data = torch.tensor([[0.0], [0.1], [3.0]], dtype=torch.float64)
    >>> posterior = MAPAPosterior.fit(data, likelihood="normal", scale=0.1, num_neighbors=2)
    >>> posterior.table.index
    tensor([[0, 1],
            [1, 0],
            [2, 1]])
    """

    def __init__(self, data: torch.Tensor, kernel: Kernel, table: NeighborTable, fingerprint: str):
        self.data = data
        self.kernel = kernel
        self.table = table
        self.fingerprint = fingerprint

    # -- construction -------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        data,
        likelihood: str = "normal",
        *,
        scale: float | None = None,
        bandwidth: float | str | None = None,
        num_neighbors: int = 64,
        distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        temperature: float | None = None,
        perplexity: float = 10.0,
        max_block_entries: int = DEFAULT_BLOCK_ENTRIES,
        progress: bool | None = None,
    ) -> "MAPAPosterior":
        """Compute the cache of ``data`` (``N x D``, any device, float32 or float64).

        :param likelihood: ``"normal"`` (``d = ||x_n - x_m||^2``, ``T = 2 h^2``),
            ``"bernoulli"`` (``d = Hamming``, ``T = 1 / log((1 - eps) / eps)``) or
            ``"custom"`` (your ``distance`` and ``temperature``).
        :param scale: ``sigma``, the fixed observation noise (normal; then
            ``h = sqrt(2) sigma``), or ``eps``, the flip probability (bernoulli;
            default 0.1).
        :param bandwidth: ``h`` (normal), or ``"auto"``: ``T`` such that the median
            perplexity of ``q(. | x_n)`` equals ``perplexity`` (any likelihood).
        :param num_neighbors: ``K_c``, the indices cached per point (itself included).
        :param distance: ``d(a, b) -> (len(a), len(b))`` for ``likelihood="custom"``.
        :param temperature: ``T`` for ``likelihood="custom"``.
        :param perplexity: target of ``bandwidth="auto"``.
        :param max_block_entries: kernel entries computed at once (bounds memory).
        :param progress: progress bar; ``None`` shows one on a terminal only.
        """
        data = as_data_tensor(data, binary=likelihood == "bernoulli")
        num_neighbors = check_num_neighbors(num_neighbors, data.shape[0])
        kernel = make_kernel(data, likelihood, scale, bandwidth, distance, temperature, perplexity)
        table = exact_neighbors(
            data, data, kernel, num_neighbors, max_block_entries=max_block_entries, progress=progress
        )
        return cls(data, kernel, table, _fingerprint(data, cls._settings(kernel, num_neighbors)))

    @staticmethod
    def _settings(kernel: Kernel, num_neighbors: int) -> dict:
        return {**kernel.describe(), "num_neighbors": num_neighbors}

    # -- properties ---------------------------------------------------------------

    @property
    def num_points(self) -> int:
        """``N``, the training points (and codes)."""
        return self.data.shape[0]

    @property
    def num_neighbors(self) -> int:
        """``K_c``, the indices cached per point."""
        return self.table.index.shape[1]

    @property
    def temperature(self) -> float:
        """``T`` of the log-weights ``-d / T``."""
        return self.kernel.temperature

    def __repr__(self) -> str:
        return (
            f"MAPAPosterior(kernel={self.kernel.name!r}, N={self.num_points}, K_c={self.num_neighbors}, "
            f"T={self.temperature:.4g}, device={self.data.device}, dtype={self.table.log_prob.dtype})"
        )

    # -- use ----------------------------------------------------------------------

    def index_distribution(self, idx: torch.Tensor | None = None, defensive: float = DEFAULT_DEFENSIVE) -> MAPAIndex:
        """``q(i | x_n)`` for training points ``idx`` (all ``N`` if ``None``) as a
        :class:`~pyro_mapa.MAPAIndex` of batch shape ``idx.shape``."""
        if idx is None:
            return MAPAIndex(self.table, self.num_points, defensive)
        idx = torch.as_tensor(idx, device=self.table.index.device)
        if idx.is_floating_point() or idx.dtype == torch.bool:
            raise TypeError(f"idx must hold integer indices into the training set, got dtype {idx.dtype}")
        if idx.numel() and (idx.min() < 0 or idx.max() >= self.num_points):
            raise IndexError(f"idx holds indices outside [0, N={self.num_points})")
        table = NeighborTable(*(t[idx] for t in self.table))
        return MAPAIndex(table, self.num_points, defensive)

    def query(self, x_new, *, progress: bool | None = None) -> NeighborTable:
        """The index posterior ``q(i | x)`` over training indices for new points ``x``
        (``M x D``): how MAPA encodes data it has never seen, without an encoder."""
        x_new = as_data_tensor(x_new, "x_new", binary=self.kernel.name == "bernoulli")
        if x_new.shape[1] != self.data.shape[1]:
            raise ValueError(f"x_new has {x_new.shape[1]} features but the training data has {self.data.shape[1]}")
        x_new = x_new.to(device=self.data.device, dtype=self.data.dtype)
        return exact_neighbors(x_new, self.data, self.kernel, self.num_neighbors, progress=progress)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "MAPAPosterior":
        """A copy on ``device`` with floating tensors cast to ``dtype``."""
        data = self.data.to(device=device, dtype=dtype)
        return MAPAPosterior(data, self.kernel, self.table.to(device, dtype), self.fingerprint)

    # -- persistence --------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the cache (not the data) to ``path``, atomically: an existing file is
        replaced only once the new one is completely written."""
        path = Path(path)
        tensors = {name: t.detach().cpu() for name, t in self.table._asdict().items()}
        payload = {
            "format": _FORMAT,
            "fingerprint": self.fingerprint,
            "settings": self._settings(self.kernel, self.num_neighbors),
            "num_points": self.num_points,
            "tensors": tensors,
            "checksum": _tensor_digest(tensors, self.fingerprint),
        }
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(payload, f)
                f.flush()
                os.fsync(f.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would differ from a plain open()
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

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
        :param distance: the distance, for a cache built with ``likelihood="custom"``.
        :raises ValueError: if the file is not a complete MAPA cache, or was built
            from other data or settings.
        """
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            tensors, settings = payload["tensors"], payload["settings"]
            fingerprint, checksum = payload["fingerprint"], payload["checksum"]
            if payload["format"] != _FORMAT:
                raise ValueError(f"unknown format {payload['format']!r}")
        except FileNotFoundError:
            raise
        except Exception as e:  # torch raises many types on a damaged zip or pickle
            raise ValueError(f"{path} is not a readable MAPA cache (truncated, corrupted or another file): {e}") from e
        if _tensor_digest(tensors, fingerprint) != checksum:
            raise ValueError(f"{path} is corrupted: its tables do not match their checksum")
        name = settings["name"]
        data = as_data_tensor(data, binary=name == "bernoulli")
        if _fingerprint(data, settings) != fingerprint:
            raise ValueError(
                f"{path} was built from other data or settings (N={payload['num_points']}, kernel {name!r}); "
                f"the data given has shape {tuple(data.shape)}. Refit with MAPAPosterior.fit for this data."
            )
        if name.startswith("custom:"):
            if distance is None:
                raise ValueError(f"{path} was built with a custom distance ({name[7:]}); pass it as distance=")
            given = custom_kernel_name(distance)
            if given != name:
                raise ValueError(f"{path} was built with the distance {name[7:]}, not {given[7:]}")
            kernel = Kernel(name, distance, settings["temperature"])
        else:
            kernel = Kernel(name, DISTANCES[name], settings["temperature"])
        table = NeighborTable(**tensors).to(data.device, data.dtype)
        return cls(data, kernel, table, fingerprint)
