"""Time and effect of the README quickstart (2000 MAPA steps, K = 5, S = 10, batch 100).

Runs `pyro_mapa.experiments.demo.run_demo` (the quickstart as a job) once per seed and prints the
training time and the empiricalized model's exact train / test log-likelihood (nats per
point) before and after, with medians over seeds.

    python benchmarks/quickstart.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import platform
import statistics

import torch

from pyro_mapa.experiments.demo import run_demo


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--dataset", default="spiral-dots")
    args = parser.parse_args()
    print(f"# {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| seed | train s | train LL before | train LL after | test LL after | true test LL |")
    print("|---|---|---|---|---|---|")
    results = []
    for seed in args.seeds:
        r = run_demo(dataset=args.dataset, seed=seed, out=None, progress=False)
        results.append(r)
        print(f"| {seed} | {r.seconds:.1f} | {r.train_before:.2f} | {r.train_after:.2f} | {r.test_after:.2f} | "
              f"{r.true_test:.3f} |", flush=True)
    med = {k: statistics.median(getattr(r, k) for r in results)
           for k in ("seconds", "train_before", "train_after", "test_after", "true_test")}
    print(f"| median | {med['seconds']:.1f} | {med['train_before']:.2f} | {med['train_after']:.2f} | "
          f"{med['test_after']:.2f} | {med['true_test']:.3f} |")


if __name__ == "__main__":
    main()
