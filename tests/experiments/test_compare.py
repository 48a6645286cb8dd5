"""The comparison protocol on a tiny budget: costs counted where they happen, same split."""

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_mapa import pca_codes
from pyro_mapa.evaluation import (
    LogLikelihood,
    empirical_log_likelihood,
    stable_log_likelihood,
)
from pyro_mapa.experiments import (
    build_method,
    load_split,
    parse_method,
    restore_params,
    run_comparison,
    snapshot_params,
    train_and_score,
)
from pyro_mapa.experiments.baselines import empirical_model
from pyro_mapa.experiments.cli import main
from pyro_mapa.experiments.methods import MAPA, Exact
from pyro_mapa.models import make_decoder


@pytest.fixture(scope="module")
def split():
    return load_split("absolute-value", num_train=200, seed=0)


@pytest.mark.parametrize(
    "method, decoder_per_step, encoder_per_step",
    [("vae", 1.0, 1.0), ("iwae-5", 5.0, 1.0), ("autonormal", 1.0, 0.0), ("autodelta", 1.0, 0.0)],
)
def test_passes_per_point_per_step_of_the_vae_family(split, method, decoder_per_step, encoder_per_step):
    result = train_and_score(method, split, seed=0, budget=4000, num_checkpoints=2, eval_particles=10, test_particles=20,
                             max_test_particles=20)
    # counted by hooks, not computed; the guides' one-time set-up (build_method) is not training
    assert result.decoder_per_point_step == decoder_per_step
    assert result.encoder_per_point_step == encoder_per_step
    assert result.total_passes == result.steps * 100 * decoder_per_step
    assert 4000 <= result.total_passes < 4000 + 100 * decoder_per_step
    assert 0 < result.passes_to_best <= result.total_passes  # evaluation passes are not counted
    assert [c[0] for c in result.curve][-1] == result.total_passes
    assert len(result.curve) == 2
    assert result.test_ll < split.true_test + 0.5  # no model beats the truth by much on 500 points


def test_mapa_runs_the_decoder_on_distinct_indices(split):
    """K + S = 15 particles per point, but the decoder runs once per distinct index of the step."""
    result = train_and_score("mapa-5-10", split, seed=0, budget=6000, num_checkpoints=1, eval_particles=10, test_particles=20,
                               max_test_particles=20)
    assert 1.0 < result.decoder_per_point_step < 15.0
    assert result.encoder_per_point_step == 0.0
    exact = train_and_score("exact", split, seed=0, budget=6000, num_checkpoints=1, eval_particles=10, test_particles=20,
                               max_test_particles=20)
    # all N codes once per step of 100
    assert exact.decoder_per_point_step == 200 / 100


def test_the_evaluation_does_not_change_the_training_trajectory(split):
    """Checkpoint scoring draws from a forked generator: with 10 or 40 evaluation samples
    MAPA takes the same minibatches and particles, so it decodes the same distinct codes
    step for step (its pass count at every checkpoint is the same)."""
    runs = [train_and_score("mapa-1-10", split, seed=0, budget=20000, num_checkpoints=4, eval_particles=p,
                            test_particles=10, max_test_particles=10) for p in (10, 40)]
    assert [c[0] for c in runs[0].curve] == [c[0] for c in runs[1].curve]
    assert runs[0].total_passes == runs[1].total_passes


def test_method_names():
    assert parse_method("mapa-5-10") == MAPA(num_neighbors=5, num_samples=10)
    assert [parse_method(name).label for name in ("vae", "iwae-20", "autodelta", "mapa-1-10", "exact")] == [
        "vae", "iwae-20", "autodelta", "mapa-1-10", "exact"]
    with pytest.raises(ValueError, match="unknown method 'mapa-5'"):
        parse_method("mapa-5")


def test_digits_split_is_the_real_data():
    split = load_split("digits")
    assert split.train.shape == (1000, 64) and split.val.shape == (300, 64) and split.test.shape == (497, 64)
    assert split.true_test is None
    assert float(split.train.max()) == 1.0 and float(split.train.min()) == 0.0


