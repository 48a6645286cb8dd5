"""Dynamic binarization: every training step observes a fresh Bernoulli draw of its images
from their grey levels, while the fixed draw serves everything that needs fixed data."""

import math

import pytest
import torch

from pyro_mapa.datasets import load_fashion_mnist
from pyro_mapa.experiments import Split, load_split, train_and_score
from pyro_mapa.models import BernoulliLikelihood, NormalLikelihood


def grey_split(probs: torch.Tensor, dynamic: bool) -> Split:
    """Training images whose fixed draw is mostly zeros (1 with probability 0.1), their grey levels ``probs``."""
    fixed = torch.bernoulli(torch.full_like(probs, 0.1), generator=torch.Generator().manual_seed(2))
    return Split("grey", fixed, fixed[:4], fixed[:4], BernoulliLikelihood(), 1, hidden=4,
                 train_probs=probs if dynamic else None)


def test_a_batch_is_a_fresh_draw_with_the_grey_levels_as_probabilities():
    probs = torch.rand(30, 8, generator=torch.Generator().manual_seed(0))
    split, idx = grey_split(probs, dynamic=True), torch.tensor([3, 3, 17, 29])
    torch.manual_seed(1)
    draws = torch.stack([split.train_batch(idx) for _ in range(4000)])
    assert ((draws == 0) | (draws == 1)).all()
    expected = probs[idx]
    se = (expected * (1 - expected) / len(draws)).sqrt()
    assert ((draws.mean(0) - expected).abs() <= 5 * se + 1e-12).all()  # Monte Carlo: within 5 standard errors
    assert not torch.equal(draws[0], draws[1])  # afresh at every call (equal with probability about 2^-20)
    assert not torch.equal(draws[:, 0], draws[:, 1])  # the same point twice in a batch: two draws
    static = grey_split(probs, dynamic=False)
    assert torch.equal(static.train_batch(idx), static.train[idx])


@pytest.mark.parametrize("probs, likelihood, message", [
    (torch.full((30, 7), 0.5), BernoulliLikelihood(), r"shape \(30, 7\), train \(30, 8\)"),
    (torch.full((30, 8), 1.5), BernoulliLikelihood(), r"in \[0, 1\]"),
    (torch.full((30, 8), math.nan), BernoulliLikelihood(), r"in \[0, 1\].*NaN"),
    (torch.full((30, 8), 0.5, dtype=torch.float64), BernoulliLikelihood(), "torch.float64 on cpu.*train's dtype"),
    (torch.ones(30, 8, dtype=torch.int64), BernoulliLikelihood(), "torch.int64 on cpu.*train's dtype"),
    (torch.full((30, 8), 0.5), NormalLikelihood(0.1), "Bernoulli likelihood"),
])
def test_bad_grey_levels_are_refused(probs, likelihood, message):
    with pytest.raises(ValueError, match=message):
        Split("grey", torch.zeros(30, 8), torch.zeros(4, 8), torch.zeros(4, 8), likelihood, 1, train_probs=probs)


@pytest.mark.parametrize("method", ["vae", "mapa-1-2"])
def test_training_sees_the_grey_levels_not_the_fixed_draw(method):
    # the fixed draw is mostly zeros, the grey levels are 1/2: a decoder trained on fresh draws
    # learns p near 1/2, one trained on the fixed draw p near 0.1
    probs = torch.full((100, 6), 0.5)
    learned = {}
    for dynamic in (False, True):
        def keep(decoder, prior, codes, dynamic=dynamic):
            learned[dynamic] = torch.sigmoid(decoder(prior.sample((500,)))).mean().item()

        train_and_score(method, grey_split(probs, dynamic), 0, 4000, batch_size=10, lr=0.05, num_checkpoints=1,
                        eval_particles=10, test_particles=10, max_test_particles=10, scorer="laplace", inspect=keep)
    assert learned[False] < 0.25
    assert 0.35 < learned[True] < 0.65


def test_fashion_mnist_dynamic_split_keeps_the_fixed_draw_and_adds_the_grey_levels():
    static = load_split("fashion-mnist", 200, num_val=10, num_test=10)
    dynamic = load_split("fashion-mnist", 200, num_val=10, num_test=10, binarization="dynamic")
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(static, name), getattr(dynamic, name))
    assert static.train_probs is None
    assert torch.equal(dynamic.train_probs, load_fashion_mnist(binarize=None).train[:200])
    assert "dynamic binarization" in dynamic.describe() and "dynamic" in dynamic.notes["binarization"]


def test_dynamic_binarization_needs_fashion_mnist():
    with pytest.raises(ValueError, match="dynamic binarization applies to fashion-mnist"):
        load_split("digits", binarization="dynamic")
    with pytest.raises(ValueError, match="binarization must be one of"):
        load_split("fashion-mnist", binarization="fresh")


@pytest.mark.parametrize("argv", [["--dataset", "digits"], ["--data", "x.npy", "--likelihood", "bernoulli"]])
def test_the_command_line_refuses_dynamic_binarization_off_fashion_mnist(argv, capsys):
    from pyro_mapa.experiments.cli import main

    with pytest.raises(SystemExit):
        main(["compare", *argv, "--binarization", "dynamic", "--quiet"])
    assert "needs --dataset fashion-mnist" in capsys.readouterr().err


def test_the_comparison_runs_on_fashion_mnist_with_the_published_protocol(tmp_path):  # dynamic, gated
    import json

    from pyro_mapa.experiments.cli import main

    main(["compare", "--dataset", "fashion-mnist", "--binarization", "dynamic", "--layers", "gated", "--num-train", "200", "--num-val", "20",
          "--num-test", "20", "--budget", "2000", "--methods", "vae", "mapa-1-10", "--seeds", "0", "--checkpoints", "2",
          "--eval-particles", "10", "--test-particles", "20", "--max-test-particles", "20", "--scorer-fit-steps", "20",
          "--quiet", "--out", str(tmp_path)])
    record = json.loads((tmp_path / "results.json").read_text())
    assert "dynamic binarization" in record["split"] and record["split"].endswith("hidden 300 x 2 gated")
    assert [run["method"] for run in record["runs"]] == ["vae", "mapa-1-10"]
    assert all(math.isfinite(run["test_ll"]) and run["total_passes"] >= 2000 for run in record["runs"])
