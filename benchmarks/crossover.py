"""Where MAPA becomes cheaper than exact enumeration, as the training set grows.

Both train the same empiricalized model (one code per training point, the comparison's
decoder, fixed sigma) on the 20-dimensional synthetic set ("embedded": a 2-D latent,
N training points, 500 test points). Exact enumeration is `MAPA_ELBO` with K = N (every
code once per step: N decoder passes per step, whatever the batch); MAPA is K = 1,
S = 10 (one pass per distinct index among a step's particles). Both are scored the same
way, by the empiricalized model's exact test log-likelihood
(`pyro_mapa.evaluation.empirical_log_likelihood`, no sampling), at 20 checkpoints of a
budget of max(steps-exact x N, min-budget) decoder passes. The target is the lower of
the two methods' best test values; we report the passes (and seconds) each took to
first reach it, and the ratio MAPA / exact (below 1: MAPA is cheaper). Both start from
the model's own codes near 0 and train with Adam at `--lr` (0.01), batch 100.

    python benchmarks/crossover.py --sizes 1000 4000 15000 60000 --seeds 0 1 2 --out crossover

Seconds are one torch thread's; passes are the budget the comparison counts.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from empirical_training import train_curve

from pyro_mapa.experiments import load_split


def first_reaching(curve: list[dict], target: float) -> tuple[int, float]:
    """Passes and seconds at the first checkpoint whose test LL reaches ``target``."""
    return next((r["passes"], r["seconds"]) for r in curve if r["test"] >= target)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 15000, 60000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps-exact", type=int, default=300, help="budget = this many exact steps ...")
    parser.add_argument("--min-budget", type=int, default=2_000_000, help="... or at least this many passes")
    parser.add_argument("--neighbors", type=int, default=1)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--checkpoints", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("crossover"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: fair beside other jobs)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, curves = [], {}
    print("| N | seed | budget | exact best | MAPA best | target | exact passes | MAPA passes | ratio "
          "| exact s | MAPA s |", flush=True)
    print("|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for size in args.sizes:
        split = load_split("embedded", num_train=size)
        budget = max(args.steps_exact * size, args.min_budget)
        for seed in args.seeds:
            exact, mapa = (
                train_curve(split, method, seed, budget, batch=args.batch, lr=args.lr, checkpoints=args.checkpoints)
                for method in ("exact", f"mapa-{args.neighbors}-{args.samples}")
            )
            curves[f"{size}/{seed}"] = {"exact": exact, "mapa": mapa}
            best = {"exact": max(r["test"] for r in exact), "mapa": max(r["test"] for r in mapa)}
            target = min(best.values())
            (pe, se), (pm, sm) = first_reaching(exact, target), first_reaching(mapa, target)
            rows.append({"N": size, "seed": seed, "ratio": pm / pe, "exact_best": best["exact"], "mapa_best": best["mapa"]})
            print(f"| {size} | {seed} | {budget} | {best['exact']:.3f} | {best['mapa']:.3f} | {target:.3f} | {pe} | {pm} "
                  f"| {pm / pe:.2f} | {se:.1f} | {sm:.1f} |", flush=True)
            (args.out / "crossover.json").write_text(json.dumps({"rows": rows, "curves": curves}))
    for size in args.sizes:
        ratios = [r["ratio"] for r in rows if r["N"] == size]
        print(f"N = {size}: median passes ratio MAPA / exact {statistics.median(ratios):.2f} over {len(ratios)} seeds")
    plot(curves, args.out / "crossover.png")


def plot(curves: dict, path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({int(key.split("/")[0]) for key in curves})
    fig, axes = plt.subplots(1, len(sizes), figsize=(4 * len(sizes), 3.5), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        for key, runs in curves.items():
            if int(key.split("/")[0]) != size:
                continue
            for method, color in (("exact", "C0"), ("mapa", "C1")):
                passes, ll = [r["passes"] for r in runs[method]], [r["test"] for r in runs[method]]
                ax.plot(passes, ll, color=color, alpha=0.7, label=method if key.endswith("/0") else None)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(f"N = {size}")
        ax.set_xlabel("decoder passes")
        lows = [c["test"] for key, runs in curves.items() if key.startswith(f"{size}/") for r in runs.values() for c in r]
        ax.set_ylim(sorted(lows)[len(lows) // 4] - 2, max(lows) + 0.5)
    axes[0][0].set_ylabel("exact test log-likelihood")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
