"""MAPA on the non-identifiable pair: one cache, two models, two latent posteriors.

"non-identifiable-a" and "-b" have the same observations but decoders f and f o g
(g(z) = -z) and codes z and -z. For test points we compare, on a grid in z:

* the true index posterior p(i = m | x) ∝ N(x; f(z_m), sigma^2) (the same under both
  models) with MAPA's q (pyro_mapa.diagnostics.posterior_distance: TV and KL);
* latent posteriors by the 1-D Wasserstein distance W1 = ∫ |F - G| dz: MAPA's index
  posterior pushed through each model's own true codes, sum_m q(m | x) δ(z_m), against
  that model's true p(z | x); and an amortized Gaussian encoder trained by Trace_ELBO
  with model a's true decoder held fixed, against both true posteriors.

    python benchmarks/non_identifiable.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import statistics

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from pyro_mapa import MAPAPosterior
from pyro_mapa.baselines import encoder_guide, make_encoder
from pyro_mapa.datasets import load_synthetic
from pyro_mapa.diagnostics import dense_log_q, posterior_distance

GRID = torch.linspace(-6.0, 6.0, 6001, dtype=torch.float64)


def true_latent_cdf(data, x: torch.Tensor) -> torch.Tensor:
    """CDF on GRID of p(z | x) ∝ N(z; 0, 1) N(x; f(z), sigma^2), per row of x."""
    mean = data.decoder(GRID.unsqueeze(-1))
    log_post = -0.5 * GRID**2 - 0.5 * torch.cdist(x, mean) ** 2 / data.sigma**2
    return log_post.softmax(-1).cumsum(-1)


def discrete_cdf(weights: torch.Tensor, atoms: torch.Tensor) -> torch.Tensor:
    """CDF on GRID of sum_m weights[:, m] δ(atoms[m])."""
    position = torch.searchsorted(GRID, atoms.contiguous())
    mass = torch.zeros(len(weights), len(GRID), dtype=torch.float64)
    mass.index_add_(1, position.clamp_max(len(GRID) - 1), weights)
    return mass.cumsum(-1)


def w1(cdf_a: torch.Tensor, cdf_b: torch.Tensor) -> torch.Tensor:
    return (cdf_a - cdf_b).abs().sum(-1) * (GRID[1] - GRID[0])


def run(seed: int, num_train: int, num_test: int, steps: int) -> dict[str, float]:
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    a = load_synthetic("non-identifiable-a", num_train, num_test, seed, dtype=torch.float64)
    b = load_synthetic("non-identifiable-b", num_train, num_test, seed, dtype=torch.float64)
    posterior = MAPAPosterior.fit(a.train, scale=a.sigma, num_neighbors=64)  # one cache for both
    log_q = dense_log_q(posterior.query(a.test), num_train)
    log_p_index = torch.log_softmax(
        -0.5 * torch.cdist(a.test, a.decoder(a.train_codes)) ** 2 / a.sigma**2, -1
    )  # the same under b: f_b(z^b_m) = f_a(z^a_m)
    index = posterior_distance(log_q, log_p_index)
    cdf_true = {"a": true_latent_cdf(a, a.test), "b": true_latent_cdf(b, b.test)}
    mapa = {m: discrete_cdf(log_q.exp(), d.train_codes[:, 0]) for m, d in (("a", a), ("b", b))}

    # an encoder trained with model a's true decoder held fixed
    encoder = make_encoder(2, 1).double()

    def model(x, idx=None):
        with pyro.plate("data", num_train, subsample=idx):
            z = pyro.sample("z", dist.Normal(torch.zeros(1, dtype=torch.float64), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(a.decoder(z), a.sigma).to_event(1), obs=x)

    svi = SVI(model, encoder_guide(encoder, num_train), Adam({"lr": 1e-2}), Trace_ELBO())
    for _ in range(steps):
        idx = torch.randint(0, num_train, (100,))
        svi.step(a.train[idx], idx)
    with torch.no_grad():
        loc, log_scale = encoder(a.test).chunk(2, -1)
        enc = dist.Normal(loc, log_scale.clamp(-10, 5).exp()).cdf(GRID.unsqueeze(0))
    return {
        "index TV (a = b)": index.mean_total_variation,
        "index KL (a = b)": index.mean_kl,
        "W1 MAPA vs a": w1(mapa["a"], cdf_true["a"]).mean().item(),
        "W1 MAPA vs b": w1(mapa["b"], cdf_true["b"]).mean().item(),
        "W1 encoder(a) vs a": w1(enc, cdf_true["a"]).mean().item(),
        "W1 encoder(a) vs b": w1(enc, cdf_true["b"]).mean().item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num-train", type=int, default=1000)
    parser.add_argument("--num-test", type=int, default=200)
    parser.add_argument("--steps", type=int, default=6000)
    args = parser.parse_args()
    rows = [run(s, args.num_train, args.num_test, args.steps) for s in args.seeds]
    print("| quantity | " + " | ".join(f"seed {s}" for s in args.seeds) + " | median |")
    print("|---|" + "---|" * (len(args.seeds) + 1))
    for key in rows[0]:
        values = [r[key] for r in rows]
        print(f"| {key} | " + " | ".join(f"{v:.4f}" for v in values) + f" | {statistics.median(values):.4f} |")


if __name__ == "__main__":
    main()
