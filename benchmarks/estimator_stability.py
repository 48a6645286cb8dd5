"""Is the comparison's test log-likelihood estimate stable in the number of importance samples?

SPEC section 4 asks for enough samples that the estimate is stable to 0.01 nats. Each
method is trained once per seed by `pyro_mapa.compare.train_and_score` (training does not
depend on `test_particles`: the same seed gives the same best-validation checkpoint), and
that checkpoint's test log-likelihood is estimated with each of `--particles`, by the
comparison's one estimator (importance sampling with the mixture proposal over the
method's codes of a point's MAPA neighbours, plus 0.1 of the prior). We print each
estimate, its delta-method standard error, and its difference from the largest count.

    python benchmarks/estimator_stability.py --dataset digits --budget 300000 --particles 1000 5000 20000
"""

from __future__ import annotations

import argparse

import torch

from pyro_mapa.compare import load_split, neighbour_tables, train_and_score


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--methods", nargs="+", default=["vae", "iwae-50", "autonormal", "autodelta", "mapa-1-10"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--budget", type=int, default=300_000)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--particles", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    split = load_split(args.dataset, seed=args.seeds[0])
    tables = neighbour_tables(split)
    largest = max(args.particles)
    print(f"{args.dataset}: budget {args.budget}, lr {args.lr}, seeds {args.seeds}")
    print("| method | seed | " + " | ".join(f"{p} samples (se)" for p in args.particles)
          + " | " + " | ".join(f"{p} minus {largest}" for p in args.particles if p != largest) + " |")
    print("|---" * (2 + 2 * len(args.particles) - 1) + "|", flush=True)
    for method in args.methods:
        for seed in args.seeds:
            runs = {p: train_and_score(method, split, seed, args.budget, lr=args.lr, test_particles=p, tables=tables)
                    for p in args.particles}
            first = next(iter(runs.values()))
            assert all(r.curve == first.curve for r in runs.values()), "training differed between the runs"
            cells = [f"{r.test_ll:.3f} ({r.test_se:.3f})" for r in runs.values()]
            diffs = [f"{runs[p].test_ll - runs[largest].test_ll:+.3f}" for p in args.particles if p != largest]
            print(f"| {method} | {seed} | " + " | ".join(cells + diffs) + " |", flush=True)


if __name__ == "__main__":
    main()
