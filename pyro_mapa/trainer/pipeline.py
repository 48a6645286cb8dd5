"""``train_mapa``: a user's data in, a saved model out (the ``pyro-mapa train`` command).

It builds (or loads) the cache, trains the empiricalized model with ``MAPAGuide`` and
``MAPA_ELBO`` on one process or, inside an initialised ``torch.distributed`` process group
(``torchrun``), on all of them (:class:`~pyro_mapa.trainer.DataParallelStep`), fits the prior
to the codes and returns a :class:`~pyro_mapa.trainer.TrainedModel`; rank 0 writes the cache
and the model.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyro
import torch

from .._checks import as_data_tensor, check_count
from .._progress import progress_bar
from ..cache import MAPAPosterior
from ..infer import MAPA_ELBO, MAPAGuide
from ..models import (
    EmpiricalModel,
    Likelihood,
    as_likelihood,
    fit_prior,
    make_decoder,
    pca_codes,
)
from ..models.counting import PassCounter
from .data_parallel import DataParallelStep, minibatches, process_group_size
from .saved import TrainedModel

__all__ = ["train_mapa"]


def _cache(data: torch.Tensor, likelihood: Likelihood, num_cached: int, path: Path | None, search: str,
           distributed: bool, progress: bool | None) -> MAPAPosterior:
    """The cache at ``path`` if one is there (for this very data), else a new one (saved there by rank 0)."""
    if path is not None and path.exists():
        return MAPAPosterior.load(path, data)
    posterior = MAPAPosterior.fit(data, kernel=likelihood.cache_kernel(), num_cached=num_cached, search=search,
                                  distributed=distributed, progress=progress)
    if path is not None and process_group_size()[0] == 0:
        posterior.save(path)
    return posterior


def train_mapa(
    data,
    likelihood: Likelihood | float,
    *,
    latent_dim: int = 2,
    hidden: int = 50,
    num_neighbors: int = 5,
    num_samples: int = 10,
    epochs: int = 10,
    batch_size: int = 100,
    lr: float = 1e-3,
    prior: str = "gmm",
    num_components: int = 10,
    cache: str | os.PathLike | None = None,
    search: str = "exact",
    code_gradients: str = "rows",
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool | None = None,
) -> TrainedModel:
    """Train MAPA on ``data`` (``N x D``) and fit the prior (docs/math.md, sections 1, 3 and 9).

    On every rank of an initialised process group (``torchrun``) it trains data-parallel:
    each rank takes ``batch_size`` points a step (disjoint across ranks), draws its own
    particles (seed ``seed + rank``), and the gradients are averaged; without one it trains in
    this process. The codes start at the data's principal components, the decoder at torch's
    default initialisation under ``seed``; Adam (``torch.optim``) at ``lr``.

    :param likelihood: a :class:`~pyro_mapa.models.Likelihood` (``BernoulliLikelihood()`` for
        binary data) or a Gaussian's ``sigma``; its :meth:`cache_kernel` builds the cache.
    :param num_neighbors: ``K``; :param num_samples: ``S`` (:class:`~pyro_mapa.MAPA_ELBO`).
    :param prior: the family fitted to the codes (:func:`~pyro_mapa.fit_prior`).
    :param cache: a cache file: loaded if it exists (it must be this data's), else written.
    :param search: the cache's neighbour search, ``"exact"`` or ``"faiss"``.
    :param code_gradients: how the codes' gradient travels between ranks, ``"rows"`` or ``"dense"``.
    :param device: where the data, cache and model live (default: the data's own device); under
        ``torchrun`` with GPUs, each rank's own (``cuda:LOCAL_RANK``, the nccl backend).
    :returns: the trained model; its ``settings`` hold the timings, this rank's training
        decoder passes (rows through the decoder) and the last epoch's mean loss.
    """
    likelihood = as_likelihood(likelihood)
    data = as_data_tensor(data, binary=likelihood.binary)
    data = data if device is None else data.to(device)
    for name, count in [("latent_dim", latent_dim), ("hidden", hidden), ("num_neighbors", num_neighbors),
                        ("epochs", epochs), ("batch_size", batch_size)]:
        check_count(count, name)
    num_points, obs_dim = data.shape
    if latent_dim > min(num_points, obs_dim):
        raise ValueError(f"latent_dim={latent_dim} is larger than the data allow (N={num_points}, D={obs_dim})")
    rank, world = process_group_size()
    show = progress if rank == 0 else False
    timings = {}
    clock = time.perf_counter()
    posterior = _cache(data, likelihood, max(64, num_neighbors), None if cache is None else Path(cache), search,
                       world > 1, show)
    timings["cache_seconds"] = time.perf_counter() - clock
    torch.manual_seed(seed)  # the same decoder on every rank (DDP also broadcasts rank 0's)
    with pyro.settings.context(module_local_params=True):  # the modules' own parameters, not the param store
        model = EmpiricalModel(make_decoder(latent_dim, obs_dim, hidden).to(data.device, data.dtype), pca_codes(data, latent_dim),
                               likelihood)
        guide = MAPAGuide(model, posterior, create_plates=lambda x, idx=None: pyro.plate("data", num_points, subsample=idx))
        guide(data[:1], torch.arange(1, device=data.device))  # set up now: it traces the model, drawing from torch's generator
        loss = MAPA_ELBO(num_neighbors, num_samples, max_plate_nesting=1)(model, guide)
        step = DataParallelStep(loss, torch.optim.Adam(loss.parameters(), lr=lr), code_gradients)
        pyro.set_rng_seed(seed + rank)  # each rank its own particles
        passes = PassCounter(model.decoder)
        clock, steps = time.perf_counter(), 0
        bar = progress_bar(range(epochs), progress=show, desc="training MAPA", unit="epoch")
        for epoch in bar:
            batches = (idx.to(data.device) for idx in minibatches(num_points, batch_size, seed, epoch))
            losses = [step(data[idx], idx) for idx in batches]
            steps += len(losses)
            bar.set_postfix(loss=f"{sum(losses) / len(losses) / num_points:.3f}/point")
        timings["train_seconds"] = time.perf_counter() - clock
        passes.remove()
    codes = model.codes.detach()
    clock = time.perf_counter()
    fitted = fit_prior(codes, prior, num_components=num_components, seed=seed, progress=show)
    timings["prior_seconds"] = time.perf_counter() - clock
    settings = {"obs_dim": obs_dim, "hidden": hidden, "num_neighbors": num_neighbors, "num_samples": num_samples,
                "epochs": epochs, "batch_size": batch_size, "lr": lr, "processes": world, "steps": steps,
                "decoder_passes": passes.count, "seed": seed, "search": posterior.search, "code_gradients": code_gradients,
                "last_epoch_loss_per_point": sum(losses) / len(losses) / num_points, **timings}
    return TrainedModel(model.decoder.requires_grad_(False), codes, likelihood, fitted,
                        TrainedModel.fingerprint_of(data), settings)
