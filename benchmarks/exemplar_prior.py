"""The exemplar prior's cost at a scorer's size: ``ExemplarMixture.log_prob`` on chunks of
draws against ``M`` components (Fashion-MNIST's Exemplar VAE: 50,000 encoder means, d = 40),
in float32 and float64, scoring only (as the final test score) and with the gradient of the
draws (as the scorer's encoder fit). Codes of unit spread and ``s = 0.5``, a trained Exemplar VAE's
range, where float32 products stay within the mixture's rounding tolerance. Medians over
repeats; the minutes for 10,000,000 draws (2,000 test images x 5,000 samples) follow from them.
Last, torch's ``logsumexp`` against the floored one on the same float32 logits (their terms
reach far below float32's smallest normal number once a row's largest is subtracted).

    OMP_NUM_THREADS=1 python benchmarks/exemplar_prior.py --components 50000 --rows 1024 --repeats 5
"""

from __future__ import annotations

import argparse

import torch
from timing import timed

from pyro_mapa.models import ExemplarMixture
from pyro_mapa.models.exemplar import _floored_logsumexp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--components", type=int, default=50000)
    parser.add_argument("--dim", type=int, default=40)
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    locs = torch.randn(args.components, args.dim, generator=g, dtype=torch.float64)
    z = locs[torch.randint(0, args.components, (args.rows,), generator=g)]
    z = z + args.scale * torch.randn(z.shape, generator=g, dtype=torch.float64)
    print(f"M = {args.components}, d = {args.dim}, {args.rows} draws per call, s = {args.scale}, "
          f"{torch.get_num_threads()} thread(s), torch {torch.__version__}")
    for dtype in (torch.float32, torch.float64):
        prior, value = ExemplarMixture(locs.to(dtype), args.scale), z.to(dtype)

        def score():
            with torch.no_grad():
                prior.log_prob(value.clone())  # a fresh tensor: nothing kept from the last call

        def gradient():
            draws = value.clone().requires_grad_(True)
            prior.log_prob(draws).sum().backward()

        for name, fn in (("score", score), ("score + gradient", gradient)):
            t = timed(fn, args.repeats)
            print(f"{str(dtype):14s} {name:17s} {1e3 * t:8.1f} ms per call; 10,000,000 draws: "
                  f"{t * 1e7 / args.rows / 60:6.1f} min", flush=True)

    logits = torch.addmm(-0.5 * locs.float().square().sum(1), z.float(), locs.float().T) / args.scale**2
    for name, fn in (("torch.logsumexp", lambda: logits.logsumexp(1)),
                     ("floored logsumexp", lambda: _floored_logsumexp(logits.clone()))):
        print(f"float32 logits {name:18s} {1e3 * timed(fn, args.repeats):8.1f} ms per call", flush=True)


if __name__ == "__main__":
    main()
