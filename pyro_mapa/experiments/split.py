"""What a comparison runs on: train, validation and test points, their observation model,
and the shape of the model every method shares."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..datasets import (
    SYNTHETIC_DATASETS,
    load_array,
    load_digits,
    load_fashion_mnist,
    load_synthetic,
)
from ..models import LAYERS, BernoulliLikelihood, Likelihood, NormalLikelihood

__all__ = ["BINARIZATIONS", "DATASETS", "Split", "load_split", "split_array"]

#: The built-in data sets of :func:`load_split`.
DATASETS = (*SYNTHETIC_DATASETS, "digits", "fashion-mnist")
#: How :func:`load_split` binarizes fashion-mnist's training images: one fixed draw, or a fresh draw at every step.
BINARIZATIONS = ("static", "dynamic")


@dataclass
class Split:
    """Train, validation and test points with what the comparison needs to know.

    :param likelihood: the observation model every method uses.
    :param latent_dim: ``d``, the codes' dimension.
    :param hidden: ``H``, the width of the decoder's (and encoder's) two hidden layers.
    :param layers: those layers' kind (:data:`~pyro_mapa.models.LAYERS`): ``"tanh"``, or
        ``"gated"`` (:class:`~pyro_mapa.models.GatedDense`, the published networks').
    :param true_test: the true model's test log-likelihood, where known.
    :param notes: how the split was made (recorded in ``results.json``).
    :param train_probs: for *dynamic* binarization, the training points' grey levels in
        ``[0, 1]`` (``N x D``, the probability of each 1): every training step then observes a
        fresh Bernoulli draw of its points (:meth:`train_batch`), while ``train`` stays one
        fixed draw for what needs fixed data (MAPA's cache, the codes' start, the scorer).
        ``None``: static, every step observes ``train``.
    """

    name: str
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    likelihood: Likelihood
    latent_dim: int
    true_test: float | None = None
    hidden: int = 50
    notes: dict = field(default_factory=dict)
    train_probs: torch.Tensor | None = None
    layers: str = "tanh"

    def __post_init__(self):
        if self.layers not in LAYERS:
            raise ValueError(f"layers must be one of {LAYERS}, got {self.layers!r}")
        probs, train = self.train_probs, self.train
        if probs is None:
            return
        if not self.likelihood.binary:
            raise ValueError("dynamic binarization (train_probs) needs a Bernoulli likelihood")
        if probs.shape != train.shape:
            raise ValueError(f"train_probs has shape {tuple(probs.shape)}, train {tuple(train.shape)}: one probability "
                             "per entry")
        if probs.dtype != train.dtype or probs.device != train.device:
            raise ValueError(f"train_probs ({probs.dtype} on {probs.device}) must have train's dtype and device "
                             f"({train.dtype} on {train.device})")
        if not ((probs >= 0) & (probs <= 1)).all():
            raise ValueError("train_probs must hold probabilities in [0, 1]: it has values outside, or NaN")

    def train_batch(self, idx: torch.Tensor) -> torch.Tensor:
        """The training points ``idx`` as a training step observes them: ``train[idx]``, or
        with dynamic binarization a fresh draw ``x ~ Bernoulli(train_probs[idx])``."""
        return self.train[idx] if self.train_probs is None else torch.bernoulli(self.train_probs[idx])

    @property
    def sigma(self) -> float | None:
        """The Gaussian likelihood's ``sigma`` (``None`` for another likelihood)."""
        return getattr(self.likelihood, "sigma", None)

    def describe(self) -> str:
        """One line: the data set, its size, the likelihood and the model's shape."""
        dynamic = ", dynamic binarization" if self.train_probs is not None else ""
        return (
            f"{self.name}: N = {len(self.train)}, D = {self.train.shape[1]}, {_describe(self.likelihood)}{dynamic}, "
            f"latent {self.latent_dim}, hidden {self.hidden} x 2{' gated' if self.layers == 'gated' else ''}"
        )


def _describe(likelihood: Likelihood) -> str:
    return f"normal sigma = {likelihood.sigma}" if isinstance(likelihood, NormalLikelihood) else "bernoulli"


def load_split(
    name: str,
    num_train: int | None = None,
    seed: int = 0,
    *,
    latent_dim: int | None = None,
    hidden: int | None = None,
    num_val: int | None = None,
    num_test: int | None = None,
    binarization: str = "static",
    layers: str | None = None,
) -> Split:
    """A built-in data set, split.

    * a synthetic set (:data:`~pyro_mapa.datasets.SYNTHETIC_DATASETS`): ``num_train`` points
      (default 1,000), 500 validation and 500 test points drawn with ``seed``, the true test
      log-likelihood known;
    * ``"digits"``: scikit-learn's 1,797 8x8 images scaled to [0, 1], shuffled by ``seed``:
      1,000 / 300 / 497, Gaussian with ``sigma = 0.2``, 2-D latent;
    * ``"fashion-mnist"``: Debian's Fashion-MNIST, stochastically binarized with ``seed``
      (:func:`~pyro_mapa.datasets.load_fashion_mnist`), Bernoulli, latent 40, hidden 300: the
      first ``num_train`` of the 50,000 training images (default all), the first ``num_val``
      of the 10,000 validation images (default 1,000: they choose the checkpoint) and the first
      ``num_test`` of the 10,000 test images (default 2,000, a fixed subset scored with its
      standard error). ``binarization="dynamic"``: the training steps observe a fresh draw
      of their images each time (:attr:`Split.train_probs`, the published protocol's *dynamic
      binarization*); validation and test images stay the fixed draw.

    ``latent_dim``, ``hidden`` and ``layers`` (``"tanh"`` for every set) override the set's defaults.
    """
    if binarization not in BINARIZATIONS:
        raise ValueError(f"binarization must be one of {BINARIZATIONS}, got {binarization!r}")
    if binarization == "dynamic" and name != "fashion-mnist":
        raise ValueError(f"dynamic binarization applies to fashion-mnist's grey levels, not {name!r}")
    if name == "fashion-mnist":
        images = load_fashion_mnist(seed=seed)
        num_train, num_val, num_test = num_train or 50_000, num_val or 1_000, num_test or 2_000
        _check_sizes(name, (num_train, num_val, num_test), (50_000, 10_000, 10_000))
        # a copy: a view would keep all 70,000 grey images alive
        probs = load_fashion_mnist(binarize=None).train[:num_train].clone() if binarization == "dynamic" else None
        split = Split(name, images.train[:num_train], images.val[:num_val], images.test[:num_test],
                      BernoulliLikelihood(), 40, hidden=300, train_probs=probs)
        drawn = "training images drawn afresh at every step; validation and test " * (binarization == "dynamic")
        split.notes = {"binarization": f"{binarization}: {drawn}stochastic, seed {seed}",
                       "train": f"the first {num_train} of 50,000",
                       "val": f"the first {num_val} of 10,000", "test": f"the first {num_test} of 10,000"}
    elif name == "digits":
        if num_train not in (None, 1000) or num_val or num_test:
            raise ValueError("digits has a fixed split (1,000 / 300 / 497 points); num_train, num_val, num_test cannot apply")
        x = load_digits(seed)
        split = Split(name, x[:1000], x[1000:1300], x[1300:], NormalLikelihood(0.2), 2)
    elif name in SYNTHETIC_DATASETS:
        if num_val or num_test:
            raise ValueError(f"{name} has 500 validation and 500 test points; num_val and num_test cannot apply")
        data = load_synthetic(name, num_train=num_train or 1000, num_test=1000, seed=seed)
        test = data.test[500:]
        split = Split(name, data.train, data.test[:500], test, NormalLikelihood(data.sigma), data.latent_dim,
                      data.log_likelihood(test).mean().item())
    else:
        raise ValueError(f"unknown data set {name!r}; choose from {DATASETS}")
    return replace(split, latent_dim=latent_dim or split.latent_dim, hidden=hidden or split.hidden,
                   layers=layers or split.layers)  # checked again by Split


def split_array(
    path: str | Path,
    likelihood: Likelihood,
    seed: int = 0,
    *,
    fractions: tuple[float, float] = (0.1, 0.1),
    latent_dim: int = 2,
    hidden: int = 50,
    layers: str = "tanh",
) -> Split:
    """A user's ``N x D`` array (:func:`~pyro_mapa.datasets.load_array`) shuffled by ``seed``
    and split into validation and test fractions (10% each by default) and the rest for
    training; the permutation's seed and the sizes are recorded in ``notes``."""
    x = load_array(path)
    if likelihood.binary and not ((x == 0) | (x == 1)).all():
        raise ValueError(f"{path} holds values other than 0 and 1; --likelihood bernoulli needs binary data")
    num_val, num_test = (max(1, int(round(f * len(x)))) for f in fractions)
    if num_val + num_test >= len(x):
        raise ValueError(f"{path} has {len(x)} points: too few to hold out {num_val} + {num_test}")
    x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))]
    train, val, test = x[num_val + num_test :], x[:num_val], x[num_val : num_val + num_test]
    notes = {"source": str(path), "permutation seed": seed, "sizes (train, val, test)": [len(train), num_val, num_test]}
    return Split(Path(path).stem, train, val, test, likelihood, latent_dim, hidden=hidden, notes=notes, layers=layers)


def _check_sizes(name: str, sizes: tuple[int, ...], limits: tuple[int, ...]) -> None:
    for which, size, limit in zip(("num_train", "num_val", "num_test"), sizes, limits):
        if not 0 < size <= limit:
            raise ValueError(f"{name}: {which}={size} must lie in [1, {limit}]")
