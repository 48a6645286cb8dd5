"""How much does the final model's prior family cost? (issue 3: "fitting the prior")

MAPA and exact enumeration learn an empiricalized model (one code per training point);
the final model replaces its empirical prior by a parametric `p_psi(z)` fitted to the codes
(`pyro_mapa.fit_prior`). Each method is trained once per seed by
`pyro_mapa.experiments.train_and_score`, and its best-validation checkpoint's test
log-likelihood is computed exactly for the empiricalized model and, for each prior family,
by the comparison's estimator until stable to 0.01 nats (`stable_log_likelihood`).

    python benchmarks/prior_family.py --dataset spiral-dots --lr 0.03 --seeds 0 1 2

``--scorer encoder`` scores each family as the Fashion-MNIST campaign does
(benchmarks/fashion_mnist.py): an encoder fitted to each model's posterior
(`ModelScorer("encoder")`), a fixed number of samples per test image; the method's own
column (the comparison's GMM-10) is then the run's test score itself:

    python benchmarks/prior_family.py --dataset fashion-mnist --scorer encoder --lr 0.001 --seeds 0 \
        --methods mapa-1-10 --checkpoints 5 --test-particles 5000 --families gmm-30 gmm-100 flow

``--fit-time N d`` instead times each family's fit alone on ``N`` codes of dimension ``d``
(drawn from a 20-component Gaussian mixture by the first seed; the median of ``--repeats``)
and scores it on 10,000 fresh codes from the same mixture, beside the mixture's own value:

    python benchmarks/prior_family.py --fit-time 50000 40 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import pyro.distributions as dist
import torch

from pyro_mapa import fit_prior
from pyro_mapa.evaluation import empirical_log_likelihood, stable_log_likelihood
from pyro_mapa.experiments import load_split, train_and_score
from pyro_mapa.experiments.scoring import ModelScorer, continuous_log_likelihood

FAMILIES = {
    "gaussian": dict(family="gaussian"),
    "gmm-10": dict(family="gmm", num_components=10),
    "gmm-30": dict(family="gmm", num_components=30),
    "gmm-100": dict(family="gmm", num_components=100),
    "flow": dict(family="flow", num_steps=1000),
    "flow-1024": dict(family="flow", num_steps=1000, batch_size=1024),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="spiral-dots")
    parser.add_argument("--methods", nargs="+", default=["mapa-5-10", "exact"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=int, default=1_000_000)
    parser.add_argument("--lr", type=float, default=0.03)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fit-time", type=int, nargs=2, metavar=("N", "D"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--scorer", choices=["laplace", "encoder"], default="laplace")
    parser.add_argument("--checkpoints", type=int, default=20)
    parser.add_argument("--test-particles", type=int, default=2000,
                        help="samples per test image (laplace: the first of a stable estimate, up to 32,000)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.fit_time:
        fit_time(*args.fit_time, args.repeats, args.seeds[0], args.families)
        return
    split = load_split(args.dataset, seed=args.seeds[0])
    encoder_scored = args.scorer == "encoder"
    columns = ["empiricalized (exact)"] + (["comparison's GMM-10"] if encoder_scored else []) + args.families
    print(f"{args.dataset}: budget {args.budget}, lr {args.lr}, seeds {args.seeds}, {args.scorer} scorer; "
          f"true test LL {split.true_test}")
    print("| method | " + " | ".join(columns) + " |")
    print("|---" * (1 + len(columns)) + "|", flush=True)
    for method in args.methods:
        rows = []
        for seed in args.seeds:
            row = []

            def score(decoder, _, codes):
                row.append(empirical_log_likelihood(decoder, codes, split.test, split.likelihood).mean().item())
                scorer = ModelScorer("encoder", decoder, split.likelihood, split.train, split.latent_dim, split.hidden)
                for name in args.families:
                    prior = fit_prior(codes, seed=seed, progress=False, **FAMILIES[name])
                    if encoder_scored:
                        with torch.random.fork_rng():
                            scorer.update(prior, codes, final=True)
                            ll = scorer(split.test, args.test_particles)
                    else:
                        ll, _, _ = stable_log_likelihood(lambda p: continuous_log_likelihood(
                            decoder, prior, split.likelihood, codes, split.test, p), args.test_particles, 32000)
                    row.append(ll.value.mean().item())
                    # each family as it ends: a long run stopped part-way keeps what it scored
                    print(f"  {method} seed {seed} {name}: {row[-1]:.3f}", flush=True)

            particles = args.test_particles if encoder_scored else 1000
            result = train_and_score(method, split, seed, args.budget, lr=args.lr, num_checkpoints=args.checkpoints,
                                     checkpoint_test=not encoder_scored, scorer=args.scorer, test_particles=particles,
                                     max_test_particles=particles, inspect=score)
            if encoder_scored:
                row.insert(1, result.test_ll)
            rows.append(row)
        medians = [statistics.median(column) for column in zip(*rows)]
        spreads = [f"{m:.3f} ({min(c):.3f}..{max(c):.3f})" for m, c in zip(medians, zip(*rows))]
        print(f"| {method} | " + " | ".join(spreads) + " |", flush=True)


def fit_time(num_codes: int, latent_dim: int, repeats: int, seed: int, families: list[str]) -> None:
    g = torch.Generator().manual_seed(seed)
    centres = 2.0 * torch.randn(20, latent_dim, generator=g)

    def draw(n):
        return centres[torch.randint(0, 20, (n,), generator=g)] + 0.5 * torch.randn(n, latent_dim, generator=g)

    codes, fresh = draw(num_codes), draw(10_000)
    truth = dist.MixtureSameFamily(dist.Categorical(logits=torch.zeros(20)), dist.Normal(centres, 0.5).to_event(1))
    print(f"fit_prior on {num_codes:,} codes of dimension {latent_dim}, {torch.get_num_threads()} thread(s); "
          f"median of {repeats} (min..max); the mixture itself scores {truth.log_prob(fresh).mean():.2f} nats per code",
          flush=True)
    print("| family | seconds | nats per fresh code |\n|---|---|---|")
    for name in families:
        options, seconds, scores = FAMILIES[name], [], []
        for repeat in range(repeats):
            clock = time.perf_counter()
            prior = fit_prior(codes, seed=repeat, progress=False, **options)
            seconds.append(time.perf_counter() - clock)
            with torch.no_grad():
                scores.append(prior.log_prob(fresh).mean().item())
        print(f"| {name} | {statistics.median(seconds):.1f} ({min(seconds):.1f}..{max(seconds):.1f}) "
              f"| {statistics.median(scores):.2f} ({min(scores):.2f}..{max(scores):.2f}) |", flush=True)


if __name__ == "__main__":
    main()
