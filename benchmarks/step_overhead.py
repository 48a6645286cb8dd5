"""Overhead of a MAPA training step over the bare decoder work it needs.

A MAPA step (batch B, K + S particles, the decoder on distinct indices) against the bare
decoder forward and backward on the same number of distinct codes (plus the Adam update
of the same parameters), on the comparison's decoder (`--hidden` widens it: the work
around the decoder is the same at any width, so the ratio falls as the decoder grows). Two ways to
write the likelihood: its gathered form on `decode_unique` (`GatheredNormal` or `GatheredBernoulli`:
what `empirical_model` does) and torch's distribution on `decode(...)`. Medians over repeated steps.

    python benchmarks/step_overhead.py --batch 256 --neighbors 5 --samples 20 --threads 1 2 --hidden 50 200 500
    python benchmarks/step_overhead.py --dataset fashion-mnist --batch 100 --neighbors 1 --samples 10 --hidden 300

``--warmup-steps W`` trains the model W MAPA steps before timing, so that the particles' weights
have spread (far particles, e^-hundreds below the best, whose float32 gradients would be denormal
numbers); ``--bounds`` adds the per-datapoint bound as it was before such particles were left out
(a plain logsumexp), and every MAPA step is also timed with ``torch.set_flush_denormal(True)``: where
the two times agree, the step has no denormal slow path.

    python benchmarks/step_overhead.py --dataset fashion-mnist --batch 100 --neighbors 1 --samples 10 --hidden 300 \
        --warmup-steps 3000 --bounds floor plain --likelihoods gathered
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import time

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI
from pyro.optim import Adam
from timing import timed

from pyro_mapa import MAPA_ELBO, IndexProposal, MAPAGuide, MAPAPosterior, decode
from pyro_mapa.experiments import load_split
from pyro_mapa.experiments.baselines import empirical_model
from pyro_mapa.infer.importance import ImportanceWeights
from pyro_mapa.models import make_decoder


def torch_model(decoder, likelihood, num_points: int, latent_dim: int):
    """`empirical_model` with torch's distribution on the gathered outputs: the slower way to write it."""

    def model(x, idx=None):
        pyro.module("decoder", decoder)
        codes = pyro.param("codes", lambda: 0.1 * torch.randn(num_points, latent_dim))
        with pyro.plate("data", num_points, subsample=idx):
            i = pyro.sample("i", dist.Categorical(logits=torch.zeros(num_points)))
            pyro.sample("x", likelihood.distribution(decode(decoder, codes, i)), obs=x)

    return model


#: the likelihood's gathered form (GatheredNormal, GatheredBernoulli), or torch's on decode(...)
LIKELIHOODS = {"gathered": empirical_model, "torch(decode)": torch_model}


@contextlib.contextmanager
def plain_logsumexp():
    """The per-datapoint bound as it was before far particles were left out (benchmark only)."""
    kept = ImportanceWeights.per_datapoint
    ImportanceWeights.per_datapoint = lambda self: self.log_weights.logsumexp(0) - self.log_normalizer
    try:
        yield
    finally:
        ImportanceWeights.per_datapoint = kept


@contextlib.contextmanager
def flush_denormal(on: bool):
    torch.set_flush_denormal(on)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


