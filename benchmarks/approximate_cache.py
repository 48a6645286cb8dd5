"""The approximate cache (``search="faiss"``) against the exact one: build time, peak memory,
recall and the tail estimate's error (issue 14).

One size per call, so that the peak resident memory is this process's own. The exact search
is run in full where it is affordable (``--exact-full``) and otherwise on ``--recall-rows``
sampled rows only (their exact rows: the same search, those queries against all ``N`` points).
Recall is by distance, so that ties at the ``k``-th distance (frequent for Hamming) count: the
share of the first ``k`` found whose log-weight reaches the exact ``k``-th.

    python benchmarks/approximate_cache.py --data fashion-mnist --size 60000 --exact-full
    python benchmarks/approximate_cache.py --data embedded --size 1000000
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import torch

from pyro_mapa import Kernel, MAPAPosterior
from pyro_mapa.cache import exact_neighbors
from pyro_mapa.datasets import load_fashion_mnist, load_synthetic


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def data_set(name: str, size: int, seed: int) -> tuple[torch.Tensor, Kernel]:
    if name == "fashion-mnist":  # the 60,000 training and validation images, binarized with the seed
        images = load_fashion_mnist(seed=seed)
        return torch.cat([images.train, images.val])[:size], Kernel.bernoulli()
    # "embedded" lifted to 784 dimensions: its fixed random network of a 2-D latent, drawn in chunks, float32
    decoder = load_synthetic("embedded", 1, 0, seed=seed, obs_dim=784).decoder
    g, chunks = torch.Generator().manual_seed(seed), []
    for start in range(0, size, 100_000):
        z = torch.randn(min(100_000, size - start), 2, generator=g, dtype=torch.float64)
        chunks.append((decoder(z) + 0.1 * torch.randn(len(z), 784, generator=g, dtype=torch.float64)).float())
    return torch.cat(chunks), Kernel.gaussian(0.1)


def recall(found_log_prob: torch.Tensor, exact_log_prob: torch.Tensor, k: int) -> float:
    found = found_log_prob[:, :k] - found_log_prob[:, :1]
    kth = (exact_log_prob[:, k - 1] - exact_log_prob[:, 0]).unsqueeze(1)
    return (found >= kth - 1e-3).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", choices=["fashion-mnist", "embedded"], default="fashion-mnist")
    parser.add_argument("--size", type=int, default=60000)
    parser.add_argument("--num-cached", type=int, default=64)
    parser.add_argument("--recall-rows", type=int, default=1000)
    parser.add_argument("--exact-full", action="store_true", help="also time the exact build on all N")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data, kernel = data_set(args.data, args.size, args.seed)
    print(f"{args.data}: N = {len(data):,} x {data.shape[1]}, K_c = {args.num_cached}, {platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}", flush=True)
    before = _peak_mib()
    start = time.perf_counter()
    approximate = MAPAPosterior.fit(data, kernel=kernel, num_cached=args.num_cached, search="faiss", progress=False)
    seconds = time.perf_counter() - start
    peak = _peak_mib() - before
    rows = torch.randperm(len(data), generator=torch.Generator().manual_seed(1))[: args.recall_rows]
    if args.exact_full:
        start = time.perf_counter()
        exact = MAPAPosterior.fit(data, kernel=kernel, num_cached=args.num_cached, progress=False).table
        exact_seconds = f"{time.perf_counter() - start:.1f}"
        exact = type(exact)(*(t[rows] for t in exact))
    else:
        exact, exact_seconds = exact_neighbors(data[rows], data, kernel, args.num_cached), "-"
    found = type(approximate.table)(*(t[rows] for t in approximate.table))
    error = (found.log_tail - found.log_prob[:, 0]) - (exact.log_tail - exact.log_prob[:, 0])  # relative to the row's own
    print("| data | N | faiss build s | peak MiB above the data | peak MiB in all | exact build s | recall@10 "
          "| recall@K_c | median abs log-tail error | 90% abs log-tail error |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.data} | {len(data):,} | {seconds:.1f} | {peak:.0f} | {_peak_mib():.0f} | {exact_seconds} "
          f"| {recall(found.log_prob, exact.log_prob, 10):.4f} | {recall(found.log_prob, exact.log_prob, args.num_cached):.4f} "
          f"| {error.abs().median():.3f} | {error.abs().quantile(0.9):.3f} |", flush=True)


if __name__ == "__main__":
    main()
