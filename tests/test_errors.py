"""Bad input gets an error that names the problem, raised by us, not deep inside torch."""

import math
import traceback

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI
from pyro.optim import Adam
from toy_models import Empirical

from pyro_mapa import MAPA_ELBO, MAPAGuide, MAPAPosterior


def raised_by_us(excinfo):
    """The error is raised by a ``raise`` statement in pyro_mapa, not by a torch call."""
    frame = traceback.extract_tb(excinfo.tb)[-1]
    return "pyro_mapa" in frame.filename and frame.line.lstrip().startswith("raise")


@pytest.mark.parametrize(
    "data, kwargs, message",
    [
        (torch.tensor([[0.0, math.nan], [1.0, 2.0]]), {}, "NaN or infinite value.*row 0, column 1"),
        (torch.tensor([[0.0, 1.0], [math.inf, 2.0]]), {}, "NaN or infinite value.*row 1, column 0"),
        (torch.randn(10), {}, "must be 2-D"),
        (torch.randn(2, 3, 4), {}, "must be 2-D"),
        (torch.randint(0, 5, (10, 2)), {}, "integer dtype"),
        (torch.randn(10, 2).half(), {}, "dtype torch.float16; use float32 or float64"),
        (torch.rand(10, 3), {"likelihood": "bernoulli"}, "needs binary data"),
        (torch.randn(10, 2), {"num_cached": 11}, "num_cached=11 is larger than the number of training points N=10"),
        (torch.randn(10, 2), {"num_cached": 0}, "num_cached must be at least 1"),
        (torch.randn(10, 2), {"scale": 0.0}, "scale must be a finite number > 0"),
        (torch.randn(10, 2), {"scale": -1.0}, "scale must be a finite number > 0"),
        (torch.randn(10, 2), {"scale": math.nan}, "scale must be a finite number > 0"),
        (torch.randn(10, 2), {"scale": None}, "needs scale"),
        (torch.randn(10, 2), {"bandwidth": "wide"}, "bandwidth must be a positive number or 'auto'"),
        (torch.randn(10, 2), {"likelihood": "poisson"}, "likelihood must be"),
        (torch.randn(10, 2), {"likelihood": "custom", "scale": None}, "needs distance"),
        ((torch.rand(10, 3) < 0.5).float(), {"likelihood": "bernoulli", "scale": 0.7}, "flip probability"),
    ],
)
def test_fit_rejects(data, kwargs, message):
    kwargs = {"scale": 0.5, "num_cached": 3, **kwargs}
    if kwargs["scale"] is None:
        del kwargs["scale"]
    with pytest.raises((ValueError, TypeError), match=message) as excinfo:
        MAPAPosterior.fit(data, **kwargs)
    assert raised_by_us(excinfo)


def test_binary_integer_data_is_fine_for_bernoulli():
    posterior = MAPAPosterior.fit(torch.randint(0, 2, (20, 5)), likelihood="bernoulli", num_cached=3)
    assert posterior.table.log_prob.is_floating_point()


def test_custom_distance_of_wrong_shape():
    with pytest.raises(ValueError, match="returned shape"):
        MAPAPosterior.fit(
            torch.randn(10, 2), likelihood="custom", distance=lambda a, b: (a - b).sum(-1), temperature=1.0,
            num_cached=2,
        )


def test_query_rejects_other_features():
    posterior = MAPAPosterior.fit(torch.randn(10, 2), scale=0.5, num_cached=3)
    with pytest.raises(ValueError, match="x_new has 3 features but the training data has 2"):
        posterior.query(torch.randn(4, 3))


@pytest.fixture
def problem():
    return Empirical()


def train_step(problem, guide, elbo, batch=5):
    svi = SVI(problem.model, guide, Adam({"lr": 0.01}), loss=elbo)
    idx = torch.arange(batch)
    return svi.step(problem.data[idx], idx)


