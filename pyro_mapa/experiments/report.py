"""What a comparison shows: a table of medians and spreads, the methods' differences point by
point, and the curves as a plot."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

from .split import Split
from .training import RunResult

__all__ = ["PairedDifference", "paired_difference", "paired_table", "paired_tables", "plot_curves", "summary_table"]


def summary_table(split: Split, runs: list[RunResult]) -> str:
    """Per method: its learning rate; the test LL's median and spread (min..max over seeds)
    by importance sampling, the median of the same with each point's proposal refined (where the
    runs scored it: ``refine_steps``), its standard error over the test points, the median effective
    sample size and Pareto k-hat of the points' weights (medians over seeds; a k-hat above 0.7
    means the number is not to be trusted), and the most samples per point a seed needed; the median by grid quadrature (``d <= 2``: the
    check); passes per point per step; median passes and training seconds to the best
    checkpoint; (MAPA, exact) the empiricalized model's exact test LL (median); and the median
    seconds of each phase: set-up (the MAPA cache), training, checkpoint scoring, final score."""
    def median_or_dash(values: list, width: int = 9, digits: int = 3) -> str:
        return f"{statistics.median(values):{width}.{digits}f}" if None not in values else f"{'-':>{width}}"

    def median(values) -> float:
        return statistics.median(list(values))

    lines = [
        f"{split.describe()}, seeds = {sorted({r.seed for r in runs})}, {len(split.test)} test points",
        f"{'method':12} {'lr':>6} {'test LL':>9} {'min..max':>17} {'refined':>9} {'se':>5} {'ESS':>6} {'k-hat':>5} {'samples':>7} {'grid':>9} "
        f"{'dec/pt/step':>11} {'enc/pt/step':>11} {'passes to best':>14} {'s to best':>9} {'empirical':>9} "
        f"{'setup s':>7} {'train s':>7} {'ckpt s':>7} {'score s':>7}",
    ]
    for method in dict.fromkeys(r.method for r in runs):
        rs = [r for r in runs if r.method == method]
        ll = [r.test_ll for r in rs]
        lines.append(
            f"{method:12} {rs[0].lr:6.3g} {statistics.median(ll):9.3f} {min(ll):8.3f}..{max(ll):<8.3f} "
            f"{median_or_dash([r.refined_test_ll for r in rs])} "
            f"{median(r.test_point_se for r in rs):5.2f} "
            f"{median_or_dash([r.test_ess for r in rs], 6, 0)} {median_or_dash([r.test_k_hat for r in rs], 5, 2)} "
            f"{max(r.test_particles for r in rs):6d}{' ' if all(r.test_converged for r in rs) else '*'} "
            f"{median_or_dash([r.grid_test_ll for r in rs])} "
            f"{statistics.median(r.decoder_per_point_step for r in rs):11.2f} "
            f"{statistics.median(r.encoder_per_point_step for r in rs):11.2f} "
            f"{statistics.median(r.passes_to_best for r in rs):14.0f} {statistics.median(r.seconds_to_best for r in rs):9.1f} "
            + median_or_dash([r.empirical_test_ll for r in rs])
            + "".join(f" {median(getattr(r, phase) for r in rs):7.1f}"
                      for phase in ("setup_seconds", "train_seconds", "checkpoint_seconds", "score_seconds"))
        )
    if split.true_test is not None:
        lines.append(f"{'true model':12} {'':>6} {split.true_test:9.3f}   (the ceiling)")
    steps = sorted({r.refine_steps for r in runs if r.refine_steps})
    if steps:
        lines.append(f"refined: each test point's proposal refined by {' or '.join(map(str, steps))} steps"
                     + (" (mixed: the medians are not comparable)" if len(steps) > 1 else ""))
    if not all(r.test_converged for r in runs):
        lines.append("* a seed's test LL had not settled to 0.01 nats (or its k-hat stayed above 0.7) at the sample "
                     "limit (the grid, where there is one, is the check)")
    return "\n".join(lines)


class PairedDifference(NamedTuple):
    mean: float  # the mean over the points of first minus second
    se: float  # its standard error: the differences' sd / sqrt(n) (NaN for one point)
    ahead: float  # the share of points where first is the higher


def paired_difference(first: Sequence[float], second: Sequence[float]) -> PairedDifference:
    """``first - second`` point by point, for two estimates on the same test points (lists,
    arrays or 1-D tensors).

    Two methods' test log-likelihoods share most of their spread (some images are simply
    harder), so the standard error of their difference is far smaller paired than from the two
    means' own errors. A NaN or infinite estimate makes the result NaN, not an error."""
    if len(first) != len(second) or len(first) == 0:
        raise ValueError(f"a paired difference needs estimates on the same points: got {len(first)} and {len(second)}")
    differences = [float(a) - float(b) for a, b in zip(first, second)]
    n = len(differences)
    mean = math.fsum(differences) / n
    variance = math.fsum((d - mean) ** 2 for d in differences) / (n - 1) if n > 1 else math.nan
    return PairedDifference(mean, math.sqrt(variance / n), sum(d > 0 for d in differences) / n)


