"""The comparison protocol on a tiny budget: costs counted where they happen, same split."""

import json

import pyro
import pytest
import torch

from pyro_mapa import pca_codes
from pyro_mapa.baselines import empirical_model, make_decoder
from pyro_mapa.cli import main
from pyro_mapa.compare import build_method, load_split, neighbour_tables, parse_method, run_comparison, train_and_score


@pytest.fixture(scope="module")
def split():
    return load_split("absolute-value", num_train=200, seed=0)


@pytest.mark.parametrize(
    "method, decoder_per_step, encoder_per_step",
    [("vae", 1.0, 1.0), ("iwae-5", 5.0, 1.0), ("autonormal", 1.0, 0.0), ("autodelta", 1.0, 0.0)],
)
def test_passes_per_point_per_step_of_the_vae_family(split, method, decoder_per_step, encoder_per_step):
    result = train_and_score(method, split, seed=0, budget=4000, num_checkpoints=2, eval_particles=10, test_particles=20)
    # counted, not computed: a guide's one-time prototype trace may add a pass or two
    assert result.decoder_per_point_step == pytest.approx(decoder_per_step, rel=0.05)
    assert result.encoder_per_point_step == pytest.approx(encoder_per_step, rel=0.05)
    assert result.total_passes >= 4000 and result.total_passes < 4000 + 100 * decoder_per_step + 1
    assert 0 < result.passes_to_best <= result.total_passes  # evaluation passes are not counted
    assert [c[0] for c in result.curve][-1] == result.total_passes
    assert len(result.curve) == 2
    assert result.test_ll < split.true_test + 0.5  # no model beats the truth by much on 500 points


def test_mapa_runs_the_decoder_on_distinct_indices(split):
    """K + S = 15 particles per point, but the decoder runs once per distinct index of the step."""
    result = train_and_score("mapa-5-10", split, seed=0, budget=6000, num_checkpoints=1, eval_particles=10, test_particles=20)
    assert 1.0 < result.decoder_per_point_step < 15.0
    assert result.encoder_per_point_step == 0.0
    exact = train_and_score("exact", split, seed=0, budget=6000, num_checkpoints=1, eval_particles=10, test_particles=20)
    # all N codes once per step of 100 (plus the guide's one-time prototype trace)
    assert exact.decoder_per_point_step == pytest.approx(200 / 100, rel=0.1)


def test_method_names():
    assert parse_method("mapa-5-10") == ("mapa", (5, 10))
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
          "--methods", "vae", "mapa-2-3", "--out", str(out), "--quiet"])
    printed = capsys.readouterr().out
    assert "vae" in printed and "mapa-2-3" in printed and "true model" in printed
    record = json.loads((out / "results.json").read_text())
    assert {(r["method"], r["seed"]) for r in record["runs"]} == {("vae", 0), ("vae", 1), ("mapa-2-3", 0), ("mapa-2-3", 1)}
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


def test_learning_rate_is_chosen_per_method_on_the_first_seeds_validation(split):
    """Two rates: each method keeps the one whose first-seed run validated best, for all seeds."""
    _, runs = run_comparison("absolute-value", ["vae", "mapa-2-3"], [0, 1], 3000, learning_rates=(1e-3, 3e-2),
                             num_train=200, num_checkpoints=2, eval_particles=10, progress=False)
    assert [(r.method, r.seed) for r in runs] == [("vae", 0), ("vae", 1), ("mapa-2-3", 0), ("mapa-2-3", 1)]
    tables = neighbour_tables(split)
    for method in ("vae", "mapa-2-3"):
        tuning = {lr: train_and_score(method, split, 0, 3000, lr=lr, num_checkpoints=2, eval_particles=10, tables=tables)
                  for lr in (1e-3, 3e-2)}
        chosen = max(tuning, key=lambda lr: tuning[lr].best_val_ll)
        first, second = (r for r in runs if r.method == method)
        assert first.lr == second.lr == chosen
        assert first.best_val_ll == tuning[chosen].best_val_ll  # the tuning run itself is reported, not re-run
