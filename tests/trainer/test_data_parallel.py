"""A step on 2 gloo processes (spawned from the test) against the single-process step on the
union of their minibatches, with the same particles (float64, parameters to 1e-6); a rank
whose gradient were lost or counted twice would fail it."""

import pyro
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pyro_mapa import MAPA_ELBO, MAPAGuide, MAPAPosterior
from pyro_mapa.models import EmpiricalModel, make_decoder, pca_codes
from pyro_mapa.trainer import DataParallelStep, minibatches

N, D, LATENT, BATCH = 40, 5, 2, 6
SEEDS = (11, 12)  # each rank's particle seed


def data_set() -> torch.Tensor:
    return torch.randn(N, D, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def bound_module(sparse: bool = False) -> torch.nn.Module:
    """The same model, cache and guide in every process."""
    x = data_set()
    torch.manual_seed(3)
    model = EmpiricalModel(make_decoder(LATENT, D, 8).double(), pca_codes(x, LATENT), 0.5, sparse=sparse)
    guide = MAPAGuide(model, MAPAPosterior.fit(x, scale=0.5, num_cached=8, progress=False),
                      create_plates=lambda x, idx=None: pyro.plate("data", N, subsample=idx))
    guide(x[:2], torch.arange(2))  # set up (it traces the model, drawing) before any rank's seed
    return MAPA_ELBO(2, 3, max_plate_nesting=1)(model, guide)


def state(loss: torch.nn.Module) -> dict:
    return {name: p.detach().clone() for name, p in loss.named_parameters()}


def _rank_main(rank: int, init_file: str, out: str, code_gradients: str, sparse: bool) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        with pyro.settings.context(module_local_params=True):
            loss = bound_module(sparse)
            with torch.no_grad():  # rank 1 starts elsewhere: rank 0's parameters must reach it
                for p in loss.parameters():
                    p.add_(float(rank))
            step = DataParallelStep(loss, torch.optim.SGD(loss.parameters(), lr=1e-3), code_gradients)
            ignored = getattr(loss, "_ddp_params_and_buffers_to_ignore", [])
            assert ("model.codes" in ignored) == (code_gradients == "rows")
            idx = next(minibatches(N, BATCH, seed=5, epoch=0))
            pyro.set_rng_seed(SEEDS[rank])
            step(data_set()[idx], idx)
            torch.save({"idx": idx, "state": state(loss), "sent": step.code_bytes_sent,
                        "sparse": loss.model.codes.grad.is_sparse}, f"{out}.{rank}")
        dist.barrier()  # both ranks done with every collective before either tears gloo down (once a rank aborted)
    finally:
        dist.destroy_process_group()


def spawn(tmp_path, code_gradients: str, sparse: bool = False) -> list[dict]:
    out = str(tmp_path / "result")
    mp.start_processes(_rank_main, args=(str(tmp_path / "init"), out, code_gradients, sparse), nprocs=2,
                       start_method="spawn")
    return [torch.load(f"{out}.{rank}") for rank in range(2)]


def single_process_step(batches: list[torch.Tensor], weights: tuple[float, float], sparse: bool = False) -> dict:
    """One SGD step of ``sum_r weights[r] * loss_r``, each rank's loss with its own particles:
    weights (1/2, 1/2) is the union's estimate; (1/2, 0) loses rank 1, (1/2, 1) counts it twice."""
    with pyro.settings.context(module_local_params=True):
        loss = bound_module(sparse)
        optimizer = torch.optim.SGD(loss.parameters(), lr=1e-3)
        total = 0.0
        for idx, seed, weight in zip(batches, SEEDS, weights):
            pyro.set_rng_seed(seed)
            total = total + weight * loss(data_set()[idx], idx)
        total.backward()
        optimizer.step()
        return state(loss)


def largest_difference(a: dict, b: dict) -> float:
    return max((a[name] - b[name]).abs().max().item() for name in a)


@pytest.mark.parametrize("code_gradients, sparse", [("rows", False), ("dense", False), ("rows", True)])
def test_two_ranks_step_like_one_process_on_the_union(tmp_path, code_gradients, sparse):
    """Rank 1 starts from other parameters; rank 0's are what both must step from. Sparse codes
    (a sparse gradient, as SparseAdam takes) travel as their own rows."""
    results = spawn(tmp_path, code_gradients, sparse)
    batches = [r["idx"] for r in results]
    assert not set(batches[0].tolist()) & set(batches[1].tolist())  # disjoint minibatches
    union = single_process_step(batches, (0.5, 0.5), sparse)
    for result in results:
        assert result["sparse"] == sparse
        assert largest_difference(result["state"], union) < 1e-6
        for faulty in [(0.5, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 0.5)]:  # a rank lost, or counted twice
            assert largest_difference(result["state"], single_process_step(batches, faulty, sparse)) > 1e-4
    codes_bytes = N * LATENT * 8
    sent = results[0]["sent"]
    assert sent == codes_bytes if code_gradients == "dense" else 0 < sent < codes_bytes


def test_minibatches_deal_every_point_once_per_epoch_without_a_group():
    batches = list(minibatches(10, 3, seed=0, epoch=0))
    assert [len(b) for b in batches] == [3, 3, 3]
    assert len(set(torch.cat(batches).tolist())) == 9
    assert not torch.equal(torch.cat(batches), torch.cat(list(minibatches(10, 3, seed=0, epoch=1))))
    with pytest.raises(ValueError, match="needs at least 12 points"):
        next(minibatches(10, 12, seed=0, epoch=0))


def test_sparse_codes_have_the_dense_gradient():
    x, idx = data_set(), torch.arange(6)
    grads = []
    for sparse in (False, True):
        with pyro.settings.context(module_local_params=True):
            loss = bound_module(sparse)
            pyro.set_rng_seed(0)
            loss(x[idx], idx).backward()
            grad = loss.model.codes.grad
            assert grad.is_sparse == sparse
            grads.append(grad.to_dense())
    assert torch.allclose(grads[0], grads[1], rtol=0, atol=1e-12)
