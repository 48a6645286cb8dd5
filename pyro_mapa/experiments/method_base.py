"""What every method of the comparison is: its training set-up and the interface it implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar, NamedTuple

import pyro
import pyro.distributions as dist
import torch

from ..cache import NeighborhoodBatches
from .split import Split

__all__ = ["Method", "TrainingSetup", "data_plates", "set_up_guide"]


class TrainingSetup(NamedTuple):
    """What a method trains: the model, its guide and loss, the VAE family's encoder
    (``None`` for the others; its passes are counted beside the decoder's), and where its
    minibatches come from (``None``: uniform draws)."""

    model: Callable
    guide: Callable
    loss: pyro.infer.ELBO
    encoder: torch.nn.Module | None
    batches: NeighborhoodBatches | None = None


@dataclass(frozen=True)
class Method(ABC):
    """One method of the comparison."""

    #: the name before any numbers (``"iwae"`` of ``"iwae-20"``)
    kind: ClassVar[str]
    #: whether it trains the empiricalized model (scored with a GMM fitted to its codes,
    #: and by the empiricalized model's exact log-likelihood beside it)
    empirical: ClassVar[bool] = False
    #: whether its loss is the ELBO of an amortized encoder, whose latent terms a KL warm-up
    #: (:class:`~pyro_mapa.experiments.warmup.KLWarmup`) may weigh
    warms_up: ClassVar[bool] = False

    @property
    def label(self) -> str:
        """The method's name in tables, ``results.json`` and ``--methods``."""
        return self.kind

    @abstractmethod
    def setup(self, split: Split, decoder: torch.nn.Module, init_codes: torch.Tensor | None) -> TrainingSetup:
        """Model, guide and loss on ``split``'s training points around ``decoder``, per-point
        codes started at ``init_codes`` (``None``: the method's own default)."""
        raise NotImplementedError

    @abstractmethod
    def train_codes(self, setup: TrainingSetup, train: torch.Tensor) -> torch.Tensor:
        """The training points' codes under the current parameters (the scorer's anchors)."""
        raise NotImplementedError

    def continuous_prior(self, setup: TrainingSetup, codes: torch.Tensor, seed: int) -> dist.Distribution:
        """The prior of the continuous model the method is scored as (``codes``: the training
        points' codes under the current parameters): ``N(0, I)``."""
        return dist.Normal(torch.zeros(codes.shape[1]), 1.0).to_event(1)


def data_plates(num_points: int) -> Callable:
    """``create_plates`` for a guide of the comparison's models: the data plate of ``N`` points, subsampled by ``idx``."""
    def create_plates(x, idx=None):
        return pyro.plate("data", num_points, subsample=idx)

    return create_plates


def set_up_guide(guide: Callable, train: torch.Tensor, num_points: int | None = None) -> Callable:
    """Call a guide that traces the model once, on the first ``num_points`` points (all ``N``
    by default: an AutoGuide's point ``n`` then starts at its own code). ``train`` is the fixed
    data (under dynamic binarization, the fixed draw): a :class:`~pyro_mapa.MAPAGuide` checks
    at this first call that it is the data its cache was built from."""
    idx = torch.arange(len(train) if num_points is None else min(num_points, len(train)))
    guide(train[idx], idx)
    return guide
