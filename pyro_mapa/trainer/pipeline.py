"""``train_mapa``: a user's data in, a saved model out (the ``pyro-mapa train`` command).

It builds (or loads) the cache, trains the empiricalized model with ``MAPAGuide`` and
``MAPA_ELBO`` on one process or, inside an initialised ``torch.distributed`` process group
(``torchrun``), on all of them (:class:`~pyro_mapa.trainer.DataParallelStep`), fits the prior
to the codes and returns a :class:`~pyro_mapa.trainer.TrainedModel`; rank 0 writes the cache
and the model.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pyro
import torch
import torch.distributed as dist

from .._checks import as_data_tensor, check_code_noise, check_count
from .._progress import progress_bar
from ..cache import Kernel, MAPAPosterior
from ..evaluation import empirical_log_likelihood
from ..infer import MAPA_ELBO, MAPAGuide
from ..models import (
    LAYERS,
    PRIOR_FAMILIES,
    EmpiricalModel,
    Likelihood,
    as_likelihood,
    fit_prior,
    make_decoder,
    pca_codes,
)
from ..models.counting import PassCounter
from .data_parallel import (
    CODE_GRADIENTS,
    DataParallelStep,
    minibatches,
    process_group_size,
)
from .saved import TrainedModel

__all__ = ["CODE_OPTIMIZERS", "PRIOR_FAMILIES", "train_mapa"]

#: How the codes are stepped: Adam on all of them, or SparseAdam on the rows a step decoded.
CODE_OPTIMIZERS = ("adam", "sparse-adam")


@dataclass(frozen=True)
class _Settings:
    """:func:`train_mapa`'s keyword arguments of the same names (documented there)."""

    latent_dim: int
    hidden: int
    layers: str
    num_neighbors: int
    num_samples: int
    epochs: int
    batch_size: int
    lr: float
    prior: str
    num_components: int
    shared_draws: bool
    search: str
    code_gradients: str
    code_optimizer: str
    code_noise: float
    validate_every: int
    seed: int

    def check(self, num_points: int, obs_dim: int, world: int) -> None:
        """Every setting against the data and the process group, before the cache is built: a
        typo must not cost an ``O(N^2 D)`` search."""
        for name in ("latent_dim", "hidden", "num_neighbors", "epochs", "batch_size", "num_components",
                     "validate_every"):
            check_count(getattr(self, name), name)
        if self.latent_dim > min(num_points - 1, obs_dim):
            raise ValueError(f"latent_dim={self.latent_dim} is larger than the data allow "
                             f"(N - 1 = {num_points - 1}, D = {obs_dim})")
        if self.num_neighbors > num_points:
            raise ValueError(f"num_neighbors K={self.num_neighbors} is larger than the number of points N={num_points}")
        if self.batch_size * world > num_points:
            raise ValueError(f"batch_size={self.batch_size} on {world} process(es) needs at least "
                             f"{self.batch_size * world} points, got N={num_points}")
        if self.layers not in LAYERS:
            raise ValueError(f"layers must be one of {LAYERS}, got {self.layers!r}")
        if self.prior not in PRIOR_FAMILIES:
            raise ValueError(f"prior must be one of {PRIOR_FAMILIES}, got {self.prior!r}")
        check_code_noise(self.code_noise, prior_family=self.prior)
        if self.prior == "gmm" and self.num_components > num_points:
            raise ValueError(f"num_components={self.num_components} is larger than the number of points N={num_points}")
        if self.code_gradients not in CODE_GRADIENTS:
            raise ValueError(f"code_gradients must be one of {CODE_GRADIENTS}, got {self.code_gradients!r}")
        if self.code_optimizer not in CODE_OPTIMIZERS:
            raise ValueError(f"code_optimizer must be one of {CODE_OPTIMIZERS}, got {self.code_optimizer!r}")
        if self.code_optimizer == "sparse-adam" and self.code_gradients == "dense" and world > 1:
            raise ValueError("sparse codes travel as rows: use code_gradients='rows' with code_optimizer='sparse-adam'")


def _device(device: str | torch.device | None, data: torch.Tensor) -> torch.device:
    """Where this rank works: ``device``, or the data's; ``"cuda"`` in a group is the rank's own GPU
    (``LOCAL_RANK``), made current, as nccl's collectives need."""
    device = data.device if device is None else torch.device(device)
    if device.type == "cuda":
        if device.index is None and process_group_size()[1] > 1:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", process_group_size()[0])))
        torch.cuda.set_device(device)
    return device


