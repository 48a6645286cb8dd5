"""MAPA with code noise: is its own smoothed model a better final model than a mixture fitted to its codes? (issue 11)

Trained with code noise ``tau`` (``mapa-K-S@...,noise<tau>``), MAPA maximises a lower bound on the
*smoothed* empiricalized model, ``i ~ Categorical(N)``, ``z ~ N(z_i, tau^2 I)``, ``x ~ p(x | f(z))``
(docs/math.md, section 10): a continuous model already, whose prior is the exemplar mixture
``(1/N) sum_i N(z; z_i, tau^2 I)`` (``fit_prior(codes, "exemplar", code_noise=tau)``). The campaign
scores instead a 100-component mixture fitted to the codes, widened by ``tau^2 I``. This script
trains the method once, as a campaign part does (`train_and_score` on the published protocol's
split; one checkpoint, at the end of ``--budget``), keeps the trained half in ``--trained``
(a rerun scores it again without training), and then scores the same decoder under:

* the method's own prior (the fitted mixture), and
* the exemplar prior at each scale of ``--scales`` (``tau`` itself, the trained model; other
  scales are other models, chosen between on validation),

all with one scoring encoder, fitted to the model with the fitted mixture for the campaign's
3,000 steps (`ModelScorer.swap_prior`: each prior is also the proposal's defensive component; the
exemplar priors' estimates are then unbiased but possibly looser than their own fit would give);
with ``--refit`` each prior's model gets its own encoder, fitted as long (saved with ``-refit``).
Each is scored on the first ``--num-val`` validation images (``--val-particles`` samples); the
fitted mixture and the exemplar scale best on validation are then scored on the first ``--num-test``
test images with ``--test-particles`` samples (``--num-test 0``: none). Printed: means, each prior minus the fitted mixture
paired image by image, median ESS and k-hat; with ``--versus PART.json`` (campaign parts on the same
test images, e.g. the VAE's) also the best prior minus each part's method. Saved to ``--out`` as it goes.

    OMP_NUM_THREADS=2 python benchmarks/smoothed_prior.py --budget 6000000 --seed 0 --scales 0.2 0.3 \\
        --versus benchmarks/results/fashion-mnist/encoder/budget10000000-dynamic-gated/vae-seed0.json
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch

from pyro_mapa import fit_prior
from pyro_mapa.experiments import (
    load_split,
    paired_difference,
    parse_method,
    train_and_score,
)
from pyro_mapa.experiments.scoring import ModelScorer

RESULTS = Path(__file__).parent / "results" / "fashion-mnist" / "smoothed-prior"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="mapa-1-10@shared,gmm100,noise0.2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=int, default=6_000_000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--binarization", choices=["static", "dynamic"], default="dynamic")
    parser.add_argument("--layers", choices=["tanh", "gated"], default="gated")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.2],
                        help="the exemplar prior's scales (the method's code noise is the trained model)")
    parser.add_argument("--num-val", type=int, default=1000)
    parser.add_argument("--val-particles", type=int, default=500)
    parser.add_argument("--num-test", type=int, default=1000)
    parser.add_argument("--test-particles", type=int, default=5000)
    parser.add_argument("--refit", action="store_true",
                        help="fit a scoring encoder to each prior's model (slow for the exemplar priors)")
    parser.add_argument("--versus", type=Path, nargs="*", default=[],
                        help="campaign parts (fashion_mnist.py's JSON) scored on the same test images")
    parser.add_argument("--trained", type=Path, default=Path("/tmp"),
                        help="folder for the trained half (kept: a rerun only scores)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    method = parse_method(args.method)
    if not method.code_noise:
        parser.error(f"{method.label} has no code noise: its codes have no smoothed model")
    split = load_split("fashion-mnist", num_val=args.num_val, num_test=max(args.num_test, 2000),
                       binarization=args.binarization, layers=args.layers)
    val, test = split.val[: args.num_val], split.test[: args.num_test]
    name = f"{method.label}-seed{args.seed}-budget{args.budget}-{args.binarization}-{args.layers}"
    trained = args.trained / f"{name}.trained.pt"
    name += "-refit" * args.refit
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"{name}.json"
    record = dict(settings={k: str(v) for k, v in vars(args).items()}, rows=[])

    def save(row: dict) -> None:
        record["rows"].append(row)
        out.write_text(json.dumps(record, indent=1))
        print(f"| {row['prior']} | {row['images']} | {row['particles']:,} | {row['ll']:.2f} | "
              f"{row['minus_fitted']:+.2f} ({row['minus_fitted_se']:.2f}) | {row['ess']:.0f} | {row['k_hat']:.2f} | "
              f"{row['seconds']:.0f} |", flush=True)

    def score(decoder, fitted, codes):
        fitted_name = f"fitted ({method.prior})"
        priors = {fitted_name: fitted}
        priors |= {f"exemplar tau={s:g}": fit_prior(codes, "exemplar", code_noise=s) for s in args.scales}
        scorers: dict[str, ModelScorer] = {}

        def scorer_for(prior_name: str) -> ModelScorer:
            """The fitted prior's scorer, swapped to ``prior_name``; with ``--refit``, one fitted to each."""
            key = prior_name if args.refit else fitted_name
            if key not in scorers:
                scorers[key] = ModelScorer("encoder", decoder, split.likelihood, split.train, split.latent_dim,
                                           split.hidden)
                clock = time.perf_counter()
                with torch.random.fork_rng():
                    scorers[key].update(priors[key], codes, final=True)
                print(f"scoring encoder for {key} fitted in {time.perf_counter() - clock:.0f} s", flush=True)
            scorers[key].swap_prior(priors[prior_name])
            return scorers[key]
        print("| prior | images | samples per image | log-likelihood | minus the fitted prior (paired se) "
              "| median ESS | median k-hat | seconds |")
        print("|---|---|---|---|---|---|---|---|", flush=True)
        values: dict[tuple[str, str], torch.Tensor] = {}

        def estimate(prior_name: str, images: str, x: torch.Tensor, particles: int) -> None:
            scorer = scorer_for(prior_name)
            clock = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # a poor k-hat is a column
                ll = scorer(x, particles, k_hat=True)
            values[prior_name, images] = ll.value
            change = paired_difference(ll.value, values[fitted_name, images])
            save(dict(prior=prior_name, images=images, particles=particles, ll=ll.value.mean().item(),
                      minus_fitted=change.mean, minus_fitted_se=change.se, ess=ll.ess.median().item(),
                      k_hat=ll.k_hat.median().item(), seconds=time.perf_counter() - clock, values=ll.value.tolist()))

        for prior_name in priors:
            estimate(prior_name, f"validation[:{len(val)}]", val, args.val_particles)
        exemplars = [p for p in priors if p.startswith("exemplar")]
        best = max(exemplars, key=lambda p: values[p, f"validation[:{len(val)}]"].mean().item())
        test_name = f"test[:{len(test)}]"
        if not len(test):
            return
        for prior_name in (fitted_name, best):
            estimate(prior_name, test_name, test, args.test_particles)
        for path in args.versus:
            part = json.loads(path.read_text())["result"]
            theirs = torch.tensor(part["test_point_ll"][: len(test)])
            for prior_name in (fitted_name, best):
                difference = paired_difference(values[prior_name, test_name], theirs)
                print(f"{prior_name} minus {part['method']} (seed {part['seed']}, {path.parent.name}) on {test_name}: "
                      f"{difference.mean:+.2f} (paired se {difference.se:.2f})")

    result = train_and_score(method, split, args.seed, args.budget, lr=args.lr, num_checkpoints=1,
                             checkpoint_test=False, scorer="encoder", test_particles=100, max_test_particles=100,
                             trained_path=trained, inspect=score)
    record |= dict(curve=result.curve, steps=result.steps, train_seconds=result.train_seconds)
    out.write_text(json.dumps(record, indent=1))
    print(f"trained {result.steps:,} steps in {result.train_seconds:.0f} s (kept in {trained}); validation at "
          f"{result.curve[-1][0]:,} passes, the campaign's checkpoint estimate: {result.curve[-1][1]:.4f}")


if __name__ == "__main__":
    main()
