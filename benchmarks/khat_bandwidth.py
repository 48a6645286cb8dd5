"""Pareto k-hat of MAPA's importance weights against the cache's bandwidth.

The empiricalized model of "absolute-value" (N = 300, seed 0) at the *true* decoder and
codes, so that the only approximation is the cached proposal. For each K and bandwidth h,
the median k-hat and ESS of the S = 300 sampled particles, and how many points have
k-hat > 0.7.

    python benchmarks/khat_bandwidth.py
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch

from pyro_mapa import MAPA_ELBO, MAPAGuide, MAPAPosterior
from pyro_mapa.datasets import load_synthetic
from pyro_mapa.evaluation import importance_diagnostics


def main() -> None:
    torch.set_default_dtype(torch.float64)
    pyro.set_rng_seed(0)
    data = load_synthetic("absolute-value", num_train=300, num_test=1, seed=0)
    num_points, sigma = len(data.train), data.sigma

    def model(x, idx=None):
        with pyro.plate("data", num_points, subsample=idx):
            i = pyro.sample("i", dist.Categorical(logits=torch.zeros(num_points)))
            pyro.sample("x", dist.Normal(data.decoder(data.train_codes[i]), sigma).to_event(1), obs=x)

    print("| K | h / sigma | median k-hat | points with k-hat > 0.7 | median ESS (of 300) |")
    print("|---|---|---|---|---|")
    for k in (1, 10):
        for h in (0.002, sigma, math.sqrt(2) * sigma, 2 * sigma, 3.0):
            guide = MAPAGuide(model, MAPAPosterior.fit(data.train, bandwidth=h, num_cached=20))
            d = importance_diagnostics(model, guide, MAPA_ELBO(num_neighbors=k, num_samples=300), data.train)
            print(f"| {k} | {h / sigma:.2f} | {d.k_hat.median():.2f} | {len(d.flagged)} / {num_points} | "
                  f"{d.ess.median():.1f} |", flush=True)


if __name__ == "__main__":
    main()