def _cache(data: torch.Tensor, kernel: Kernel, num_cached: int, path: Path | None, search: str,
           progress: bool | None) -> MAPAPosterior:
    """The cache at ``path`` if rank 0 finds one there (it must be this data's and settings'),
    else a new one, built by every rank of a group and saved there by rank 0."""
    rank, world = process_group_size()
    found = [path is not None and path.exists()]
    if world > 1:
        dist.broadcast_object_list(found, src=0)  # one decision for all ranks
    if found[0]:
        posterior = MAPAPosterior.load(path, data)
        wanted = {**kernel.calibrated(data).describe(), "search": search}
        have = {**posterior.kernel.describe(), "search": posterior.search}
        if have != wanted or posterior.num_cached < num_cached:
            raise ValueError(
                f"{path} holds a cache of this data with other settings ({have}, K_c = {posterior.num_cached}) than "
                f"asked ({wanted}, K_c >= {num_cached}): delete it, or give another cache path"
            )
        return posterior
    posterior = MAPAPosterior.fit(data, kernel=kernel, num_cached=num_cached, search=search, distributed=world > 1,
                                  progress=progress)
    if path is not None and rank == 0:
        posterior.save(path)
    return posterior


def train_mapa(
    data,
    likelihood: Likelihood | float,
    *,
    latent_dim: int = 2,
    hidden: int = 50,
    layers: str = "tanh",
    num_neighbors: int = 5,
    num_samples: int = 10,
    epochs: int = 10,
    batch_size: int = 100,
    lr: float = 1e-3,
    prior: str = "gmm",
    num_components: int = 10,
    shared_draws: bool = False,
    cache: str | os.PathLike | None = None,
    search: str = "exact",
    code_gradients: str = "rows",
    code_optimizer: str = "adam",
    code_noise: float = 0.0,
    validation: torch.Tensor | None = None,
    validate_every: int = 1,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool | None = None,
) -> TrainedModel:
    """Train MAPA on ``data`` (``N x D``) and fit the prior (docs/math.md, sections 1, 3 and 9).

    On every rank of an initialised process group (``torchrun``) it trains data-parallel:
    each rank takes ``batch_size`` points a step (disjoint across ranks), draws its own
    particles (seed ``seed + 1 + rank``, on a generator of its own: the caller's random state is
    left alone), and the gradients are averaged; without one it trains in this process. The
    codes start at the data's principal components, the decoder at torch's default
    initialisation under ``seed``; Adam (``torch.optim``) at ``lr``.

    :param likelihood: a :class:`~pyro_mapa.models.Likelihood` (``BernoulliLikelihood()`` for
        binary data) or a Gaussian's ``sigma``; its :meth:`cache_kernel` builds the cache.
    :param hidden: the width of the decoder's two hidden layers; :param layers: their kind,
        ``"tanh"`` or ``"gated"`` (:func:`~pyro_mapa.models.make_decoder`).
    :param num_neighbors: ``K``; :param num_samples: ``S`` (:class:`~pyro_mapa.MAPA_ELBO`).
    :param prior: the family fitted to the codes (:func:`~pyro_mapa.fit_prior`).
    :param num_components: the mixture's components, for ``prior="gmm"``.
    :param shared_draws: a batch's points take their uncached draws from one shared stream
        (``MAPAGuide(shared_tail=True)``, docs/math.md, section 3): each point's estimate keeps its
        law, and a step decodes fewer codes.
    :param cache: a cache file: loaded if it exists (it must be this data's), else written.
    :param search: the cache's neighbour search, ``"exact"`` or ``"faiss"``.
    :param code_gradients: how the codes' gradient travels between ranks, ``"rows"`` or ``"dense"``.
    :param code_optimizer: ``"adam"`` (every code's moments updated every step, as Pyro's Adam
        does) or ``"sparse-adam"`` (``torch.optim.SparseAdam``: only the rows a step decoded, their
        moments too; the codes' gradient is sparse): at millions of points the dense update of all
        ``N x d`` codes costs more than the rest of a step (benchmarks/RESULTS.md).
    :param code_noise: ``tau``: every code a step decodes is perturbed by ``N(0, tau^2 I)``
        noise (no extra decoder passes), so that the decoder is fitted around the codes, not only
        at them, and the prior is the fitted law widened by that noise
        (:func:`~pyro_mapa.fit_prior`'s ``code_noise``; docs/math.md, section 10); what it did on
        Fashion-MNIST is in benchmarks/RESULTS.md ("Code noise").
    :param validation: held-out rows (``M x D``, not in ``data``). Trained long, the free codes
        overfit; with ``validation`` the model is scored every ``validate_every`` epochs and after
        the last by the empiricalized model's exact mean log-likelihood of these rows
        (:meth:`TrainedModel.log_likelihood`: it does not involve the prior; docs/math.md,
        section 10), and the best such checkpoint (decoder and codes; the earlier on a tie) is
        the one whose prior is fitted and that is returned. Its ``settings`` then hold
        ``validation_curve`` (``[epoch, score]`` pairs), ``best_epoch``,
        ``validation_log_likelihood``, ``num_validation`` and ``validation_seconds`` (not in
        ``train_seconds``); ``steps`` and ``decoder_passes`` still count every epoch trained.
    :param device: where the data, cache and model live (default: the data's own device);
        ``"cuda"`` in a process group is each rank's own GPU (``cuda:LOCAL_RANK``, made current for nccl).
    :returns: the trained model; its ``settings`` hold the timings, this rank's training
        decoder passes (rows through the decoder) and the last epoch's mean loss.
    """
    likelihood = as_likelihood(likelihood)
    data = as_data_tensor(data, binary=likelihood.binary)
    if validation is not None:
        validation = as_data_tensor(validation, "validation", binary=likelihood.binary).to(data.dtype)
        if validation.shape[1] != data.shape[1]:
            raise ValueError(f"validation has {validation.shape[1]} columns; data has {data.shape[1]}")
    elif validate_every != 1:
        raise ValueError(f"validate_every={validate_every} needs validation rows to score")
    rank, world = process_group_size()
    settings = _Settings(latent_dim, hidden, layers, num_neighbors, num_samples, epochs, batch_size, lr, prior, num_components,
                         shared_draws, search, code_gradients, code_optimizer, code_noise, validate_every, seed)
    settings.check(*data.shape, world)
    device = _device(device, data)
    if cache is not None and rank == 0:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
    show = progress if rank == 0 else False
    # a generator of its own (the cache's samples, the decoder, the particles): the caller's is left alone
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
            pyro.settings.context(module_local_params=True):  # the modules' own parameters, not the param store
        return _train(data.to(device), None if validation is None else validation.to(device), likelihood, settings,
                      None if cache is None else Path(cache), show)