def test_cli_writes_a_table_json_and_plot(tmp_path, capsys):
    out = tmp_path / "run"
    main(["compare", "--dataset", "absolute-value", "--seeds", "0", "1", "--budget", "3000",
          "--methods", "vae", "mapa-2-3", "--out", str(out), "--max-test-particles", "1000", "--quiet"])
    printed = capsys.readouterr().out
    assert "vae" in printed and "mapa-2-3" in printed and "true model" in printed
    record = json.loads((out / "results.json").read_text())
    assert {(r["method"], r["seed"]) for r in record["runs"]} == {("vae", 0), ("vae", 1), ("mapa-2-3", 0), ("mapa-2-3", 1)}
    for run in record["runs"]:  # each test point's estimate, kept for paired comparisons
        assert len(run["test_point_ll"]) == 500 and sum(run["test_point_ll"]) / 500 == pytest.approx(run["test_ll"])
    assert "minus vae" in printed and record["paired"] in printed
    assert (out / "compare.png").stat().st_size > 10_000


@pytest.mark.parametrize("method, param", [("mapa-2-3", "codes"), ("exact", "codes"),
                                           ("autodelta", "AutoDelta.z"), ("autonormal", "AutoNormal.locs.z")])
def test_per_point_codes_start_at_the_principal_components(split, method, param):
    """Point n's code starts at its own PCA score under code_init='pca', and not under 'random'
    (near 0 for the codes; Pyro's default init, repeated over the plate, for the AutoGuides)."""
    expected = pca_codes(split.train, split.latent_dim)
    for code_init in ("pca", "random"):
        pyro.clear_param_store()
        decoder = make_decoder(split.latent_dim, split.train.shape[1])
        built = build_method(method, split, decoder, code_init)
        idx = torch.tensor([3, 0, 7])
        built.guide(split.train[idx], idx)  # a subsampled call, as in training
        codes = pyro.param(param).detach()
        assert codes.shape == expected.shape
        if code_init == "pca":
            assert torch.equal(codes, expected)
        else:
            assert codes.abs().max() < 1.5 and not torch.allclose(codes, expected, atol=0.1)


def test_unknown_code_init_is_named(split):
    with pytest.raises(ValueError, match="code_init must be 'pca' or 'random', got 'zeros'"):
        build_method("vae", split, make_decoder(1, 2), "zeros")


def test_empirical_model_checks_the_shape_of_its_initial_codes():
    with pytest.raises(ValueError, match=r"init_codes must have shape \(10, 2\), got \(10, 1\)"):
        empirical_model(make_decoder(2, 3), 0.1, 10, 2, torch.zeros(10, 1))


def test_learning_rate_is_chosen_per_method_on_a_separate_tuning_seed(split):
    """Three rates: each method trains at each on an unreported seed (one past the last),
    and every reported seed trains afresh at the rate whose tuning run validated best."""
    rates = (1e-3, 3e-2, 1e-4)  # the best (3e-2 here) in the middle: neither "first" nor "last" would pass
    kwargs = dict(num_checkpoints=2, eval_particles=10, test_particles=10, max_test_particles=10)
    _, runs, tuning = run_comparison("absolute-value", ["vae", "mapa-2-3"], [0, 1], 3000, learning_rates=rates,
                                     num_train=200, progress=False, **kwargs)
    assert [(r.method, r.seed) for r in runs] == [("vae", 0), ("vae", 1), ("mapa-2-3", 0), ("mapa-2-3", 1)]
    assert [(r.method, r.seed, r.lr) for r in tuning] == [(m, 2, lr) for m in ("vae", "mapa-2-3") for lr in rates]
    for method in ("vae", "mapa-2-3"):
        trials = [r for r in tuning if r.method == method]
        chosen = max(trials, key=lambda r: r.best_val_ll).lr
        assert chosen == 3e-2
        reported = [r for r in runs if r.method == method]
        assert all(r.lr == chosen for r in reported)
        fresh = train_and_score(method, split, 0, 3000, lr=chosen, **kwargs)
        assert reported[0].best_val_ll == fresh.best_val_ll  # seed 0 trained at the chosen rate, not reused


