"""VampPrior and the exemplar prior against direct logsumexps over their components, the
leave-one-out mask, full batch and subsampled."""

import math

import pyro
import pytest
import torch

from pyro_mapa.experiments.baselines import (
    exemplar_model,
    vamp_prior,
    vampprior_model,
)
from pyro_mapa.models import (
    ExemplarMixture,
    NormalLikelihood,
    make_decoder,
    make_encoder,
)


def normal_log_prob(z, loc, scale):
    """log N(z; loc, diag scale^2), written out."""
    return (-0.5 * ((z - loc) / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)).sum(-1)


@pytest.mark.parametrize("max_entries", [2**22, 7])
def test_the_exemplar_mixture_is_its_logsumexp(float64, max_entries):
    g = torch.Generator().manual_seed(0)
    locs, z = torch.randn(50, 3, generator=g), 3 * torch.randn(4, 6, 3, generator=g)
    prior = ExemplarMixture(locs, 0.7, max_entries=max_entries)
    direct = normal_log_prob(z.unsqueeze(-2), locs, torch.tensor(0.7)).logsumexp(-1) - math.log(50)
    assert torch.allclose(prior.log_prob(z), direct, atol=1e-6, rtol=0)
    draws = prior.sample(torch.Size([20000]))
    assert torch.allclose(draws.mean(0), locs.mean(0), atol=0.05)  # each component 1/M of the time
    with pytest.raises(ValueError, match="scale must be positive"):
        ExemplarMixture(locs, 0.0)


@pytest.mark.parametrize("scale", [0.02, 0.0005])
def test_the_exemplar_mixture_is_exact_in_float32_far_from_the_origin(scale):
    """Means 20 away from the origin, s down to 0.0005: the expansion |z|^2 - 2 z.mu + |mu|^2 in
    float32 was 2.8 nats off at s = 0.02; here the products move to float64 and agree with a
    float64 computation on the same float32 inputs to 1e-4 nats (centring in float32 before the
    move cost 1.3e-2 at s = 0.0005)."""
    g = torch.Generator().manual_seed(0)
    locs = (20.0 + torch.randn(500, 16, generator=g, dtype=torch.float64)).float()
    z = (locs[:20].double() + scale * torch.randn(20, 16, generator=g, dtype=torch.float64)).float()
    exact = normal_log_prob(z.double().unsqueeze(-2), locs.double(), torch.tensor(scale, dtype=torch.float64))
    exact = exact.logsumexp(-1) - math.log(500)
    single = ExemplarMixture(locs, scale).log_prob(z)
    assert single.dtype == torch.float32
    assert (single.double() - exact).abs().max() < 1e-4 * max(1.0, exact.abs().max().item() / 1e3)


