"""Cache build time and peak memory against the floor: one blocked X @ X.T.

For each N the cache (MAPAPosterior.fit, float32, K_c = 64, D = 784) and the floor
(the same row blocks, matrix product only) run in a fresh subprocess, so that the
peak resident memory (ru_maxrss) of each is its own; memory is reported above the
process's footprint once the data exist.

    python benchmarks/cache_build.py                 # N = 1k, 10k, 60k
    python benchmarks/cache_build.py --sizes 1000 --repeats 3
    python benchmarks/cache_build.py --fashion-mnist --sizes 60000   # the binarized images, Bernoulli kernel
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _one(kind: str, num_points: int, dim: int, num_neighbors: int, seed: int, fashion: bool) -> dict:
    from pyro_mapa import Kernel, MAPAPosterior
    from pyro_mapa.cache.neighbors import DEFAULT_BLOCK_ENTRIES
    from pyro_mapa.datasets import load_fashion_mnist

    if fashion:  # the first N of the 60,000 training and validation images, binarized with the seed
        images = load_fashion_mnist(seed=seed)
        data, kernel = torch.cat([images.train, images.val])[:num_points], Kernel.bernoulli()
    else:
        data, kernel = torch.randn(num_points, dim, generator=torch.Generator().manual_seed(seed)), Kernel.gaussian(1.0)
    baseline = _peak_mib()
    start = time.perf_counter()
    if kind == "cache":
        MAPAPosterior.fit(data, kernel=kernel, num_cached=num_neighbors, progress=False)
    else:  # the floor: the same row blocks, only X_block @ X.T, into one reused buffer
        rows = max(1, min(num_points, DEFAULT_BLOCK_ENTRIES // num_points))
        out = torch.empty(rows, num_points)
        for s in range(0, num_points, rows):
            torch.mm(data[s : s + rows], data.T, out=out[: min(rows, num_points - s)])
    return {"seconds": time.perf_counter() - start, "peak_mib": _peak_mib() - baseline}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 60000])
    parser.add_argument("--dim", type=int, default=784)
    parser.add_argument("--neighbors", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="seeds per size (1 for N >= 60k)")
    parser.add_argument("--fashion-mnist", action="store_true", help="the binarized images (D = 784) instead of randn")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, num_points = args.child[0], int(args.child[1])
        print(json.dumps(_one(kind, num_points, args.dim, args.neighbors, args.repeats, args.fashion_mnist)))
        return
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| N | cache s (median) | floor s (median) | ratio | cache peak MiB | floor peak MiB | N*K_c tables MiB | seeds |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        seeds = range(1 if n >= 60000 else args.repeats)
        runs = {"cache": [], "floor": []}
        for seed in seeds:
            for kind in runs:
                cmd = [sys.executable, __file__, "--child", kind, str(n), "--dim", str(args.dim),
                       "--neighbors", str(args.neighbors), "--repeats", str(seed)]
                cmd += ["--fashion-mnist"] if args.fashion_mnist else []
                runs[kind].append(json.loads(subprocess.check_output(cmd)))
        med = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
        peak = {k: max(r["peak_mib"] for r in v) for k, v in runs.items()}
        tables = n * args.neighbors * (8 + 4) / 2**20
        print(f"| {n} | {med['cache']:.2f} | {med['floor']:.2f} | {med['cache'] / med['floor']:.2f} | "
              f"{peak['cache']:.0f} | {peak['floor']:.0f} | {tables:.0f} | {len(seeds)} |", flush=True)


if __name__ == "__main__":
    main()