def test_the_test_score_is_the_best_validation_checkpoints(split, monkeypatch):
    """Scored once at the end, with the parameters of the checkpoint that validated best:
    the validation score of the third of 8 checkpoints is raised by 1,000 nats, so that one
    is the best, and the final scores must be those of its parameters, not the last ones."""
    import pyro_mapa.experiments.training as training

    snapshots, val_calls = [], []
    monkeypatch.setattr(training, "snapshot_params", lambda: snapshots.append(snapshot_params()) or snapshots[-1])
    scored, updated = training.ModelScorer.__call__, training.ModelScorer.update

    def update(self, prior, codes, final=False):
        self.codes = codes.clone()
        return updated(self, prior, codes, final)

    def rigged(self, x, num_particles, k_hat=False):
        estimate = scored(self, x, num_particles, k_hat)
        if x is split.val:
            val_calls.append(self.codes)
            if len(val_calls) == 3:
                return estimate._replace(value=estimate.value + 1000.0)
        return estimate

    monkeypatch.setattr(training.ModelScorer, "update", update)
    monkeypatch.setattr(training.ModelScorer, "__call__", rigged)
    result = train_and_score("mapa-2-3", split, 0, 8000, lr=0.1, num_checkpoints=8, eval_particles=10,
                             test_particles=10, max_test_particles=10)
    val = [c[1] for c in result.curve]
    assert len(val) == 8 and val.index(max(val)) == 2
    best = snapshots[-1]
    assert torch.equal(best["codes"], val_calls[2]) and not torch.equal(best["codes"], val_calls[-1])
    assert torch.equal(pyro.param("codes").detach(), best["codes"])  # restored
    decoder = make_decoder(split.latent_dim, split.train.shape[1])
    decoder.load_state_dict({name.split("$$$")[1]: v for name, v in best.items() if name.startswith("decoder$$$")})
    expected = empirical_log_likelihood(decoder, best["codes"], split.test, split.sigma).mean().item()
    assert result.empirical_test_ll == pytest.approx(expected, abs=1e-6)
    assert result.best_val_ll == max(val)


def test_bad_settings_are_named_before_training(split):
    with pytest.raises(ValueError, match="budget"):
        train_and_score("vae", split, 0, 0)
    with pytest.raises(ValueError, match="num_checkpoints"):
        train_and_score("vae", split, 0, 100, num_checkpoints=0)
    with pytest.raises(ValueError, match="max_test_particles"):
        train_and_score("vae", split, 0, 100, test_particles=2000, max_test_particles=1000)
    with pytest.raises(ValueError, match="digits has a fixed split"):
        load_split("digits", num_train=200)
    pyro.param("stale", torch.zeros(1))
    with pytest.raises(ValueError, match="call pyro.clear_param_store"):
        build_method("vae", split, make_decoder(1, 2))


def test_mapa_caches_at_most_the_training_points_and_names_k_above_n():
    """A user's array with fewer than 64 training points: the cache holds all N of them
    (not the default 64, which would be refused for a setting the user never made), and
    K > N is refused by name before training."""
    small = load_split("absolute-value", num_train=40, seed=0)
    assert parse_method("mapa-2-3").num_cached(40) == 40 and parse_method("mapa-2-3").num_cached(1000) == 64
    assert parse_method("mapa-80-3").num_cached(1000) == 80
    run = train_and_score("mapa-2-3", small, seed=0, budget=500, num_checkpoints=1, eval_particles=5,
                          test_particles=10, max_test_particles=10)
    assert math.isfinite(run.test_ll)
    with pytest.raises(ValueError, match=r"mapa-50-3: K=50 is larger than the number of training points N=40"):
        train_and_score("mapa-50-3", small, seed=0, budget=500, num_checkpoints=1)