#: the bound as the package computes it, or a plain logsumexp over every particle
BOUNDS = {"floor": contextlib.nullcontext, "plain": plain_logsumexp}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", nargs="+", default=["spiral-dots", "digits"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--neighbors", type=int, default=5)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--hidden", type=int, nargs="+", default=[50])
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    parser.add_argument("--likelihoods", nargs="+", default=list(LIKELIHOODS), choices=list(LIKELIHOODS))
    parser.add_argument("--bounds", nargs="+", default=["floor"], choices=list(BOUNDS))
    parser.add_argument("--warmup-steps", type=int, default=0)
    args = parser.parse_args()
    print("| data | D | hidden | threads | likelihood | bound | distinct codes per step | far particles "
          "| MAPA step ms | MAPA step ms, denormals flushed | bare decoder fwd+bwd+Adam ms | ratio | MAPA - bare ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.dataset:
        for hidden in args.hidden:
            for threads in args.threads:
                for likelihood in args.likelihoods:
                    for bound in args.bounds:
                        torch.set_num_threads(threads)
                        row = measure(name, hidden, likelihood, bound, args)
                        print(f"| {name} | {row['D']} | {hidden} | {threads} | {likelihood} | {bound} | {row['codes']} "
                              f"| {row['far']:.0%} "
                              f"| {row['mapa']:.2f} | {row['flushed']:.2f} | {row['bare']:.2f} "
                              f"| {row['mapa'] / row['bare']:.1f} | {row['mapa'] - row['bare']:.2f} |", flush=True)


def measure(name: str, hidden: int, likelihood: str, bound: str, args) -> dict:
    """One row: the MAPA step (after ``--warmup-steps``), with and without flushing denormals,
    and the bare decoder step, in ms."""
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    split = load_split(name)
    num_points, obs_dim = split.train.shape
    decoder = make_decoder(split.latent_dim, obs_dim, hidden)
    model = LIKELIHOODS[likelihood](decoder, split.likelihood, num_points, split.latent_dim)
    posterior = MAPAPosterior.fit(split.train, kernel=split.likelihood.cache_kernel(), num_cached=64, progress=False)
    guide = MAPAGuide(model, posterior, create_plates=lambda x, idx=None: pyro.plate("data", num_points, subsample=idx))
    guide(split.train[:args.batch], torch.arange(args.batch))  # set up on a minibatch (a full trace is N^2 at N = 50,000)
    elbo = MAPA_ELBO(args.neighbors, args.samples, max_plate_nesting=1)
    svi = SVI(model, guide, Adam({"lr": 1e-3}), loss=elbo)
    for _ in range(args.warmup_steps):
        idx = torch.randint(0, num_points, (args.batch,))
        svi.step(split.train[idx], idx)
    batches = [torch.randint(0, num_points, (args.batch,)) for _ in range(args.repeats + 1)]
    it = iter(batches * 4)

    def mapa_step():
        idx = next(it)
        svi.step(split.train[idx], idx)

    # the steps with and without flushing, interleaved in rounds of 10 (a neighbouring job's noise
    # falls on both alike); each round starts from where the last left the parameters
    with BOUNDS[bound]():
        mapa_step()
        times = {False: [], True: []}
        for _ in range(args.repeats // 10):
            for flushed in (False, True):
                with flush_denormal(flushed):
                    for _ in range(10):
                        start = time.perf_counter()
                        mapa_step()
                        times[flushed].append(time.perf_counter() - start)
    mapa, flushed = statistics.median(times[False]), statistics.median(times[True])
    # the share of particles whose weight is denormal relative to the cell's best in float32
    with torch.no_grad():
        weights = elbo.importance_weights(model, guide, split.train[batches[0]], batches[0]).log_weights
        far = (weights < weights.max(0).values + math.log(torch.finfo(torch.float32).tiny)).double().mean().item()
    # the distinct indices a step decodes, measured on the same batches
    distinct = []
    for idx in batches[: 20]:
        with torch.no_grad():
            values, _ = IndexProposal(posterior.index_distribution(idx)).index_particles(args.neighbors, args.samples)
        distinct.append(len(values.unique()))
    num_codes = int(statistics.median(distinct))
    codes = pyro.param("codes").detach().clone().requires_grad_()
    params = [codes, *decoder.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    x = split.train[:num_codes]

    def bare_step():
        optimizer.zero_grad()
        loss = -split.likelihood.distribution(decoder(codes[:num_codes])).log_prob(x).sum()
        loss.backward()
        optimizer.step()

    bare = timed(bare_step, args.repeats)
    return {"D": obs_dim, "codes": num_codes, "mapa": 1e3 * mapa, "flushed": 1e3 * flushed, "bare": 1e3 * bare,
            "far": far}


if __name__ == "__main__":
    main()