def paired_table(runs: list[RunResult], points: str = "test_point_ll") -> str:
    """Each method minus the reference, seed by seed on the same test points: the mean
    difference of the test LL, its paired standard error, the share of points where the
    method is ahead, and the median difference over seeds. The reference is the first method
    in ``runs`` with per-point estimates (the field ``points``: ``"refined_test_point_ll"`` pairs
    the refined scores); runs without them (results saved before they were kept, or not
    refined) are left out, as are pairs scored on different numbers of points or refined by
    different numbers of steps (said in a line);
    empty if no pair remains. A method with two runs of one seed is refused: which of them
    to pair would be a guess."""
    kept = [r for r in runs if getattr(r, points)]
    if not kept:
        return ""
    repeated = sorted(key for key, count in Counter((r.method, r.seed) for r in kept).items() if count > 1)
    if repeated:
        raise ValueError(f"two runs of one method and seed, which to pair is ambiguous: {repeated}")
    reference, *others = dict.fromkeys(r.method for r in kept)
    theirs = {r.seed: r for r in kept if r.method == reference}
    lines = []
    for method in others:
        means = []
        for r in kept:
            if r.method != method or r.seed not in theirs:
                continue
            mine, other = getattr(r, points), getattr(theirs[r.seed], points)
            if len(mine) != len(other):
                lines.append(f"{method:12} {r.seed:>6} not paired: {len(mine)} test points against {len(other)}")
                continue
            if points.startswith("refined") and r.refine_steps != theirs[r.seed].refine_steps:
                lines.append(f"{method:12} {r.seed:>6} not paired: refined {r.refine_steps} steps against "
                             f"{theirs[r.seed].refine_steps}")
                continue
            d = paired_difference(mine, other)
            means.append(d.mean)
            lines.append(f"{method:12} {r.seed:>6} {d.mean:+10.3f} {d.se:6.3f} {d.ahead:6.1%}")
        if len(means) > 1:
            lines.append(f"{method:12} {'median':>6} {statistics.median(means):+10.3f}")
    if not lines:
        return ""
    scores = "" if points == "test_point_ll" else f" ({points})"
    return "\n".join([f"minus {reference}, point by point on the same test points{scores}:",
                      f"{'method':12} {'seed':>6} {'difference':>10} {'se':>6} {'ahead':>6}", *lines])


def paired_tables(runs: list[RunResult]) -> str:
    """``paired_table`` of the encoder-alone scores, then of the refined ones, a blank line
    between; those with no pair are left out, so empty if neither has one."""
    return "\n\n".join(filter(None, (paired_table(runs, points) for points in ("test_point_ll", "refined_test_point_ll"))))


def plot_curves(runs: list[RunResult], path, title: str, ceiling: float | None = None) -> None:
    """Test log-likelihood against decoder passes: one curve per method (median over
    seeds), with the band between the seeds' min and max; the validation log-likelihood
    where the checkpoints did not score the test points."""
    import numpy as np
    from matplotlib.figure import (
        Figure,  # not pyplot: no global backend switch, no open figures
    )

    column = 2 if all(np.isfinite(c[2]) for r in runs for c in r.curve) else 1

    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    for method in dict.fromkeys(r.method for r in runs):
        curves = [np.array(r.curve) for r in runs if r.method == method]
        length = min(len(c) for c in curves)
        passes = np.median([c[:length, 0] for c in curves], axis=0)
        test = np.array([c[:length, column] for c in curves])
        (line,) = ax.plot(passes, np.median(test, axis=0), label=method)
        ax.fill_between(passes, test.min(0), test.max(0), color=line.get_color(), alpha=0.2)
    if ceiling is not None:
        ax.axhline(ceiling, color="k", ls="--", label="true model")
    ax.set_xlabel("decoder passes (training)")
    ax.set_ylabel(f"{('validation', 'test')[column - 1]} log-likelihood (nats per point)")
    ax.set_title(title)
    lows = [r.test_ll for r in runs]
    ax.set_ylim(bottom=min(lows) - 2 * (max(lows) - min(lows) + 0.1), top=(ceiling or max(lows)) + 0.5)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
