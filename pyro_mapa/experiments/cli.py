"""The ``pyro-mapa`` command (also ``python -m pyro_mapa``)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from ..datasets import SYNTHETIC_DATASETS
from ..models import LAYERS, PRIOR_FAMILIES
from ..trainer.pipeline import CODE_OPTIMIZERS
from .split import BINARIZATIONS, DATASETS

__all__ = ["DEFAULT_METHODS", "main"]

#: What ``pyro-mapa compare`` runs by default (AutoNormal and more IWAE and MAPA settings on
#: request): about 5 minutes for 3 seeds on 2 cores (README).
DEFAULT_METHODS = ["vae", "iwae-20", "autodelta", "mapa-5-10", "exact"]


def _count(minimum: int):
    """An argparse type: an int of at least ``minimum``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyro-mapa", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="train the quickstart model with MAPA on built-in data")
    demo.add_argument("--dataset", default="spiral-dots", choices=SYNTHETIC_DATASETS)
    demo.add_argument("--num-train", type=_count(2), default=1000)
    demo.add_argument("--steps", type=_count(1), default=2000)
    demo.add_argument("--neighbors", type=_count(1), default=5, help="K, neighbours summed exactly")
    demo.add_argument("--samples", type=_count(0), default=10, help="S, draws from the proposal")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="mapa-demo", help="folder for result.json and demo.png")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    compare = commands.add_parser("compare", help="MAPA against VAE, IWAE and Pyro's AutoGuides")
    compare.add_argument("--dataset", default="spiral-dots", choices=DATASETS,
                         help="a built-in data set (fashion-mnist: Debian's dataset-fashion-mnist, Bernoulli)")
    compare.add_argument("--data", metavar="PATH",
                         help="your own N x D array (.npy, .npz, .csv) instead of --dataset, split 80/10/10 by the first seed")
    compare.add_argument("--likelihood", choices=["normal", "bernoulli"], default="normal",
                         help="the observation model of --data")
    compare.add_argument("--sigma", type=float, default=0.1, help="the Gaussian's fixed sigma, for --data")
    compare.add_argument("--latent-dim", type=int, help="d, the codes' dimension (default: the data set's)")
    compare.add_argument("--hidden", type=int, help="width of the decoder's and encoder's two hidden layers (default: the data set's)")
    compare.add_argument("--num-train", type=int, help="training points (synthetic sets: 1,000; fashion-mnist: 50,000)")
    compare.add_argument("--num-val", type=int, help="validation points scored at checkpoints (fashion-mnist: 1,000)")
    compare.add_argument("--num-test", type=int, help="test points (fashion-mnist: the first 2,000)")
    compare.add_argument("--layers", choices=LAYERS, default="tanh",
                         help="the decoder's and encoder's hidden layers: tanh, or gated (the published networks')")
    compare.add_argument("--binarization", choices=BINARIZATIONS, default="static",
                         help="fashion-mnist: train on one fixed draw of the images, or on a fresh draw at every step")
    compare.add_argument("--batch-size", type=int, default=100)
    compare.add_argument("--checkpoints", type=int, default=20, help="checkpoints per run (scored on validation)")
    compare.add_argument("--no-checkpoint-test", action="store_true",
                         help="score only the validation points at checkpoints (the curves show validation)")
    compare.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    compare.add_argument("--budget", type=int, default=300_000, help="decoder passes per training run")
    compare.add_argument("--methods", nargs="+", default=DEFAULT_METHODS,
                         help="vae, iwae-S, iwae-dreg-S, vampprior-K, exemplar, autonormal, autodelta, mapa-K-S, "
                              "smoothed-mapa-K-S, exact (MAPA's options after @: kernel p<perplexity> or eps<e>, d<share>, g<size>, "
                              "shared, prior gmm<k>, gaussian, flow or exemplar, noise<tau>)")
    compare.add_argument("--lr", type=float, nargs="+", default=[1e-2],
                         help="Adam's learning rate; several: each method's is chosen by validation on a separate tuning seed")
    compare.add_argument("--code-init", choices=["pca", "random"], default="pca",
                         help="where per-point codes start (MAPA, exact, AutoDelta, AutoNormal)")
    compare.add_argument("--eval-particles", type=int, default=100,
                         help="importance samples per point at each checkpoint (the curves and the choice of checkpoint)")
    compare.add_argument("--test-particles", type=int, default=2000,
                         help="samples per point for the final test LL to start from (then x4 until stable)")
    compare.add_argument("--max-test-particles", type=int, default=8000,
                         help="at most this many samples per point for the final test LL (--test-particles or this if fewer, then x4 until stable)")
    compare.add_argument("--scorer", choices=["auto", "laplace", "encoder"], default="auto",
                         help="the scoring proposal, the same for every method: a Laplace mixture at the codes, or an "
                              "encoder fitted to each trained model's posterior (auto: the encoder above 64 dimensions or with "
                              "--refine-steps)")
    compare.add_argument("--scorer-fit-steps", type=int, default=1000,
                         help="Adam steps of the scoring encoder's fit at each checkpoint (three times this at the end)")
    compare.add_argument("--refine-steps", type=_count(0), default=0,
                         help="score the test points again with each one's encoder proposal refined by this many "
                              "steps on its own bound (a tighter estimate, the table's 'refined'; auto scorer: the "
                              "encoder)")
    compare.add_argument("--out", default="mapa-compare", help="folder for results.json and compare.png")
    compare.add_argument("--quiet", action="store_true", help="no progress bars")
    train = commands.add_parser("train", help="train MAPA on your own array and save it (data-parallel under torchrun)")
    train.add_argument("--data", metavar="PATH", required=True, help="your N x D array (.npy, .npz, .csv)")
    train.add_argument("--likelihood", choices=["normal", "bernoulli"], default="normal")
    train.add_argument("--sigma", type=float, default=0.1, help="the Gaussian's fixed sigma")
    train.add_argument("--latent-dim", type=_count(1), default=2)
    train.add_argument("--hidden", type=_count(1), default=50, help="width of the decoder's two hidden layers")
    train.add_argument("--layers", choices=LAYERS, default="tanh", help="the decoder's hidden layers: tanh or gated")
    train.add_argument("--neighbors", type=_count(1), default=5, help="K, neighbours summed exactly")
    train.add_argument("--samples", type=_count(0), default=10, help="S, draws from the proposal")
    train.add_argument("--epochs", type=_count(1), default=10)
    train.add_argument("--batch-size", type=_count(1), default=100, help="points per step and process")
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--prior", choices=PRIOR_FAMILIES, default="gmm")
    train.add_argument("--components", type=_count(1), default=10, help="the mixture's components, for --prior gmm")
    train.add_argument("--shared-draws", action="store_true",
                       help="a batch's points share their uncached draws: fewer codes decoded per step, the same bound")
    train.add_argument("--search", choices=["exact", "faiss"], default="exact", help="the cache's neighbour search")
    train.add_argument("--code-gradients", choices=["rows", "dense"], default="rows",
                       help="under torchrun: send the codes' touched rows, or their whole gradient")
    train.add_argument("--code-optimizer", choices=CODE_OPTIMIZERS, default="adam",
                       help="Adam on every code each step, or SparseAdam on the rows a step decoded (for millions of points)")
    train.add_argument("--code-noise", type=float, default=0.0, metavar="TAU",
                       help="decode each code with N(0, TAU^2 I) noise in training; the prior is widened by it")
    train.add_argument("--val", metavar="PATH",
                       help="held-out rows (.npy, .npz, .csv): the epoch that scores them best is the model kept")
    train.add_argument("--validate-every", type=_count(1), metavar="EPOCHS",
                       help="score --val every this many epochs (and after the last; default 1)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", help="cpu or cuda (default: cuda if there is one; under torchrun each rank its own GPU)")
    train.add_argument("--out", default="mapa-model", help="folder for model.pt, cache.pt (reused if there) and train.json")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    score = commands.add_parser("score", help="score new data with a model pyro-mapa train saved")
    score.add_argument("--model", metavar="DIR", required=True, help="the folder pyro-mapa train wrote")
    score.add_argument("--data", metavar="PATH", required=True, help="the rows to score (.npy, .npz, .csv)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "train" and args.validate_every is not None and args.val is None:
        parser.error("--validate-every needs --val (the held-out rows to score)")
    if args.command == "compare" and args.binarization == "dynamic" and (args.data or args.dataset != "fashion-mnist"):
        parser.error("--binarization dynamic draws fashion-mnist's grey levels afresh: it needs --dataset fashion-mnist")
    if args.command == "compare" and args.refine_steps and args.scorer == "laplace":
        parser.error("--refine-steps refines the encoder scorer's proposal per point: the laplace scorer has none")
    if args.command == "score":
        return _score(args)
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
    if args.command == "train":
        return _train(args, out, progress)
    from ..models import BernoulliLikelihood, NormalLikelihood
    from .compare import run_comparison
    from .methods import parse_method
    from .report import paired_tables, plot_curves, summary_table
    from .split import load_split, split_array

    methods = [parse_method(m) for m in args.methods]  # a bad name fails before any data is read
    if args.data is not None:
        likelihood = BernoulliLikelihood() if args.likelihood == "bernoulli" else NormalLikelihood(args.sigma)
        split = split_array(args.data, likelihood, args.seeds[0], latent_dim=args.latent_dim or 2,
                            hidden=args.hidden or 50, layers=args.layers)
    else:
        split = load_split(args.dataset, args.num_train, args.seeds[0], latent_dim=args.latent_dim, hidden=args.hidden,
                           num_val=args.num_val, num_test=args.num_test, binarization=args.binarization, layers=args.layers)
    scorer = args.scorer if args.scorer != "auto" else (
        "encoder" if split.train.shape[1] > 64 or args.refine_steps else "laplace")
    split, runs, tuning = run_comparison(
        split, methods, args.seeds, args.budget, learning_rates=tuple(args.lr), progress=progress,
        code_init=args.code_init, eval_particles=args.eval_particles, batch_size=args.batch_size,
        num_checkpoints=args.checkpoints, checkpoint_test=not args.no_checkpoint_test,
        test_particles=min(args.test_particles, args.max_test_particles), max_test_particles=args.max_test_particles,
        scorer=scorer, scorer_fit_steps=args.scorer_fit_steps, refine_steps=args.refine_steps,
    )
    table = summary_table(split, runs)
    paired = paired_tables(runs)
    print(table + ("\n\n" + paired if paired else ""))
    record = {"dataset": split.name, "split": split.describe(), "split_notes": split.notes, "budget": args.budget,
              "settings": {k: v for k, v in vars(args).items() if k not in ("command", "out", "quiet")} | {"scorer": scorer},
              "true_test": split.true_test,
              "runs": [asdict(r) for r in runs], "tuning_runs": [asdict(r) for r in tuning], "table": table,
              "paired": paired}
    (out / "results.json").write_text(json.dumps(record, indent=1))
    plot_curves(runs, out / "compare.png", f"{split.name}, budget {args.budget} decoder passes", split.true_test)
    print(f"wrote {out / 'results.json'} and {out / 'compare.png'}")
    return 0


def _train(args: argparse.Namespace, out: Path, progress: bool | None) -> int:
    """``pyro-mapa train``: under torchrun (``WORLD_SIZE`` set) every process joins one group
    (gloo on CPU, nccl on GPUs); rank 0 writes the files."""
    import os

    import torch
    import torch.distributed as dist

    from .._files import atomic_file
    from ..datasets import load_array
    from ..models import BernoulliLikelihood, NormalLikelihood
    from ..trainer import train_mapa

    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and launched and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # each process its own GPU
    if device.type == "cuda":
        torch.cuda.set_device(device)  # before the group: nccl's collectives use the current device
    if launched:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        likelihood = BernoulliLikelihood() if args.likelihood == "bernoulli" else NormalLikelihood(args.sigma)
        data = load_array(args.data)
        validation = None if args.val is None else load_array(args.val)
        model = train_mapa(
            data, likelihood, latent_dim=args.latent_dim, hidden=args.hidden, layers=args.layers,
            num_neighbors=args.neighbors,
            num_samples=args.samples, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, prior=args.prior,
            num_components=args.components, shared_draws=args.shared_draws,
            cache=out / "cache.pt", search=args.search, code_gradients=args.code_gradients, code_optimizer=args.code_optimizer,
            code_noise=args.code_noise, validation=validation, validate_every=args.validate_every or 1,
            seed=args.seed,
            device=device, progress=progress,
        )
        if not launched or dist.get_rank() == 0:
            model.save(out / "model.pt")
            record = {"data": str(args.data), "validation": args.val, "settings": model.settings,
                      "train_log_likelihood": model.log_likelihood(data).mean().item()}
            with atomic_file(out / "train.json", "w") as f:
                f.write(json.dumps(record, indent=1))
            print(f"{args.data}: N={len(data)}, {model.settings['processes']} process(es), "
                  f"cache {model.settings['cache_seconds']:.1f} s, training {model.settings['train_seconds']:.1f} s, "
                  f"prior {model.settings['prior_seconds']:.1f} s; training log-likelihood "
                  f"{record['train_log_likelihood']:.3f} per point")
            if validation is not None:
                print(f"{args.val}: best after epoch {model.settings['best_epoch']} of {args.epochs}, held-out "
                      f"log-likelihood {model.settings['validation_log_likelihood']:.3f} per row (kept that epoch's model)")
            print(f"wrote {out / 'model.pt'}, {out / 'cache.pt'} and {out / 'train.json'}")
        if launched:  # every rank done with every collective before gloo is torn down (a rank once aborted there)
            dist.barrier()
    finally:
        if launched:
            dist.destroy_process_group()
    return 0


def _score(args: argparse.Namespace) -> int:
    """``pyro-mapa score``: the saved model's exact log-likelihood of each row, summarised."""
    from ..datasets import load_array
    from ..trainer import TrainedModel

    model = TrainedModel.load(Path(args.model) / "model.pt")
    scores = model.log_likelihood(load_array(args.data))
    spread = f" +- {scores.std().item() / len(scores) ** 0.5:.3f}" if len(scores) > 1 else ""
    print(f"{args.data}: {len(scores)} rows, log-likelihood {scores.mean().item():.3f}{spread} per row "
          "(exact, the empiricalized model)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
