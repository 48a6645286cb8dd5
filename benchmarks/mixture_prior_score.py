"""The scorer's cost with a fitted Gaussian-mixture prior (MAPA's ``@gmm100`` on Fashion-MNIST:
100 full-covariance components, d = 40, a 40 -> 300 -> 300 -> 784 Bernoulli decoder).

The importance sampler scores each draw's prior density twice, under the model and under the
proposal's defensive component. Before: the model scored it with torch's ``MixtureSameFamily``
(one small triangular solve per draw and component) and the proposal with the fast
``GaussianMixture``; now both share one ``GaussianMixture``, whose second call returns the first's
densities. Timed: one importance-weighting pass of ``--draws`` draws per image over ``--images``
binary images (a scorer's chunk is 2^16 draws), each way, with the same proposal (an encoder
proposal, its fit not timed). Medians over repeats; the minutes for 10,000,000 draws (2,000 test
images x 5,000 samples) follow from them.

    OMP_NUM_THREADS=2 python benchmarks/mixture_prior_score.py --components 100 --repeats 5
"""

from __future__ import annotations

import argparse

import pyro.distributions as dist
import torch
from timing import timed

from pyro_mapa.evaluation import EncoderProposal, importance_log_likelihood
from pyro_mapa.evaluation.mixtures import fast_prior
from pyro_mapa.experiments.scoring import continuous_model
from pyro_mapa.models import BernoulliLikelihood, make_decoder, make_encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--components", type=int, default=100)
    parser.add_argument("--dim", type=int, default=40)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--draws", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    k, d = args.components, args.dim
    spread = 0.3 * torch.randn(k, d, d)
    covariance = spread @ spread.mT + 0.1 * torch.eye(d)
    prior = dist.MixtureSameFamily(dist.Categorical(logits=torch.randn(k)),
                                   dist.MultivariateNormal(torch.randn(k, d), covariance_matrix=covariance))
    decoder, likelihood = make_decoder(d, 784, 300), BernoulliLikelihood()
    x = torch.bernoulli(torch.full((args.images, 784), 0.3))
    proposal = EncoderProposal(make_encoder(784, d, 300), decoder, prior, likelihood)
    proposal.fit(x, 1)
    print(f"{k} components, d = {d}, {args.images} images x {args.draws} draws per pass, "
          f"{torch.get_num_threads()} thread(s), torch {torch.__version__}")
    ways = (("torch's mixture in the model (before)", prior), ("one shared fast mixture (now)", fast_prior(prior)))
    for name, model_prior in ways:
        proposal.set_model(decoder, model_prior)  # its defensive component: fast_prior(model_prior)
        model = continuous_model(decoder, model_prior, likelihood)

        def score():
            importance_log_likelihood(model, proposal, x, num_particles=args.draws, chunk_size=args.draws,
                                      max_plate_nesting=1)

        t = timed(score, args.repeats)
        draws = args.images * args.draws
        print(f"{name:40s} {t:7.2f} s per pass; 10,000,000 draws: {t * 1e7 / draws / 60:6.1f} min", flush=True)


if __name__ == "__main__":
    main()
