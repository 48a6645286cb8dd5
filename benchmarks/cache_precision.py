"""float32 caches against float64 on the hard case: near-twins and small bandwidths.

Data `torch.rand(300, 784)` plus near-twins `x + 3e-5 * randn` (600 points), the Gaussian
kernel at several `sigma`: the float32 cache against the float64 one, over the entries that
carry mass (`q > 1e-6` in float64): the largest log-probability error, the largest row
normalisation error, the points that are not their own top neighbour, and the fit's time in
each dtype (median of `--repeats`).

    python benchmarks/cache_precision.py --sigmas 0.001 0.003 0.01 0.1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pyro_mapa import Kernel, MAPAPosterior


def fit_seconds(data: torch.Tensor, kernel: Kernel, repeats: int) -> tuple[MAPAPosterior, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        posterior = MAPAPosterior.fit(data, kernel=kernel, num_cached=64, progress=False)
        times.append(time.perf_counter() - start)
    return posterior, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.001, 0.003, 0.01, 0.1])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(300, 784, generator=g, dtype=torch.float64)
    x = torch.cat([x, x + 3e-5 * torch.randn(x.shape, generator=g, dtype=torch.float64)])
    print("| sigma | max log q error (nats) | max row normalisation error | not own top neighbour | float32 fit ms | float64 fit ms |")
    print("|---|---|---|---|---|---|")
    for sigma in args.sigmas:
        p64, t64 = fit_seconds(x, Kernel.gaussian(sigma), args.repeats)
        p32, t32 = fit_seconds(x.float(), Kernel.gaussian(sigma), args.repeats)
        reference, ours = (p.table.dense_log_prob(len(x)).double() for p in (p64, p32))
        mass = reference > -13.8  # q > 1e-6
        error = (ours - reference)[mass].abs().max().item()
        norm = torch.logaddexp(p32.table.log_prob.double().logsumexp(1), p32.table.log_tail.double()).abs().max().item()
        not_own = int((p32.table.index[:, 0] != torch.arange(len(x))).sum())
        print(f"| {sigma:g} | {error:.2e} | {norm:.2e} | {not_own} of {len(x)} | {1e3 * t32:.1f} | {1e3 * t64:.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
