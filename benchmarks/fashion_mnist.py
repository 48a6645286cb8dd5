"""The comparison on Fashion-MNIST at full size, run in parts that resume.

Every (method, seed) at a budget is one part, saved as its own JSON file under
``--out/budget<B>/`` as soon as it ends (written atomically); a part whose file exists is
skipped, so a campaign that outlasts a session resumes where it stopped. Within a part, its
state is saved as ``<part>.trained.pt`` (``train_and_score(trained_path=...)``): at every
checkpoint while it trains (parameters, optimiser, counters, the curve so far) and, as the
trained half (the best checkpoint, the curve), before the final score; a part stopped while
training goes on from its last checkpoint, one stopped during its score resumes there (an
Exemplar VAE part is about an hour of each, a VAE at 54 million passes two hours of training),
with the result an uninterrupted part gives. ``--refine-steps T`` scores the test images a second
time, each one's proposal refined by ``T`` steps (``train_and_score(refine_steps=T)``: a tighter
bound, reported beside the first and paired apart). Once the part is written the file is kept as
``<part>.model.pt`` (git-ignored; a part run again after a change of code trains again), the trained
model that `benchmarks/scorer_refine.py` can score again. ``report`` reads
the parts of a budget and prints the comparison's table (medians, spreads, phase timings)
and writes the curves as a plot; ``--also PART.json ...`` adds parts of other budgets (on the
same split), labelled with their folder and paired image by image with the rest.

The protocol is `pyro_mapa.experiments.train_and_score`'s on `load_split("fashion-mnist")`:
the 50,000 training images (stochastically binarized with seed 0), a Bernoulli decoder
40 -> 300 -> 300 -> 784 (tanh) shared by every method, an equal budget of decoder passes,
checkpoints scored on the first 1,000 validation images with 100 importance samples, and
the best one scored on the first 2,000 test images with 5,000 samples per image. The
proposal is ``--scorer``'s, the same for every method (default: an encoder fitted to each
trained model's posterior, ``pyro_mapa.evaluation.EncoderProposal``); parts are kept per
scorer, under ``--out/<scorer>/budget<B>/``. ``--binarization dynamic`` trains every method on a
fresh draw of its images at each step (the published protocol's dynamic binarization; validation
and test images stay the fixed draw), its parts under ``--out/<scorer>/budget<B>-dynamic/``;
``--layers gated`` gives the decoder and the encoders gated hidden layers (the published
networks'), parts under ``budget<B>[-dynamic]-gated/``.

    python benchmarks/fashion_mnist.py run --budget 2000000 --seeds 0 \\
        --methods vae iwae-5 iwae-50 autodelta mapa-1-10 mapa-5-10 exact
    python benchmarks/fashion_mnist.py report --budget 2000000
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
from dataclasses import asdict, fields
from pathlib import Path

import torch

from pyro_mapa._files import atomic_file
from pyro_mapa.experiments import (
    BINARIZATIONS,
    RunResult,
    load_split,
    paired_tables,
    plot_curves,
    summary_table,
    train_and_score,
)
from pyro_mapa.models import LAYERS

DEFAULT_OUT = Path(__file__).parent / "results" / "fashion-mnist"
#: Adam's learning rate of every method unless ``--lr`` says otherwise (parts at another rate are
#: named ``<method>-lr<rate>-seed<seed>.json`` and reported as ``<method> lr=<rate>``; parts with
#: ``--kl-warmup W`` likewise ``<method>-warmup<W>-seed<seed>.json``, ``<method> warm-up=<W>``)
DEFAULT_LR = 1e-3
METHODS = ["vae", "mapa-1-10", "mapa-1-10@gmm100", "mapa-1-10@shared", "mapa-1-10@shared,gmm100", "iwae-5",
           "mapa-5-10", "exact", "autodelta", "iwae-50", "mapa-1-50", "mapa-5-50", "mapa-1-10@p10", "mapa-1-10@d0.99",
           "iwae-dreg-50", "vampprior-500", "exemplar"]


def _commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _folder(args) -> Path:
    dynamic = "-dynamic" if args.binarization == "dynamic" else ""
    gated = "-gated" if args.layers == "gated" else ""
    return args.out / args.scorer / f"budget{args.budget}{dynamic}{gated}"


def run(args) -> None:
    folder = _folder(args)
    folder.mkdir(parents=True, exist_ok=True)
    split = load_split("fashion-mnist", num_val=args.num_val, num_test=args.num_test, binarization=args.binarization,
                       layers=args.layers)
    commit = _commit()  # the code this process runs, whatever is committed while it does
    for seed in args.seeds:
        for method in args.methods:
            name = method + (f"-lr{args.lr:g}" if args.lr != DEFAULT_LR else "") + (
                f"-warmup{args.kl_warmup}" if args.kl_warmup else "")
            path, trained = folder / f"{name}-seed{seed}.json", folder / f"{name}-seed{seed}.trained.pt"
            if path.exists():
                print(f"{path.name}: done before, skipped", flush=True)
                continue
            resumed = trained.exists()  # an interrupted part's state: it goes on from there
            result = train_and_score(
                method, split, seed, args.budget, lr=args.lr, batch_size=args.batch_size,
                num_checkpoints=args.checkpoints, eval_particles=args.eval_particles, checkpoint_test=False,
                test_particles=args.test_particles, max_test_particles=args.test_particles, progress=not args.quiet,
                scorer=args.scorer, scorer_fit_steps=args.scorer_fit_steps, kl_warmup=args.kl_warmup,
                refine_steps=args.refine_steps, trained_path=trained,
            )
            record = {
                "result": asdict(result), "split": split.describe(), "split_notes": split.notes,
                "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "func"},
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                           f"{torch.get_num_threads()} threads",
                "date": datetime.date.today().isoformat(), "commit": commit, "resumed": resumed,
            }
            with atomic_file(path, "w") as f:  # whole or not at all
                f.write(json.dumps(record, indent=1))
            trained.replace(path.with_suffix(".model.pt"))  # the trained model, for scoring it otherwise
            refined = f", refined {result.refined_test_ll:.2f}" if result.refine_steps else ""
            print(f"{path.name}: test LL {result.test_ll:.2f} (se {result.test_point_se:.2f}){refined}, "
                  f"train {result.train_seconds:.0f} s, score {result.score_seconds:.0f} s", flush=True)


def report(args) -> None:
    folder = _folder(args)
    parts = sorted(folder.glob("*-seed*.json"))
    if not parts:
        raise SystemExit(f"no parts under {folder}")
    parts += args.also
    records = [json.loads(p.read_text()) for p in parts]
    other_splits = sorted({str(p) for p, r in zip(parts, records) if r["split"] != records[0]["split"]})
    if other_splits:
        raise SystemExit(f"{other_splits} were scored on another split than {folder}'s parts: not comparable")
    names = {f.name for f in fields(RunResult)}
    runs = [RunResult(**{k: v for k, v in r["result"].items() if k in names}) for r in records]
    for part, r in zip(parts, runs):
        r.method += (f" lr={r.lr:g}" if r.lr != DEFAULT_LR else "") + (
            f" warm-up={r.kl_warmup:,}" if r.kl_warmup else "") + (
            f" ({part.parent.name})" if part.parent != folder else "")  # a part of another budget (--also)
    order = {m: i for i, m in enumerate(METHODS)}
    runs.sort(key=lambda r: (order.get(r.method.split()[0], len(order)), r.lr, r.kl_warmup, r.method, r.seed))
    split = load_split("fashion-mnist", num_val=records[0]["settings"]["num_val"],
                       num_test=records[0]["settings"]["num_test"], binarization=args.binarization, layers=args.layers)
    print(summary_table(split, runs))
    paired = paired_tables(runs)
    if paired:
        print(paired)
    print(f"machine: {records[0]['machine']}; dates {sorted({r['date'] for r in records})}; "
          f"commits {sorted({r['commit'] for r in records})}")
    plot_curves(runs, folder / "curves.png", f"Fashion-MNIST, {args.budget:,} decoder passes, {args.scorer} scorer")
    print(f"wrote {folder / 'curves.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, func in (("run", run), ("report", report)):
        sub = commands.add_parser(name)
        sub.set_defaults(func=func)
        sub.add_argument("--budget", type=int, required=True, help="decoder passes per run")
        sub.add_argument("--out", type=Path, default=DEFAULT_OUT)
        sub.add_argument("--scorer", choices=["laplace", "encoder"], default="encoder")
        sub.add_argument("--binarization", choices=BINARIZATIONS, default="static",
                         help="dynamic: every step trains on a fresh draw of its images (parts under budget<B>-dynamic/)")
        sub.add_argument("--layers", choices=LAYERS, default="tanh",
                         help="gated: the published networks' gated hidden layers (parts under budget<B>[-dynamic]-gated/)")
    commands.choices["report"].add_argument(
        "--also", type=Path, nargs="+", default=[],
        help="parts of other budgets (their JSON files) to report beside this budget's, paired on the same test images")
    run_parser = commands.choices["run"]
    run_parser.add_argument("--methods", nargs="+", default=METHODS)
    run_parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    run_parser.add_argument("--lr", type=float, default=DEFAULT_LR)
    run_parser.add_argument("--kl-warmup", type=int, default=0,
                            help="decoder passes of KL warm-up for vae, vampprior and exemplar (0: none)")
    run_parser.add_argument("--batch-size", type=int, default=100)
    run_parser.add_argument("--checkpoints", type=int, default=5)
    run_parser.add_argument("--eval-particles", type=int, default=100)
    run_parser.add_argument("--test-particles", type=int, default=5000)
    run_parser.add_argument("--num-val", type=int, default=1000)
    run_parser.add_argument("--num-test", type=int, default=2000)
    run_parser.add_argument("--scorer-fit-steps", type=int, default=1000)
    run_parser.add_argument("--refine-steps", type=int, default=0,
                            help="score the test images again with each one's proposal refined for this many steps "
                                 "(the result's refined_* fields; 0: not)")
    run_parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
