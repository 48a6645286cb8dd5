"""A run's trained half saved before its final score: resumed, it scores as an uninterrupted run."""

from dataclasses import asdict, replace

import pytest

import pyro_mapa.experiments.training as training
from pyro_mapa.experiments import load_split, train_and_score

SETTINGS = dict(lr=0.05, num_checkpoints=4, eval_particles=10, test_particles=50, max_test_particles=50)


@pytest.fixture(scope="module")
def split():
    return load_split("absolute-value", num_train=200, seed=0)


@pytest.mark.parametrize("method", ["mapa-2-3", "vae"])
def test_a_resumed_run_scores_as_an_uninterrupted_one(split, method, tmp_path, monkeypatch):
    """Three runs of the same seed: uninterrupted; with a file for the trained half (written);
    and again with that file, training forbidden. All three give the same result, bit for bit
    (the file restores the best checkpoint and torch's generator: without either, the final
    score's draws or parameters would differ)."""
    uninterrupted = train_and_score(method, split, 3, 6000, **SETTINGS)
    path = tmp_path / "trained.pt"
    saved = train_and_score(method, split, 3, 6000, trained_path=path, **SETTINGS)
    assert path.exists()

    def no_training(*args, **kwargs):
        raise AssertionError("trained again although the trained half was saved")

    monkeypatch.setattr(training, "_train_with_checkpoints", no_training)
    resumed = train_and_score(method, split, 3, 6000, trained_path=path, **SETTINGS)
    for run in (saved, resumed):
        assert run.test_ll == uninterrupted.test_ll and run.curve == uninterrupted.curve
        assert run.test_ess == uninterrupted.test_ess and run.passes_to_best == uninterrupted.passes_to_best
    timings = {"setup_seconds", "train_seconds", "checkpoint_seconds", "score_seconds", "seconds_to_best"}
    assert {k: v for k, v in asdict(resumed).items() if k not in timings} == {
        k: v for k, v in asdict(uninterrupted).items() if k not in timings}
    assert resumed.train_seconds == saved.train_seconds  # the saved run's, not this process's


def test_a_file_from_another_run_or_a_damaged_one_is_refused_by_name(split, tmp_path):
    path = tmp_path / "trained.pt"
    train_and_score("vae", split, 0, 2000, trained_path=path, **SETTINGS)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"saved by another run \(lr: saved 0.05, this run 0.1\)"):
        train_and_score("vae", split, 0, 2000, trained_path=path, **{**SETTINGS, "lr": 0.1})
    with pytest.raises(ValueError, match=r"method: saved 'vae', this run 'iwae-5'; seed: saved 0, this run 1"):
        train_and_score("iwae-5", split, 1, 2000, trained_path=path, **SETTINGS)
    other = load_split("absolute-value", num_train=200, seed=1)
    with pytest.raises(ValueError, match="saved by a run on other training, validation or test points"):
        train_and_score("vae", other, 0, 2000, trained_path=path, **SETTINGS)
    with pytest.raises(ValueError, match="other training, validation or test points"):  # the best checkpoint's choice
        train_and_score("vae", replace(split, val=split.val[:50]), 0, 2000, trained_path=path, **SETTINGS)
    wider = load_split("absolute-value", num_train=200, seed=0, hidden=7)
    with pytest.raises(ValueError, match=r"split: saved '.*hidden 50 x 2', this run '.*hidden 7 x 2'"):
        train_and_score("vae", wider, 0, 2000, trained_path=path, **SETTINGS)
    with pytest.raises(ValueError, match="its folder does not exist"):
        train_and_score("vae", split, 0, 2000, trained_path=tmp_path / "missing" / "trained.pt", **SETTINGS)
    assert path.read_bytes() == before  # nothing refused was written over the file
    path.write_bytes(before[: len(before) // 2])
    with pytest.raises(ValueError, match="not a readable saved trained run"):
        train_and_score("vae", split, 0, 2000, trained_path=path, **SETTINGS)