@pytest.mark.parametrize("method", ["vae", "autonormal", "autodelta", "mapa-2-3"])
def test_a_snapshot_of_the_param_store_restores_the_method(split, method):
    """What train_and_score relies on to score the best-validation checkpoint: writing the
    store's values back in place reaches the decoder, the encoder and the AutoGuides."""
    decoder = make_decoder(split.latent_dim, split.train.shape[1])
    model, guide, loss, encoder, _ = build_method(method, split, decoder)
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), loss=loss)
    idx = torch.arange(20)
    svi.step(split.train[idx], idx)

    def outputs():
        with torch.no_grad():
            if method.startswith("mapa"):
                codes = pyro.param("codes")
            elif method == "vae":
                codes = pyro.poutine.trace(guide).get_trace(split.train[idx], idx).nodes["z"]["fn"].mean
            else:
                codes = guide.median(split.train)["z"]
            return decoder(split.train[:5, :1]), codes.clone()

    state, before = snapshot_params(), outputs()
    for _ in range(5):
        svi.step(split.train[idx], idx)
    moved = outputs()
    assert not torch.allclose(moved[0], before[0]) and not torch.allclose(moved[1], before[1])
    restore_params(state)
    after = outputs()
    assert torch.equal(after[0], before[0]) and torch.equal(after[1], before[1])
    for name, value in pyro.get_param_store().named_parameters():  # every one, AutoNormal's scales included
        assert torch.equal(value.detach(), state[name])


def test_stable_log_likelihood_adds_samples_until_the_mean_stops_moving():
    """A fake estimate biased low by 5 / P nats: from 100 samples it takes 100, 400, 1600
    (bias 0.05, 0.0125, 0.003: the last step moves it by 0.009 < 0.01) and stops there."""
    calls = []

    def estimate(particles):
        calls.append(particles)
        return LogLikelihood(torch.full((3,), -1.0 - 5.0 / particles), torch.zeros(3))

    result, particles, converged = stable_log_likelihood(estimate, 100, 10**6)
    assert calls == [100, 400, 1600] and particles == 1600 and converged
    assert result.value.mean().item() == pytest.approx(-1.0 - 5.0 / 1600)
    _, particles, converged = stable_log_likelihood(estimate, 100, 500)  # the limit stops it first
    assert particles == 400 and not converged
    with pytest.raises(ValueError, match="limit"):
        stable_log_likelihood(estimate, 2000, 1000)


def test_cli_runs_a_users_binary_array_end_to_end(tmp_path, capsys):
    """--data small.npz --likelihood bernoulli: split by the seed (recorded), every method on
    the Bernoulli model, the table, results.json and the plot."""
    import numpy as np

    g = np.random.default_rng(0)
    prototypes = g.random((4, 12)) < 0.5
    images = prototypes[g.integers(0, 4, 150)] ^ (g.random((150, 12)) < 0.05)  # 4 noisy prototypes
    np.savez(tmp_path / "small.npz", images.astype(np.uint8))
    out = tmp_path / "run"
    main(["compare", "--data", str(tmp_path / "small.npz"), "--likelihood", "bernoulli", "--latent-dim", "2",
          "--hidden", "16", "--seeds", "0", "--budget", "2000", "--methods", "vae", "iwae-3", "iwae-dreg-3",
          "vampprior-5", "exemplar", "autodelta", "mapa-2-3", "exact", "--checkpoints", "2", "--eval-particles", "20", "--test-particles", "50",
          "--max-test-particles", "50", "--out", str(out), "--quiet"])
    printed = capsys.readouterr().out
    assert "small: N = 120, D = 12, bernoulli, latent 2, hidden 16 x 2" in printed
    record = json.loads((out / "results.json").read_text())
    assert record["split_notes"]["sizes (train, val, test)"] == [120, 15, 15]
    assert {r["method"] for r in record["runs"]} == {"vae", "iwae-3", "iwae-dreg-3", "vampprior-5", "exemplar", "autodelta",
                                                  "mapa-2-3", "exact"}
    for run in record["runs"]:
        assert math.isfinite(run["test_ll"]) and run["test_ll"] < 0  # log-probabilities of binary data
        assert run["grid_test_ll"] is not None and abs(run["grid_test_ll"] - run["test_ll"]) < 1.0
    assert (out / "compare.png").stat().st_size > 10_000
    assert record["settings"]["scorer"] == "laplace"  # auto, at D = 12


