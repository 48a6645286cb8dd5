"""MAPA's index posterior against the true one, for bandwidths around the default.

On the synthetic sets with ground truth ("absolute-value", "spiral-dots", "embedded":
a 2-D latent in 20 dimensions), N = 1000 training points and 500 test points per seed,
the reference is the empiricalized model's index posterior at the true decoder and
codes, p(i = m | x) ∝ N(x; f(z_m), sigma^2 I)
(pyro_mapa.evaluation.gaussian_index_log_posterior). Against it, by mean total
variation and KL(p || q) over the test points (pyro_mapa.evaluation.posterior_distance):

* MAPA's q(i = m | x) ∝ exp(-||x - x_m||^2 / (2 h^2)) (MAPAPosterior.fit + query +
  NeighborTable.dense_log_prob) for h = 0.25, 0.5, 0.71, 1, 1.41, 2, 4 times the default sqrt(2) sigma and for
  bandwidth="auto", once with every index kept (K_c = N: the kernel itself) and once as
  the default cache (K_c = 64, its tail spread uniformly over the other indices, as
  MAPAIndex does);
* amortized Gaussian encoders q(z | x) trained with the true decoder held fixed
  (benchmarks/encoders.py: "elbo" and "sleep+elbo"), pushed to indices by
  q(i = m | x) ∝ q(z_m | x) / p(z_m) (pyro_mapa.evaluation.latent_to_index_log_posterior:
  exact when q(z | x) is the true posterior, since p(i = m | x) ∝ p(z_m | x) / p(z_m)).

    python benchmarks/posterior_quality.py --seeds 0 1 2 --plot benchmarks/figures/posterior_quality.png
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from encoders import encoder_posterior, train_encoder
from PIL import Image

from pyro_mapa import MAPAPosterior
from pyro_mapa.datasets import load_synthetic
from pyro_mapa.evaluation import (
    gaussian_index_log_posterior,
    latent_to_index_log_posterior,
    posterior_distance,
)

DATASETS = ("absolute-value", "spiral-dots", "embedded")
MULTIPLIERS = (0.25, 0.5, 0.71, 1.0, 1.41, 2.0, 4.0)
CACHE = 64


def run(name: str, seed: int, num_train: int, num_test: int, steps: dict[str, int]) -> dict:
    """{(method, setting): (TV, KL)} for one data set and seed; "auto" also gives its h."""
    data = load_synthetic(name, num_train, num_test, seed, dtype=torch.float64)
    log_p = gaussian_index_log_posterior(data.test, data.decoder(data.train_codes), data.sigma)
    default_h = math.sqrt(2) * data.sigma
    out = {}

    def mapa(bandwidth, num_neighbors):
        posterior = MAPAPosterior.fit(data.train, bandwidth=bandwidth, num_cached=num_neighbors, progress=False)
        d = posterior_distance(posterior.query(data.test, progress=False).dense_log_prob(num_train), log_p)
        return (d.mean_total_variation, d.mean_kl), math.sqrt(posterior.temperature / 2)  # T = 2 h^2

    for k_c in (num_train, CACHE):
        for mult in MULTIPLIERS:
            out[("mapa", k_c, mult)], _ = mapa(mult * default_h, k_c)
        out[("mapa", k_c, "auto")], h = mapa("auto", k_c)
        out[("auto h / default h", k_c)] = h / default_h
    for recipe, n in steps.items():
        encoder = train_encoder(data, recipe, n, seed)
        pushed = latent_to_index_log_posterior(encoder_posterior(encoder, data.test), data.train_codes)
        d = posterior_distance(pushed, log_p)
        out[("encoder", recipe)] = (d.mean_total_variation, d.mean_kl)
    return out


def plot(results: dict, seeds: list[int], steps: dict[str, int], path: Path) -> None:
    names = list(results)
    fig, axes = plt.subplots(2, len(names), figsize=(3.8 * len(names), 6.2), squeeze=False)
    colors = {"elbo": "tab:red", "sleep+elbo": "tab:green"}
    for col, name in enumerate(names):
        rows = results[name]
        for r, (metric, ax) in enumerate(zip(("mean TV", "mean KL(p || q), nats"), axes[:, col])):
            for k_c, style in ((rows[0]["n"], "-o"), (CACHE, "--s")):
                values = [[row[("mapa", k_c, m)][r] for row in rows] for m in MULTIPLIERS]
                med = [statistics.median(v) for v in values]
                label = "MAPA, K_c = N (the kernel)" if k_c != CACHE else f"MAPA, K_c = {CACHE} (cache)"
                line, = ax.plot(MULTIPLIERS, med, style, color="tab:blue" if k_c != CACHE else "tab:purple",
                                label=label, ms=4)
                ax.fill_between(MULTIPLIERS, [min(v) for v in values], [max(v) for v in values],
                                color=line.get_color(), alpha=0.15)
                ax.plot([row[("auto h / default h", k_c)] for row in rows],
                        [row[("mapa", k_c, "auto")][r] for row in rows], "*", color=line.get_color(), ms=9,
                        label=f'bandwidth="auto", K_c = {"N" if k_c != CACHE else CACHE}')
            for recipe in steps:
                ax.axhline(statistics.median(row[("encoder", recipe)][r] for row in rows), color=colors[recipe],
                           ls=":", label=f"{recipe} encoder, pushed to indices")
            ax.set_xscale("log", base=2)
            ax.set_xticks((0.25, 0.5, 1, 2, 4), ["0.25", "0.5", "1", "2", "4"])
            if r == 1:
                ax.set_yscale("log")
                ax.set_xlabel("h / default h (default h = sqrt(2) sigma)")
            else:
                ax.set_title(name, fontsize=10)
            ax.set_ylabel(metric, fontsize=8)
            ax.tick_params(labelsize=7)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=7)
    fig.suptitle(f"Index posterior against the true one (median over seeds {seeds}, band: min..max)", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    with Image.open(path) as image:  # a 128-colour palette: a third of the bytes, the same picture
        small = image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num-train", type=int, default=1000)
    parser.add_argument("--num-test", type=int, default=500)
    parser.add_argument("--elbo-steps", type=int, default=4000, help="Trace_ELBO steps of the 'elbo' encoder")
    parser.add_argument("--sleep-steps", type=int, default=8000,
                        help="sleep steps of the 'sleep+elbo' encoder (then half as many Trace_ELBO steps)")
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    steps = {"elbo": args.elbo_steps, "sleep+elbo": args.sleep_steps}
    results = {}
    for name in args.datasets:
        results[name] = []
        for seed in args.seeds:
            t0 = time.perf_counter()
            results[name].append({"n": args.num_train, **run(name, seed, args.num_train, args.num_test, steps)})
            print(f"{name} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
    for name, rows in results.items():
        print(f"\n{name} (N = {args.num_train}, {args.num_test} test points, medians over seeds {args.seeds}; "
              "min..max in brackets)")
        print("| index posterior | TV, K_c = N | KL, K_c = N | TV, K_c = 64 | KL, K_c = 64 |")
        print("|---|---|---|---|---|")

        def cell(values):
            return f"{statistics.median(values):.3f} ({min(values):.3f}..{max(values):.3f})"

        for setting in (*MULTIPLIERS, "auto"):
            if setting == "auto":
                hs = [row[("auto h / default h", args.num_train)] for row in rows]
                label = f'MAPA, bandwidth="auto" (h = {statistics.median(hs):.2f} x default)'
            else:
                label = f"MAPA, h = {setting:g} x default"
            cells = [cell([row[("mapa", k, setting)][r] for row in rows]) for k in (args.num_train, CACHE)
                     for r in (0, 1)]
            print(f"| {label} | " + " | ".join(cells) + " |")
        for recipe in steps:
            cells = [cell([row[("encoder", recipe)][r] for row in rows]) for r in (0, 1)]
            print(f"| {recipe} encoder, q(z_m | x) / p(z_m) | " + " | ".join(cells) + " | | |")
    if args.plot is not None:
        plot(results, args.seeds, steps, args.plot)


if __name__ == "__main__":
    main()
