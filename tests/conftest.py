import pyro
import pytest
import torch

# The tests' tensors are small: one thread is as fast on a quiet machine and keeps a busy
# 2-core one from thrashing (two OpenMP threads per process made steps 20x slower there).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_and_clear():
    """Every test starts from seed 0, an empty param store, validation on."""
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    pyro.enable_validation(True)
    yield
    pyro.clear_param_store()


@pytest.fixture
def float64():
    """Run the test with float64 as torch's default dtype."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
