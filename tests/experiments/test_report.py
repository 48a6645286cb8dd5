"""The paired comparison of two methods' test scores, against numpy's arithmetic."""

import numpy as np
import pytest

from pyro_mapa.experiments import RunResult, paired_difference, paired_table


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


def test_paired_table_pairs_each_method_with_the_first_seed_by_seed():
    runs = [RunResult("vae", 0, 1e-3, test_point_ll=[-3.0, -2.0, -1.0, -4.0]),
            RunResult("vae", 1, 1e-3, test_point_ll=[-3.0, -2.0, -1.0, -4.0]),
            RunResult("mapa", 1, 1e-3, test_point_ll=[-2.0, -2.0, -1.0, -2.0]),
            RunResult("mapa", 0, 1e-3, test_point_ll=[-3.0, -3.0, -1.0, -4.0]),
            RunResult("mapa", 2, 1e-3, test_point_ll=[0.0, 0.0, 0.0, 0.0]),  # no vae seed 2: left out
            RunResult("iwae", 0, 1e-3)]  # saved without per-point estimates: left out
    lines = paired_table(runs).splitlines()
    assert lines[0].startswith("minus vae")
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in lines[2:]}
    assert set(rows) == {("mapa", "1"), ("mapa", "0"), ("mapa", "median")}
    assert rows[("mapa", "1")] == ["+0.750", "0.479", "50.0%"]  # differences 1, 0, 0, 2
    assert rows[("mapa", "0")][0] == "-0.250" and rows[("mapa", "0")][2] == "0.0%"
    assert rows[("mapa", "median")] == ["+0.250"]


def test_paired_table_is_empty_without_per_point_estimates():
    assert paired_table([RunResult("vae", 0, 1e-3), RunResult("mapa", 0, 1e-3)]) == ""
