"""The quickstart as a job: train an empiricalized model with MAPA on built-in data.

``pyro-mapa demo`` builds the MAPA cache of a synthetic data set, trains the
README's model with ``MAPAGuide`` and ``MAPA_ELBO`` under ``pyro.infer.SVI``, and
reports the empiricalized model's exact log-likelihood (nats per point) on the
training and test points before and after, beside the true model's.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pyro
import torch
from pyro.infer import SVI
from pyro.optim import Adam

from .._progress import progress_bar
from ..cache import MAPAPosterior
from ..datasets import load_synthetic
from ..evaluation import empirical_log_likelihood
from ..infer import MAPA_ELBO, MAPAGuide
from ..models import make_decoder, pca_codes
from .baselines import empirical_model

__all__ = ["DemoResult", "run_demo"]


@dataclass
class DemoResult:
    """What the demo measured (log-likelihoods in nats per point)."""

    dataset: str
    num_train: int
    num_steps: int
    seconds: float
    train_before: float
    test_before: float
    train_after: float
    test_after: float
    true_test: float

    def table(self) -> str:
        rows = [
            ("before training", self.train_before, self.test_before),
            (f"after {self.num_steps} MAPA steps", self.train_after, self.test_after),
            ("true model (ceiling)", float("nan"), self.true_test),
        ]
        lines = [f"{'':28} {'train LL':>10} {'test LL':>10}"]
        lines += [f"{name:28} {train:10.3f} {test:10.3f}".replace("nan", "  -") for name, train, test in rows]
        lines.append(f"{self.dataset}, N = {self.num_train}, {self.seconds:.1f} s of training")
        return "\n".join(lines)


def run_demo(
    dataset: str = "spiral-dots",
    num_train: int = 1000,
    num_test: int = 500,
    num_steps: int = 2000,
    batch_size: int = 100,
    num_neighbors: int = 5,
    num_samples: int = 10,
    seed: int = 0,
    out: str | Path | None = "mapa-demo",
    progress: bool | None = None,
) -> DemoResult:
    """Train the quickstart model with MAPA; write ``result.json`` and ``demo.png`` to ``out``."""
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    data = load_synthetic(dataset, num_train=num_train, num_test=num_test, seed=seed)
    X, sigma, N = data.train, data.sigma, data.train.shape[0]
    net = make_decoder(data.latent_dim, X.shape[1])
    model = empirical_model(net, sigma, N, data.latent_dim, pca_codes(X, data.latent_dim))  # the README's model

    batch_size = min(batch_size, N)  # a small training set is one batch
    posterior = MAPAPosterior.fit(X, likelihood="normal", scale=sigma, num_cached=min(64, N), progress=progress)
    guide = MAPAGuide(model, posterior, create_plates=lambda x, idx: pyro.plate("data", N, subsample=idx))
    svi = SVI(model, guide, Adam({"lr": 1e-2}), loss=MAPA_ELBO(num_neighbors=num_neighbors, num_samples=num_samples))

    def exact(x):
        return empirical_log_likelihood(net, pyro.param("codes"), x, sigma).mean().item()

    svi.evaluate_loss(X[:batch_size], torch.arange(batch_size))  # initialises the codes
    before = exact(X), exact(data.test)
    history = []
    start = time.perf_counter()
    for step in progress_bar(range(num_steps), progress=progress, desc="MAPA training"):
        idx = torch.randint(0, N, (batch_size,))
        svi.step(X[idx], idx)
        if (step + 1) % max(1, num_steps // 20) == 0:
            history.append((step + 1, exact(X), exact(data.test)))
    seconds = time.perf_counter() - start
    result = DemoResult(
        dataset, N, num_steps, seconds, *before, exact(X), exact(data.test),
        data.log_likelihood(data.test).mean().item(),
    )
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.json").write_text(json.dumps({**asdict(result), "history": history}, indent=2))
        _plot(out / "demo.png", data, net, pyro.param("codes").detach(), history, result)
    return result


def _plot(path: Path, data, net, codes, history, result: DemoResult) -> None:
    from matplotlib.figure import (
        Figure,  # not pyplot: no global backend switch, no open figures
    )

    fig = Figure(figsize=(11, 4.5))
    ax_data, ax_ll = fig.subplots(1, 2)
    ax_data.scatter(*data.train[:, :2].T, s=4, c="0.7", label="training data")
    with torch.no_grad():
        decoded = net(codes)
    order = codes[:, 0].argsort()
    ax_data.scatter(*decoded[order, :2].T, s=6, c=codes[order, 0], cmap="viridis", label="decoder(codes), coloured by code")
    ax_data.set_title(f"{result.dataset}: learned decoder on the learned codes")
    ax_data.legend(loc="lower left", fontsize=8)
    ax_data.set_aspect("equal")
    steps, train, test = zip(*history)
    ax_ll.plot(steps, train, label="empirical model, train")
    ax_ll.plot(steps, test, label="empirical model, test")
    ax_ll.axhline(result.true_test, color="k", ls="--", label="true model, test")
    ax_ll.set_xlabel("SVI step")
    ax_ll.set_ylabel("log-likelihood (nats per point)")
    ax_ll.set_ylim(bottom=max(min(train + test), result.true_test - 10))
    ax_ll.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
