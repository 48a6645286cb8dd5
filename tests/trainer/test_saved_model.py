"""train_mapa end to end, the model file (a fresh process scores the same; other data, a
truncated or corrupted file refused; nothing half-written), and the train/score commands
in one process and under torchrun with 2 processes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from pyro_mapa.evaluation import empirical_log_likelihood
from pyro_mapa.models import BernoulliLikelihood, GatedDense, NormalLikelihood
from pyro_mapa.trainer import TrainedModel, train_mapa


def binary_data(num_points=600, dim=12, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    prototypes = (torch.rand(4, dim, generator=g) < 0.5).float()
    flips = torch.rand(num_points, dim, generator=g) < 0.1
    return (prototypes[torch.randint(0, 4, (num_points,), generator=g)] != flips).float()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    data = binary_data()
    model = train_mapa(data, BernoulliLikelihood(), latent_dim=2, hidden=16, epochs=4, batch_size=50, lr=1e-2,
                       cache=folder / "cache.pt", progress=False)
    model.save(folder / "model.pt")
    return folder, data, model


@pytest.fixture(scope="module")
def untrained_score(trained):
    """The exact mean log-likelihood of a model trained one epoch at a learning rate of 1e-9."""
    folder, data, _ = trained
    untrained = train_mapa(data, BernoulliLikelihood(), latent_dim=2, hidden=16, epochs=1, batch_size=50, lr=1e-9,
                           cache=folder / "cache.pt", progress=False)
    return untrained.log_likelihood(data).mean()


def test_training_improves_the_exact_log_likelihood(trained, untrained_score):
    folder, data, model = trained
    assert model.log_likelihood(data).mean() > untrained_score + 0.5
    # the exact score is the empiricalized model's logsumexp over the codes
    reference = empirical_log_likelihood(model.decoder, model.codes, data, BernoulliLikelihood())
    assert torch.equal(model.log_likelihood(data), reference)


def test_a_fresh_process_loads_the_model_and_scores_the_same(trained):
    folder, data, model = trained
    np.save(folder / "new.npy", data[:50].numpy())
    script = ("import sys, numpy, torch; from pyro_mapa.trainer import TrainedModel; "
              f"m = TrainedModel.load({str(folder / 'model.pt')!r}, numpy.load({str(folder / 'train.npy')!r})); "
              f"torch.save(m.log_likelihood(numpy.load({str(folder / 'new.npy')!r})), {str(folder / 'scores.pt')!r})")
    np.save(folder / "train.npy", data.numpy())
    subprocess.run([sys.executable, "-c", script], check=True)
    assert torch.equal(torch.load(folder / "scores.pt"), model.log_likelihood(data[:50]))


def test_the_loaded_prior_and_decoder_are_the_saved_ones(trained):
    folder, data, model = trained
    loaded = TrainedModel.load(folder / "model.pt")
    z = torch.randn(20, 2)
    assert torch.allclose(loaded.prior.log_prob(z), model.prior.log_prob(z), atol=0, rtol=0)
    assert torch.equal(loaded.decoder(z), model.decoder(z))
    torch.manual_seed(1)
    samples = loaded.sample(5)
    assert samples.shape == (5, 12) and set(samples.unique().tolist()) <= {0.0, 1.0}


def test_other_data_a_truncated_and_a_corrupted_file_are_refused(trained, tmp_path):
    folder, data, _ = trained
    with pytest.raises(ValueError, match="was trained on other data"):
        TrainedModel.load(folder / "model.pt", data.flip(0))
    blob = (folder / "model.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="not a readable pyro-mapa model"):
        TrainedModel.load(tmp_path / "truncated.pt")
    cache = folder / "cache.pt"
    with pytest.raises(ValueError, match="not a readable pyro-mapa model"):
        TrainedModel.load(cache)  # another kind of file


def test_a_failed_save_leaves_the_old_file_whole(trained, monkeypatch):
    folder, data, model = trained
    before = (folder / "model.pt").read_bytes()

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        model.save(folder / "model.pt")
    assert (folder / "model.pt").read_bytes() == before
    assert not [p for p in os.listdir(folder) if p.startswith(".mapa-")]


def test_a_cache_of_other_data_is_refused(trained):
    folder, data, _ = trained
    with pytest.raises(ValueError, match="built from other data"):
        train_mapa(binary_data(seed=1), BernoulliLikelihood(), latent_dim=2, hidden=16, epochs=1,
                   cache=folder / "cache.pt", progress=False)


@pytest.mark.parametrize("processes", [1, 2])
def test_the_train_and_score_commands(tmp_path, processes):
    np.save(tmp_path / "x.npy", binary_data().numpy())
    np.save(tmp_path / "val.npy", binary_data(num_points=700)[600:].numpy())
    launcher = [sys.executable, "-m", "pyro_mapa"] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "pyro_mapa"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    trained = subprocess.run([*launcher, "train", "--data", str(tmp_path / "x.npy"), "--likelihood", "bernoulli",
                              "--hidden", "16", "--epochs", "2", "--batch-size", "50", "--out", str(tmp_path / "m"),
                              "--components", "3", "--shared-draws", "--val", str(tmp_path / "val.npy"),
                              "--quiet"], env=env, capture_output=True, text=True)
    assert trained.returncode == 0, trained.stderr[-3000:]
    record = json.loads((tmp_path / "m" / "train.json").read_text())
    assert record["settings"]["processes"] == processes
    assert record["settings"]["shared_draws"] and record["settings"]["num_components"] == 3
    assert TrainedModel.load(tmp_path / "m" / "model.pt").prior.mixture_distribution.probs.shape == (3,)
    assert record["settings"]["steps"] == 2 * (600 // (50 * processes))
    scored = subprocess.run([sys.executable, "-m", "pyro_mapa", "score", "--model", str(tmp_path / "m"),
                             "--data", str(tmp_path / "x.npy")], check=True, capture_output=True, text=True)
    reported = float(scored.stdout.split("log-likelihood ")[1].split()[0])
    assert abs(reported - record["train_log_likelihood"]) < 1e-3
    # the model kept is the epoch that scored --val best, and `score` gives it that score
    assert [epoch for epoch, _ in record["settings"]["validation_curve"]] == [1, 2]
    assert record["settings"]["best_epoch"] == max(record["settings"]["validation_curve"], key=lambda e: e[1])[0]
    scored = subprocess.run([sys.executable, "-m", "pyro_mapa", "score", "--model", str(tmp_path / "m"),
                             "--data", str(tmp_path / "val.npy")], check=True, capture_output=True, text=True)
    reported = float(scored.stdout.split("log-likelihood ")[1].split()[0])
    assert abs(reported - record["settings"]["validation_log_likelihood"]) < 1e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_trained_on_cuda_the_model_loads_and_scores_the_same_on_cpu(tmp_path):
    data = binary_data()
    model = train_mapa(data, BernoulliLikelihood(), latent_dim=2, hidden=16, epochs=1, batch_size=50, device="cuda",
                       progress=False)
    assert model.codes.is_cuda
    model.save(tmp_path / "model.pt")
    loaded = TrainedModel.load(tmp_path / "model.pt", data)
    assert torch.allclose(loaded.log_likelihood(data), model.log_likelihood(data).cpu(), atol=1e-4)


def test_edited_settings_are_refused(trained, tmp_path):
    folder, _, _ = trained
    payload = torch.load(folder / "model.pt", weights_only=True)
    payload["settings"]["hidden"] = 17
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(ValueError, match="do not match their checksum"):
        TrainedModel.load(tmp_path / "edited.pt")


def test_a_cache_of_this_data_but_other_settings_is_refused(trained):
    folder, data, _ = trained
    with pytest.raises(ValueError, match="holds a cache of this data with other settings"):
        train_mapa(data, NormalLikelihood(0.5), latent_dim=2, hidden=16, epochs=1, cache=folder / "cache.pt",
                   progress=False)
    with pytest.raises(ValueError, match="K_c >= 70"):
        train_mapa(data, BernoulliLikelihood(), num_neighbors=70, latent_dim=2, hidden=16, epochs=1,
                   cache=folder / "cache.pt", progress=False)


@pytest.mark.parametrize("settings, message", [
    ({"prior": "gmmx"}, "prior must be one of"),
    ({"layers": "relu"}, "layers must be one of"),
    ({"num_components": 700}, "num_components=700 is larger"),
    ({"num_neighbors": 601}, "num_neighbors K=601 is larger than the number of points N=600"),
    ({"batch_size": 601}, "needs at least 601 points"),
    ({"latent_dim": 13}, "latent_dim=13 is larger than the data allow"),
    ({"code_gradients": "sparse"}, "code_gradients must be one of"),
    ({"code_noise": -0.5}, "code_noise must be a finite number >= 0"),
    ({"code_noise": float("nan")}, "code_noise must be a finite number >= 0"),
    ({"code_noise": 0.5, "prior": "flow"}, "not the flow"),
])
def test_bad_settings_are_named_before_the_cache_is_built(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        train_mapa(binary_data(), BernoulliLikelihood(), **{"hidden": 16, "epochs": 1, **settings},
                   cache=tmp_path / "cache.pt", progress=False)
    assert not (tmp_path / "cache.pt").exists()


def test_fewer_points_than_the_default_cache_train_and_the_callers_generator_is_left_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    model = train_mapa(binary_data(num_points=40), BernoulliLikelihood(), latent_dim=2, hidden=8, epochs=1,
                       batch_size=10, cache=tmp_path / "sub" / "cache.pt", progress=False)
    assert torch.equal(torch.rand(3), expected)
    assert model.settings["num_cached"] == 40 and (tmp_path / "sub" / "cache.pt").exists()


def test_sparse_adam_on_the_codes_trains_too(trained, untrained_score):
    folder, data, model = trained
    sparse = train_mapa(data, BernoulliLikelihood(), latent_dim=2, hidden=16, epochs=4, batch_size=50, lr=1e-2,
                        code_optimizer="sparse-adam", cache=folder / "cache.pt", progress=False)
    assert sparse.settings["code_optimizer"] == "sparse-adam"
    assert sparse.log_likelihood(data).mean() > untrained_score + 0.5


def test_shared_draws_train_too_on_fewer_decoded_codes(trained, untrained_score):
    folder, data, model = trained
    shared = train_mapa(data, BernoulliLikelihood(), latent_dim=2, hidden=16, epochs=4, batch_size=50, lr=1e-2,
                        shared_draws=True, cache=folder / "cache.pt", progress=False)
    assert shared.settings["shared_draws"] and not model.settings["shared_draws"]
    assert shared.settings["steps"] == model.settings["steps"]
    # the same steps decode fewer codes: about S lambda = 1 uncached draw per row of 50 becomes a handful
    # per batch, of K + S = 15 draws per row (measured: 0.94 times the passes; 1 if ignored)
    assert shared.settings["decoder_passes"] < 0.97 * model.settings["decoder_passes"]
    assert shared.log_likelihood(data).mean() > untrained_score + 0.5


def test_a_gated_decoder_trains_saves_and_loads(tmp_path, untrained_score):
    data = binary_data()
    model = train_mapa(data, BernoulliLikelihood(), latent_dim=2, hidden=16, layers="gated", epochs=4, batch_size=50,
                       lr=1e-2, progress=False)
    assert isinstance(model.decoder[0], GatedDense) and model.settings["layers"] == "gated"
    assert model.log_likelihood(data).mean() > untrained_score + 0.5  # it trains
    model.save(tmp_path / "model.pt")
    loaded = TrainedModel.load(tmp_path / "model.pt", data)
    assert isinstance(loaded.decoder[0], GatedDense)
    assert torch.equal(loaded.log_likelihood(data), model.log_likelihood(data))


def overfitting_run(**settings):
    """100 points, a fast rate: the held-out rows (other draws around the same prototypes) score
    best after epoch 2 of 5 (measured), and worse after."""
    data = binary_data(num_points=100)
    return train_mapa(data, BernoulliLikelihood(), **{"latent_dim": 2, "hidden": 16, "batch_size": 20, "lr": 5e-2,
                                                      "prior": "gaussian", "progress": False, **settings})


def test_validation_keeps_the_epoch_that_scores_the_held_out_rows_best():
    held_out = binary_data(num_points=200)[100:]
    validated = overfitting_run(epochs=5, validation=held_out, validate_every=2)
    curve = validated.settings["validation_curve"]
    assert [epoch for epoch, _ in curve] == [2, 4, 5]  # every 2 epochs, and after the last
    # each score is the exact held-out score of the model trained that many epochs without validation
    references = {epoch: overfitting_run(epochs=epoch) for epoch, _ in curve}
    for epoch, score in curve:
        assert score == pytest.approx(references[epoch].log_likelihood(held_out).mean().item(), abs=1e-5)
    best_epoch = max(curve, key=lambda entry: entry[1])[0]
    assert validated.settings["best_epoch"] == best_epoch < 5  # the setting overfits: a checkpoint, not the end
    best = references[best_epoch]
    assert torch.equal(validated.codes, best.codes)
    z = torch.randn(7, 2)
    assert torch.equal(validated.decoder(z), best.decoder(z))
    assert torch.allclose(validated.prior.mean, best.prior.mean)  # the prior is fitted to the kept codes
    assert validated.settings["validation_log_likelihood"] == pytest.approx(
        validated.log_likelihood(held_out).mean().item(), abs=1e-5)
    # all 5 epochs trained, and scoring is not counted as training passes
    for name in ("steps", "decoder_passes"):
        assert validated.settings[name] == references[5].settings[name]


@pytest.mark.parametrize("validation, settings, message", [
    (binary_data(num_points=10, dim=11), {}, "validation has 11 columns; data has 12"),
    (torch.full((3, 12), float("nan")), {}, "validation contains 36 NaN"),
    (torch.full((3, 12), 0.5), {}, "needs binary validation"),
    (binary_data(num_points=10), {"validate_every": 0}, "validate_every"),
    (torch.ones(12), {}, "validation must be 2-D"),
    (None, {"validate_every": 3}, "validate_every=3 needs validation rows"),
])
def test_bad_validation_is_named_before_the_cache_is_built(tmp_path, validation, settings, message):
    with pytest.raises(ValueError, match=message):
        train_mapa(binary_data(), BernoulliLikelihood(), hidden=16, epochs=1, validation=validation, **settings,
                   cache=tmp_path / "cache.pt", progress=False)
    assert not (tmp_path / "cache.pt").exists()


def test_a_diverged_run_is_named_at_its_held_out_score(monkeypatch):
    import pyro_mapa.trainer.pipeline as pipeline

    def diverged(decoder, codes, x, likelihood):  # what NaN parameters score
        return torch.full((len(x),), float("nan"))

    monkeypatch.setattr(pipeline, "empirical_log_likelihood", diverged)
    with pytest.raises(ValueError, match="held-out score is NaN after epoch 1: training diverged"):
        overfitting_run(epochs=2, validation=binary_data(num_points=200)[100:])


def test_validation_with_sparse_codes_keeps_the_epoch_trained_that_long():
    held_out = binary_data(num_points=200)[100:]
    validated = overfitting_run(epochs=3, validation=held_out, code_optimizer="sparse-adam")
    best_epoch = validated.settings["best_epoch"]
    assert torch.equal(validated.codes, overfitting_run(epochs=best_epoch, code_optimizer="sparse-adam").codes)


def test_code_noise_trains_around_the_codes_and_widens_the_prior(trained, untrained_score):
    folder, data, model = trained
    noisy = train_mapa(data, BernoulliLikelihood(), latent_dim=2, hidden=16, epochs=4, batch_size=50, lr=1e-2,
                       prior="gaussian", code_noise=0.3, cache=folder / "cache.pt", progress=False)
    assert noisy.settings["code_noise"] == 0.3
    assert not torch.equal(noisy.codes, model.codes)  # the noise reached training (same settings, tau = 0: equal)
    assert torch.equal(model.codes, train_mapa(data, BernoulliLikelihood(), latent_dim=2, hidden=16, epochs=4,
                                               batch_size=50, lr=1e-2, code_noise=0.0, cache=folder / "cache.pt",
                                               progress=False).codes)
    # no extra passes (other draws, so other distinct codes: measured 0.997 times those without noise)
    assert abs(noisy.settings["decoder_passes"] / model.settings["decoder_passes"] - 1) < 0.02
    assert noisy.log_likelihood(data).mean() > untrained_score + 0.5
    centred = noisy.codes - noisy.codes.mean(0)  # the codes' Gaussian MLE, widened by tau^2 I
    torch.testing.assert_close(noisy.prior.covariance_matrix,
                               centred.T @ centred / len(centred) + 0.09 * torch.eye(2), rtol=1e-4, atol=1e-4)


def test_the_smoothed_models_own_prior_is_saved_and_loaded(trained, tmp_path):
    """prior="exemplar" with code noise: the final model's prior is ``N(z_i, tau^2 I)`` at the
    trained codes, equally weighted (torch's mixture of those components is the reference), and
    the file gives it back with the same density."""
    import pyro.distributions as dist

    folder, data, _ = trained
    model = train_mapa(data, BernoulliLikelihood(), latent_dim=2, hidden=16, epochs=1, batch_size=50, lr=1e-2,
                       prior="exemplar", code_noise=0.3, cache=folder / "cache.pt", progress=False)
    reference = dist.MixtureSameFamily(dist.Categorical(logits=torch.zeros(len(model.codes))),
                                       dist.Normal(model.codes, 0.3).to_event(1))
    z = torch.randn(20, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model.prior.log_prob(z), reference.log_prob(z), rtol=0, atol=1e-4)
    model.save(tmp_path / "model.pt")
    assert torch.equal(TrainedModel.load(tmp_path / "model.pt").prior.log_prob(z), model.prior.log_prob(z))
    with pytest.raises(ValueError, match="code_noise must be positive"):
        train_mapa(data, BernoulliLikelihood(), latent_dim=2, hidden=16, epochs=1, prior="exemplar",
                   cache=folder / "cache.pt", progress=False)