def test_cli_scores_with_a_fitted_encoder(tmp_path, capsys):
    """--scorer encoder: every method scored with an encoder fitted to its trained model's
    posterior, and again with each test point's proposal refined (--refine-steps); both
    estimates agree with grid quadrature of the same models, and the refined ones are paired."""
    import numpy as np

    g = np.random.default_rng(1)
    prototypes = g.random((4, 12)) < 0.5
    images = prototypes[g.integers(0, 4, 150)] ^ (g.random((150, 12)) < 0.05)
    np.save(tmp_path / "small.npy", images.astype(np.uint8))
    out = tmp_path / "run"
    main(["compare", "--data", str(tmp_path / "small.npy"), "--likelihood", "bernoulli", "--latent-dim", "2",
          "--hidden", "16", "--seeds", "0", "--budget", "2000", "--methods", "vae", "mapa-2-3", "--checkpoints", "2",
          "--eval-particles", "20", "--test-particles", "500", "--max-test-particles", "500", "--scorer", "encoder",
          "--scorer-fit-steps", "300", "--refine-steps", "200", "--out", str(out), "--quiet"])
    record = json.loads((out / "results.json").read_text())
    assert record["settings"]["scorer"] == "encoder"
    for run in record["runs"]:
        assert abs(run["grid_test_ll"] - run["test_ll"]) < 0.1, run["method"]
        assert run["refine_steps"] == 200 and abs(run["grid_test_ll"] - run["refined_test_ll"]) < 0.1, run["method"]
    assert "minus vae, point by point on the same test points (refined_test_point_ll):" in capsys.readouterr().out


def test_a_bernoulli_split_refuses_grey_data(tmp_path):
    import numpy as np

    from pyro_mapa.experiments.split import split_array
    from pyro_mapa.models import BernoulliLikelihood

    np.save(tmp_path / "grey.npy", np.full((20, 3), 0.5))
    with pytest.raises(ValueError, match="needs binary data"):
        split_array(tmp_path / "grey.npy", BernoulliLikelihood())


def test_mapa_names_its_cache_kernel(split):
    """mapa-K-S@p5: the cache's T is calibrated to a median perplexity of 5 on the training points."""
    from pyro_mapa.cache.calibration import median_perplexity

    method = parse_method("mapa-2-3@p5")
    assert method.label == "mapa-2-3@p5" and parse_method("exact@eps0.2").label == "exact@eps0.2"
    setup = build_method(method, split, make_decoder(1, 2))
    kernel = setup.guide.posterior.kernel
    assert median_perplexity(kernel.log_weights(split.train, split.train)) == pytest.approx(5.0, rel=1e-3)
    with pytest.raises(ValueError, match="only mapa-K-S, smoothed-mapa-K-S and exact take options"):
        parse_method("vae@p5")
    both = parse_method("mapa-1-10@p10,d0.99")
    assert (both.kernel, both.defensive, both.label) == ("p10", 0.99, "mapa-1-10@p10,d0.99")
    assert parse_method("mapa-1-10@d0.5").label == "mapa-1-10@d0.5" and parse_method("mapa-1-10@d0.1").label == "mapa-1-10"
    pyro.clear_param_store()
    setup = build_method(parse_method("mapa-2-3@d0.7"), split, make_decoder(1, 2))
    assert setup.guide.defensive == 0.7  # the guide's proposal gets it
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\), got d1"):
        parse_method("mapa-1-10@d1")
    with pytest.raises(ValueError, match="bad defensive share"):
        parse_method("mapa-1-10@dx")
    with pytest.raises(ValueError, match="repeats an option"):
        parse_method("mapa-1-10@p10,p20")
    with pytest.raises(ValueError, match="no proposal share"):  # exact draws no samples
        parse_method("exact@d0.5")
    assert parse_method("mapa-1-10@d0.1234567").defensive == 0.1234567
    with pytest.raises(ValueError, match="unknown kernel 'q5'"):
        parse_method("mapa-1-1@q5")


