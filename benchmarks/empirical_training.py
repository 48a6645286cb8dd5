"""Train the empiricalized model by MAPA_ELBO and score it exactly at checkpoints.

Shared by crossover.py and ks_grid.py. The model is `pyro_mapa.experiments.baselines.empirical_model`
(the comparison's decoder, fixed sigma, one code per training point); "mapa-K-S" trains
it with `MAPA_ELBO(K, S)`, "exact" with `MAPA_ELBO(N, 0)` (exact enumeration: every code
once per step). At each checkpoint the empiricalized model is scored by its exact
log-likelihood (`empirical_log_likelihood`, no sampling) on the requested point sets;
evaluation passes are not counted.
"""

from __future__ import annotations

import time

import pyro
import torch
import torch._dynamo  # noqa: F401  (torch.optim imports it on its first step, ~5 s: not a cost of any run)
from pyro.infer import SVI
from pyro.optim import Adam

from pyro_mapa import MAPAGuide, MAPAPosterior, pca_codes
from pyro_mapa.evaluation import empirical_log_likelihood
from pyro_mapa.experiments import Split, parse_method
from pyro_mapa.experiments.baselines import empirical_model
from pyro_mapa.experiments.methods import MAPA
from pyro_mapa.models import make_decoder
from pyro_mapa.models.counting import PassCounter


def train_curve(
    split: Split,
    method: str,
    seed: int,
    budget: int,
    *,
    unit: str = "passes",
    batch: int = 100,
    lr: float = 1e-2,
    checkpoints: int = 20,
    code_penalty: float = 0.0,
    code_init: str = "random",
    bandwidth_factor: float = 1.0,
    score_sets: tuple[str, ...] = ("test",),
) -> list[dict]:
    """One record per checkpoint: steps, decoder passes, training seconds and the exact
    mean log-likelihood on each of ``score_sets`` ("train", "val", "test").

    :param unit: what ``budget`` counts, "passes" (decoder passes) or "steps".
    :param code_penalty: ``lambda``: adds ``log N(Z; 0, I / lambda)`` (up to a constant)
        to the objective, once per step (MAP codes instead of maximum likelihood).
    :param code_init: "random" (the model's own ``0.1 N(0, I)``) or "pca"
        (`pyro_mapa.pca_codes`: the training points' top principal components, scaled to
        unit variance).
    :param bandwidth_factor: the cache's ``h`` in units of its default ``sqrt(2) sigma``.
    """
    method = parse_method(method)
    if not isinstance(method, MAPA):
        raise ValueError(f"{method.label}: only mapa-K-S and exact train the empiricalized model")
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    train, sigma, (num_points, obs_dim), d = split.train, split.sigma, split.train.shape, split.latent_dim
    if code_init not in ("pca", "random"):
        raise ValueError(f"code_init must be 'random' or 'pca', got {code_init!r}")
    decoder = make_decoder(d, obs_dim)
    counter = PassCounter(decoder)
    init_codes = pca_codes(train, d) if code_init == "pca" else None
    likelihood_model = empirical_model(decoder, sigma, num_points, d, init_codes)

    def model(x, idx=None):
        likelihood_model(x, idx)
        if code_penalty:
            pyro.factor("code_prior", -0.5 * code_penalty * pyro.param("codes").pow(2).sum())

    posterior = MAPAPosterior.fit(
        train, bandwidth=bandwidth_factor * 2**0.5 * sigma,
        num_cached=min(num_points, max(64, method.num_neighbors, method.num_samples)), progress=False,
    )
    guide = MAPAGuide(model, posterior, create_plates=lambda x, idx=None: pyro.plate("data", num_points, subsample=idx))
    elbo = method.bound(num_points)
    svi = SVI(model, guide, Adam({"lr": lr}), loss=elbo)
    points = {"train": train, "val": split.val, "test": split.test}
    records, steps, seconds = [], 0, 0.0

    def spent() -> int:
        return counter.count if unit == "passes" else steps

    next_checkpoint = budget / checkpoints
    while spent() < budget:
        idx = torch.randint(0, num_points, (batch,))
        start = time.perf_counter()
        svi.step(train[idx], idx)
        seconds += time.perf_counter() - start
        steps += 1
        if spent() >= next_checkpoint:
            next_checkpoint += budget / checkpoints
            record = {"steps": steps, "passes": counter.count, "seconds": seconds}
            with counter.paused():
                codes = pyro.param("codes").detach()
                for name in score_sets:
                    record[name] = empirical_log_likelihood(decoder, codes, points[name], sigma).mean().item()
            records.append(record)
    counter.remove()
    return records
