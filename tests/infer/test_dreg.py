"""IWAE_ELBO(estimator="dreg") on a linear-Gaussian model with an amortized linear encoder,
whose posterior is known in closed form: the same expected gradient as the standard
estimator, lower variance for the encoder, and zero at the true posterior."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_mapa import IWAE_ELBO

D, d, SIGMA = 3, 2, 0.7


def problem():
    """Decoder A z + b with orthogonal columns (the posterior covariance is diagonal, so a
    linear encoder with a free log scale can be exact), 4 data points, and the exact
    posterior's encoder (W*, c*, log s*)."""
    g = torch.Generator().manual_seed(0)
    A = 1.5 * torch.linalg.qr(torch.randn(D, d, generator=g, dtype=torch.float64))[0]
    b = torch.randn(D, generator=g, dtype=torch.float64)
    x = torch.randn(4, D, generator=g, dtype=torch.float64)
    cov = torch.linalg.inv(torch.eye(d, dtype=torch.float64) + A.T @ A / SIGMA**2)
    W = cov @ A.T / SIGMA**2
    return A, b, x, (W, -W @ b, 0.5 * cov.diagonal().log())


def model_and_guide(A, b, W, c, log_s, num_points=4):
    def model(x, idx=None):
        with pyro.plate("data", num_points, subsample=idx):
            z = pyro.sample("z", dist.Normal(torch.zeros(d, dtype=x.dtype), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ A.T + b, SIGMA).to_event(1), obs=x)

    def guide(x, idx=None):
        with pyro.plate("data", num_points, subsample=idx):
            pyro.sample("z", dist.Normal(x @ W.T + c, log_s.exp().expand(len(x), d)).to_event(1))

    return model, guide


def gradients(estimator, num_particles, params, x, repeats, idx=None):
    """``repeats`` gradient draws of every parameter, flattened: (repeats, num_params)."""
    model, guide = model_and_guide(*params, num_points=4)
    elbo = IWAE_ELBO(num_particles, max_plate_nesting=1, estimator=estimator)
    draws = []
    for _ in range(repeats):
        loss = elbo.differentiable_loss(model, guide, x, idx)
        draws.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
    return torch.stack(draws)


def leaves(A, b, W, c, log_s, shift=0.0):
    g = torch.Generator().manual_seed(1)
    return [t.clone().requires_grad_() for t in (A, b, W + shift * torch.randn(W.shape, generator=g, dtype=W.dtype),
                                                  c + shift, log_s + shift)]


@pytest.mark.parametrize("num_particles", [5, 50])
@pytest.mark.parametrize("subsampled", [False, True])
def test_dreg_has_the_standard_expectation_and_less_encoder_variance(num_particles, subsampled):
    """Away from the posterior (encoder shifted by 0.3), on the same 800 draws of the
    particles (paired): every parameter's mean gradient agrees within 3 standard errors of
    the paired difference, and every encoder parameter's variance is lower under DReG (at
    S = 5 by 35-66x; benchmarks/RESULTS.md)."""
    A, b, x, (W, c, log_s) = problem()
    params = leaves(A, b, W, c, log_s, shift=0.3)
    idx = torch.tensor([1, 3]) if subsampled else None
    data = x[idx] if subsampled else x
    torch.manual_seed(2)
    standard = gradients("standard", num_particles, params, data, 800, idx)
    torch.manual_seed(2)
    dreg = gradients("dreg", num_particles, params, data, 800, idx)
    se = (standard - dreg).std(0) / len(dreg) ** 0.5
    assert ((standard.mean(0) - dreg.mean(0)).abs() <= 3 * se + 1e-12).all()
    encoder = slice(A.numel() + b.numel(), None)
    assert (dreg.var(0)[encoder] < standard.var(0)[encoder]).all()