class _BestCheckpoint:
    """The decoder and codes at the epoch whose held-out rows scored best (:func:`train_mapa`'s
    ``validation``; the earlier epoch on a tie), and every score: the empiricalized model's exact
    mean log-likelihood. In a process group each rank scores every ``P``-th row and the sums are
    all-reduced, so that every rank sees the same score and keeps the same epoch."""

    def __init__(self, model: EmpiricalModel, likelihood: Likelihood, validation: torch.Tensor):
        rank, world = process_group_size()
        self.model, self.likelihood, self.rows = model, likelihood, validation[rank::world]
        self.num_validation = len(validation)
        self.curve: list[list[float]] = []
        self.score, self.epoch, self.decoder_state, self.codes = None, 0, None, None

    def _mean_score(self) -> float:
        total = torch.zeros((), dtype=torch.float64, device=self.model.codes.device)
        if len(self.rows):
            total += empirical_log_likelihood(self.model.decoder, self.model.codes.detach(), self.rows,
                                              self.likelihood).double().sum()
        if process_group_size()[1] > 1:
            dist.all_reduce(total)
        return total.item() / self.num_validation

    def __call__(self, epoch: int) -> float:
        """Score the model after ``epoch`` epochs; keep a copy of it if it is the best yet."""
        score = self._mean_score()
        if math.isnan(score):
            raise ValueError(f"the held-out score is NaN after epoch {epoch}: training diverged "
                             f"(try a smaller lr); the best epoch so far was {self.epoch}")
        self.curve.append([epoch, score])
        if self.score is None or score > self.score:
            self.score, self.epoch = score, epoch
            self.decoder_state = {k: v.detach().clone() for k, v in self.model.decoder.state_dict().items()}
            self.codes = self.model.codes.detach().clone()
        return score

    def record(self) -> dict:
        return {"validation_curve": self.curve, "best_epoch": self.epoch, "validation_log_likelihood": self.score,
                "num_validation": self.num_validation}


