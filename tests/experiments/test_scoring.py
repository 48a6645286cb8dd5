"""The comparison's scorer with a fitted mixture prior: each draw's prior density computed once."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_mapa.evaluation import importance_log_likelihood
from pyro_mapa.evaluation.mixtures import GaussianMixture
from pyro_mapa.experiments.scoring import ModelScorer, continuous_model
from pyro_mapa.models import NormalLikelihood


@pytest.mark.parametrize("kind", ["laplace", "encoder"])
def test_a_mixture_prior_is_scored_once_per_draw_and_as_torch_scores_it(float64, kind, monkeypatch):
    """A 3-component GMM prior (torch's ``MixtureSameFamily``, as ``fit_prior`` returns it): the
    scorer's estimate equals, draw for draw (same seed, same proposal), the one whose model scores
    the prior with torch's own density; and the prior's density is computed once per chunk of
    draws (the model and the proposal's defensive component share it), not twice."""
    g = torch.Generator().manual_seed(0)
    decoder = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 6)).double()
    prior = dist.MixtureSameFamily(
        dist.Categorical(logits=torch.randn(3, generator=g)),
        dist.MultivariateNormal(2 * torch.randn(3, 2, generator=g), scale_tril=torch.eye(2) * 0.7),
    )
    likelihood = NormalLikelihood(0.3)
    train = decoder(prior.sample((200,))).detach() + 0.3 * torch.randn(200, 6, generator=g)
    scorer = ModelScorer(kind, decoder, likelihood, train, latent_dim=2, hidden=8, fit_steps=20)
    scorer.update(prior, codes=prior.sample((200,)))
    x = train[:20]

    computed = {"calls": 0}
    for cls in (GaussianMixture, torch.distributions.MixtureSameFamily):
        original = cls._log_prob if cls is GaussianMixture else cls.log_prob

        def counted(self, value, original=original, cls=cls):
            # the prior's (the Laplace proposal's anchors, also fast mixtures, have a batch shape; torch's
            # mixture is the reference model's prior, expanded to the plate)
            computed["calls"] += cls is not GaussianMixture or not self.batch_shape
            return original(self, value)

        monkeypatch.setattr(cls, "_log_prob" if cls is GaussianMixture else "log_prob", counted)
    pyro.set_rng_seed(1)
    ours = scorer(x, num_particles=400)  # two chunks of 200 draws
    assert computed["calls"] == 2
    pyro.set_rng_seed(1)
    reference = importance_log_likelihood(
        continuous_model(decoder, prior, likelihood), scorer.proposal, x, num_particles=400, chunk_size=200,
        max_plate_nesting=1,
    )
    assert computed["calls"] == 2 + 4  # torch's model density, and the proposal's defensive one, per chunk
    assert torch.allclose(ours.value, reference.value, atol=1e-10, rtol=0)


def test_the_fast_mixture_keeps_the_last_density_only_for_the_same_unchanged_tensor(float64):
    g = torch.Generator().manual_seed(2)
    loc = torch.randn(4, 3, generator=g)
    reference = dist.MixtureSameFamily(dist.Categorical(logits=torch.zeros(4)), dist.MultivariateNormal(loc, torch.eye(3)))
    mixture = GaussianMixture(reference.mixture_distribution, reference.component_distribution)
    z = torch.randn(5, 3, generator=g)
    with torch.no_grad():
        first = mixture.log_prob(z)
        assert mixture.log_prob(z) is first
        z.add_(1.0)  # changed in place: computed again
        assert torch.allclose(mixture.log_prob(z), reference.log_prob(z), atol=1e-12)
        loc.mul_(2.0)  # the parameters changed in place
        assert torch.allclose(mixture.log_prob(z), reference.log_prob(z), atol=1e-12)
        kept = mixture.log_prob(z)
        mixture.whitener = mixture.whitener / 2  # a parameter replaced by a new tensor (version 0 again)
        assert not torch.allclose(mixture.log_prob(z), kept)
    z.requires_grad_(True)
    assert mixture.log_prob(z).grad_fn is not None  # under autograd nothing is kept

    def model():
        with pyro.plate("data", 5):
            return pyro.sample("z", mixture)

    mixture = GaussianMixture(reference.mixture_distribution, reference.component_distribution)
    trace = pyro.poutine.trace(model).get_trace()
    trace.compute_log_prob()
    value = trace.nodes["z"]["value"]
    assert value.shape == (5, 3) and torch.allclose(trace.nodes["z"]["log_prob"], reference.log_prob(value))
    single = GaussianMixture(dist.Categorical(logits=torch.zeros(1, 4)), dist.MultivariateNormal(loc[None], torch.eye(3)))
    assert torch.allclose(single.expand((5,)).log_prob(value), reference.log_prob(value))  # a size-1 batch, expanded