def test_k_larger_than_the_cache(problem):
    posterior = MAPAPosterior.fit(problem.data, scale=0.5, num_cached=4)
    guide = MAPAGuide(problem.model, posterior, create_plates=problem.create_plates)
    with pytest.raises(ValueError, match="num_neighbors=6 is larger than the 4 neighbours the MAPA cache holds"):
        train_step(problem, guide, MAPA_ELBO(num_neighbors=6, num_samples=2))


@pytest.mark.parametrize("kwargs", [{"num_neighbors": 0}, {"num_samples": -1}, {"num_samples": 2.5}])
def test_bad_elbo_settings(kwargs):
    with pytest.raises((ValueError, TypeError), match="num_"):
        MAPA_ELBO(**kwargs)


def test_plate_size_differs_from_the_cache(problem):
    posterior = MAPAPosterior.fit(problem.data[:20], scale=0.5, num_cached=4)
    guide = MAPAGuide(problem.model, posterior, create_plates=problem.create_plates)
    with pytest.raises(ValueError, match="no index site over the N=20 training codes.*'i': 30"):
        train_step(problem, guide, MAPA_ELBO(num_neighbors=2, num_samples=2))


def test_plate_of_another_size_around_the_index_site():
    data = torch.randn(30, 2)

    def model(x, idx=None):
        with pyro.plate("data", 40, subsample=idx):
            pyro.sample("i", dist.Categorical(logits=torch.zeros(30)))

    posterior = MAPAPosterior.fit(data, scale=0.5, num_cached=4)
    guide = MAPAGuide(model, posterior)
    with pytest.raises(ValueError, match="sits in plates \\{'data': 40\\}.*N=30"):
        guide(data)


def test_subsampling_without_create_plates(problem):
    posterior = MAPAPosterior.fit(problem.data, scale=0.5, num_cached=4)
    guide = MAPAGuide(problem.model, posterior)
    with pytest.raises(ValueError, match="subsamples plate 'data'.*create_plates"):
        train_step(problem, guide, MAPA_ELBO(num_neighbors=2, num_samples=2))


def test_cache_built_from_other_data(problem):
    posterior = MAPAPosterior.fit(problem.data.flip(0), scale=0.5, num_cached=4)
    guide = MAPAGuide(problem.model, posterior, create_plates=problem.create_plates)
    with pytest.raises(ValueError, match="not the data the MAPA cache was built from"):
        train_step(problem, guide, MAPA_ELBO(num_neighbors=2, num_samples=2))


def test_named_index_site_that_does_not_exist(problem):
    posterior = MAPAPosterior.fit(problem.data, scale=0.5, num_cached=4)
    guide = MAPAGuide(problem.model, posterior, create_plates=problem.create_plates, index_site="idx")
    with pytest.raises(ValueError, match="index_site 'idx' is not a latent site of the model: \\['i'\\]"):
        guide(problem.data)


def test_posterior_of_wrong_type(problem):
    with pytest.raises(TypeError, match="posterior must be a MAPAPosterior"):
        MAPAGuide(problem.model, problem.data)


def test_custom_distance_returning_nan():
    with pytest.raises(ValueError, match="returned NaN"):
        MAPAPosterior.fit(
            torch.randn(10, 2), likelihood="custom", distance=lambda a, b: torch.full((len(a), len(b)), math.nan),
            temperature=1.0, num_cached=2,
        )


def test_integer_valued_custom_distance_is_fine():
    posterior = MAPAPosterior.fit(
        torch.randn(30, 3), likelihood="custom", distance=lambda a, b: (a[:, None] != b[None]).sum(-1),
        temperature=1.0, num_cached=3,
    )
    assert torch.isfinite(posterior.table.log_prob).all()


def test_numpy_integer_settings_are_ints():
    import numpy as np

    posterior = MAPAPosterior.fit(torch.randn(30, 3), scale=0.5, num_cached=np.int64(4))
    assert posterior.num_cached == 4
    assert MAPA_ELBO(num_neighbors=np.int64(2), num_samples=np.int32(3)).num_particles == 5


