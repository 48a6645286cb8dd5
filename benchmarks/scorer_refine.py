"""How much of each method's test score is the scorer's amortization gap? (issue 11)

The comparison scores every trained model with one encoder fitted to its posterior after
training (`pyro_mapa.evaluation.EncoderProposal`): one network for all images, so it fits no
image's posterior exactly, and the importance estimate is a lower bound that is looser the
worse the fit (MAPA's median k-hat 1.6, the VAE's 1.1 to 1.3). This script scores one trained
model of a campaign part again on the same test images, with that encoder and then with each
image's Gaussian refined from the encoder's by ``--refine-steps`` Adam steps on that image's
own bound (`EncoderProposal.refined`; docs/math.md, section 5). Every estimate is unbiased for
``p(x)`` (the refinement's draws are not the estimate's), so a higher one is the tighter bound.

The trained model is a part's state file (``<part>.trained.pt``, written by
`train_and_score(trained_path=...)` before its final score; `fashion_mnist.py run` keeps it as
``<part>.model.pt`` once the part is written): ``--trained FILE`` with the part's own settings (``--method --seed --budget
--lr --kl-warmup --checkpoints --binarization --layers`` as the part ran; the rest are
`fashion_mnist.py run`'s defaults); with ``--train``, a missing file is trained first, as the part
was. Printed and saved to ``--out`` as it goes: the mean over the first ``--num-test`` test
images, each refinement minus the encoder alone (paired image by image), median ESS and k-hat,
seconds; with ``--versus PART.json``, each estimate minus that part's final score on the same
images (the encoder here is fitted afresh, with the seed, as long as the part's final one was: the
same fit, other draws). With ``--own-encoder`` (a VAE's part), a row scored the published
protocol's way: draws from the VAE's own trained encoder, a Gaussian, nothing fitted or refined
(then ``--refine-steps`` may be empty, and the file's name ends ``-own-encoder``).

    OMP_NUM_THREADS=2 python benchmarks/scorer_refine.py --method "mapa-1-10@shared,gmm100,noise0.2" \\
        --budget 6000000 --checkpoints 1 --trained /work/cache/PART.trained.pt --refine-steps 200 1000
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import pyro
import torch

from pyro_mapa.experiments import (
    load_split,
    paired_difference,
    parse_method,
    train_and_score,
)
from pyro_mapa.experiments.baselines import encoder_guide
from pyro_mapa.experiments.scoring import (
    ModelScorer,
    chunked_log_likelihood,
    continuous_model,
)
from pyro_mapa.models import make_encoder

RESULTS = Path(__file__).parent / "results" / "fashion-mnist" / "scorer-refine"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=int, required=True)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--kl-warmup", type=int, default=0)
    parser.add_argument("--checkpoints", type=int, default=5)
    parser.add_argument("--binarization", choices=["static", "dynamic"], default="dynamic")
    parser.add_argument("--layers", choices=["tanh", "gated"], default="gated")
    parser.add_argument("--trained", type=Path, required=True, help="the part's state file")
    parser.add_argument("--train", action="store_true", help="train the part first if --trained does not exist")
    parser.add_argument("--num-test", type=int, default=1000, help="the first test images scored (up to 10,000)")
    parser.add_argument("--test-particles", type=int, default=5000)
    parser.add_argument("--refine-steps", type=int, nargs="*", default=[0, 200, 1000],
                        help="refinement steps of each row's scoring (0: the encoder alone)")
    parser.add_argument("--versus", type=Path, nargs="*", default=[],
                        help="campaign parts (fashion_mnist.py's JSON) scored on the same test images")
    parser.add_argument("--own-encoder", action="store_true",
                        help="also score with the trained model's own encoder (a VAE's), as the published protocol does")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    method = parse_method(args.method)
    if args.own_encoder and method.kind not in ("vae", "iwae", "iwae-dreg"):
        parser.error(f"--own-encoder needs a method with an encoder and a standard prior (vae, iwae), not {method.label}")
    if not args.own_encoder and not args.refine_steps:
        parser.error("nothing to score: give --refine-steps, --own-encoder or both")
    if not args.train and not args.trained.exists():
        parser.error(f"{args.trained} does not exist: give a part's state file, or --train to train the part first")
    split = load_split("fashion-mnist", num_val=1000, num_test=2000, binarization=args.binarization,
                       layers=args.layers)  # the campaign's split: its state files are checked against it
    test = split.test[: args.num_test]
    if args.num_test > len(split.test):  # more test images than the campaign's: the same fixed draw, further on
        test = load_split("fashion-mnist", num_val=1000, num_test=args.num_test, binarization=args.binarization,
                          layers=args.layers).test
        assert torch.equal(test[: len(split.test)], split.test)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / (f"{method.label}-lr{args.lr:g}-warmup{args.kl_warmup}-seed{args.seed}-budget{args.budget}-"
                      f"{args.binarization}-{args.layers}-test{len(test)}{'-own-encoder' * args.own_encoder}.json")
    record = dict(settings={k: str(v) for k, v in vars(args).items()}, rows=[])
    print("| proposal | log-likelihood | minus the encoder alone (paired se) | median ESS | median k-hat | seconds |")
    print("|---|---|---|---|---|---|", flush=True)

    def own_encoder(decoder, prior):
        """The published protocol's estimate: ``z ~ N(loc(x), scale(x)^2)`` from the VAE's own
        encoder as it trained (the best checkpoint's, restored in Pyro's param store)."""
        encoder = make_encoder(split.train.shape[1], split.latent_dim, split.hidden, split.layers).to(split.train)
        store = pyro.get_param_store()
        encoder.load_state_dict({name: store[f"encoder$$${name}"].detach() for name in encoder.state_dict()})
        return chunked_log_likelihood(continuous_model(decoder, prior, split.likelihood), encoder_guide(encoder, len(test)),
                                      test, args.test_particles, k_hat=True)

    def score(decoder, prior, codes):
        scorer = None
        if args.refine_steps:
            scorer = ModelScorer("encoder", decoder, split.likelihood, split.train, split.latent_dim, split.hidden)
            with torch.random.fork_rng():
                torch.manual_seed(args.seed)
                scorer.update(prior, codes, final=True)  # the campaign's final fit: 3,000 steps
        values = {}
        rows = sorted(set(args.refine_steps)) + ["own"] * args.own_encoder
        for steps in rows:
            torch.manual_seed(args.seed)
            clock = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # a poor k-hat is a column
                if steps == "own":
                    ll = own_encoder(decoder, prior)
                else:
                    ll = scorer(test, args.test_particles, k_hat=True, refine_steps=steps)
            values[steps] = ll.value
            change = paired_difference(ll.value, values[0]) if 0 in values else None
            row = dict(refine_steps=steps, ll=ll.value.mean().item(), minus_encoder=change and change.mean,
                       minus_encoder_se=change and change.se, ess=ll.ess.median().item(),
                       k_hat=ll.k_hat.median().item(), seconds=time.perf_counter() - clock, values=ll.value.tolist())
            for path in args.versus:
                theirs = torch.tensor(json.loads(path.read_text())["result"]["test_point_ll"])[: len(test)]
                versus = paired_difference(ll.value[: len(theirs)], theirs)
                row[f"minus {path.parent.name}/{path.stem} on the first {len(theirs)} images"] = (versus.mean, versus.se)
            record["rows"].append(row)
            out.write_text(json.dumps(record, indent=1))
            name = "the model's own encoder" if steps == "own" else f"refined {steps} steps" if steps else "encoder alone"
            paired = f"{change.mean:+.2f} ({change.se:.2f})" if change else "-"
            print(f"| {name} | {row['ll']:.2f} | {paired} | "
                  f"{row['ess']:.1f} | {row['k_hat']:.2f} | {row['seconds']:.0f} |", flush=True)
            for key in (k for k in row if k.startswith("minus ")):
                print(f"    {key}: {row[key][0]:+.2f} (paired se {row[key][1]:.2f})", flush=True)

    result = train_and_score(method, split, args.seed, args.budget, lr=args.lr, num_checkpoints=args.checkpoints,
                             checkpoint_test=False, scorer="encoder", kl_warmup=args.kl_warmup, test_particles=100,
                             max_test_particles=100, trained_path=args.trained, inspect=score)
    record |= dict(passes_to_best=result.passes_to_best, curve=result.curve)
    out.write_text(json.dumps(record, indent=1))
    print(f"{method.label}, seed {args.seed}: best checkpoint at {result.passes_to_best:,} passes "
          f"(validation {result.best_val_ll:.2f})")


if __name__ == "__main__":
    main()
