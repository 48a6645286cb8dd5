"""Is the comparison's test log-likelihood right, and stable in its number of samples?

SPEC section 4 asks for one estimator for every continuous-prior model, with enough
importance samples that the estimate is stable to 0.01 nats. Each method is trained by
`pyro_mapa.experiments.train_and_score`; its best-validation checkpoint (a decoder, a prior
and the training codes) is then scored on the test points by the comparison's estimator
(`continuous_log_likelihood`: importance sampling with the Laplace mixture anchored at the
codes) at each of `--particles`, by `stable_log_likelihood` as the comparison does, and by
grid quadrature (`pyro_mapa.evaluation.grid_log_likelihood`, no proposal: the reference;
every data set of the comparison has a latent of d <= 2). Beside the stable estimate, its
diagnostics (issue 15): the median effective sample size of a point's weights, the median
Pareto k-hat (above 0.7: the variance is not to be trusted), and whether `stable_log_likelihood`
called it converged.

    python benchmarks/estimator_stability.py --dataset spiral-dots --methods exact:0.03 mapa-5-10:0.03 vae:0.01
"""

from __future__ import annotations

import argparse

import torch

from pyro_mapa.evaluation import grid_log_likelihood, stable_log_likelihood
from pyro_mapa.experiments import load_split, train_and_score
from pyro_mapa.experiments.scoring import continuous_log_likelihood


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="spiral-dots")
    parser.add_argument("--methods", nargs="+", default=["vae:0.01", "iwae-50:0.01", "autodelta:0.01", "mapa-5-10:0.03",
                                                         "exact:0.03"], help="method:learning-rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=int, default=1_000_000)
    parser.add_argument("--particles", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--grid", type=int, default=0, help="grid points per axis (default 20,001 for d = 1, 801 for d = 2)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    split = load_split(args.dataset, seed=args.seed)
    print(f"{args.dataset}: budget {args.budget}, seed {args.seed}; test LL, nats per point")
    print("| method | lr | " + " | ".join(f"IS {p}" for p in args.particles) + " | IS until stable (samples) "
          "| median ESS | median k-hat | converged | grid | stable minus grid |")
    print("|---" * (len(args.particles) + 8) + "|", flush=True)
    for spec in args.methods:
        method, lr = spec.split(":")
        scores = {}

        def score(decoder, prior, codes):
            def estimate(p):
                return continuous_log_likelihood(decoder, prior, split.likelihood, codes, split.test, p, k_hat=True)

            for p in args.particles:
                scores[p] = estimate(p).value.mean().item()
            stable, scores["samples"], scores["converged"] = stable_log_likelihood(estimate, 2000, 32000)  # as compared
            scores["stable"] = stable.value.mean().item()
            scores["ess"], scores["k_hat"] = stable.ess.median().item(), stable.k_hat.median().item()
            d = codes.shape[1]
            low, high = codes.min().item() - 4.0, codes.max().item() + 4.0
            points = args.grid or (20001 if d == 1 else 801)
            scores["grid"] = grid_log_likelihood(decoder, prior, split.likelihood, split.test, low, high, points).mean().item()

        train_and_score(method, split, args.seed, args.budget, lr=float(lr),
                       test_particles=1000, max_test_particles=1000, inspect=score)
        print(f"| {method} | {lr} | " + " | ".join(f"{scores[p]:.3f}" for p in args.particles)
              + f" | {scores['stable']:.3f} ({scores['samples']}) | {scores['ess']:.0f} | {scores['k_hat']:.2f} "
              f"| {'yes' if scores['converged'] else 'no'} | {scores['grid']:.3f} "
              f"| {scores['stable'] - scores['grid']:+.3f} |", flush=True)


if __name__ == "__main__":
    main()