def test_auto_bandwidth_on_duplicated_data():
    data = (torch.rand(4, 16) < 0.5).double().repeat(50, 1)
    with pytest.raises(ValueError, match="cannot reach perplexity=5.*50 exact duplicates") as excinfo:
        MAPAPosterior.fit(data, likelihood="bernoulli", bandwidth="auto", perplexity=5.0, num_cached=5)
    assert raised_by_us(excinfo)


def test_model_latent_missing_from_the_guide(problem):
    def model(x, idx=None):
        codes = pyro.param("codes", lambda: problem.init_codes.clone())
        with pyro.plate("data", problem.N, subsample=idx):
            i = pyro.sample("i", dist.Categorical(logits=torch.zeros(problem.N)))
            u = pyro.sample("u", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(problem.net(codes[i]) + u.unsqueeze(-1), 0.5).to_event(1), obs=x)

    posterior = MAPAPosterior.fit(problem.data, scale=0.5, num_cached=problem.N)
    guide = MAPAGuide(model, posterior, create_plates=problem.create_plates)
    pyro.enable_validation(False)  # Pyro's own check only warns; ours must hold without it
    with pytest.raises(ValueError, match=r"latent sites \['u'\] are not in the guide"):
        MAPA_ELBO(num_neighbors=problem.N, num_samples=0).loss(model, guide, problem.data)


def test_create_plates_with_another_name(problem):
    posterior = MAPAPosterior.fit(problem.data, scale=0.5, num_cached=4)
    guide = MAPAGuide(problem.model, posterior, create_plates=lambda x, idx=None: pyro.plate("batch", 30, subsample=idx))
    with pytest.raises(ValueError, match="create_plates returned plates \\['batch'\\].*plate 'data'"):
        train_step(problem, guide, MAPA_ELBO(num_neighbors=2, num_samples=2))


def test_scale_and_bandwidth_together_are_refused():
    """Issue 12: an invalid scale beside a bandwidth was ignored."""
    with pytest.raises(ValueError, match="scale or bandwidth, not both"):
        MAPAPosterior.fit(torch.randn(10, 2), scale=-1.0, bandwidth=0.5, num_cached=3)


@pytest.mark.parametrize("bad", [math.inf, -math.inf])
def test_a_custom_distance_with_infinite_values_is_refused(bad):
    def distance(a, b):
        d = torch.cdist(a, b)
        return torch.where(d == 0, torch.full_like(d, bad), d)

    with pytest.raises(ValueError, match="returned NaN or infinite values") as excinfo:
        MAPAPosterior.fit(torch.randn(10, 2), likelihood="custom", distance=distance, temperature=1.0, num_cached=3)
    assert raised_by_us(excinfo)
    with pytest.raises(ValueError, match="non-finite values"):
        MAPAPosterior.fit(torch.randn(20, 2), likelihood="custom", distance=distance, bandwidth="auto", num_cached=3)


@pytest.mark.parametrize("family", ["gaussian", "gmm"])
def test_fit_prior_names_codes_too_large_for_their_dtype(family):
    from pyro_mapa import fit_prior

    codes = 1e30 * torch.randn(200, 2, generator=torch.Generator().manual_seed(0))  # squares overflow float32
    largest = f"{codes.abs().max().item():.3g}".replace("+", "\\+")
    with pytest.raises(ValueError, match=f"overflows torch.float32: the largest \\|code\\| is {largest}.*diverge"
                       ) as excinfo:
        fit_prior(codes, family, num_components=2)
    assert raised_by_us(excinfo)
    assert fit_prior(codes.double(), family, num_components=2).event_shape == (2,)  # float64 holds them


def test_fit_prior_names_codes_that_span_too_few_directions():
    from pyro_mapa import fit_prior

    with pytest.raises(ValueError, match="not positive-definite in torch.float32.*span fewer directions") as excinfo:
        fit_prior(torch.ones(50, 2), "gaussian")  # all codes equal: a zero covariance
    assert raised_by_us(excinfo)


