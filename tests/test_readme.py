"""The README's quickstart runs as it stands and trains."""

import math
import re
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch

README = Path(__file__).resolve().parent.parent / "README.md"


def quickstart_code() -> str:
    text = README.read_text()
    section = text[text.index("## Quickstart") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def exact_train_log_likelihood(ns) -> float:
    """Direct logsumexp over all N codes: the empiricalized model's exact log p(X)."""
    with torch.no_grad():
        mean = ns["net"](pyro.param("codes"))
        log_lik = dist.Normal(mean, ns["sigma"]).to_event(1).log_prob(ns["X"][:, None, :])
        return (log_lik.logsumexp(-1) - math.log(ns["N"])).mean().item()


def test_quickstart_trains():
    """Its time (about 15 s on 2 cores) is measured by benchmarks/quickstart.py, not asserted here."""
    code = quickstart_code()
    setup, loop = code.split("for step in range")
    ns = {}
    exec(setup, ns)
    ns["svi"].evaluate_loss(ns["X"][:100], torch.arange(100))  # creates the codes as step 1 would
    before = exact_train_log_likelihood(ns)
    exec("for step in range" + loop, ns)
    after = exact_train_log_likelihood(ns)
    assert after > before + 50, (before, after)  # about -129 -> -4 nats per point at seed 0
