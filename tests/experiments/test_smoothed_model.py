"""The smoothed, leave-one-out empiricalized model under MAPA's bound, against its closed-form
marginal on a linear-Gaussian decoder, full batch and subsampled."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_mapa import MAPA_ELBO, MAPAGuide, MAPAPosterior
from pyro_mapa.experiments import parse_method
from pyro_mapa.experiments.baselines import smoothed_empirical_model, smoothed_guide
from pyro_mapa.models import ExemplarMixture, NormalLikelihood

N, D, SIGMA, TAU = 8, 3, 0.3, 0.4


def setting():
    g = torch.Generator().manual_seed(0)
    decoder = torch.nn.Linear(1, D).double()
    codes = torch.randn(N, 1, generator=g, dtype=torch.float64)
    with torch.no_grad():
        x = decoder(codes) + 0.05 * torch.randn(N, D, generator=g, dtype=torch.float64)
    return decoder, codes, x


def closed_form(decoder, codes, x, leave_out: bool) -> torch.Tensor:
    """log p(x_n) = log (1/(N-1)) sum_{m != n} N(x_n; W z_m + b, tau^2 W W^T + sigma^2 I) (or over all m, 1/N)."""
    w = decoder.weight.detach()
    cov = TAU**2 * w @ w.T + SIGMA**2 * torch.eye(D, dtype=torch.float64)
    with torch.no_grad():
        terms = dist.MultivariateNormal(decoder(codes), cov).log_prob(x.unsqueeze(1))  # (n, m)
    if leave_out:
        terms = terms.masked_fill(torch.eye(N, dtype=torch.bool), -math.inf)
    return terms.logsumexp(1) - math.log(N - 1 if leave_out else N)


@pytest.mark.parametrize("subsample", [None, [5, 1, 6]])
def test_the_bound_is_unbiased_for_the_leave_one_out_marginal(float64, subsample):
    """``p_hat_n`` (K = 2 cached neighbours, S = 50 draws, each particle with its own ``z``)
    averaged over 400 repetitions against the closed form: within 4 standard errors, and far
    from the marginal that keeps the point's own code (so the point itself is left out)."""
    decoder, codes, x = setting()
    model = smoothed_empirical_model(decoder, NormalLikelihood(SIGMA), N, 1, init_codes=codes, init_scale=TAU)
    index_guide = MAPAGuide(model, MAPAPosterior.fit(x, scale=SIGMA, num_cached=4),
                            create_plates=lambda x, idx=None: pyro.plate("data", N, subsample=idx))
    guide = smoothed_guide(index_guide)
    idx = None if subsample is None else torch.tensor(subsample)
    rows = torch.arange(N) if idx is None else idx
    elbo = MAPA_ELBO(2, 50, max_plate_nesting=1)
    with torch.no_grad():
        p_hat = torch.stack([
            elbo.importance_weights(model, guide, x[rows], idx).log_weights.logsumexp(0).exp() for _ in range(400)
        ])
    exact = closed_form(decoder, codes, x, leave_out=True)[rows].exp()
    se = p_hat.std(0) / math.sqrt(len(p_hat))
    assert ((p_hat.mean(0) - exact).abs() < 4 * se).all()
    kept = closed_form(decoder, codes, x, leave_out=False)[rows].exp()
    assert ((kept - exact).abs() > 10 * se).all()


def test_training_moves_the_codes_and_the_scale_and_scores_as_its_mixture(float64):
    decoder, codes, x = setting()
    model = smoothed_empirical_model(decoder, NormalLikelihood(SIGMA), N, 1, init_codes=codes, init_scale=TAU)
    guide = smoothed_guide(MAPAGuide(model, MAPAPosterior.fit(x, scale=SIGMA, num_cached=4)))
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), loss=MAPA_ELBO(2, 3, max_plate_nesting=1))
    for _ in range(5):
        assert math.isfinite(svi.step(x))
    assert pyro.param("smoothing_scale").item() != pytest.approx(TAU, abs=1e-6)
    assert not torch.allclose(pyro.param("codes"), codes)
    method = parse_method("smoothed-mapa-2-3")
    prior = method.continuous_prior(None, pyro.param("codes").detach(), seed=0)
    assert isinstance(prior, ExemplarMixture) and prior.scale == pyro.param("smoothing_scale")


def test_one_point_cannot_be_left_out():
    with pytest.raises(ValueError, match="at least 2 training points"):
        smoothed_empirical_model(torch.nn.Linear(1, 2), NormalLikelihood(1.0), 1, 1)