def test_empirical_log_likelihood_names_a_bad_sigma():
    from pyro_mapa.evaluation import empirical_log_likelihood

    with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
        empirical_log_likelihood(torch.nn.Linear(1, 2), torch.zeros(3, 1), torch.zeros(2, 2), -0.5)


def test_guide_and_model_on_other_datapoints_are_refused():
    """Issue 12: create_plates drawing its own subsample while the model takes idx: the guide
    proposed for other points and the loss was 209-262 against a correct 100.5."""
    problem = Empirical()
    posterior = MAPAPosterior.fit(problem.data, scale=problem.sigma, num_cached=5)
    guide = MAPAGuide(problem.model, posterior,
                      create_plates=lambda x, idx=None: pyro.plate("data", problem.N, subsample_size=len(x)))
    idx = torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match="subsamples other datapoints in the guide than in the model"):
        MAPA_ELBO(num_neighbors=2, num_samples=2).loss(problem.model, guide, problem.data[idx], idx)


def test_a_non_finite_bound_leaves_the_parameters_alone():
    """Issue 12: a decoder returning inf made every decoder weight NaN after one step."""
    problem = Empirical()
    posterior = MAPAPosterior.fit(problem.data, scale=problem.sigma, num_cached=5)
    guide = MAPAGuide(problem.model, posterior, create_plates=problem.create_plates)
    idx = torch.arange(problem.N)
    svi = SVI(problem.model, guide, Adam({"lr": 0.1}), loss=MAPA_ELBO(num_neighbors=2, num_samples=2))
    svi.step(problem.data, idx)
    before = {name: value.detach().clone() for name, value in pyro.get_param_store().named_parameters()}
    with torch.no_grad():
        problem.net[2].bias[0] = math.inf  # the decoder now returns inf: log-densities of -inf
    with pytest.raises(ValueError, match="the bound is inf.*left as they were"):
        svi.step(problem.data, idx)
    for name, value in pyro.get_param_store().named_parameters():
        if name != "decoder$$$2.bias":
            assert torch.equal(value.detach(), before[name]), name


def test_a_distance_not_smallest_at_itself_is_warned_about():
    """Issue 12: -cdist^2 was accepted, every point's top neighbour its farthest."""
    with pytest.warns(UserWarning, match="20 of 20 points checked are not their own most probable index"):
        MAPAPosterior.fit(torch.randn(20, 2), likelihood="custom", distance=lambda a, b: -torch.cdist(a, b) ** 2,
                          temperature=1.0, num_cached=3)


def test_values_whose_squared_distances_overflow_are_named():
    """Issue 12: float32 data of size 1e30 gave an all-NaN cache."""
    with pytest.raises(ValueError, match="squared distances between its points overflow torch.float32") as excinfo:
        MAPAPosterior.fit(torch.randn(50, 2) * 1e30, scale=1e29, num_cached=3)
    assert raised_by_us(excinfo)
    assert MAPAPosterior.fit(torch.randn(50, 2, dtype=torch.float64) * 1e30, scale=1e29, num_cached=3).num_cached == 3


@pytest.mark.parametrize(
    "data, message",
    [
        (torch.randn(10, 2, dtype=torch.complex64), "complex dtype"),
        (torch.empty(10, 2, device="meta"), "meta device"),
        (torch.eye(10, 2).to_sparse(), "sparse tensor"),
    ],
)
def test_unusual_tensors_are_named(data, message):
    with pytest.raises(ValueError, match=message) as excinfo:
        MAPAPosterior.fit(data, scale=0.5, num_cached=3)
    assert raised_by_us(excinfo)


def test_data_that_requires_grad_and_flipped_numpy_arrays_are_fine():
    import numpy as np

    x = torch.randn(12, 2)
    reference = MAPAPosterior.fit(x, scale=0.5, num_cached=3)
    from_parameter = MAPAPosterior.fit(torch.nn.Parameter(x.clone()), scale=0.5, num_cached=3)
    assert torch.equal(from_parameter.table.index, reference.table.index)
    assert not from_parameter.query(torch.nn.Parameter(x[:2].clone())).log_prob.requires_grad
    flipped = MAPAPosterior.fit(np.flip(x.numpy(), 0), scale=0.5, num_cached=3)
    assert torch.equal(flipped.data, x.flip(0))


