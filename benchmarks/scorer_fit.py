"""Is a Fashion-MNIST test score limited by its scorer? (issue 11)

The campaign (benchmarks/fashion_mnist.py) scores every trained model by importance sampling
from an encoder fitted to that model's posterior for 3,000 Adam steps
(`pyro_mapa.experiments.scoring.ModelScorer`); the estimate is a lower bound in expectation,
the looser the poorer the proposal. The VAE's scores came with a median ESS of about 43 of
5,000 draws, MAPA's with about 5: is MAPA's gap to the VAE partly the scorer's?

Each method trains once, exactly as in the campaign (`train_and_score`: the same seed and
budget give the same trajectory whatever the evaluation; one checkpoint, at the end, where
the campaign's best checkpoints were for these methods), then its final model is scored on
the first ``--num-score`` test images with one encoder fitted for each of ``--fit-steps``
in turn (the fit continues: 3,000 then 12,000 more for 15,000), the same test images each
time. Printed per fit: the mean test log-likelihood, its change from the first fit with
the paired standard error, the median ESS and k-hat; saved to ``--out`` as it goes.

    python benchmarks/scorer_fit.py --methods mapa-1-10@gmm100 vae --seed 0 --fit-steps 3000 15000

``--report`` runs nothing: from the saved results it prints, per seed and fit, the first
method's estimate minus each other's, image by image (the same test images), with the paired
standard error, and the median over seeds.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch

from pyro_mapa.experiments import load_split, paired_difference, train_and_score
from pyro_mapa.experiments.scoring import ModelScorer

DEFAULT_OUT = Path(__file__).parent / "results" / "fashion-mnist" / "scorer-fit"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", nargs="+", default=["mapa-1-10@gmm100", "vae"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=int, default=1_000_000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--fit-steps", type=int, nargs="+", default=[3000, 15000],
                        help="total Adam steps of the scorer's encoder at each score (increasing)")
    parser.add_argument("--num-score", type=int, default=500, help="test images scored (the first ones)")
    parser.add_argument("--test-particles", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--report", action="store_true",
                        help="print the paired differences between --methods from saved results, run nothing")
    args = parser.parse_args()
    if args.report:
        report(args.methods, args.out)
        return
    if sorted(args.fit_steps) != args.fit_steps:
        parser.error("--fit-steps must increase")
    split = load_split("fashion-mnist", num_val=1000, num_test=2000)
    test = split.test[: args.num_score]
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"| method | seed | encoder fit steps | test LL ({len(test)} images) | change (paired se) | median ESS | median k-hat |")
    print("|---|---|---|---|---|---|---|", flush=True)
    for method in args.methods:
        rows = []

        def score(decoder, prior, codes):
            scorer = ModelScorer("encoder", decoder, split.likelihood, split.train, split.latent_dim, split.hidden,
                                 final_fit_steps=args.fit_steps[0])
            done, first = 0, None
            with torch.random.fork_rng(), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # a poor k-hat is a column of the table
                for steps in args.fit_steps:
                    if done == 0:
                        scorer.update(prior, codes, final=True)
                    else:  # the same encoder, fitted further
                        scorer.proposal.fit(split.train, steps - done)
                    done = steps
                    ll = scorer(test, args.test_particles, k_hat=True)
                    first = ll.value if first is None else first
                    change = paired_difference(ll.value, first)
                    row = dict(method=method, seed=args.seed, fit_steps=steps, test_ll=ll.value.mean().item(),
                               change=change.mean, change_se=change.se,
                               ess=ll.ess.median().item(), k_hat=ll.k_hat.median().item(),
                               values=ll.value.tolist())  # each image's, for paired differences between methods
                    rows.append(row)
                    print(f"| {method} | {args.seed} | {steps:,} | {row['test_ll']:.2f} | {row['change']:+.2f} "
                          f"({row['change_se']:.2f}) | {row['ess']:.0f} | {row['k_hat']:.2f} |", flush=True)
                    path = args.out / f"{method}-seed{args.seed}.json"
                    path.write_text(json.dumps(dict(rows=rows, settings={k: str(v) for k, v in vars(args).items()}),
                                               indent=1))

        train_and_score(method, split, args.seed, args.budget, lr=args.lr, num_checkpoints=1, checkpoint_test=False,
                        scorer="encoder", test_particles=100, max_test_particles=100, inspect=score)


def report(methods: list[str], folder: Path) -> None:
    """Print ``methods[0]`` minus each other method, paired image by image, per seed and fit
    (the opposite sign to ``paired_table``'s, which is each method minus the first)."""
    import statistics

    first, *others = methods
    print(f"| {first} minus | seed | encoder fit steps | mean difference (paired se) | images |")
    print("|---|---|---|---|---|")
    for other in others:
        by_steps: dict[int, list[float]] = {}
        for path in sorted(folder.glob(f"{first}-seed*.json")):
            seed = path.stem.rsplit("-seed", 1)[1]
            other_path = folder / f"{other}-seed{seed}.json"
            if not other_path.exists():
                continue
            theirs = {row["fit_steps"]: row for row in json.loads(other_path.read_text())["rows"]}
            for row in json.loads(path.read_text())["rows"]:
                match = theirs.get(row["fit_steps"])
                if match is None or "values" not in row or "values" not in match:
                    continue  # runs before per-image values were saved
                difference = paired_difference(row["values"], match["values"])
                by_steps.setdefault(row["fit_steps"], []).append(difference.mean)
                print(f"| {other} | {seed} | {row['fit_steps']:,} | {difference.mean:+.2f} ({difference.se:.2f}) "
                      f"| {len(row['values'])} |")
        for steps, means in sorted(by_steps.items()):
            print(f"| {other} | median of {len(means)} | {steps:,} | {statistics.median(means):+.2f} | |")


if __name__ == "__main__":
    main()
