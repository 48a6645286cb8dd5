"""Data-parallel MAPA training on this machine (issue 14, items 3 and 4).

``communication``: what the codes' gradient costs to send at a step, on 2 gloo processes
(1 thread each): the dense ``N x d`` all-reduce (what DDP does with it) against the
all-gather of the touched rows and their indices (``DataParallelStep``'s ``"rows"``, its own
code path, the scan for non-zero rows included), medians over repeats, at each ``N``.

``throughput``: ``train_mapa`` on Fashion-MNIST's 50,000 binarized training images (latent 40,
hidden 300, K = 1, S = 10, 100 points per process and step) on 1 and on 2 processes, 1 thread
each: points and decoder passes per second of training (the cache is built once beforehand and
loaded; its time is not counted).

    python benchmarks/data_parallel.py communication --sizes 60000 1000000
    python benchmarks/data_parallel.py throughput --processes 1 2 --epochs 1 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pyro_mapa import MAPAPosterior
from pyro_mapa.datasets import load_fashion_mnist
from pyro_mapa.models import BernoulliLikelihood
from pyro_mapa.trainer import DataParallelStep, train_mapa


class _Codes(torch.nn.Module):
    """A stand-in bound whose model holds ``codes`` (and one parameter for DDP to own)."""

    def __init__(self, num_points: int, latent_dim: int):
        super().__init__()
        self.model = torch.nn.Module()
        self.model.codes = torch.nn.Parameter(torch.zeros(num_points, latent_dim))
        self.other = torch.nn.Linear(1, 1)


def _communication_rank(rank: int, init_file: str, args: argparse.Namespace, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    results = []
    try:
        for num_points in args.sizes:
            holder = _Codes(num_points, args.latent_dim)
            step = DataParallelStep(holder, torch.optim.SGD(holder.parameters(), lr=0.0), "rows")
            g = torch.Generator().manual_seed(rank)
            dense, rows = [], []
            for _ in range(args.repeats):
                grad = torch.zeros(num_points, args.latent_dim)
                touched = torch.randperm(num_points, generator=g)[: args.rows]
                grad[touched] = torch.randn(args.rows, args.latent_dim, generator=g)
                dist.barrier()
                start = time.perf_counter()
                dist.all_reduce(grad.clone())
                dense.append(time.perf_counter() - start)
                holder.model.codes.grad = grad
                dist.barrier()
                start = time.perf_counter()
                step._average_touched_rows()
                rows.append(time.perf_counter() - start)
            results.append({"num_points": num_points, "dense_ms": 1e3 * statistics.median(dense),
                            "rows_ms": 1e3 * statistics.median(rows),
                            "dense_mb": num_points * args.latent_dim * 4 / 2**20,
                            "rows_mb": step.code_bytes_sent / 2**20})
        if rank == 0:
            Path(out).write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def communication(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "out.json")
        mp.start_processes(_communication_rank, args=(os.path.join(folder, "init"), args, out), nprocs=2,
                           start_method="spawn")
        results = json.loads(Path(out).read_text())
    print(f"code gradient per step, d = {args.latent_dim}, {args.rows} touched rows per rank, 2 gloo processes, "
          f"medians of {args.repeats}")
    print(f"{'N':>10} {'dense MB':>9} {'dense ms':>9} {'rows MB':>8} {'rows ms':>8}")
    for r in results:
        print(f"{r['num_points']:>10,} {r['dense_mb']:>9.2f} {r['dense_ms']:>9.2f} {r['rows_mb']:>8.3f} {r['rows_ms']:>8.2f}")
    return {"results": results}


def _throughput_rank(rank: int, world: int, init_file: str, args: argparse.Namespace, cache: str, out: str) -> None:
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        train = load_fashion_mnist(seed=0).train
        model = train_mapa(train, BernoulliLikelihood(), latent_dim=40, hidden=300, num_neighbors=1, num_samples=10,
                           epochs=args.epochs, batch_size=100, prior="gaussian", cache=cache, progress=False)
        settings = model.settings
        passes = torch.tensor([float(settings["decoder_passes"])])
        if world > 1:
            dist.all_reduce(passes)
        if rank == 0:
            Path(out).write_text(json.dumps({**settings, "all_decoder_passes": passes.item()}))
    finally:
        if world > 1:
            dist.destroy_process_group()


def throughput(args: argparse.Namespace) -> dict:
    cache = Path(args.cache)
    if not cache.exists():
        print(f"building the exact cache of the 50,000 training images once: {cache}")
        MAPAPosterior.fit(load_fashion_mnist(seed=0).train, kernel=BernoulliLikelihood().cache_kernel(),
                          num_cached=64, progress=False).save(cache)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for world in args.processes:
            runs = []
            for repeat in range(args.repeats):
                out = os.path.join(folder, f"out{world}-{repeat}.json")
                mp.start_processes(_throughput_rank,
                                   args=(world, os.path.join(folder, f"init{world}-{repeat}"), args, str(cache), out),
                                   nprocs=world, start_method="spawn")
                runs.append(json.loads(Path(out).read_text()))
            seconds = [s["train_seconds"] for s in runs]
            median = runs[seconds.index(statistics.median_low(seconds))]
            points = median["steps"] * median["batch_size"] * world
            results.append({"processes": world, "steps_per_process": median["steps"], "train_seconds": seconds,
                            "points_per_second": points / median["train_seconds"],
                            "decoder_passes_per_second": median["all_decoder_passes"] / median["train_seconds"]})
    print("train_mapa on Fashion-MNIST (50,000 x 784, latent 40, hidden 300, K = 1, S = 10, batch 100 per process)")
    print(f"medians of {args.repeats} runs (seconds: all runs)")
    print(f"{'processes':>9} {'steps':>6} {'points/s':>9} {'passes/s':>9}  seconds")
    for r in results:
        print(f"{r['processes']:>9} {r['steps_per_process']:>6} {r['points_per_second']:>9.0f} "
              f"{r['decoder_passes_per_second']:>9.0f}  {', '.join(f'{t:.1f}' for t in r['train_seconds'])}")
    return {"results": results}


def main() -> None:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    comm = commands.add_parser("communication")
    comm.add_argument("--sizes", type=int, nargs="+", default=[60000, 1000000])
    comm.add_argument("--latent-dim", type=int, default=40)
    comm.add_argument("--rows", type=int, default=1100, help="touched rows per rank: batch 100 x (K + S = 11)")
    comm.add_argument("--repeats", type=int, default=20)
    thr = commands.add_parser("throughput")
    thr.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    thr.add_argument("--epochs", type=int, default=1)
    thr.add_argument("--repeats", type=int, default=3)
    thr.add_argument("--cache", default="benchmarks/results/fashion-train-cache.pt")
    parser.add_argument("--out", help="also write the numbers as JSON here")
    args = parser.parse_args()
    record = (communication if args.command == "communication" else throughput)(args)
    record.update(command=args.command, machine=f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
                  date=time.strftime("%Y-%m-%d"))
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
