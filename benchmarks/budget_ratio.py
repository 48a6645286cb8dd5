"""From `pyro-mapa compare` results.json files: the decoder-pass budget at which each
method's test curve first reaches the reference method's final test log-likelihood (its
best-validation checkpoint, scored until stable), as a ratio to the reference's own passes
to that checkpoint (medians over seeds; "never" if it does not within the run). Curves are
the comparison's checkpoint estimates, `--eval-particles` importance samples per point
(100 by default; RESULTS.md uses 1,000): biased low, so the ratios are conservative.

    pyro-mapa compare --dataset digits --budget 1000000 --methods iwae-50 mapa-1-10 --eval-particles 1000 --out ratio-digits
    python benchmarks/budget_ratio.py ratio-digits/results.json --reference iwae-50

Several results files (one per method, e.g. each at its own learning rate) are read as one.
"""

from __future__ import annotations

import argparse
import json
import statistics


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("results", nargs="+")
    parser.add_argument("--reference", default="iwae-50")
    args = parser.parse_args()
    records = [json.load(open(path)) for path in args.results]
    runs = [run for record in records for run in record["runs"]]
    for record in records:
        methods = sorted({run["method"] for run in record["runs"]})
        print(f"{record['dataset']}, {methods}, budget {record['budget']}, lr {record.get('lr')}, "
              f"{record.get('eval_particles', 100)} importance samples per point at each checkpoint")
    reference = {r["seed"]: r for r in runs if r["method"] == args.reference}
    if not reference:
        raise SystemExit(f"no runs of {args.reference} in {args.results}")
    print(f"| method | passes to reach {args.reference}'s best / its own (median) | final test LL (median) | {args.reference} target (median) |")
    print("|---|---|---|---|")
    for method in dict.fromkeys(r["method"] for r in runs):
        ratios, finals, targets = [], [], []
        for r in (r for r in runs if r["method"] == method):
            # the target is the reference's final score (its best-validation checkpoint, scored
            # until stable); a method's curve (fewer samples, so biased low) has to reach it:
            # conservative for every method but the reference
            ref = reference[r["seed"]]
            ref_passes, target = ref["passes_to_best"], ref["test_ll"]
            reached = [passes for passes, _, test in r["curve"] if test >= target]
            ratios.append(reached[0] / ref_passes if reached else float("inf"))
            finals.append(r["test_ll"])
            targets.append(target)
        ratio = statistics.median(ratios)
        shown = "never" if ratio == float("inf") else f"{ratio:.2f}"
        print(f"| {method} | {shown} | {statistics.median(finals):.3f} | {statistics.median(targets):.3f} |")


if __name__ == "__main__":
    main()