def test_mapa_draws_neighbourhood_batches_that_share_codes():
    """mapa-K-S@g<size>: minibatches of neighbourhoods from the cache (NeighborhoodBatches);
    their particles overlap, so a step decodes fewer distinct codes per point."""
    grouped = parse_method("mapa-1-10@p10,g10")
    assert (grouped.group_size, grouped.label) == (10, "mapa-1-10@p10,g10")
    with pytest.raises(ValueError, match="repeats an option"):
        parse_method("mapa-1-10@g10,g5")
    with pytest.raises(ValueError, match="bad group size 'gx'"):
        parse_method("mapa-1-10@gx")
    with pytest.raises(ValueError, match="at least 1, got g0"):
        parse_method("mapa-1-10@g0")
    with pytest.raises(ValueError, match=r"no minibatch groups \(g\).*, got g5$"):
        parse_method("exact@g5")
    with pytest.raises(ValueError, match="no minibatch groups"):
        Exact(group_size=5)
    split = load_split("absolute-value", num_train=1000, seed=0)
    runs = {m: train_and_score(m, split, seed=0, budget=20000, num_checkpoints=1, eval_particles=10,
                               test_particles=20, max_test_particles=20) for m in ("mapa-1-10", "mapa-1-10@g20")}
    # measured: 6.39 against 4.59 decoder passes per point and step
    assert runs["mapa-1-10@g20"].decoder_per_point_step < 0.85 * runs["mapa-1-10"].decoder_per_point_step
    pyro.clear_param_store()
    setup = build_method("mapa-1-10@g20", split, make_decoder(1, 2))
    idx, weights = setup.batches.sample(100)
    assert idx.shape == weights.shape == (100,) and (weights > 0).all()


def test_mapa_shares_its_uncached_draws_across_a_batch():
    """mapa-K-S@shared: the points of a batch take their uncached indices from one shared
    stream (IndexProposal's shared_tail), so a step decodes fewer distinct codes per point."""
    shared = parse_method("mapa-1-10@p10,shared")
    assert (shared.shared_tail, shared.label) == (True, "mapa-1-10@p10,shared")
    with pytest.raises(ValueError, match="repeats an option"):
        parse_method("mapa-1-10@shared,shared")
    with pytest.raises(ValueError, match="no shared draws and no code noise, got shared$"):
        parse_method("exact@shared")
    split = load_split("absolute-value", num_train=1000, seed=0)
    pyro.clear_param_store()
    assert build_method("mapa-1-10@shared", split, make_decoder(1, 2)).guide.shared_tail
    runs = {m: train_and_score(m, split, seed=0, budget=20000, num_checkpoints=1, eval_particles=10,
                               test_particles=20, max_test_particles=20) for m in ("mapa-1-10", "mapa-1-10@shared")}
    ratio = runs["mapa-1-10@shared"].decoder_per_point_step / runs["mapa-1-10"].decoder_per_point_step
    assert ratio < 0.9, ratio


def two_cluster_codes() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.cat([torch.randn(300, 2, generator=g) - 4.0, torch.randn(100, 2, generator=g) + 4.0])


def assert_refused(names_and_errors):
    for name, error in names_and_errors:
        with pytest.raises(ValueError, match=error):
            parse_method(name)