def test_a_swapped_prior_is_scored_with_the_fitted_encoder_as_quadrature_scores_it(float64):
    """``swap_prior`` keeps the encoder fitted to one model and scores the same decoder under
    another prior (also the proposal's defensive component): on a 1-D latent with 12 Bernoulli
    outputs, its estimate for an exemplar prior (the smoothed model's, off the first model's
    posterior) agrees with grid quadrature of that prior within 3 standard errors per point, and
    differs from the first model's estimate by 5 standard errors on average (the swap took effect)."""
    from pyro_mapa import fit_prior
    from pyro_mapa.evaluation import grid_log_likelihood
    from pyro_mapa.models import BernoulliLikelihood

    g = torch.Generator().manual_seed(0)
    decoder = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, 12)).double()
    with torch.no_grad():
        decoder[0].weight.mul_(3.0)
    likelihood = BernoulliLikelihood()
    codes = torch.randn(40, 1, generator=g, dtype=torch.float64) * 1.5
    train = torch.bernoulli(torch.sigmoid(decoder(codes)).detach(), generator=g)
    scorer = ModelScorer("encoder", decoder, likelihood, train, latent_dim=1, hidden=16, fit_steps=300)
    torch.manual_seed(0)
    scorer.update(dist.Normal(torch.zeros(1, dtype=torch.float64), 1.0).to_event(1), codes)
    x = train[:10]
    first = scorer(x, num_particles=2000)
    exemplar = fit_prior(codes + 1.0, "exemplar", code_noise=0.3)  # off the first model's posterior
    scorer.swap_prior(exemplar)
    assert scorer.proposal.prior is exemplar  # the defensive component is the new prior
    swapped = scorer(x, num_particles=2000)
    truth = grid_log_likelihood(decoder, exemplar, likelihood, x, -9.0, 9.0, 20001)
    assert ((swapped.value - truth).abs() < 3 * swapped.stderr + 1e-3).all()
    assert (swapped.value - first.value).abs().mean() > 5 * (swapped.stderr + first.stderr).mean()
    with pytest.raises(ValueError, match="rebuilt by update"):
        laplace = ModelScorer("laplace", decoder, likelihood, train, latent_dim=1, hidden=16)
        laplace.update(exemplar, codes)
        laplace.swap_prior(exemplar)



def test_only_the_encoder_proposal_is_refined_per_point():
    """``refine_steps`` scores with the encoder proposal refined to the scored rows, draw for draw
    as :meth:`EncoderProposal.refined` then the estimate; the Laplace mixture has no per-point fit
    to refine and says so."""
    decoder = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 6))
    prior = dist.Normal(torch.zeros(2), 1.0).to_event(1)
    train = torch.randn(50, 6)
    encoder = ModelScorer("encoder", decoder, NormalLikelihood(0.3), train, latent_dim=2, hidden=8, fit_steps=5)
    encoder.update(prior, codes=torch.randn(50, 2))
    x = train[:5]
    pyro.set_rng_seed(1)
    ours = encoder(x, num_particles=50, refine_steps=20)
    pyro.set_rng_seed(1)
    refined = encoder.proposal.refined(x, 20)
    reference = importance_log_likelihood(encoder.model, refined, x, num_particles=50, chunk_size=50,
                                          max_plate_nesting=1)
    assert torch.equal(ours.value, reference.value)
    pyro.set_rng_seed(1)
    assert not torch.allclose(encoder(x, num_particles=50).value, ours.value)
    laplace = ModelScorer("laplace", decoder, NormalLikelihood(0.3), train, latent_dim=2, hidden=8)
    laplace.update(prior, codes=torch.randn(50, 2))
    with pytest.raises(ValueError, match="only the 'encoder' proposal"):
        laplace(x, num_particles=50, refine_steps=20)
