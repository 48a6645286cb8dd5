"""How sharp is MAPA's cache on real binary images? Perplexity and mass off the point itself.

For Fashion-MNIST's 50,000 binarized training images (seed 0) and each kernel setting
(`Kernel.bernoulli(eps)` for several flip probabilities, `Kernel.auto("bernoulli", p)` for
several target perplexities), the cache (`K_c = 64`) is built and summarised over points:
the median perplexity of `q(. | x_n)` (over the cached indices, renormalised, times the
cached mass: `exp(H)` of the cached part plus its tail), the median mass `q(n | x_n)` on the
point itself, the fraction of points with more than half their mass elsewhere, and the
median log tail mass. With `q(n | x_n)` near 1, the bound's neighbours carry nothing.

    python benchmarks/cache_perplexity.py --eps 0.1 0.2 0.3 0.4 --auto 5 10 30
"""

from __future__ import annotations

import argparse
import time

import torch

from pyro_mapa import Kernel, MAPAPosterior
from pyro_mapa.datasets import load_fashion_mnist


def summary(posterior: MAPAPosterior) -> dict:
    table = posterior.table
    own = torch.arange(posterior.num_points)
    on_self = torch.where(table.index == own.unsqueeze(1), table.log_prob.exp(), 0.0).sum(1)
    p = table.log_prob.exp()
    entropy = -(p * table.log_prob).sum(1)  # the cached part's share of H (the tail's is at most T_n log N)
    return {
        "T": posterior.temperature,
        "perplexity": entropy.exp().median().item(),
        "mass on self": on_self.median().item(),
        "share mostly elsewhere": (on_self < 0.5).double().mean().item(),
        "log tail": table.log_tail.median().item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--eps", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4])
    parser.add_argument("--auto", type=float, nargs="+", default=[5.0, 10.0, 30.0])
    parser.add_argument("--num-train", type=int, default=50_000)
    args = parser.parse_args()
    data = load_fashion_mnist(seed=0).train[: args.num_train]
    settings = [(f"eps = {e}", Kernel.bernoulli(e)) for e in args.eps]
    settings += [(f"auto, perplexity {p:g}", Kernel.auto("bernoulli", p)) for p in args.auto]
    print(f"Fashion-MNIST, N = {len(data)}, K_c = 64")
    print("| kernel | T | median perplexity (cached) | median q(n \\| x_n) | share with q(n \\| x_n) < 0.5 | median log tail | fit s |")
    print("|---|---|---|---|---|---|---|")
    for name, kernel in settings:
        start = time.perf_counter()
        posterior = MAPAPosterior.fit(data, kernel=kernel, num_cached=64, progress=False)
        row = summary(posterior)
        print(f"| {name} | {row['T']:.3g} | {row['perplexity']:.2f} | {row['mass on self']:.3f} | "
              f"{row['share mostly elsewhere']:.3f} | {row['log tail']:.1f} | {time.perf_counter() - start:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