def test_the_exemplar_mixture_is_not_downcast_by_autocast():
    """Under a bfloat16 autocast the float32 products would lose 0.67 nats; autocast is off inside."""
    g = torch.Generator().manual_seed(5)
    locs = torch.randn(2000, 40, generator=g)
    z = locs[:32] + 0.5 * torch.randn(32, 40, generator=g)
    prior = ExemplarMixture(locs, 0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = prior.log_prob(z.clone())
    assert (cast - prior.log_prob(z)).abs().max() < 1e-4


def test_the_exemplar_mixture_in_float32_matches_float64_where_it_stays_in_float32():
    """Codes of unit spread in 40 dimensions, s = 0.5 (a trained Exemplar VAE's range): the
    products stay in float32 (rounding bound below 1e-3 nats) and agree with float64."""
    g = torch.Generator().manual_seed(2)
    locs = torch.randn(2000, 40, generator=g, dtype=torch.float64)
    z = locs[:64] + 0.5 * torch.randn(64, 40, generator=g, dtype=torch.float64)
    exact = normal_log_prob(z.unsqueeze(-2), locs, torch.tensor(0.5)).logsumexp(-1) - math.log(2000)
    single = ExemplarMixture(locs.float(), 0.5).log_prob(z.float())
    assert single.dtype == torch.float32
    assert (single.double() - exact).abs().max() < 1e-3


@pytest.mark.parametrize("per_component", [False, True])
def test_the_exemplar_mixtures_gradients_are_those_of_its_logsumexp(float64, per_component):
    """Draws far from most components (terms e^-hundreds below a row's largest, which the
    logsumexp raises to e^-80): the gradients for the draws, the means and the scales agree."""
    g = torch.Generator().manual_seed(4)
    locs = (3 * torch.randn(40, 3, generator=g)).requires_grad_(True)
    scale = (0.2 + torch.rand(40, 3, generator=g) if per_component else torch.tensor(0.3)).requires_grad_(True)
    z = (3 * torch.randn(6, 3, generator=g)).requires_grad_(True)
    weights = torch.randn(6, generator=g)
    ours = torch.autograd.grad((ExemplarMixture(locs, scale).log_prob(z) * weights).sum(), (z, locs, scale))
    direct = normal_log_prob(z.unsqueeze(-2), locs, scale).logsumexp(-1)
    reference = torch.autograd.grad((direct * weights).sum(), (z, locs, scale))
    for mine, theirs in zip(ours, reference):
        assert torch.allclose(mine, theirs, atol=1e-8, rtol=1e-6)


def test_the_exemplar_mixture_keeps_the_last_density_only_for_the_same_unchanged_tensor():
    g = torch.Generator().manual_seed(3)
    locs, z = torch.randn(30, 2, generator=g), torch.randn(5, 2, generator=g)
    prior = ExemplarMixture(locs, 0.5)
    with torch.no_grad():
        first = prior.log_prob(z)
        assert prior.log_prob(z) is first  # the importance sampler's second call
        assert torch.equal(prior.log_prob(z.clone()), first)
        z.add_(1.0)  # the same tensor, changed in place
        moved = prior.log_prob(z)
        locs.mul_(2.0)  # the parameters changed in place
        rescaled = prior.log_prob(z)
    direct = normal_log_prob(z.unsqueeze(-2), locs, torch.tensor(0.5)).logsumexp(-1) - math.log(30)
    assert not torch.allclose(moved, first) and torch.allclose(rescaled, direct, atol=1e-5)
    assert not torch.allclose(moved, rescaled)
    with torch.no_grad():
        kept = prior.log_prob(z)
        kept += 100.0  # the caller changes the returned densities in place: they are not returned again
        assert torch.allclose(prior.log_prob(z), direct, atol=1e-5)
    with torch.inference_mode():
        assert torch.allclose(prior.log_prob(z), direct, atol=1e-5)
    with torch.no_grad():
        prior.log_prob(z).add_(1.0)  # nothing from inference mode was kept (an inference tensor would refuse this)
    z.requires_grad_(True)
    assert prior.log_prob(z).grad_fn is not None  # under autograd nothing is kept


def test_the_vampprior_is_its_logsumexp(float64):
    torch.manual_seed(0)
    encoder = make_encoder(5, 2, 8).double()
    pseudo_inputs = torch.randn(7, 5)
    z = torch.randn(3, 4, 2)
    loc, log_scale = encoder(pseudo_inputs).chunk(2, -1)
    direct = normal_log_prob(z.unsqueeze(-2), loc, log_scale.exp()).logsumexp(-1) - math.log(7)
    assert torch.allclose(vamp_prior(encoder, pseudo_inputs).log_prob(z), direct, atol=1e-6, rtol=0)


@pytest.mark.parametrize("subsample", [None, [4, 0, 2]])
def test_the_exemplar_model_leaves_each_point_out(float64, subsample):
    """Point n's prior density: logsumexp over its retrieved m != n of N(z; mu(x_m), s^2 I)
    minus log(N - 1), whether n is among its neighbours (masked) or not."""
    pyro.clear_param_store()
    torch.manual_seed(1)
    train = torch.randn(6, 4)
    neighbors = torch.tensor([[0, 1, 2], [1, 0, 5], [3, 4, 5], [3, 2, 1], [4, 3, 0], [0, 1, 2]])  # row 5 lacks itself
    encoder, decoder = make_encoder(4, 2, 8).double(), make_decoder(2, 4, 8).double()
    model = exemplar_model(decoder, encoder, NormalLikelihood(0.5), train, neighbors)
    idx = None if subsample is None else torch.tensor(subsample)
    rows = torch.arange(6) if idx is None else idx
    trace = pyro.poutine.trace(model).get_trace(train[rows], idx)
    trace.compute_log_prob()
    z = trace.nodes["z"]["value"]
    prior_log_prob = trace.nodes["z"]["unscaled_log_prob"] + trace.nodes["exemplar_weight"]["unscaled_log_prob"]
    means = encoder(train).chunk(2, -1)[0]
    scale = pyro.param("exemplar_scale")
    for j, n in enumerate(rows.tolist()):
        others = [m for m in neighbors[n].tolist() if m != n]
        direct = normal_log_prob(z[j], means[others], scale).logsumexp(0) - math.log(5)
        assert prior_log_prob[j].item() == pytest.approx(direct.item(), abs=1e-6)
    logits = trace.nodes["z"]["fn"].mixture_distribution.logits
    assert torch.equal(torch.isinf(logits), neighbors[rows] == rows.unsqueeze(-1))  # exactly the point itself


def test_the_vampprior_model_keeps_binary_pseudo_inputs_in_the_unit_interval():
    pyro.clear_param_store()
    encoder, decoder = make_encoder(4, 2, 8), make_decoder(2, 4, 8)
    from pyro_mapa.models import BernoulliLikelihood

    model = vampprior_model(decoder, encoder, BernoulliLikelihood(), 10, torch.full((3, 4), 0.5))
    model(torch.ones(10, 4))
    unconstrained = pyro.get_param_store().get_param("pseudo_inputs").unconstrained()
    assert pyro.get_param_store().get_param("pseudo_inputs").shape == (3, 4)
    with torch.no_grad():
        unconstrained.add_(100.0)  # far outside: still inside [0, 1] after the transform
    assert ((pyro.param("pseudo_inputs") >= 0) & (pyro.param("pseudo_inputs") <= 1)).all()
    assert isinstance(vamp_prior(encoder, pyro.param("pseudo_inputs")), ExemplarMixture)


@pytest.mark.parametrize("max_entries", [2**22, 5])
def test_the_mixture_with_a_scale_per_component_is_its_logsumexp(float64, max_entries):
    g = torch.Generator().manual_seed(1)
    locs, scales = torch.randn(30, 3, generator=g), 0.2 + torch.rand(30, 3, generator=g)
    z = 2 * torch.randn(4, 5, 3, generator=g)
    prior = ExemplarMixture(locs, scales, max_entries=max_entries)
    direct = normal_log_prob(z.unsqueeze(-2), locs, scales).logsumexp(-1) - math.log(30)
    assert torch.allclose(prior.log_prob(z), direct, atol=1e-6, rtol=0)
    draws = prior.sample(torch.Size([40000]))
    second_moment = (scales.square() + locs.square()).mean(0)  # E[z^2] of the equal-weight mixture
    assert torch.allclose(draws.square().mean(0), second_moment, rtol=0.05)
    with pytest.raises(ValueError, match="scale must be a number or of the locs' shape"):
        ExemplarMixture(locs, scales[:, :2])
