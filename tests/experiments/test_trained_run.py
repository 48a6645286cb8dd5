"""A run's state saved while it trains and before its final score: resumed from either, it
ends as an uninterrupted run."""

from dataclasses import asdict, replace

import pytest
import torch
from pyro.infer import SVI

import pyro_mapa.experiments.training as training
from pyro_mapa._files import write_checked_file
from pyro_mapa.experiments import load_split, train_and_score
from pyro_mapa.experiments.scoring import ModelScorer
from pyro_mapa.experiments.trained_run import _fingerprint

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
    assert untimed(resumed) == untimed(uninterrupted)
    assert resumed.train_seconds == saved.train_seconds  # the saved run's, not this process's


TIMINGS = {"setup_seconds", "train_seconds", "checkpoint_seconds", "score_seconds", "seconds_to_best"}


def untimed(run) -> dict:
    return {k: v for k, v in asdict(run).items() if k not in TIMINGS}


@pytest.mark.parametrize("method, extra", [("mapa-2-3@shared,noise0.1", {}), ("vae", {"kl_warmup": 5000}),
                                           ("autodelta", {})])
def test_a_run_stopped_during_training_goes_on_as_if_never_stopped(split, method, extra, tmp_path, monkeypatch):
    """Two sessions end (KeyboardInterrupt) while the run trains: the first during the second of
    four checkpoints, the next during the third; each time the run started again with the same
    file trains only the steps after the last saved checkpoint, and it ends bit for bit as the
    uninterrupted run: its curve, best checkpoint, steps and test score. Without the optimiser's
    moments, the pass counter, the KL warm-up's position (its 5,000 passes span both stops) or
    torch's generator restored, the steps after a stop would differ."""
    settings = {**SETTINGS, **extra}
    uninterrupted = train_and_score(method, split, 3, 6000, **settings)
    path, update, step = tmp_path / "state.pt", ModelScorer.update, SVI.step
    for stop_at in (2, 3, None):  # the checkpoint during which the session ends; None: it does not
        saved = torch.load(path, weights_only=True) if path.exists() else None
        checkpoints, steps = [], []

        def update_until_the_session_ends(self, *args, **kwargs):
            checkpoints.append(1)
            if len(checkpoints) + (len(saved["result"]["curve"]) if saved else 0) == stop_at:
                raise KeyboardInterrupt
            return update(self, *args, **kwargs)

        with monkeypatch.context() as patch:
            patch.setattr(ModelScorer, "update", update_until_the_session_ends)
            patch.setattr(SVI, "step", lambda self, *a, **k: steps.append(1) or step(self, *a, **k))
            if stop_at is not None:
                with pytest.raises(KeyboardInterrupt):
                    train_and_score(method, split, 3, 6000, trained_path=path, **settings)
            else:
                resumed = train_and_score(method, split, 3, 6000, trained_path=path, **settings)
        state = torch.load(path, weights_only=True)
        assert state["state"]["stage"] == ("trained" if stop_at is None else "training")
        assert len(state["result"]["curve"]) == (stop_at or 5) - 1
    assert untimed(resumed) == untimed(uninterrupted)
    assert len(steps) == uninterrupted.steps - saved["result"]["steps"] > 0  # only the steps after the 2nd checkpoint


