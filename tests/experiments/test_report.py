"""The paired comparison of two methods' test scores, against numpy's arithmetic."""

import math

import numpy as np
import pytest
import torch

from pyro_mapa.experiments import (
    RunResult,
    paired_difference,
    paired_table,
    paired_tables,
)


def test_paired_difference_is_the_mean_and_standard_error_of_the_differences():
    rng = np.random.default_rng(0)
    hardness = rng.normal(-230.0, 40.0, size=500)  # shared by both methods: cancels when paired
    first, second = hardness + rng.normal(1.0, 0.5, 500), hardness + rng.normal(0.0, 0.5, 500)
    difference = paired_difference(first.tolist(), second.tolist())
    assert difference.mean == pytest.approx((first - second).mean(), abs=1e-9)
    assert difference.se == pytest.approx((first - second).std(ddof=1) / np.sqrt(500), rel=1e-9)
    assert difference.ahead == pytest.approx(np.mean(first > second))
    assert difference.se < 0.1 * np.hypot(first.std(ddof=1), second.std(ddof=1)) / np.sqrt(500)


def test_paired_difference_refuses_different_points():
    with pytest.raises(ValueError, match="same points"):
        paired_difference([1.0, 2.0, 3.0], [1.0, 2.0])


def test_paired_difference_of_a_diverged_run_or_one_point_is_nan_not_an_error():
    assert math.isnan(paired_difference([-1.0, float("nan")], [-2.0, -3.0]).mean)
    assert math.isnan(paired_difference([-1.0, -math.inf], [-2.0, -math.inf]).se)  # -inf minus -inf
    one = paired_difference(torch.tensor([-1.0]), torch.tensor([-3.0]))  # tensors too
    assert one.mean == 2.0 and math.isnan(one.se) and one.ahead == 1.0


def test_paired_table_pairs_each_method_with_the_first_seed_by_seed():
    runs = [RunResult("vae", 0, 1e-3, test_point_ll=[-3.0, -2.0, -1.0, -4.0]),
            RunResult("vae", 1, 1e-3, test_point_ll=[-4.0, -2.0, -1.0, -4.0]),
            RunResult("mapa", 1, 1e-3, test_point_ll=[-3.0, -2.0, -1.0, -2.0]),
            RunResult("mapa", 0, 1e-3, test_point_ll=[-3.0, -3.0, -1.0, -4.0]),
            RunResult("mapa", 2, 1e-3, test_point_ll=[0.0, 0.0, 0.0, 0.0]),  # no vae seed 2: left out
            RunResult("iwae", 0, 1e-3),  # saved without per-point estimates: left out
            RunResult("iwae-5", 0, 1e-3, test_point_ll=[-1.0, -2.0])]  # other test points: said, not paired
    lines = paired_table(runs).splitlines()
    assert lines[0].startswith("minus vae")
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in lines[2:]}
    assert set(rows) == {("mapa", "1"), ("mapa", "0"), ("mapa", "median"), ("iwae-5", "0")}
    assert rows[("iwae-5", "0")][:2] == ["not", "paired:"]
    assert rows[("mapa", "1")] == ["+0.750", "0.479", "50.0%"]  # differences 1, 0, 0, 2
    assert rows[("mapa", "0")][0] == "-0.250" and rows[("mapa", "0")][2] == "0.0%"
    assert rows[("mapa", "median")] == ["+0.250"]


def test_paired_table_is_empty_without_per_point_estimates():
    assert paired_table([RunResult("vae", 0, 1e-3), RunResult("mapa", 0, 1e-3)]) == ""
    assert paired_table([]) == ""


def test_the_reference_is_the_first_method_with_per_point_estimates():
    runs = [RunResult("vae", 0, 1e-3), RunResult("iwae", 0, 1e-3, test_point_ll=[-2.0, -2.0]),
            RunResult("mapa", 0, 1e-3, test_point_ll=[-1.0, -2.0])]
    lines = paired_table(runs).splitlines()
    assert lines[0].startswith("minus iwae") and lines[2].split()[:3] == ["mapa", "0", "+0.500"]


def test_two_runs_of_one_method_and_seed_are_refused():
    runs = [RunResult("vae", 0, 1e-3, test_point_ll=[-1.0, -2.0]), RunResult("vae", 0, 3e-3, test_point_ll=[-1.0, -2.0]),
            RunResult("mapa", 0, 1e-3, test_point_ll=[-1.0, -2.0])]
    with pytest.raises(ValueError, match="ambiguous.*'vae', 0"):
        paired_table(runs)


def test_the_refined_scores_are_paired_apart_from_the_encoder_alone():
    """``points="refined_test_point_ll"``: the refined estimates, paired among the runs that have them."""
    runs = [RunResult("vae", 0, 1e-3, test_point_ll=[-3.0, -3.0], refined_test_point_ll=[-2.0, -2.0]),
            RunResult("iwae", 0, 1e-3, test_point_ll=[-1.0, -1.0]),  # not refined: left out of the refined table
            RunResult("mapa", 0, 1e-3, test_point_ll=[-4.0, -4.0], refined_test_point_ll=[-1.0, -2.0])]
    lines = paired_table(runs, points="refined_test_point_ll").splitlines()
    assert lines[0] == "minus vae, point by point on the same test points (refined_test_point_ll):"
    assert [line.split()[:3] for line in lines[2:]] == [["mapa", "0", "+0.500"]]
    assert paired_table(runs).splitlines()[2].split()[:3] == ["iwae", "0", "+2.000"]
    runs[2].refine_steps, runs[0].refine_steps = 100, 200  # refined by other numbers of steps: said, not paired
    lines = paired_table(runs, points="refined_test_point_ll").splitlines()
    assert lines[2].split()[:7] == ["mapa", "0", "not", "paired:", "refined", "100", "steps"]


def test_paired_tables_prints_the_encoder_alone_table_then_the_refined_one_and_only_those_with_pairs():
    runs = [RunResult("vae", 0, 1e-3, test_point_ll=[-3.0, -3.0], refined_test_point_ll=[-2.0, -2.0]),
            RunResult("mapa", 0, 1e-3, test_point_ll=[-4.0, -4.0], refined_test_point_ll=[-1.0, -2.0])]
    assert paired_tables(runs) == paired_table(runs) + "\n\n" + paired_table(runs, points="refined_test_point_ll")
    for r in runs:
        r.refined_test_point_ll = []  # not refined: the encoder-alone table alone
    assert paired_tables(runs) == paired_table(runs) != ""
    assert paired_tables([RunResult("vae", 0, 1e-3), RunResult("mapa", 0, 1e-3)]) == ""


def test_the_summary_shows_the_refined_median_and_the_steps_behind_it():
    from pyro_mapa.experiments import load_split, summary_table

    split = load_split("absolute-value", num_train=200, seed=0)
    runs = [RunResult("vae", seed, 1e-3, test_ll=-3.0, refine_steps=200, refined_test_ll=value)
            for seed, value in enumerate([-2.0, -2.5, -1.0])] + [RunResult("mapa", 0, 1e-3, test_ll=-3.0)]
    lines = summary_table(split, runs).splitlines()
    header, vae, mapa = lines[1].split(), lines[2].split(), lines[3].split()
    column = header.index("refined") - 1  # the header's "test LL" is two words
    assert vae[column] == "-2.000" and mapa[column] == "-"  # the median over seeds; none
    assert "refined: each test point's proposal refined by 200 steps" in lines
    runs[0].refine_steps = 100
    assert "(mixed: the medians are not comparable)" in summary_table(split, runs)
