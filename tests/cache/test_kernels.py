"""Kernels as objects: each constructor computes what its docstring says, and the
likelihood shorthand of MAPAPosterior.fit builds the same kernel."""

import math

import pytest
import torch

from pyro_mapa import Kernel, MAPAPosterior
from pyro_mapa.cache import BernoulliKernel, CustomKernel, GaussianKernel


def test_gaussian_kernel_is_the_normal_density_of_the_difference():
    a, b = torch.randn(4, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    sigma = 0.7
    kernel = Kernel.gaussian(sigma)  # h^2 = 2 sigma^2: log q = -||a - b||^2 / (4 sigma^2) + const
    expected = -((a[:, None] - b[None]) ** 2).sum(-1) / (4 * sigma**2)
    assert torch.allclose(kernel.log_weights(a, b), expected)
    assert Kernel.gaussian(bandwidth=0.5).temperature == pytest.approx(2 * 0.25)


def test_bernoulli_kernel_is_the_flip_likelihood_ratio():
    a, b = (torch.rand(6, 20) < 0.5).double(), (torch.rand(7, 20) < 0.5).double()
    eps = 0.2
    hamming = (a[:, None] != b[None]).sum(-1).double()
    expected = hamming * math.log(eps / (1 - eps))  # q ∝ (eps / (1 - eps))^Hamming
    assert torch.allclose(Kernel.bernoulli(eps).log_weights(a, b), expected)


def test_custom_kernel_uses_the_users_distance_and_temperature():
    kernel = Kernel.custom(lambda a, b: torch.cdist(a, b, p=1), temperature=0.5)
    a, b = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 2.0]])
    assert kernel.log_weights(a, b).item() == pytest.approx(-3.0 / 0.5)
    assert kernel.name.startswith("custom:")


@pytest.mark.parametrize(
    "shorthand, kernel",
    [
        (dict(likelihood="normal", scale=0.3), Kernel.gaussian(0.3)),
        (dict(bandwidth=0.4), Kernel.gaussian(bandwidth=0.4)),
        (dict(likelihood="bernoulli"), Kernel.bernoulli()),
        (dict(likelihood="bernoulli", scale=0.05), Kernel.bernoulli(0.05)),
        (dict(bandwidth="auto", perplexity=5.0), Kernel.auto("gaussian", perplexity=5.0)),
    ],
)
def test_the_likelihood_shorthand_builds_the_same_kernel(shorthand, kernel):
    data = (torch.rand(40, 6, generator=torch.Generator().manual_seed(1)) < 0.5).double()
    by_name = MAPAPosterior.fit(data, num_cached=5, **shorthand)
    by_object = MAPAPosterior.fit(data, kernel=kernel, num_cached=5)
    assert type(by_name.kernel) is type(by_object.kernel)
    assert by_name.temperature == by_object.temperature
    assert torch.equal(by_name.table.index, by_object.table.index)
    assert by_name.fingerprint == by_object.fingerprint


def test_auto_calibrates_on_the_data_and_keeps_its_class():
    data = torch.randn(80, 3, dtype=torch.float64)
    for family, cls in (("gaussian", GaussianKernel), (lambda a, b: torch.cdist(a, b), CustomKernel)):
        kernel = Kernel.auto(family, perplexity=6.0)
        assert kernel.temperature is None
        calibrated = kernel.calibrated(data)
        assert type(calibrated) is cls and calibrated.temperature > 0
    binary = (torch.rand(80, 30, generator=torch.Generator().manual_seed(0)) < 0.5).double()
    assert type(Kernel.auto("bernoulli").calibrated(binary)) is BernoulliKernel


def test_kernel_and_shorthand_together_are_refused():
    with pytest.raises(ValueError, match="either as kernel= or by likelihood="):
        MAPAPosterior.fit(torch.randn(10, 2), kernel=Kernel.gaussian(0.1), scale=0.1, num_cached=3)
    with pytest.raises(TypeError, match="kernel must be a pyro_mapa.Kernel"):
        MAPAPosterior.fit(torch.randn(10, 2), kernel="normal", num_cached=3)


def test_an_uncalibrated_kernel_says_so():
    with pytest.raises(ValueError, match="calibrated on data"):
        Kernel.auto().log_weights(torch.zeros(1, 2), torch.zeros(1, 2))


def test_the_bernoulli_kernel_refuses_non_binary_data_and_the_gaussian_accepts_it():
    data = torch.rand(10, 3)
    with pytest.raises(ValueError, match="needs binary data"):
        MAPAPosterior.fit(data, kernel=Kernel.bernoulli(), num_cached=3)
    assert MAPAPosterior.fit(data, kernel=Kernel.gaussian(0.5), num_cached=3).num_cached == 3


def test_kernels_built_directly_are_checked():
    with pytest.raises(TypeError, match="Kernel is abstract"):
        Kernel(temperature=1.0)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        GaussianKernel(temperature=-1.0)
    with pytest.raises(ValueError, match="needs a temperature, or a perplexity"):
        GaussianKernel()
    with pytest.raises(ValueError, match="sigma or bandwidth, not both"):
        Kernel.gaussian(1.0, bandwidth=1.0)
    with pytest.raises(ValueError, match="eps is the Bernoulli flip probability"):
        Kernel.bernoulli(0.5)


def test_a_calibrated_kernel_is_identified_by_its_temperature(tmp_path):
    """After calibration the target perplexity is spent: a saved and loaded cache has the same kernel."""
    data = torch.randn(60, 3, dtype=torch.float64)
    posterior = MAPAPosterior.fit(data, kernel=Kernel.auto(perplexity=6.0), num_cached=5)
    posterior.save(tmp_path / "c.pt")
    assert MAPAPosterior.load(tmp_path / "c.pt", data).kernel == posterior.kernel
    with pytest.raises(ValueError, match="not both"):
        MAPAPosterior.fit(data, kernel=Kernel.auto(), perplexity=25.0, num_cached=5)
