"""MAPA_ELBO against exact enumeration, a direct logsumexp, and Monte Carlo (SPEC section 3)."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO, TraceEnum_ELBO, config_enumerate
from pyro.optim import Adam
from toy_models import Empirical

from pyro_mapa import MAPA_ELBO, MAPAGuide, MAPAPosterior


def setup(num_cached=None, search="exact", **kwargs):
    problem = Empirical(**kwargs)
    posterior = MAPAPosterior.fit(problem.data, scale=problem.sigma, num_cached=num_cached or problem.N, search=search)
    guide = MAPAGuide(problem.model, posterior, create_plates=problem.create_plates)
    return problem, posterior, guide


def enumerated_loss(problem, *args):
    """TraceEnum_ELBO with the index site enumerated and an empty guide."""
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    return elbo.differentiable_loss(config_enumerate(problem.model), lambda *a, **k: None, *args)


@pytest.mark.parametrize("num_cached", [None, 4], ids=["full-cache", "sparse-cache"])
@pytest.mark.parametrize("num_samples", [0, 4])
@pytest.mark.parametrize("batch", [None, 7])
def test_full_neighbourhood_is_exact(float64, num_samples, batch, num_cached):
    """K = N: equals TraceEnum_ELBO and a direct logsumexp, full batch and subsampled,
    whatever the cache holds."""
    problem, _, guide = setup(num_cached=num_cached)
    idx = None if batch is None else torch.randperm(problem.N)[:batch]
    x = problem.data if idx is None else problem.data[idx]
    elbo = MAPA_ELBO(num_neighbors=problem.N, num_samples=num_samples)
    mapa = elbo.differentiable_loss(problem.model, guide, x, idx)
    enum = enumerated_loss(problem, x, idx)
    scale = problem.N / len(x)
    direct = -scale * problem.exact_log_marginal(x).sum()
    assert torch.allclose(mapa, enum, atol=1e-5, rtol=0)
    assert torch.allclose(mapa, direct, atol=1e-5, rtol=0)
    # and so are the gradients, to the decoder and the codes
    params = [pyro.param("codes").unconstrained(), *problem.net.parameters()]
    for g_mapa, g_enum in zip(torch.autograd.grad(mapa, params), torch.autograd.grad(enum, params)):
        assert torch.allclose(g_mapa, g_enum, atol=1e-6)


@pytest.mark.parametrize("num_cached, search", [(None, "exact"), (8, "exact"), (8, "faiss")],
                         ids=["dense", "sparse", "sparse-faiss"])
def test_estimator_is_unbiased(float64, num_cached, search):
    """Mean of p_hat over many draws matches the exact p(x_n) within 3 standard errors; with
    faiss's approximate neighbours and estimated tails too (the proposal still covers every index)."""
    if search == "faiss":
        pytest.importorskip("faiss")
    problem, _, guide = setup(num_cached=num_cached, search=search, sigma=0.7)
    elbo = MAPA_ELBO(num_neighbors=2, num_samples=3)
    draws = 20000
    for n in [0, 11, 29]:
        idx = torch.full((draws,), n)  # one independent p_hat per repeated datapoint
        with torch.no_grad():
            log_p_hat = elbo.importance_weights(problem.model, guide, problem.data[idx], idx).per_datapoint()
            exact = problem.exact_log_marginal(problem.data[n : n + 1]).exp().item()
        p_hat = log_p_hat.exp()
        mean, se = p_hat.mean().item(), p_hat.std().item() / math.sqrt(draws)
        assert abs(mean - exact) < 3 * se, (n, mean, exact, se)
        assert se < 0.05 * exact  # the test has power: the SE is small next to p(x_n)
        # and the bound is below the truth on average (Jensen), not above it
        assert log_p_hat.mean().item() < math.log(exact)


def test_particles_are_neighbours_then_samples(float64):
    problem, posterior, guide = setup(num_cached=10)
    elbo = MAPA_ELBO(num_neighbors=3, num_samples=4)
    idx = torch.tensor([4, 9])
    model_trace, guide_trace = elbo._get_trace(problem.model, guide, (problem.data[idx], idx), {})
    site = guide_trace.nodes["i"]
    assert site["value"].shape == (7, 2)
    assert torch.equal(site["value"][:3], posterior.table.index[idx, :3].T)
    assert torch.all(site["fn"].log_weights[:3] == 0)
    assert torch.all(site["fn"].log_weights[3:] < math.log(4))  # log S + log r, with r < 1
    assert torch.equal(model_trace.nodes["i"]["value"], site["value"])


def test_neighbours_only_is_a_lower_bound(float64):
    problem, _, guide = setup(num_cached=10)
    loss = MAPA_ELBO(num_neighbors=5, num_samples=0).loss(problem.model, guide, problem.data)
    exact = -problem.exact_log_marginal(problem.data).sum().item()
    assert loss > exact


