"""The ``pyro-mapa`` command (also ``python -m pyro_mapa``)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from ..datasets import SYNTHETIC_DATASETS

__all__ = ["DEFAULT_METHODS", "main"]

#: What ``pyro-mapa compare`` runs by default (AutoNormal and more IWAE and MAPA settings on
#: request): about 5 minutes for 3 seeds on 2 cores (README).
DEFAULT_METHODS = ["vae", "iwae-20", "autodelta", "mapa-5-10", "exact"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyro-mapa", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="train the quickstart model with MAPA on built-in data")
    demo.add_argument("--dataset", default="spiral-dots", choices=SYNTHETIC_DATASETS)
    demo.add_argument("--num-train", type=int, default=1000)
    demo.add_argument("--steps", type=int, default=2000)
    demo.add_argument("--neighbors", type=int, default=5, help="K, neighbours summed exactly")
    demo.add_argument("--samples", type=int, default=10, help="S, draws from the proposal")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="mapa-demo", help="folder for result.json and demo.png")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    compare = commands.add_parser("compare", help="MAPA against VAE, IWAE and Pyro's AutoGuides")
    compare.add_argument("--dataset", default="spiral-dots", choices=(*SYNTHETIC_DATASETS, "digits"))
    compare.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    compare.add_argument("--budget", type=int, default=300_000, help="decoder passes per training run")
    compare.add_argument("--methods", nargs="+", default=DEFAULT_METHODS,
                         help="vae, iwae-S, autonormal, autodelta, mapa-K-S, exact")
    compare.add_argument("--lr", type=float, nargs="+", default=[1e-2],
                         help="Adam's learning rate; several: each method's is chosen by validation on a separate tuning seed")
    compare.add_argument("--code-init", choices=["pca", "random"], default="pca",
                         help="where per-point codes start (MAPA, exact, AutoDelta, AutoNormal)")
    compare.add_argument("--eval-particles", type=int, default=100,
                         help="importance samples per point at each checkpoint (the curves and the choice of checkpoint)")
    compare.add_argument("--max-test-particles", type=int, default=8000,
                         help="at most this many samples per point for the final test LL (2,000 or this if fewer, then x4 until stable)")
    compare.add_argument("--out", default="mapa-compare", help="folder for results.json and compare.png")
    compare.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``)."""
    args = _parser().parse_args(argv)
    progress = False if args.quiet else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.command == "demo":
        from .demo import run_demo

        result = run_demo(
            dataset=args.dataset, num_train=args.num_train, num_steps=args.steps, num_neighbors=args.neighbors,
            num_samples=args.samples, seed=args.seed, out=out, progress=progress,
        )
        print(result.table())
        print(f"wrote {out / 'result.json'} and {out / 'demo.png'}")
        return 0
    from .compare import run_comparison
    from .report import plot_curves, summary_table

    split, runs, tuning = run_comparison(
        args.dataset, args.methods, args.seeds, args.budget, learning_rates=tuple(args.lr), code_init=args.code_init,
        eval_particles=args.eval_particles, test_particles=min(2000, args.max_test_particles),
        max_test_particles=args.max_test_particles, progress=progress,
    )
    table = summary_table(split, runs)
    print(table)
    record = {"dataset": args.dataset, "budget": args.budget, "lr": args.lr, "code_init": args.code_init,
              "eval_particles": args.eval_particles, "max_test_particles": args.max_test_particles,
              "true_test": split.true_test,
              "runs": [asdict(r) for r in runs], "tuning_runs": [asdict(r) for r in tuning], "table": table}
    (out / "results.json").write_text(json.dumps(record, indent=1))
    plot_curves(runs, out / "compare.png", f"{args.dataset}, budget {args.budget} decoder passes", split.true_test)
    print(f"wrote {out / 'results.json'} and {out / 'compare.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
