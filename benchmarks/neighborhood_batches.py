"""How many codes does a MAPA step decode with minibatches of neighbourhoods? (issue 11 item 6b)

Builds the cache of the training set's likelihood kernel (``K_c = 64``), then for each group
size ``g`` draws ``--batches`` minibatches of ``--batch-size`` points
(:class:`~pyro_mapa.NeighborhoodBatches`; ``g = 1``: uniform) and the ``K + S`` particles of
each point (:meth:`~pyro_mapa.infer.IndexProposal.index_particles`), and prints the median
number of distinct codes per point (the decoder passes per point and step) and the spread of
the weights ``w_n = g / c_n`` that keep the gradient unbiased. No training.

    python benchmarks/neighborhood_batches.py --dataset fashion-mnist --groups 1 2 5 10 20 50
"""

from __future__ import annotations

import argparse
import statistics

import torch

from pyro_mapa import MAPAIndex, MAPAPosterior, NeighborhoodBatches, NeighborTable
from pyro_mapa.experiments import load_split
from pyro_mapa.infer import IndexProposal


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 2, 5, 10, 20, 50])
    parser.add_argument("--neighbors", type=int, default=1)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    split = load_split(args.dataset)
    table = MAPAPosterior.fit(split.train, kernel=split.likelihood.cache_kernel(), num_cached=64, progress=False).table
    num_points = len(split.train)

    def distinct_per_point(idx: torch.Tensor) -> float:
        rows = MAPAIndex(NeighborTable(table.index[idx], table.log_prob[idx], table.log_tail[idx]), num_points)
        particles, _ = IndexProposal(rows).index_particles(args.neighbors, args.samples)
        return particles.unique().numel() / len(idx)

    print(f"{args.dataset}, N = {num_points:,}, MAPA-{args.neighbors}-{args.samples}, batch {args.batch_size}, "
          f"{args.batches} batches, seed {args.seed}")
    print("| g | distinct codes per point (median) | weight min | median | max | share of points in no other group |")
    print("|---|---|---|---|---|---|")
    for g in args.groups:
        batches = NeighborhoodBatches(table, g)
        counts = [distinct_per_point(batches.sample(args.batch_size)[0]) for _ in range(args.batches)]
        w = batches.weights
        print(f"| {g} | {statistics.median(counts):.2f} | {w.min():.3f} | {w.median():.3f} | {w.max():.3f} "
              f"| {(w == g).double().mean():.3f} |", flush=True)


if __name__ == "__main__":
    main()
