"""``train_mapa(validation=...)`` (``pyro-mapa train --val``) on Fashion-MNIST: where does the
held-out score peak, and what does keeping that epoch's model gain over the last one? (issue 11)

MAPA's free per-image codes overfit when trained long (benchmarks/RESULTS.md, the 5,000,000-pass
parts); the trainer now scores held-out rows every ``--validate-every`` epochs by the
empiricalized model's exact log-likelihood and keeps the best epoch's decoder and codes. This
runs it on the campaign's split (50,000 training images, the first 1,000 validation images, the
first 2,000 test images, binarized with seed 0) with the campaign's best MAPA settings
(K = 1, S = 10, shared uncached draws, a 100-component mixture prior), and scores the kept model's
test images exactly. ``--code-noise`` trains with that much noise on the codes (docs/math.md,
section 10). Saved to ``--out`` (one JSON per learning rate, code noise and seed).

    OMP_NUM_THREADS=2 python benchmarks/trainer_validation.py --lr 0.001 --epochs 16 --validate-every 2 \\
        --code-noise 0.2
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import torch

from pyro_mapa.experiments import load_split
from pyro_mapa.models import BernoulliLikelihood
from pyro_mapa.trainer import train_mapa

DEFAULT_OUT = Path(__file__).parent / "results" / "fashion-mnist" / "trainer-validation"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--validate-every", type=int, default=2)
    parser.add_argument("--code-noise", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/pyro-mapa-fashion-cache.pt"),
                        help="the cache file, built once and reused across runs")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    split = load_split("fashion-mnist", seed=args.seed)
    clock = time.perf_counter()
    model = train_mapa(split.train, BernoulliLikelihood(), latent_dim=split.latent_dim, hidden=split.hidden,
                       num_neighbors=1, num_samples=10, shared_draws=True, prior="gmm", num_components=100,
                       epochs=args.epochs, lr=args.lr, code_noise=args.code_noise, validation=split.val, validate_every=args.validate_every,
                       cache=args.cache, seed=args.seed, progress=False)
    total = time.perf_counter() - clock
    test = model.log_likelihood(split.test)
    settings = model.settings
    curve = settings["validation_curve"]
    record = {
        "lr": args.lr, "code_noise": args.code_noise, "seed": args.seed, "epochs": args.epochs, "validate_every": args.validate_every,
        "best_epoch": settings["best_epoch"], "best_validation": settings["validation_log_likelihood"],
        "last_validation": curve[-1][1], "kept_test": test.mean().item(),
        "kept_test_se": (test.std() / len(test) ** 0.5).item(), "num_test": len(test), "curve": curve,
        "decoder_passes": settings["decoder_passes"], "steps": settings["steps"],
        "seconds": {k: settings[k] for k in ("cache_seconds", "train_seconds", "validation_seconds", "prior_seconds")}
        | {"total": total},
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"lr{args.lr:g}-noise{args.code_noise:g}-seed{args.seed}.json").write_text(json.dumps(record, indent=1))
    print(f"lr {args.lr:g}, code noise {args.code_noise:g}, seed {args.seed}: held-out score per epoch:")
    for epoch, score in curve:
        print(f"  epoch {epoch:3d}  {score:9.3f}{'  <- kept' if epoch == settings['best_epoch'] else ''}")
    print(f"kept epoch {settings['best_epoch']} (validation {settings['validation_log_likelihood']:.3f}, last epoch "
          f"{curve[-1][1]:.3f}); its exact test score {record['kept_test']:.3f} +- {record['kept_test_se']:.3f} "
          f"({len(test)} images); {total:.0f} s in all ({record['seconds']})")


if __name__ == "__main__":
    main()
