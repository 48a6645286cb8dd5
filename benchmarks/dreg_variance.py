"""How much DReG lowers the variance of the encoder's gradient (issue 13), on the
linear-Gaussian model of tests/infer/test_dreg.py (its closed-form posterior, the encoder
shifted 0.3 from it): per-parameter variance of the standard IWAE gradient over that of
the DReG one, medians over the encoder's parameters and the decoder's, at S = 5 and 50.

    python benchmarks/dreg_variance.py --draws 2000
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "infer"))
from test_dreg import gradients, leaves, problem  # noqa: E402  (the tests' model, not a copy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    A, b, x, (W, c, log_s) = problem()
    params = leaves(A, b, W, c, log_s, shift=0.3)
    encoder = slice(A.numel() + b.numel(), None)
    print("S   | encoder var ratio (median, min, max) | decoder var ratio (median)")
    for num_particles in (5, 50):
        torch.manual_seed(args.seed)
        standard = gradients("standard", num_particles, params, x, args.draws)
        torch.manual_seed(args.seed)
        dreg = gradients("dreg", num_particles, params, x, args.draws)
        ratio = standard.var(0) / dreg.var(0)
        enc, dec = ratio[encoder], ratio[: encoder.start]
        print(f"{num_particles:<3} | {enc.median():.1f} ({enc.min():.1f}, {enc.max():.1f}) | {dec.median():.2f}")


if __name__ == "__main__":
    main()
