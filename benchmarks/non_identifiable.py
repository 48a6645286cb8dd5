"""MAPA on the non-identifiable pair: one cache, two models, two latent posteriors.

"non-identifiable-a" and "-b" have the same observations but decoders f and f o g
(g(z) = -z) and codes z and -z. For test points we compare, on a grid in z:

* the true index posterior p(i = m | x) ∝ N(x; f(z_m), sigma^2) (the same under both
  models; pyro_mapa.evaluation.gaussian_index_log_posterior) with MAPA's q
  (pyro_mapa.evaluation.posterior_distance: TV and KL);
* latent posteriors by the 1-D Wasserstein distance W1 = ∫ |F - G| dz: MAPA's index
  posterior pushed through each model's own true codes, sum_m q(m | x) δ(z_m), against
  that model's true p(z | x); and amortized Gaussian encoders trained with model a's
  true decoder held fixed (benchmarks/encoders.py: "elbo", Trace_ELBO from a random
  start; "sleep+elbo", Trace_ELBO started from a sleep-phase fit), against both true
  posteriors. Also each encoder's own train ELBO (against the true mean log p(x)), and
  its index posterior (pyro_mapa.evaluation.latent_to_index_log_posterior) through a's
  codes and through b's, against the true index posterior.

    python benchmarks/non_identifiable.py --seeds 0 1 2 --plot benchmarks/figures/non_identifiable.png
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
import pyro
import torch
from encoders import encoder_posterior, train_elbo, train_encoder
from PIL import Image

from pyro_mapa import MAPAPosterior
from pyro_mapa.datasets import load_synthetic
from pyro_mapa.evaluation import (
    gaussian_index_log_posterior,
    latent_to_index_log_posterior,
    posterior_distance,
)

GRID = torch.linspace(-6.0, 6.0, 6001, dtype=torch.float64)
DZ = float(GRID[1] - GRID[0])


def true_latent_density(data, x: torch.Tensor) -> torch.Tensor:
    """p(z | x) ∝ N(z; 0, 1) N(x; f(z), sigma^2) on GRID (a density), per row of x."""
    mean = data.decoder(GRID.unsqueeze(-1))
    log_post = -0.5 * GRID**2 - 0.5 * torch.cdist(x, mean) ** 2 / data.sigma**2
    return log_post.softmax(-1) / DZ


def true_latent_cdf(data, x: torch.Tensor) -> torch.Tensor:
    """CDF on GRID of p(z | x), per row of x."""
    return (true_latent_density(data, x) * DZ).cumsum(-1)


def discrete_cdf(weights: torch.Tensor, atoms: torch.Tensor) -> torch.Tensor:
    """CDF on GRID of sum_m weights[:, m] δ(atoms[m])."""
    position = torch.searchsorted(GRID, atoms.contiguous())
    mass = torch.zeros(len(weights), len(GRID), dtype=torch.float64)
    mass.index_add_(1, position.clamp_max(len(GRID) - 1), weights)
    return mass.cumsum(-1)


def w1(cdf_a: torch.Tensor, cdf_b: torch.Tensor) -> torch.Tensor:
    return (cdf_a - cdf_b).abs().sum(-1) * DZ


def run(seed: int, num_train: int, num_test: int, steps: dict[str, int], plot: Path | None) -> dict[str, float]:
    t0 = time.perf_counter()
    pyro.set_rng_seed(seed)
    a = load_synthetic("non-identifiable-a", num_train, num_test, seed, dtype=torch.float64)
    b = load_synthetic("non-identifiable-b", num_train, num_test, seed, dtype=torch.float64)
    assert torch.equal(a.train, b.train) and torch.equal(a.test, b.test)
    posterior = MAPAPosterior.fit(a.train, scale=a.sigma, num_cached=64, progress=False)  # one cache for both
    log_q = posterior.query(a.test, progress=False).dense_log_prob(num_train)
    log_p_index = gaussian_index_log_posterior(a.test, a.decoder(a.train_codes), a.sigma)
    assert torch.allclose(log_p_index, gaussian_index_log_posterior(b.test, b.decoder(b.train_codes), b.sigma))
    index = posterior_distance(log_q, log_p_index)
    cdf_true = {"a": true_latent_cdf(a, a.test), "b": true_latent_cdf(b, b.test)}
    mapa = {m: w1(discrete_cdf(log_q.exp(), d.train_codes[:, 0]), cdf_true[m]) for m, d in (("a", a), ("b", b))}
    gap = mapa["a"] - mapa["b"]
    row = {
        "index TV, MAPA (a = b)": index.mean_total_variation,
        "index KL, MAPA (a = b)": index.mean_kl,
        "W1 MAPA vs a": mapa["a"].mean().item(),
        "W1 MAPA vs b": mapa["b"].mean().item(),
        "W1 MAPA, a minus b (paired)": gap.mean().item(),
        "  its 2 standard errors": 2 * gap.std().item() / math.sqrt(num_test),
        "W1 true a vs true b (the scale of far)": w1(cdf_true["a"], cdf_true["b"]).mean().item(),
        "true mean log p(x), train": a.log_likelihood(a.train).mean().item(),
    }
    encoders = {}
    for recipe, n in steps.items():
        encoder = encoders[recipe] = train_encoder(a, recipe, n, seed)  # model a's decoder, held fixed
        q_z = encoder_posterior(encoder, a.test)
        cdf = q_z.base_dist.cdf(GRID.unsqueeze(0))
        row[f"W1 {recipe} encoder(a) vs a"] = w1(cdf, cdf_true["a"]).mean().item()
        row[f"W1 {recipe} encoder(a) vs b"] = w1(cdf, cdf_true["b"]).mean().item()
        row[f"{recipe} encoder(a): train ELBO"] = train_elbo(a, encoder)
        for m, d in (("a", a), ("b", b)):
            pushed = latent_to_index_log_posterior(q_z, d.train_codes)
            row[f"index TV, {recipe} encoder(a) via {m}'s codes"] = posterior_distance(
                pushed, log_p_index
            ).mean_total_variation
    print(f"seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
    if plot is not None:
        plot_posteriors(a, b, log_q, encoders, plot)
    return row


def plot_posteriors(a, b, log_q: torch.Tensor, encoders: dict, path: Path) -> None:
    """Three test points: around model a's posterior mode (top) and model b's (bottom)."""
    z_test = a.test_codes[:, 0]
    chosen = [int((z_test - target).abs().argmin()) for target in (0.4, -0.9, 1.5)]
    x = a.test[chosen]
    dens = {"a": true_latent_density(a, x), "b": true_latent_density(b, x)}
    colors = {"elbo": "tab:red", "sleep+elbo": "tab:green"}
    fig, axes = plt.subplots(2, 3, figsize=(10, 6))
    for col, j in enumerate(chosen):
        for row, (m, d) in enumerate((("a", a), ("b", b))):
            ax = axes[row, col]
            mode = float(GRID[dens[m][col].argmax()])
            window = (GRID > mode - 0.15) & (GRID < mode + 0.15)
            ax.plot(GRID[window], dens[m][col][window], "k", lw=2, label="true p(z | x) of the row's model")
            weights = log_q[j].exp()
            ax.hist(d.train_codes[:, 0].numpy(), bins=torch.linspace(mode - 0.15, mode + 0.15, 31).numpy(),
                    weights=weights.numpy() / 0.01, color="tab:blue", alpha=0.45,
                    label="MAPA's q(i | x) through the row's model's codes (one cache)")
            for recipe, encoder in encoders.items():
                q_z = encoder_posterior(encoder, x[col : col + 1])
                density = q_z.base_dist.log_prob(GRID[window].unsqueeze(-1)).exp()[:, 0]
                mass = (q_z.base_dist.cdf(torch.tensor([[mode + 0.15]])) - q_z.base_dist.cdf(
                    torch.tensor([[mode - 0.15]]))).item()
                ax.plot(GRID[window], density, color=colors.get(recipe, "tab:gray"), lw=1.2, ls="--",
                        label=f"{recipe} encoder (trained on a)")
                ax.text(0.02, 0.95 - 0.08 * list(encoders).index(recipe), f"{recipe}: mass {mass:.2f}",
                        transform=ax.transAxes, fontsize=7, color=colors.get(recipe, "tab:gray"), va="top")
            ax.set_xlabel(f"z (model {m})")
            ax.tick_params(labelsize=7)
        axes[0, col].set_title(f"test point, true z_a = {float(z_test[j]):.2f}", fontsize=9)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8)
    fig.suptitle("Top: around model a's posterior mode; bottom: around model b's (same x). "
                 "Encoder mass: its probability inside the panel.", fontsize=9)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    with Image.open(path) as image:  # a 128-colour palette: a third of the bytes, the same picture
        small = image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num-train", type=int, default=1000)
    parser.add_argument("--num-test", type=int, default=200)
    parser.add_argument("--elbo-steps", type=int, default=6000, help="Trace_ELBO steps of the 'elbo' encoder")
    parser.add_argument("--sleep-steps", type=int, default=12000,
                        help="sleep steps of the 'sleep+elbo' encoder (then half as many Trace_ELBO steps)")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of three test points' posteriors (first seed)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    steps = {"elbo": args.elbo_steps, "sleep+elbo": args.sleep_steps}
    rows = [run(s, args.num_train, args.num_test, steps, args.plot if k == 0 else None)
            for k, s in enumerate(args.seeds)]
    print("| quantity | " + " | ".join(f"seed {s}" for s in args.seeds) + " | median |")
    print("|---|" + "---|" * (len(args.seeds) + 1))
    for key in rows[0]:
        values = [r[key] for r in rows]
        print(f"| {key} | " + " | ".join(f"{v:.4f}" for v in values) + f" | {statistics.median(values):.4f} |")


if __name__ == "__main__":
    main()
