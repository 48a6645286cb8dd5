"""The cache built by 2 gloo processes, spawned from the test, against the single-process one."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pyro_mapa import MAPAPosterior


def data_set() -> torch.Tensor:
    return torch.randn(203, 5, generator=torch.Generator().manual_seed(0))  # 203: unequal shares


def _rank_main(rank: int, world: int, init_file: str, out: str, kwargs: dict, same_data: bool,
               same_settings: bool = True) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        data = data_set() if same_data or rank == 0 else data_set().flip(0)
        try:
            num_cached = 16 if same_settings or rank == 0 else 8
            posterior = MAPAPosterior.fit(data, distributed=True, progress=False, num_cached=num_cached, **kwargs)
        except ValueError as e:
            torch.save({"error": str(e)}, f"{out}.{rank}")
            return
        if rank == 1:
            posterior.save(f"{out}.cache")  # saved by a rank other than 0 ...
        dist.barrier()
        loaded = MAPAPosterior.load(f"{out}.cache", data)  # ... loaded by every rank
        torch.save({"table": posterior.table._asdict(), "loaded": loaded.table._asdict(),
                    "temperature": posterior.temperature}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def spawn(tmp_path, kwargs: dict, same_data: bool = True, same_settings: bool = True) -> list[dict]:
    out = str(tmp_path / "result")
    mp.start_processes(_rank_main, args=(2, str(tmp_path / "init"), out, kwargs, same_data, same_settings), nprocs=2,
                       start_method="spawn")
    return [torch.load(f"{out}.{rank}") for rank in range(2)]


@pytest.mark.parametrize("kwargs", [{"scale": 0.5}, {"bandwidth": "auto", "perplexity": 5.0}])
def test_two_ranks_build_the_single_process_cache(tmp_path, kwargs):
    """Every rank ends with the whole cache: the same neighbours as one process (bit for bit),
    the same log-probabilities to float rounding, the same calibrated temperature; a cache
    saved by rank 1 loads on both."""
    single = MAPAPosterior.fit(data_set(), progress=False, num_cached=16, **kwargs)
    for result in spawn(tmp_path, kwargs):
        assert result["temperature"] == single.temperature
        for table in (result["table"], result["loaded"]):
            assert torch.equal(table["index"], single.table.index)
            assert torch.allclose(table["log_prob"], single.table.log_prob, rtol=0, atol=1e-5)
            assert torch.allclose(table["log_tail"], single.table.log_tail, rtol=0, atol=1e-5)


def test_ranks_with_different_data_are_refused(tmp_path):
    for result in spawn(tmp_path, {"scale": 0.5}, same_data=False):
        assert "the ranks hold different data" in result["error"]


def test_ranks_with_different_settings_are_refused(tmp_path):
    for result in spawn(tmp_path, {"scale": 0.5}, same_settings=False):
        assert "the ranks hold different kernel or num_cached" in result["error"]


def test_without_a_process_group_the_error_says_how_to_start_one():
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="init_process_group"):
        MAPAPosterior.fit(data_set(), scale=0.5, distributed=True, num_cached=8)



def test_a_faiss_cache_is_built_on_rank_0_and_sent_to_every_rank(tmp_path):
    pytest.importorskip("faiss")
    first, second = spawn(tmp_path, {"scale": 0.5, "search": "faiss"})
    for name in ("index", "log_prob", "log_tail"):
        assert torch.equal(first["table"][name], second["table"][name])
    exact = MAPAPosterior.fit(data_set(), progress=False, num_cached=16, scale=0.5)
    assert (first["table"]["index"][:, :5] == exact.table.index[:, :5]).float().mean() > 0.95