def test_a_temperature_too_small_for_float32_is_named():
    with pytest.raises(ValueError, match="too small for torch.float32"):
        MAPAPosterior.fit(torch.randn(10, 2) * 1e-20, scale=1e-20, num_cached=3)


def test_a_distance_returning_numpy_works():
    posterior = MAPAPosterior.fit(torch.randn(10, 2), likelihood="custom", temperature=1.0, num_cached=3,
                                  distance=lambda a, b: torch.cdist(a, b).numpy())
    assert posterior.num_cached == 3


def test_saving_to_a_long_file_name(tmp_path):
    posterior = MAPAPosterior.fit(torch.randn(10, 2), scale=0.5, num_cached=3)
    path = tmp_path / ("c" * 245 + ".pt")  # a valid name of 248 characters
    posterior.save(path)
    assert MAPAPosterior.load(path, posterior.data).num_cached == 3


def test_an_index_site_in_a_second_plate_is_named():
    problem = Empirical()

    def model(x, idx=None):
        codes = pyro.param("codes", lambda: problem.init_codes.clone())
        with pyro.plate("data", problem.N, subsample=idx), pyro.plate("rep", 3, dim=-2):
            i = pyro.sample("i", dist.Categorical(logits=torch.zeros(problem.N)))
            pyro.sample("x", dist.Normal(problem.net(codes[i]), problem.sigma).to_event(1), obs=x)

    guide = MAPAGuide(model, MAPAPosterior.fit(problem.data, scale=problem.sigma, num_cached=5))
    with pytest.raises(ValueError, match=r"sits in plates \['rep'\] besides the data plate 'data'"):
        guide(problem.data)


def test_evaluation_helpers_name_their_problems():
    from pyro_mapa.evaluation import importance_diagnostics, posterior_distance

    problem = Empirical()
    posterior = MAPAPosterior.fit(problem.data, scale=problem.sigma, num_cached=5)
    with pytest.raises(ValueError, match="posteriors over different training sets"):
        posterior_distance(posterior.table, torch.log_softmax(torch.randn(problem.N, 10), -1))
    guide = MAPAGuide(problem.model, posterior)
    with pytest.raises(ValueError, match="needs at least 2 sampled particles.*draws 0"):
        importance_diagnostics(problem.model, guide, MAPA_ELBO(num_neighbors=2, num_samples=0), problem.data)


@pytest.mark.parametrize("argv", [["--steps", "0"], ["--steps", "-5"], ["--num-train", "1"]])
def test_the_demo_refuses_bad_counts_at_the_command_line(argv, capsys):
    from pyro_mapa.experiments.cli import main

    with pytest.raises(SystemExit):
        main(["demo", *argv, "--quiet"])
    assert "must be at least" in capsys.readouterr().err


def test_the_demo_runs_on_fewer_points_than_a_batch(tmp_path):
    from pyro_mapa.experiments.demo import run_demo

    result = run_demo(num_train=20, num_test=10, num_steps=3, out=tmp_path, progress=False)
    assert math.isfinite(result.train_after)


def test_grid_and_auto_bandwidth_name_bad_input():
    import pyro.distributions as dist

    from pyro_mapa.evaluation import grid_log_likelihood

    with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
        grid_log_likelihood(lambda z: z, dist.Normal(torch.zeros(1), 1.0).to_event(1), 0.0, torch.zeros(2, 1), -1.0, 1.0)
    with pytest.raises(ValueError, match="must return one finite distance per pair"):
        MAPAPosterior.fit(torch.randn(20, 2), likelihood="custom", bandwidth="auto", num_cached=3,
                          distance=lambda a, b: torch.cdist(a, b).sum(1))
