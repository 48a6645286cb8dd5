r"""Approximate MAPA neighbours from faiss, with the tail mass estimated from a uniform sample
(docs/math.md, section 2).

faiss (``pip install pyro-mapa[faiss]``) finds each query's ``K_c`` candidates with a graph
index (HNSW) that suits the kernel: ``IndexHNSWFlat`` on the raw values for the Gaussian kernel
(squared Euclidean distance), ``IndexBinaryHNSW`` on the bits packed eight to a byte for the
Bernoulli kernel (Hamming distance), searched with ``efSearch = max(2 K_c, 128)``. The candidates'
log-weights come from faiss's own distances, which are exact (Hamming counts; squared
differences summed in float32), sorted. A graph search cannot sum the mass ``T_n`` of the indices it did not
return. The search asks for ``2 K_c`` candidates: the first ``K_c`` are cached (``C_n``), the
next ``K_c`` (``E_n``, the near tail, which carries most of a sharp kernel's tail) are summed
exactly, and the rest is estimated from ``L`` indices ``u_1..u_L`` drawn uniformly from all ``N``:

.. math::
    \hat T_n = \sum_{m \in E_n} w_m + \frac{N}{L} \sum_{l=1}^{L} [u_l \notin C_n \cup E_n]\, w_{u_l},
    \qquad w_m = e^{-d(x_n, x_m) / T},

unbiased for ``T_n = sum_{m not in C_n} w_m``, the sampled part with relative standard error
``sqrt(N sum_m w_m^2 / R_n^2 - 1) / sqrt(L)`` over the far weights (``R_n`` their sum): small when
the far tail is flat. The bound does not depend on it for its validity: the proposal still puts mass on every
index outside the cache, so ``E[p_hat_n] = p(x_n)`` whatever the candidates (section 3).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .._progress import progress_bar
from .kernels import BernoulliKernel, GaussianKernel, Kernel
from .neighbors import NeighborTable

__all__ = ["HNSW_LINKS", "TAIL_SAMPLE", "approximate_neighbors"]

#: Links per node of the HNSW graph (faiss's ``M``); the index holds ``2 M`` ints per point.
HNSW_LINKS = 32
#: Uniform draws ``L`` per row block for the tail estimate.
TAIL_SAMPLE = 2048
#: Query rows per block (``rows x L`` sampled weights at once).
ROWS_PER_BLOCK = 256


def _faiss():
    try:
        import faiss
    except ImportError:
        raise ImportError(
            "search='faiss' needs faiss: pip install pyro-mapa[faiss] (or pip install faiss-cpu)"
        ) from None
    return faiss


def _index(data: torch.Tensor, kernel: Kernel, num_found: int):
    """The faiss index of ``data`` for ``kernel``, and how to present queries to it."""
    faiss = _faiss()
    values = data.detach().cpu().numpy()
    if isinstance(kernel, BernoulliKernel):
        def encode(x: np.ndarray) -> np.ndarray:
            return np.packbits(x.astype(np.uint8), axis=1)  # zero-padded to whole bytes: Hamming unchanged

        index = faiss.IndexBinaryHNSW(8 * math.ceil(data.shape[1] / 8), HNSW_LINKS)
    elif isinstance(kernel, GaussianKernel):
        def encode(x: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(x, dtype=np.float32)

        index = faiss.IndexHNSWFlat(data.shape[1], HNSW_LINKS)
    else:
        raise ValueError(
            f"search='faiss' supports the Gaussian and Bernoulli kernels; the kernel {kernel.name!r} computes "
            "a custom distance, which only search='exact' can use"
        )
    index.add(encode(values))
    index.hnsw.efSearch = max(num_found, 128)
    return index, encode


def approximate_neighbors(
    data: torch.Tensor,
    kernel: Kernel,
    num_cached: int,
    *,
    tail_sample: int = TAIL_SAMPLE,
    seed: int = 0,
    progress: bool | None = None,
) -> NeighborTable:
    """The :class:`~pyro_mapa.cache.NeighborTable` of ``data`` against itself, its candidates
    from a faiss HNSW index and its tails estimated (module docstring).

    :param data: ``(N, D)`` training points (calibrated ``kernel``'s data).
    :param num_cached: ``K_c``, the candidates kept per point.
    :param tail_sample: ``L``, uniform draws per block of rows for the tail estimate.
    :param seed: seeds the tail's draws.
    """
    num_points = data.shape[0]
    if num_cached >= num_points:
        raise ValueError(f"search='faiss' needs num_cached < N ({num_cached} >= {num_points}): use search='exact'")
    num_found = min(2 * num_cached, num_points)  # C_n, then the near tail E_n
    index, encode = _index(data, kernel, num_found)
    centred, _ = kernel.prepared(data, data)  # the sampled weights by |a|^2 + |b|^2 - 2 a.b: centred first
    generator = torch.Generator().manual_seed(seed)
    table = [], [], []
    for start in progress_bar(range(0, num_points, ROWS_PER_BLOCK), progress=progress, desc="MAPA neighbours (faiss)",
                              unit="block", leave=False):
        queries = data[start:start + ROWS_PER_BLOCK]
        distances, found = index.search(encode(queries.detach().cpu().numpy()), num_found)
        if (found < 0).any():
            raise RuntimeError("faiss returned fewer neighbours than asked for some points; use search='exact'")
        found = torch.from_numpy(found).to(device=data.device, dtype=torch.long)
        # faiss's distances are exact (Hamming counts; squared differences summed in float32), sorted
        values = torch.from_numpy(distances).to(device=data.device, dtype=data.dtype) / -kernel.temperature
        draws = torch.randint(0, num_points, (tail_sample,), generator=generator).to(data.device)
        sampled = kernel.log_weights(centred[start:start + ROWS_PER_BLOCK], centred[draws])  # (rows, L)
        listed = found.sort(dim=1).values  # drawn, but in C_n or E_n: found by binary search in the row
        position = torch.searchsorted(listed, draws.expand(len(listed), -1).contiguous()).clamp_(max=num_found - 1)
        known = listed.gather(1, position) == draws
        far = sampled.masked_fill(known, -math.inf).logsumexp(1) + math.log(num_points / tail_sample)
        tail = torch.logaddexp(values[:, num_cached:].logsumexp(1), far)
        values, found = values[:, :num_cached], found[:, :num_cached]
        log_norm = torch.logaddexp(values.logsumexp(1), tail)
        for part, value in zip(table, (found, values - log_norm.unsqueeze(1), tail - log_norm)):
            part.append(value)
    return NeighborTable(*(torch.cat(part) for part in table))
