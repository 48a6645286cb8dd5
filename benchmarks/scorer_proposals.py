"""Which importance-sampling proposal can score a Fashion-MNIST model (issue 11): the
Laplace mixture at the model's codes against an encoder fitted after training to the
model's posterior (pyro_mapa.evaluation.EncoderProposal), on the same trained model.

Trains ``--method`` for ``--budget`` decoder passes on the 50,000 training images (the
comparison's protocol, seed 0, lr 1e-3, one checkpoint), then scores the first 200 test
images with 1,000 samples each by both proposals (the encoder after each of
``--fit-steps`` Adam steps of IWAE-5), printing the mean log-likelihood, the median ESS,
the median PSIS k-hat and the fraction of points with k-hat below 0.7.

    python benchmarks/scorer_proposals.py --method mapa-1-10 --budget 2000000 --fit-steps 500 2000 5000
    python benchmarks/scorer_proposals.py --method vae --budget 1000000 --fit-steps 2000
"""

import argparse
import time
import warnings

import torch

from pyro_mapa.evaluation import (
    EncoderProposal,
    importance_log_likelihood,
    laplace_mixture_proposal,
)
from pyro_mapa.experiments import load_split, train_and_score
from pyro_mapa.experiments.scoring import continuous_model
from pyro_mapa.models import make_encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="mapa-1-10")
    parser.add_argument("--budget", type=int, default=2_000_000)
    parser.add_argument("--fit-steps", type=int, nargs="+", default=[500, 2000, 5000])
    parser.add_argument("--inflation", type=float, default=1.0)
    parser.add_argument("--particles", type=int, default=1000)
    args = parser.parse_args()
    warnings.simplefilter("ignore", UserWarning)
    split = load_split("fashion-mnist", num_val=200, num_test=200)
    trained = {}
    train_and_score(args.method, split, 0, args.budget, lr=1e-3, num_checkpoints=1, eval_particles=10,
                    test_particles=10, max_test_particles=10, checkpoint_test=False,
                    inspect=lambda decoder, prior, codes: trained.update(decoder=decoder, prior=prior, codes=codes))
    decoder, prior, codes = trained["decoder"], trained["prior"], trained["codes"]
    model = continuous_model(decoder, prior, split.likelihood)

    def report(name, proposal, extra=""):
        with torch.no_grad():
            ll = importance_log_likelihood(model, proposal, split.test, num_particles=args.particles, chunk_size=200,
                                           max_plate_nesting=1, k_hat=True)
        print(f"{args.method} {args.budget:,} | {name:<24} | {ll.value.mean():8.2f} | ESS {ll.ess.median():5.1f} | "
              f"k-hat {ll.k_hat.median():.2f} | k<0.7 {(ll.k_hat < 0.7).float().mean():.2f} {extra}", flush=True)

    report("laplace mixture", laplace_mixture_proposal(decoder, codes, split.likelihood, prior=prior))
    torch.manual_seed(0)
    proposal = EncoderProposal(make_encoder(784, split.latent_dim, split.hidden), decoder, prior, split.likelihood,
                               inflation=args.inflation)
    done = 0
    for steps in args.fit_steps:
        clock = time.perf_counter()
        bound = proposal.fit(split.train, steps - done)
        done = steps
        report(f"encoder, {steps} steps", proposal, f"(fit bound {bound:.1f}, {time.perf_counter() - clock:.0f} s)")


if __name__ == "__main__":
    main()
