"""KL warm-up: the latent's terms weighted by beta, the likelihood's not, on the schedule asked for."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_mapa.experiments import load_split, train_and_score
from pyro_mapa.experiments import training as training_module
from pyro_mapa.experiments.warmup import KLWarmup

NUM_POINTS = 10


def model(x, idx=None):
    with pyro.plate("data", NUM_POINTS, subsample=idx):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 0.5), obs=x)


def guide(x, idx=None):
    with pyro.plate("data", NUM_POINTS, subsample=idx):
        pyro.sample("z", dist.Normal(0.3 * x, 0.7))


@pytest.mark.parametrize("passes, beta", [(0, 0.0), (250, 0.25), (1000, 1.0), (5000, 1.0)])
@pytest.mark.parametrize("subsample", [False, True])
def test_the_warmed_up_elbo_weights_the_latent_terms_by_beta(passes, beta, subsample):
    x = torch.linspace(-2.0, 2.0, NUM_POINTS)
    idx = torch.tensor([1, 4, 7]) if subsample else None
    batch = x[idx] if subsample else x
    warmup = KLWarmup(1000)
    warmup.set_progress(passes)
    assert warmup.beta == beta
    pyro.set_rng_seed(0)
    loss = Trace_ELBO().loss(warmup(model), warmup(guide), batch, idx)
    # by hand, from the same draw: -(log p(x | z) + beta (log p(z) - log q(z | x))), times N / B
    pyro.set_rng_seed(0)
    z = dist.Normal(0.3 * batch, 0.7).sample()
    terms = dist.Normal(z, 0.5).log_prob(batch) + beta * (
        dist.Normal(0.0, 1.0).log_prob(z) - dist.Normal(0.3 * batch, 0.7).log_prob(z))
    expected = -(NUM_POINTS / len(batch)) * terms.sum()
    assert loss == pytest.approx(expected.item(), rel=1e-6)


def test_training_follows_the_schedule_in_decoder_passes(monkeypatch):
    seen = []

    class Recording(KLWarmup):
        def set_progress(self, passes):
            super().set_progress(passes)
            seen.append((passes, self.beta))

    monkeypatch.setattr(training_module, "KLWarmup", Recording)
    split = load_split("absolute-value", num_train=200, seed=0)
    result = train_and_score("vae", split, 0, 3000, kl_warmup=1000, num_checkpoints=1, eval_particles=5,
                             test_particles=5, max_test_particles=5)
    assert result.kl_warmup == 1000
    # one pass per point and step, batch 100: beta = 0, 0.1, ..., 0.9, then 1 for the rest
    assert [p for p, _ in seen] == [100 * k for k in range(result.steps)]
    assert [b for _, b in seen] == pytest.approx([min(1.0, k / 10) for k in range(result.steps)])


@pytest.mark.parametrize("method", ["mapa-1-3", "iwae-5", "iwae-dreg-5", "autodelta", "exact"])
def test_warmup_is_refused_where_there_is_no_kl_term_to_weigh(method, monkeypatch):
    def build_method(*args, **kwargs):
        raise AssertionError("the refusal must come before the method is built (MAPA's cache: a minute at N = 50,000)")

    monkeypatch.setattr(training_module, "build_method", build_method)
    split = load_split("absolute-value", num_train=200, seed=0)
    with pytest.raises(ValueError, match=f"kl_warmup applies to .* not {method}"):
        train_and_score(method, split, 0, 1000, kl_warmup=500)


def test_a_negative_warmup_is_named():
    split = load_split("absolute-value", num_train=200, seed=0)
    with pytest.raises(ValueError, match="kl_warmup must be 0"):
        train_and_score("vae", split, 0, 1000, kl_warmup=-1)