def test_trains_with_svi_and_subsampling():
    problem, _, guide = setup(num_cached=10, num_points=60, sigma=0.3)
    svi = SVI(problem.model, guide, Adam({"lr": 0.02}), loss=MAPA_ELBO(num_neighbors=3, num_samples=5))
    with torch.no_grad():
        svi.evaluate_loss(problem.data[:10], torch.arange(10))
        before = problem.exact_log_marginal(problem.data).mean().item()
    for _ in range(300):
        idx = torch.randint(0, problem.N, (20,))
        svi.step(problem.data[idx], idx)
    with torch.no_grad():
        after = problem.exact_log_marginal(problem.data).mean().item()
    assert after > before + 1.0, (before, after)


def test_trace_elbo_and_predictive_draw_one_index_from_q(float64):
    problem, posterior, guide = setup(num_cached=10, sigma=0.3)
    # Trace_ELBO: an ordinary guide (score-function terms vanish: q has no parameters)
    loss = Trace_ELBO().loss(problem.model, guide, problem.data)
    assert math.isfinite(loss)
    samples = Predictive(problem.model, guide=guide, num_samples=4000, return_sites=["i"])(problem.data)["i"]
    assert samples.shape == (4000, problem.N)
    q = posterior.index_distribution(torch.tensor([5]))
    top = posterior.table.index[5, 0]
    freq = (samples[:, 5] == top).double().mean()
    p = q.log_prob(top.reshape(1)).exp().item()
    assert abs(freq - p) < 4 * math.sqrt(p * (1 - p) / 4000)