def _train(data: torch.Tensor, validation: torch.Tensor | None, likelihood: Likelihood, settings: _Settings,
           posterior_path: Path | None, show: bool | None) -> TrainedModel:
    """:func:`train_mapa` once its settings are checked: cache, training, prior."""
    (num_points, obs_dim), device, (rank, world) = data.shape, data.device, process_group_size()
    timings = {}
    clock = time.perf_counter()
    posterior = _cache(data, likelihood.cache_kernel(), min(num_points, max(64, settings.num_neighbors)),
                       posterior_path, settings.search, show)
    timings["cache_seconds"] = time.perf_counter() - clock
    torch.manual_seed(settings.seed)  # the same decoder on every rank (DDP also broadcasts rank 0's)
    model = EmpiricalModel(make_decoder(settings.latent_dim, obs_dim, settings.hidden, settings.layers).to(device, data.dtype),
                           pca_codes(data, settings.latent_dim), likelihood,
                           sparse=settings.code_optimizer == "sparse-adam", code_noise=settings.code_noise)
    guide = MAPAGuide(model, posterior, shared_tail=settings.shared_draws,
                      create_plates=lambda x, idx=None: pyro.plate("data", num_points, subsample=idx))
    guide(data[:1], torch.arange(1, device=device))  # set up now: it traces the model, drawing
    loss = MAPA_ELBO(settings.num_neighbors, settings.num_samples, max_plate_nesting=1)(model, guide)
    if model.sparse:
        optimizers = [torch.optim.Adam(model.decoder.parameters(), lr=settings.lr),
                      torch.optim.SparseAdam([model.codes], lr=settings.lr)]
    else:
        optimizers = [torch.optim.Adam(loss.parameters(), lr=settings.lr)]
    step = DataParallelStep(loss, optimizers, settings.code_gradients)
    torch.manual_seed(settings.seed + 1 + rank)  # each rank its own particles
    passes = PassCounter(model.decoder)
    best = None if validation is None else _BestCheckpoint(model, likelihood, validation)
    clock, steps, validation_seconds = time.perf_counter(), 0, 0.0
    bar = progress_bar(range(settings.epochs), progress=show, desc="training MAPA", unit="epoch")
    for epoch in bar:
        batches = (idx.to(device) for idx in minibatches(num_points, settings.batch_size, settings.seed, epoch))
        losses = [step(data[idx], idx) for idx in batches]
        steps += len(losses)
        postfix = {"loss": f"{sum(losses) / len(losses) / num_points:.3f}/point"}
        if best is not None and ((epoch + 1) % settings.validate_every == 0 or epoch + 1 == settings.epochs):
            scored = time.perf_counter()
            with passes.paused():  # scoring, not training
                postfix["validation"] = f"{best(epoch + 1):.3f}/point (best: epoch {best.epoch})"
            validation_seconds += time.perf_counter() - scored
        bar.set_postfix(postfix)
    timings["train_seconds"] = time.perf_counter() - clock - validation_seconds
    passes.remove()
    # a plain module, as a load gives
    decoder = make_decoder(settings.latent_dim, obs_dim, settings.hidden, settings.layers).to(device, data.dtype)
    if best is None:
        codes = model.codes.detach()
        decoder.load_state_dict(model.decoder.state_dict())
    else:
        codes = best.codes
        decoder.load_state_dict(best.decoder_state)
        timings["validation_seconds"] = validation_seconds
    clock = time.perf_counter()
    fitted = fit_prior(codes, settings.prior, num_components=settings.num_components, seed=settings.seed, progress=show,
                       code_noise=settings.code_noise)
    timings["prior_seconds"] = time.perf_counter() - clock
    record = {**asdict(settings), "obs_dim": obs_dim, "processes": world, "steps": steps,
              "decoder_passes": passes.count, "search": posterior.search, "kernel": posterior.kernel.describe(), "num_cached": posterior.num_cached,
              "last_epoch_loss_per_point": sum(losses) / len(losses) / num_points, **timings,
              **({} if best is None else best.record())}
    return TrainedModel(decoder.requires_grad_(False), codes, likelihood, fitted, TrainedModel.fingerprint_of(data),
                        record)