def test_a_training_state_from_another_run_or_altered_is_refused_by_name(split, tmp_path, monkeypatch):
    """A file saved during training is tied to its settings and data like the trained half, and
    its training state (the counters, the optimiser's settings) is covered by the checksum."""
    path, update, checkpoints = tmp_path / "state.pt", ModelScorer.update, []

    def session_ends_at_the_second_checkpoint(self, *args, **kwargs):
        checkpoints.append(1)
        if len(checkpoints) == 2:
            raise KeyboardInterrupt
        return update(self, *args, **kwargs)

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(ModelScorer, "update", session_ends_at_the_second_checkpoint)
        train_and_score("vae", split, 0, 2000, trained_path=path, **SETTINGS)
    payload = torch.load(path, weights_only=True)
    assert payload["state"]["stage"] == "training"
    best = {name[len("param:"):]: value for name, value in payload["tensors"].items() if name.startswith("param:")}
    assert best and all(  # saved at the first checkpoint, the best so far: its parameters stored once
        value.data_ptr() == payload["tensors"][f"current:{name}"].data_ptr() for name, value in best.items())
    with pytest.raises(ValueError, match=r"saved by another run \(lr: saved 0.05, this run 0.1\)"):
        train_and_score("vae", split, 0, 2000, trained_path=path, **{**SETTINGS, "lr": 0.1})
    payload["state"]["counters"]["decoder_passes"] += 100
    torch.save(payload, path)
    with pytest.raises(ValueError, match="is corrupted"):
        train_and_score("vae", split, 0, 2000, trained_path=path, **SETTINGS)


def test_a_trained_half_saved_by_the_first_format_is_still_scored(split, tmp_path):
    """Files of format /1 (the trained half only, before the training stage existed) are read."""
    path = tmp_path / "trained.pt"
    uninterrupted = train_and_score("vae", split, 3, 3000, trained_path=path, **SETTINGS)
    payload = torch.load(path, weights_only=True)
    old = "pyro-mapa-trained-run/1"
    write_checked_file(path, old, payload["tensors"], _fingerprint(split, payload["settings"], old),
                       checked=("result", "settings"), result=payload["result"], settings=payload["settings"])
    resumed = train_and_score("vae", split, 3, 3000, trained_path=path, **SETTINGS)
    assert untimed(resumed) == untimed(uninterrupted)


def test_a_trained_half_is_scored_again_with_each_points_proposal_refined(split, tmp_path, monkeypatch):
    """``refine_steps`` is the score's alone, not the run's: a trained half saved without it is
    scored again with it and not trained. The encoder-alone score stays bit for bit; the refined
    one, each test point's Gaussian fitted to its own posterior (latent 1), keeps more than 80% of
    its draws effective (the encoder alone about 30%) and agrees with grid quadrature within 3 of
    the encoder-alone estimate's standard errors (its own is smaller)."""
    settings = {**SETTINGS, "scorer": "encoder", "scorer_fit_steps": 100, "test_particles": 200,
                "max_test_particles": 200}
    path = tmp_path / "trained.pt"
    first = train_and_score("vae", split, 3, 6000, trained_path=path, **settings)
    assert first.refine_steps == 0 and first.refined_test_ll is None and not first.refined_test_point_ll

    def no_training(*args, **kwargs):
        raise AssertionError("trained again although the trained half was saved")

    monkeypatch.setattr(training, "_train_with_checkpoints", no_training)
    again = train_and_score("vae", split, 3, 6000, trained_path=path, refine_steps=300, **settings)
    assert again.test_point_ll == first.test_point_ll and again.test_ess == first.test_ess
    assert again.refine_steps == 300 and len(again.refined_test_point_ll) == len(split.test)
    assert again.refined_test_ll == pytest.approx(sum(again.refined_test_point_ll) / len(split.test))
    assert sum(a != b for a, b in zip(again.refined_test_point_ll, again.test_point_ll)) > 0.9 * len(split.test)
    assert again.test_ess < 0.5 * 200 < 0.8 * 200 < again.refined_test_ess
    assert abs(again.refined_test_ll - again.grid_test_ll) < 3 * again.test_se
    assert 0 < again.refine_seconds < again.score_seconds


@pytest.mark.parametrize("refine_steps, scorer", [(-1, "encoder"), (10, "laplace")])
def test_refinement_is_named_where_it_cannot_apply(split, refine_steps, scorer):
    with pytest.raises(ValueError, match=r"refine_steps refines the 'encoder' scorer's proposal"):
        train_and_score("vae", split, 0, 2000, refine_steps=refine_steps, scorer=scorer, **SETTINGS)


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