def test_dreg_is_zero_at_the_true_posterior():
    """q = p(z | x): log w is constant in z, so every DReG draw of the encoder's gradient is
    0; the standard estimator's draws are not (its score term)."""
    torch.manual_seed(3)
    A, b, x, (W, c, log_s) = problem()
    params = leaves(A, b, W, c, log_s)
    encoder = slice(A.numel() + b.numel(), None)
    dreg = gradients("dreg", 5, params, x, 20)[:, encoder]
    standard = gradients("standard", 5, params, x, 20)[:, encoder]
    assert dreg.abs().max() < 1e-10
    assert standard.abs().max() > 1e-2


def test_dreg_gives_the_same_loss_value_and_refuses_what_it_cannot_do():
    A, b, x, (W, c, log_s) = problem()
    model, guide = model_and_guide(A, b, W, c, log_s)
    torch.manual_seed(0)
    standard = IWAE_ELBO(5, max_plate_nesting=1).differentiable_loss(model, guide, x)
    torch.manual_seed(0)
    dreg = IWAE_ELBO(5, max_plate_nesting=1, estimator="dreg").differentiable_loss(model, guide, x)
    assert torch.allclose(standard, dreg)
    with pytest.raises(ValueError, match="unknown estimator"):
        IWAE_ELBO(5, estimator="drg")

    def chained_model(x, idx=None):
        with pyro.plate("data", 4):
            pyro.sample("u", dist.Normal(torch.zeros(d, dtype=x.dtype), 1.0).to_event(1))
            z = pyro.sample("z", dist.Normal(torch.zeros(d, dtype=x.dtype), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ A.T + b, SIGMA).to_event(1), obs=x)

    Wl = W.clone().requires_grad_()
    with pytest.raises(ValueError, match="depends on the draw of 'u'"):
        IWAE_ELBO(5, max_plate_nesting=1, estimator="dreg").differentiable_loss(
            chained_model, lambda x, idx=None: _chained(x, Wl, c), x)


def _chained(x, W, c):
    """A guide whose second site's location is the first site's draw."""
    with pyro.plate("data", 4):
        u = pyro.sample("u", dist.Normal(x @ W.T + c, 1.0).to_event(1))
        pyro.sample("z", dist.Normal(u, 1.0).to_event(1))


def test_dreg_refuses_masked_and_point_mass_sites():
    """A masked site has no score term where it is masked (the rewrite would change the
    expectation there); a Delta site (AutoNormal, AutoDelta) has no density."""
    A, b, x, (W, c, log_s) = problem()
    model, _ = model_and_guide(A, b, W, c, log_s)
    elbo = IWAE_ELBO(3, max_plate_nesting=1, estimator="dreg")

    def masked(x, idx=None):
        with pyro.plate("data", 4):
            fn = dist.Normal(x @ W.T + c, 1.0).to_event(1).mask(torch.tensor([True, True, False, True]))
            pyro.sample("z", fn)

    def point(x, idx=None):
        with pyro.plate("data", 4):
            pyro.sample("z", dist.Delta(x @ W.T + c, event_dim=1))

    for guide in (masked, point):
        with pytest.raises(ValueError, match="masked, or a point mass"):
            elbo.differentiable_loss(model, guide, x)


def test_a_draw_of_weight_zero_leaves_the_dreg_loss_finite():
    """A prior with bounded support: draws outside it have log w = -inf and weight 0; they
    must contribute nothing (not 0 * -inf = NaN), as in the standard estimator."""
    x = torch.randn(4, 2, dtype=torch.float64)
    loc = torch.zeros(4, 2, dtype=torch.float64, requires_grad=True)

    def model(x):
        with pyro.plate("data", 4):
            bound = torch.ones(2, dtype=x.dtype)
            z = pyro.sample("z", dist.Uniform(-bound, bound).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", 4):
            pyro.sample("z", dist.Normal(loc, 0.6).to_event(1))

    with pyro.validation_enabled(False):
        losses = []
        for estimator in ("standard", "dreg"):
            torch.manual_seed(1)
            losses.append(IWAE_ELBO(5, max_plate_nesting=1, estimator=estimator).differentiable_loss(model, guide, x))
            (gradient,) = torch.autograd.grad(losses[-1], loc)
            assert torch.isfinite(gradient).all()
    assert torch.isfinite(losses[1]) and torch.allclose(losses[0], losses[1])
