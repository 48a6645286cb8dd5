"""A MAPA step's time against N: Adam on every code (dense) against SparseAdam on the rows a
step decoded (``EmpiricalModel(sparse=True)``, ``train_mapa(code_optimizer="sparse-adam")``).

The step is the real one (``MAPA_ELBO(1, 10)`` with ``MAPAGuide``, latent 40, decoder
40 -> 300 -> 300 -> 784, Bernoulli, 100 points a step) on random binary data; the cache is a
random table (each point first, 63 random others, a tail of 1%: a step's cost does not depend
on which neighbours they are, and an exact cache of a million points takes hours here).
Steps of the two optimisers alternate, after warm-up; medians.

``--quality E``: also ``train_mapa`` on Fashion-MNIST's 50,000 training images for ``E`` epochs
with each optimiser (K = 1, S = 10, lr 1e-3, the exact cache of benchmarks/data_parallel.py,
built if missing) and the empiricalized model's exact log-likelihood of the 10,000 validation
images.

    OMP_NUM_THREADS=1 python benchmarks/code_optimizer.py --sizes 50000 1000000 --steps 20 --quality 3
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import pyro
import torch

from pyro_mapa import MAPA_ELBO, Kernel, MAPAGuide, MAPAPosterior, NeighborTable
from pyro_mapa.datasets import load_fashion_mnist
from pyro_mapa.models import BernoulliLikelihood, EmpiricalModel, make_decoder
from pyro_mapa.trainer import train_mapa


def random_cache(data: torch.Tensor, num_cached: int = 64) -> MAPAPosterior:
    n = len(data)
    others = torch.randint(0, n, (n, num_cached - 1))
    index = torch.cat([torch.arange(n).unsqueeze(1), others], 1)
    log_prob = torch.log_softmax(torch.randn(n, num_cached), 1) + math.log(0.99)
    table = NeighborTable(index, log_prob, torch.full((n,), math.log(0.01)))
    return MAPAPosterior(data, Kernel.bernoulli(), table, "random table: timing only")


def step_function(data: torch.Tensor, posterior: MAPAPosterior, sparse: bool):
    n = len(data)
    torch.manual_seed(0)
    model = EmpiricalModel(make_decoder(40, 784, 300), 0.1 * torch.randn(n, 40), BernoulliLikelihood(), sparse=sparse)
    guide = MAPAGuide(model, posterior, create_plates=lambda x, idx=None: pyro.plate("data", n, subsample=idx),
                      check_data=False)
    guide(data[:1], torch.arange(1))
    loss = MAPA_ELBO(1, 10, max_plate_nesting=1)(model, guide)
    if sparse:
        optimizers = [torch.optim.Adam(model.decoder.parameters(), lr=1e-3), torch.optim.SparseAdam([model.codes], lr=1e-3)]
    else:
        optimizers = [torch.optim.Adam(loss.parameters(), lr=1e-3)]

    def step() -> float:
        idx = torch.randint(0, n, (100,))
        start = time.perf_counter()
        for optimizer in optimizers:
            optimizer.zero_grad()
        loss(data[idx], idx).backward()
        for optimizer in optimizers:
            optimizer.step()
        return time.perf_counter() - start

    return step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[50000, 1000000])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--quality", type=int, default=0, metavar="EPOCHS")
    parser.add_argument("--cache", default="benchmarks/results/fashion-train-cache.pt")
    args = parser.parse_args()
    print(f"{torch.get_num_threads()} torch thread(s), torch {torch.__version__}; ms per step, medians of {args.steps}")
    print(f"{'N':>10} {'Adam (dense)':>13} {'SparseAdam':>11}")
    for n in args.sizes:
        data = (torch.rand(n, 784, generator=torch.Generator().manual_seed(0)) < 0.3).float()
        with pyro.settings.context(module_local_params=True):
            posterior = random_cache(data)
            steps = {sparse: step_function(data, posterior, sparse) for sparse in (False, True)}
            for _ in range(3):
                for step in steps.values():
                    step()
            times = {False: [], True: []}
            for _ in range(args.steps):
                for sparse, step in steps.items():
                    times[sparse].append(step())
        print(f"{n:>10,} {1e3 * statistics.median(times[False]):>13.1f} {1e3 * statistics.median(times[True]):>11.1f}",
              flush=True)

    if args.quality:
        images = load_fashion_mnist(seed=0)
        print(f"Fashion-MNIST, {args.quality} epochs: exact validation log-likelihood (nats per image), train seconds")
        for optimizer in ("adam", "sparse-adam"):
            model = train_mapa(images.train, BernoulliLikelihood(), latent_dim=40, hidden=300, num_neighbors=1,
                               num_samples=10, epochs=args.quality, prior="gaussian", cache=args.cache,
                               code_optimizer=optimizer, progress=False)
            print(f"{optimizer:>12} {model.log_likelihood(images.val).mean().item():9.2f} "
                  f"{model.settings['train_seconds']:7.0f}", flush=True)


if __name__ == "__main__":
    main()