def test_mapa_names_the_prior_its_codes_are_scored_with(split):
    """mapa-K-S@gmm<k> | @gaussian | @flow: the family fitted to the trained codes for scoring;
    training is the same whatever the family, only the scored model changes."""
    method = parse_method("mapa-1-10@gmm3,p10")
    assert (method.prior, method.label) == ("gmm3", "mapa-1-10@p10,gmm3")
    assert parse_method("mapa-1-10@gmm10").label == "mapa-1-10"  # the comparison's default
    assert parse_method("exact@gaussian").label == "exact@gaussian"
    assert_refused([("mapa-1-10@gmm", "unknown prior 'gmm'"), ("mapa-1-10@gmm0", "unknown prior 'gmm0'"),
                    ("mapa-1-10@gaussianx", "unknown prior"), ("mapa-1-10@gmm3,flow", "repeats an option"),
                    ("smoothed-mapa-1-10@gmm3", "its own mixture prior")])
    codes = two_cluster_codes()
    mixture = method.continuous_prior(None, codes, seed=0)
    assert mixture.mixture_distribution.probs.shape == (3,)
    gaussian = parse_method("mapa-1-10@gaussian").continuous_prior(None, codes, seed=0)
    centred = codes - codes.mean(0)  # the maximum-likelihood Gaussian, in closed form
    torch.testing.assert_close(gaussian.mean, codes.mean(0))
    torch.testing.assert_close(gaussian.covariance_matrix, centred.T @ centred / len(codes), rtol=1e-4, atol=1e-5)
    # the two-cluster codes: the 3-component mixture explains them better than one Gaussian
    assert mixture.log_prob(codes).mean() > gaussian.log_prob(codes).mean() + 0.5

    trained = {}
    runs = {name: train_and_score(name, split, seed=0, budget=4000, num_checkpoints=1, eval_particles=10,
                                  test_particles=20, max_test_particles=20,
                                  inspect=lambda decoder, prior, codes, name=name: trained.update({name: codes}))
            for name in ("mapa-1-10", "mapa-1-10@gaussian")}
    torch.testing.assert_close(trained["mapa-1-10"], trained["mapa-1-10@gaussian"], rtol=0, atol=0)
    assert runs["mapa-1-10"].test_ll != runs["mapa-1-10@gaussian"].test_ll


def test_the_scorer_does_not_change_how_a_model_trains(split):
    """The encoder scorer draws its own weights and minibatches from a forked generator:
    with one checkpoint (the last is the best) the trained parameters are the same,
    bit for bit, whichever scorer watched the run."""
    trained = []
    for scorer in ("laplace", "encoder"):
        train_and_score("vae", split, 0, 3000, lr=0.01, num_checkpoints=1, eval_particles=5, test_particles=5,
                        max_test_particles=5, scorer=scorer, scorer_fit_steps=5)
        trained.append(snapshot_params())
    assert trained[0].keys() == trained[1].keys()
    assert all(torch.equal(trained[0][name], trained[1][name]) for name in trained[0])


