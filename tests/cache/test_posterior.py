"""MAPAPosterior beyond fitting: moving a cache between devices and dtypes."""

import pytest
import torch
from toy_models import Empirical

from pyro_mapa import MAPA_ELBO, MAPAGuide, MAPAPosterior


def test_to_casts_the_data_and_tables_and_leaves_the_original_alone(tmp_path):
    data = torch.randn(40, 3, dtype=torch.float64)
    p64 = MAPAPosterior.fit(data, scale=0.4, num_cached=6)
    p32 = p64.to(dtype=torch.float32)
    assert p32.data.dtype == p32.table.log_prob.dtype == p32.table.log_tail.dtype == torch.float32
    assert p32.table.index.dtype == torch.long and torch.equal(p32.table.index, p64.table.index)
    assert torch.allclose(p32.table.log_prob.double(), p64.table.log_prob, atol=1e-6)
    assert p64.data.dtype == p64.table.log_prob.dtype == torch.float64
    p32.save(tmp_path / "c.pt")  # still the cache of the float64 data it was built from
    assert torch.equal(MAPAPosterior.load(tmp_path / "c.pt", data).table.index, p64.table.index)


def test_a_cast_cache_trains_a_model_of_its_dtype():
    problem = Empirical(num_points=20)
    posterior = MAPAPosterior.fit(problem.data.double(), scale=problem.sigma, num_cached=5).to(dtype=torch.float32)
    guide = MAPAGuide(problem.model, posterior)
    loss = MAPA_ELBO(num_neighbors=2, num_samples=3).differentiable_loss(problem.model, guide, problem.data)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_to_cuda_and_back():
    data = torch.randn(40, 3)
    posterior = MAPAPosterior.fit(data, scale=0.4, num_cached=6)
    on_gpu = posterior.to("cuda")
    assert on_gpu.data.is_cuda and on_gpu.table.index.is_cuda
    assert torch.equal(on_gpu.to("cpu").table.index, posterior.table.index)
    assert torch.equal(on_gpu.index_distribution(torch.tensor([1, 2], device="cuda")).table.index.cpu(),
                       posterior.table.index[[1, 2]])


def test_encode_gives_new_points_a_distribution_over_training_indices():
    """Issue 15: query returned raw tables; encode is the distribution q(i | x_new)."""
    data = torch.randn(30, 2, dtype=torch.float64)
    posterior = MAPAPosterior.fit(data, scale=0.5, num_cached=6)
    x_new = data[:4] + 0.01
    q = posterior.encode(x_new)
    assert q.batch_shape == (4,)
    every = torch.arange(30).unsqueeze(-1).expand(30, 4)
    assert torch.allclose(q.log_prob(every).exp().sum(0), torch.ones(4, dtype=torch.float64))
    draws = q.sample((2000,))
    assert draws.shape == (2000, 4) and ((0 <= draws) & (draws < 30)).all()
    assert (draws == torch.arange(4)).double().mean() > 0.2  # each new point's twin is likely
    index, log_prob = q.top(3)
    assert torch.equal(index, posterior.query(x_new).index[:, :3])
    assert torch.allclose(log_prob.exp().sum(-1), torch.ones(4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"k=7 must lie in \[1, K_c=6\]"):
        q.top(7)
