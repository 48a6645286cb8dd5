"""The ``pyro-mapa`` command (also ``python -m pyro_mapa``)."""

from __future__ import annotations

import argparse
import sys

from .datasets import SYNTHETIC_DATASETS

__all__ = ["main"]


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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``)."""
    args = _parser().parse_args(argv)
    from .demo import run_demo

    result = run_demo(
        dataset=args.dataset,
        num_train=args.num_train,
        num_steps=args.steps,
        num_neighbors=args.neighbors,
        num_samples=args.samples,
        seed=args.seed,
        out=args.out,
        progress=False if args.quiet else True,
    )
    print(result.table())
    print(f"wrote {args.out}/result.json and {args.out}/demo.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