class _RecordingDecoder(torch.nn.Module):
    """The identity, keeping every batch of codes it decodes."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, z):
        self.seen.append(z.detach().clone())
        return z


def test_code_noise_perturbs_each_decoded_code_by_tau_and_leaves_the_count_alone():
    """mapa-K-S@noise<tau>: each distinct code a step decodes gets its own N(0, tau^2 I) draw
    (Monte Carlo over 400 steps of about 12 codes: the noise's mean within 5 se of 0, its std
    within 3% of tau); no noise decodes the codes themselves; one row per distinct code either way."""
    codes = torch.randn(30, 2, generator=torch.Generator().manual_seed(0))
    idx = torch.arange(12)
    seen = {}
    for tau in (0.0, 0.3):
        decoder = _RecordingDecoder()
        model = empirical_model(decoder, 0.1, 30, 2, codes, code_noise=tau)
        pyro.clear_param_store()
        pyro.set_rng_seed(1)
        noise = []
        for _ in range(400):
            trace = pyro.poutine.trace(model).get_trace(torch.zeros(12, 2), idx)
            unique = trace.nodes["i"]["value"].unique()  # decode_unique's sorted distinct indices
            assert decoder.seen[-1].shape == (len(unique), 2)  # one row per distinct code, noise or not
            noise.append(decoder.seen[-1] - codes[unique])
        seen[tau] = torch.cat(noise)
    assert torch.equal(seen[0.0], torch.zeros_like(seen[0.0]))
    eps = seen[0.3]
    assert eps.mean(0).abs().max() < 5 * 0.3 / len(eps) ** 0.5
    assert abs(eps.std().item() - 0.3) < 0.03 * 0.3
    # a draw per code and coordinate: no two rows alike, the coordinates uncorrelated (5 se)
    assert len(eps.unique(dim=0)) == len(eps)
    assert abs(torch.corrcoef(eps.T)[0, 1]) < 5 / len(eps) ** 0.5
    with pytest.raises(ValueError, match="code_noise must be a finite number >= 0"):
        empirical_model(decoder, 0.1, 30, 2, codes, code_noise=-0.1)


def test_code_noise_is_named_and_widens_the_fitted_mixture():
    method = parse_method("mapa-1-10@shared,gmm3,noise0.5")
    assert (method.code_noise, method.label) == (0.5, "mapa-1-10@shared,gmm3,noise0.5")
    assert_refused([("mapa-1-10@noise", "bad code noise"), ("mapa-1-10@noise0.1,noise0.2", "repeats an option"),
                    ("mapa-1-10@noise-1", "finite number >= 0"), ("mapa-1-10@noiseinf", "finite number >= 0"),
                    ("mapa-1-10@flow,noise0.1", "not the flow"), ("exact@noise0.1", "no code noise"),
                    ("smoothed-mapa-1-10@noise0.1", "no code noise"), ("mapa-1-10@exemplar", "must be positive"),
                    ("exact@exemplar", "exact enumeration does not take"),
                    ("exact@exemplar,noise0.2", "exact enumeration does not take")])
    codes = two_cluster_codes()
    widened = method.continuous_prior(None, codes, seed=0)
    fitted = parse_method("mapa-1-10@gmm3").continuous_prior(None, codes, seed=0)
    torch.testing.assert_close(widened.component_distribution.loc, fitted.component_distribution.loc)
    torch.testing.assert_close(widened.component_distribution.covariance_matrix,
                               fitted.component_distribution.covariance_matrix + 0.25 * torch.eye(2))
    # the law of z + 2 eps, z from the fitted mixture, is the mixture widened by tau = 2: the mean
    # widened log-density of draws made either way agrees within 5 standard errors (20,000 each),
    # where the mixture widened by 0.5 is told apart
    wide = parse_method("mapa-1-10@gmm3,noise2").continuous_prior(None, codes, seed=0)
    torch.manual_seed(2)
    draws = fitted.sample((20000,)) + 2.0 * torch.randn(20000, 2)
    convolved, direct = wide.log_prob(draws), wide.log_prob(wide.sample((20000,)))
    se = (convolved.var() / 20000 + direct.var() / 20000) ** 0.5
    assert abs(convolved.mean() - direct.mean()) < 5 * se
    assert abs(widened.log_prob(draws).mean() - widened.log_prob(widened.sample((20000,))).mean()) > 20 * se


def test_mapa_with_code_noise_trains_and_scores_end_to_end(split):
    codes = {}
    runs = {name: train_and_score(name, split, seed=0, budget=3000, num_checkpoints=1, eval_particles=10,
                                  test_particles=20, max_test_particles=20,
                                  inspect=lambda decoder, prior, c, name=name: codes.update({name: c}))
            for name in ("mapa-2-3", "mapa-2-3@noise0.1")}
    noisy = runs["mapa-2-3@noise0.1"]
    assert noisy.method == "mapa-2-3@noise0.1" and math.isfinite(noisy.test_ll) and math.isfinite(noisy.empirical_test_ll)
    assert not torch.equal(codes["mapa-2-3"], codes["mapa-2-3@noise0.1"])  # the noise reached training


def test_the_exemplar_prior_scores_the_smoothed_model_itself():
    """mapa-K-S@exemplar,noise<tau>: the scored prior is the trained codes, each widened by tau
    (nothing fitted): torch's mixture of ``N(z_i, tau^2 I)`` at the codes gives the same density."""
    method = parse_method("mapa-1-10@exemplar,noise0.5")
    assert method.label == "mapa-1-10@exemplar,noise0.5"
    codes = two_cluster_codes()
    prior = method.continuous_prior(None, codes, seed=0)
    reference = dist.MixtureSameFamily(dist.Categorical(logits=torch.zeros(len(codes))),
                                       dist.Normal(codes, 0.5).to_event(1))
    z = 3 * torch.randn(50, codes.shape[1], generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(prior.log_prob(z), reference.log_prob(z), rtol=0, atol=1e-4)



def test_the_command_line_refuses_refinement_without_an_encoder_scorer(capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--dataset", "absolute-value", "--scorer", "laplace", "--refine-steps", "5"])
    assert "--refine-steps refines the encoder scorer's proposal per point" in capsys.readouterr().err