def test_guide_is_callable_like_the_model(float64):
    problem, posterior, guide = setup(num_cached=10)
    idx = torch.tensor([1, 2, 3])
    out = guide(problem.data[idx], idx)
    assert set(out) == {"i"} and out["i"].shape == (3,)
    assert torch.equal(guide.median(problem.data[idx], idx)["i"], posterior.table.index[idx, 0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_full_neighbourhood_is_exact(float64):
    problem = Empirical()
    torch.set_default_device("cuda")
    try:
        problem.data, problem.net = problem.data.cuda(), problem.net.cuda()
        problem.init_codes = problem.init_codes.cuda()
        posterior = MAPAPosterior.fit(problem.data, scale=problem.sigma, num_cached=problem.N)
        guide = MAPAGuide(problem.model, posterior, create_plates=problem.create_plates)
        loss = MAPA_ELBO(num_neighbors=problem.N, num_samples=0).loss(problem.model, guide, problem.data)
        assert loss == pytest.approx(-problem.exact_log_marginal(problem.data).sum().item(), abs=1e-6)
    finally:
        torch.set_default_device("cpu")


def test_inner_feature_plate_is_summed_per_datapoint(float64):
    """Data plate at dim -2, a feature plate inside it at dim -1: K = N is still exact."""
    problem = Empirical(num_points=12, obs_dim=3)

    def model(x, idx=None):
        decoder = pyro.module("decoder", problem.net)
        codes = pyro.param("codes", lambda: problem.init_codes.clone())
        with pyro.plate("data", problem.N, subsample=idx, dim=-2):
            i = pyro.sample("i", dist.Categorical(logits=torch.zeros(problem.N)))  # shape (batch, 1)
            with pyro.plate("features", 3, dim=-1):
                pyro.sample("x", dist.Normal(decoder(codes[i.squeeze(-1)]), problem.sigma), obs=x)

    posterior = MAPAPosterior.fit(problem.data, scale=problem.sigma, num_cached=problem.N)
    guide = MAPAGuide(model, posterior, create_plates=lambda x, idx=None: pyro.plate("data", 12, subsample=idx, dim=-2))
    idx = torch.tensor([0, 5, 7])
    for max_plate_nesting in (float("inf"), 2):
        elbo = MAPA_ELBO(num_neighbors=problem.N, num_samples=0, max_plate_nesting=max_plate_nesting)
        loss = elbo.loss(model, guide, problem.data[idx], idx)
        with torch.no_grad():
            expected = -(12 / 3) * problem.exact_log_marginal(problem.data[idx]).sum().item()
        assert loss == pytest.approx(expected, abs=1e-6)


def test_create_plates_without_a_dim_in_a_model_plate_at_dim_minus_two(float64):
    """The guide takes the dim its own plate gets, not the model's, and says so if they differ."""
    problem = Empirical(num_points=12, obs_dim=3)

    def model(x, idx=None):
        with pyro.plate("data", problem.N, subsample=idx, dim=-2):
            pyro.sample("i", dist.Categorical(logits=torch.zeros(problem.N)))

    posterior = MAPAPosterior.fit(problem.data, scale=problem.sigma, num_cached=4)
    guide = MAPAGuide(model, posterior, create_plates=lambda x, idx=None: pyro.plate("data", 12, subsample=idx))
    with pytest.raises(ValueError, match="plate 'data' at dim -1, but the model's is at dim -2: pass dim=-2"):
        MAPA_ELBO(num_neighbors=2, num_samples=1).loss(model, guide, problem.data[:3], torch.arange(3))


@pytest.mark.parametrize("where", ["global", "per-datapoint"])
def test_factor_statements_count(float64, where):
    """pyro.factor sites (Pyro marks them auxiliary) are part of the model's density:
    a penalty on the codes once, or a weight per datapoint inside the plate."""
    problem, _, guide = setup()
    weight = torch.linspace(-1.0, 1.0, problem.N)

    def model(x, idx=None):  # problem.model with a factor statement
        decoder = pyro.module("decoder", problem.net)
        codes = pyro.param("codes", lambda: problem.init_codes.clone())
        with pyro.plate("data", problem.N, subsample=idx) as rows:
            i = pyro.sample("i", dist.Categorical(logits=torch.zeros(problem.N)))
            pyro.sample("x", dist.Normal(decoder(codes[i]), problem.sigma).to_event(1), obs=x)
            if where == "per-datapoint":
                pyro.factor("weight", weight[rows])
        if where == "global":
            pyro.factor("penalty", -0.5 * 3.0 * codes.pow(2).sum())

    idx = torch.tensor([2, 9, 17, 25])
    loss = MAPA_ELBO(num_neighbors=problem.N, num_samples=0).differentiable_loss(model, guide, problem.data[idx], idx)
    scale = problem.N / len(idx)
    expected = -scale * problem.exact_log_marginal(problem.data[idx]).sum()
    if where == "global":
        expected = expected + 0.5 * 3.0 * pyro.param("codes").pow(2).sum()
    else:
        expected = expected - scale * weight[idx].sum()
    assert torch.allclose(loss, expected, atol=1e-8, rtol=0)


def test_guide_set_up_inside_the_bound_with_as_many_particles_as_points():
    """On its first call the guide traces the model inside the bound's particle plate; with
    K + S = N that plate has the data plate's size and must not be taken for it."""
    problem = Empirical(num_points=6)
    posterior = MAPAPosterior.fit(problem.data, scale=problem.sigma, num_cached=6)
    guide = MAPAGuide(problem.model, posterior)
    loss = MAPA_ELBO(num_neighbors=6, num_samples=0).loss(problem.model, guide, problem.data)  # K = N
    assert guide.index_site == "i"
    assert loss == pytest.approx(-problem.exact_log_marginal(problem.data).sum().item(), abs=1e-4)


def test_a_guide_that_samples_the_bare_cache_distribution_is_told_what_to_use():
    problem = Empirical(num_points=10)
    posterior = MAPAPosterior.fit(problem.data, scale=problem.sigma, num_cached=5)

    def guide(x, idx=None):
        with pyro.plate("data", problem.N):
            pyro.sample("i", posterior.index_distribution(torch.arange(problem.N)))

    with pytest.raises(ValueError, match="samples the cache's MAPAIndex.*IndexProposal"):
        MAPA_ELBO(num_neighbors=2, num_samples=2).loss(problem.model, guide, problem.data)
    from pyro_mapa import IndexProposal

    def wrapped(x, idx=None):
        with pyro.plate("data", problem.N):
            pyro.sample("i", IndexProposal(posterior.index_distribution(torch.arange(problem.N))))

    assert math.isfinite(MAPA_ELBO(num_neighbors=2, num_samples=2).loss(problem.model, wrapped, problem.data))


def test_a_guide_without_a_mapa_index_site_is_refused():
    """AutoNormal on a VAE model: without the index particles MAPA_ELBO would compute
    IWAE_ELBO(K + S) minus log(K + S) per point, which is not a bound."""
    from pyro.infer.autoguide import AutoNormal

    def vae(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros(1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(torch.cat([z, z], -1), 1.0).to_event(1), obs=x)

    x = torch.randn(8, 2)
    with pytest.raises(ValueError, match="needs a guide with a MAPA index site.*IWAE_ELBO"):
        MAPA_ELBO(num_neighbors=1, num_samples=2).loss(vae, AutoNormal(vae), x)


def test_far_particles_leave_the_bound_and_give_no_denormal_gradients():
    """A particle e^-95 below the best (a denormal weight in float32) is left out: the bound is
    the same to float32 resolution and its gradient is exactly 0, not a denormal number."""
    from pyro_mapa import ImportanceWeights

    log_w = torch.tensor([[0.0], [-95.0], [-5.0]], requires_grad=True)
    bound = ImportanceWeights(log_w, 1.0, 0.0, 0.0).per_datapoint()
    assert torch.allclose(bound, torch.tensor([0.0, -5.0]).logsumexp(0).reshape(1))
    (grad,) = torch.autograd.grad(bound.sum(), log_w)
    assert grad[1, 0] == 0 and torch.allclose(grad[[0, 2], 0], torch.softmax(torch.tensor([0.0, -5.0]), 0))
    plain = torch.autograd.grad(log_w.logsumexp(0).sum(), log_w)[0][1, 0]
    assert 0 < plain < torch.finfo(torch.float32).tiny  # what it was: a denormal number
