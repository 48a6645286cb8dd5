"""search='faiss': recall against the exact search, the tail estimate unbiased over its draws,
the kernels it refuses."""

import sys

import pytest
import torch

from pyro_mapa import Kernel, MAPAPosterior
from pyro_mapa.cache.approximate import approximate_neighbors

pytest.importorskip("faiss")


def clustered(n=3000, d=20, binary=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(30, d, generator=g)
    x = centres[torch.randint(0, 30, (n,), generator=g)] + 0.5 * torch.randn(n, d, generator=g)
    return (torch.rand(n, d, generator=g) < torch.sigmoid(2 * x)).float() if binary else x


def recall(found, exact, k: int) -> float:
    """The share of the first ``k`` found whose log-weight reaches the exact ``k``-th (ties at
    the ``k``-th distance count: Hamming distances tie often). Log-weights relative to each
    row's own point (first in both)."""
    found_rel = found.log_prob[:, :k] - found.log_prob[:, :1]
    kth = (exact.log_prob[:, k - 1] - exact.log_prob[:, 0]).unsqueeze(1)
    return (found_rel >= kth - 1e-3).float().mean().item()  # 1e-3 nats: float32 rounding of values near -300


@pytest.mark.parametrize("binary", [False, True], ids=["gaussian-l2", "bernoulli-hamming"])
def test_recall_against_the_exact_search(binary):
    """Top-10 recall at least 0.95 and recall of all 32 cached at least 0.9 (by distance), on
    3,000 clustered points; rows normalise (cached mass plus the estimated tail is 1)."""
    data = clustered(binary=binary, d=64 if binary else 20)
    kwargs = {"likelihood": "bernoulli", "scale": 0.2} if binary else {"scale": 1.0}
    exact = MAPAPosterior.fit(data, num_cached=32, progress=False, **kwargs).table
    faiss = MAPAPosterior.fit(data, num_cached=32, progress=False, search="faiss", **kwargs).table
    assert torch.equal(faiss.index[:, 0], torch.arange(len(data)))  # each point finds itself first
    assert recall(faiss, exact, 10) >= 0.95
    assert recall(faiss, exact, 32) >= 0.9
    total = torch.logaddexp(faiss.log_prob.logsumexp(1), faiss.log_tail)
    assert torch.allclose(total, torch.zeros_like(total), atol=1e-5)
    where = faiss.index == exact.index  # the same candidate at the same rank: the same exact log-weight
    assert torch.allclose((faiss.log_prob - faiss.log_prob[:, :1])[where], (exact.log_prob - exact.log_prob[:, :1])[where],
                          atol=1e-4)


def test_the_tail_estimate_is_unbiased_over_its_draws(float64):
    """For rows whose candidates are the exact search's, the tail relative to the cached mass,
    T_hat_n / S_n, averaged over 300 seeds, equals the exact T_n / S_n within 4 standard errors
    (and its spread is what the estimator's formula says: not zero)."""
    data = clustered(n=400, d=5)
    kernel = Kernel.gaussian(sigma=1.0)
    exact = MAPAPosterior.fit(data, kernel=kernel, num_cached=16, progress=False).table
    ratios = []
    for seed in range(300):
        table = approximate_neighbors(data, kernel, 16, tail_sample=64, seed=seed)
        ratios.append((table.log_tail - table.log_prob.logsumexp(1)).exp())
    ratios = torch.stack(ratios)
    same = (table.index.sort(1).values == exact.index.sort(1).values).all(1)
    assert same.float().mean() > 0.9
    truth = (exact.log_tail - exact.log_prob.logsumexp(1)).exp()
    se = ratios.std(0) / 300**0.5
    assert (se[same] > 0).all()
    assert ((ratios.mean(0) - truth).abs()[same] < 4 * se[same] + 1e-12).float().mean() > 0.98  # 4 SE: ~1 in 16,000 out


def test_a_custom_distance_stays_exact():
    data = torch.randn(50, 3)
    with pytest.raises(ValueError, match="custom distance, which only search='exact'"):
        MAPAPosterior.fit(data, likelihood="custom", distance=torch.cdist, temperature=1.0, num_cached=8, search="faiss")


@pytest.mark.parametrize("kwargs, message", [
    ({"search": "annoy"}, "search must be 'exact' or 'faiss'"),
    ({"search": "faiss", "num_cached": 50}, "needs num_cached < N"),
])
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MAPAPosterior.fit(torch.randn(50, 3), scale=1.0, **{"num_cached": 8, **kwargs})


def test_without_faiss_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match=r"pip install pyro-mapa\[faiss\]"):
        MAPAPosterior.fit(torch.randn(50, 3), scale=1.0, num_cached=8, search="faiss")


@pytest.mark.parametrize("offset", [0.0, 1000.0])
def test_the_tail_is_right_for_float32_data_far_from_the_origin(offset):
    """The sampled weights use |a|^2 + |b|^2 - 2 a.b: on float32 data 1,000 away from the origin,
    uncentred, the tail came out 3 nats too heavy for every row; centred, the median error of
    log(T_n / S_n) against the exact search is sampling noise."""
    data = clustered() + offset
    exact = MAPAPosterior.fit(data, scale=0.5, num_cached=32, progress=False).table
    faiss = MAPAPosterior.fit(data, scale=0.5, num_cached=32, progress=False, search="faiss").table
    error = (faiss.log_tail - faiss.log_prob.logsumexp(1)) - (exact.log_tail - exact.log_prob.logsumexp(1))
    assert error.median().abs() < 0.2


def test_a_faiss_cache_says_so_and_keeps_saying_so(tmp_path):
    data = clustered(n=300, d=5)
    posterior = MAPAPosterior.fit(data, scale=1.0, num_cached=16, progress=False, search="faiss")
    assert posterior.search == "faiss" and "search='faiss'" in repr(posterior)
    posterior.save(tmp_path / "cache.pt")
    loaded = MAPAPosterior.load(tmp_path / "cache.pt", data)
    assert loaded.search == "faiss" and torch.equal(loaded.table.index, posterior.table.index)
    loaded.save(tmp_path / "again.pt")
    assert MAPAPosterior.load(tmp_path / "again.pt", data).search == "faiss"
    assert MAPAPosterior.fit(data, scale=1.0, num_cached=16, progress=False).search == "exact"
