"""The comparison's methods as objects: each says how it builds its model, guide and loss,
where its training codes are, and which continuous prior scores it.

Adding a method is one class here and one entry in :data:`METHODS`; the training loop
(:mod:`pyro_mapa.experiments.training`) asks the method, never its name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar, NamedTuple

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoDelta, AutoNormal, init_to_value

from ..cache import Kernel, MAPAPosterior
from ..infer import DEFAULT_DEFENSIVE, IWAE_ELBO, MAPA_ELBO, MAPAGuide
from ..models import ExemplarMixture, Likelihood, fit_prior, pca_codes
from .baselines import (
    empirical_model,
    encoder_guide,
    exemplar_model,
    make_encoder,
    vae_model,
    vamp_prior,
    vampprior_model,
)
from .split import Split

__all__ = [
    "METHODS",
    "AutoDeltaMethod",
    "AutoNormalMethod",
    "Exact",
    "IWAE",
    "ExemplarVAE",
    "IWAEDReG",
    "MAPA",
    "Method",
    "TrainingSetup",
    "VAE",
    "VampPrior",
    "build_method",
    "parse_method",
]


class TrainingSetup(NamedTuple):
    """What a method trains: the model, its guide and loss, and the VAE family's encoder
    (``None`` for the others; its passes are counted beside the decoder's)."""

    model: Callable
    guide: Callable
    loss: pyro.infer.ELBO
    encoder: torch.nn.Module | None


@dataclass(frozen=True)
class Method(ABC):
    """One method of the comparison."""

    #: the name before any numbers (``"iwae"`` of ``"iwae-20"``)
    kind: ClassVar[str]
    #: whether it trains the empiricalized model (scored with a GMM fitted to its codes,
    #: and by the empiricalized model's exact log-likelihood beside it)
    empirical: ClassVar[bool] = False

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


def _create_plates(num_points: int) -> Callable:
    def create_plates(x, idx=None):
        return pyro.plate("data", num_points, subsample=idx)

    return create_plates


def _set_up(guide: Callable, train: torch.Tensor, num_points: int | None = None) -> Callable:
    """Call a guide that traces the model once, on the first ``num_points`` points (all ``N``
    by default: an AutoGuide's point ``n`` then starts at its own code)."""
    idx = torch.arange(len(train) if num_points is None else min(num_points, len(train)))
    guide(train[idx], idx)
    return guide


@dataclass(frozen=True)
class VAE(Method):
    """An amortized Gaussian encoder trained with ``Trace_ELBO``."""

    kind = "vae"

    def loss(self) -> pyro.infer.ELBO:
        return Trace_ELBO()

    def setup(self, split, decoder, init_codes):
        (num_points, obs_dim), d = split.train.shape, split.latent_dim
        encoder = make_encoder(obs_dim, d, split.hidden)
        return TrainingSetup(
            vae_model(decoder, split.likelihood, num_points, d), encoder_guide(encoder, num_points), self.loss(), encoder
        )

    def train_codes(self, setup, train):
        return setup.encoder(train).chunk(2, -1)[0].detach()


@dataclass(frozen=True)
class IWAE(VAE):
    """The same encoder with the per-datapoint IWAE bound of ``num_particles`` draws."""

    num_particles: int
    kind = "iwae"

    @property
    def label(self) -> str:
        return f"iwae-{self.num_particles}"

    def loss(self) -> pyro.infer.ELBO:
        return IWAE_ELBO(self.num_particles, max_plate_nesting=1)


@dataclass(frozen=True)
class IWAEDReG(IWAE):
    """IWAE with doubly-reparameterized gradients (:class:`~pyro_mapa.IWAE_ELBO`,
    ``estimator="dreg"``): the same bound, a lower-variance encoder gradient."""

    kind = "iwae-dreg"

    @property
    def label(self) -> str:
        return f"iwae-dreg-{self.num_particles}"

    def loss(self) -> pyro.infer.ELBO:
        return IWAE_ELBO(self.num_particles, max_plate_nesting=1, estimator="dreg")


@dataclass(frozen=True)
class VampPrior(VAE):
    """The VAE with VampPrior's learned mixture prior of the encoder at ``K`` pseudo-inputs
    (:func:`~pyro_mapa.experiments.baselines.vampprior_model`; ``vampprior-K``, the paper's
    ``K = 500``: ``vampprior-500``), trained with ``Trace_ELBO``. The pseudo-inputs start at training points drawn by the
    seed (pulled 5% towards 1/2 for binary data, inside the unit interval); their encoder
    passes count among the encoder's."""

    num_pseudo_inputs: int
    kind = "vampprior"

    @property
    def label(self) -> str:
        return f"vampprior-{self.num_pseudo_inputs}"

    def setup(self, split, decoder, init_codes):
        (num_points, obs_dim), d = split.train.shape, split.latent_dim
        encoder = make_encoder(obs_dim, d, split.hidden)
        start = split.train[torch.randint(0, num_points, (self.num_pseudo_inputs,))]
        if split.likelihood.binary:
            start = 0.9 * start + 0.05
        model = vampprior_model(decoder, encoder, split.likelihood, num_points, start)
        return TrainingSetup(model, encoder_guide(encoder, num_points), self.loss(), encoder)

    def continuous_prior(self, setup, codes, seed):
        """The learned VampPrior itself."""
        return vamp_prior(setup.encoder, pyro.param("pseudo_inputs"))


@dataclass(frozen=True)
class ExemplarVAE(VAE):
    """Exemplar VAE (:func:`~pyro_mapa.experiments.baselines.exemplar_model`): the prior of
    point ``n`` a mixture at the encoder means of its ``R = 10`` nearest training points
    (itself left out), retrieved once by the MAPA cache of the likelihood's kernel (the same
    search MAPA uses), one learned scale ``s``; ``Trace_ELBO``. Each step encodes the ``R + 1``
    retrieved points of every datapoint (counted as encoder passes). Scored with the full
    prior over all ``N`` training points' encoder means (:class:`~pyro_mapa.models.ExemplarMixture`)."""

    num_retrieved: int = 10
    kind = "exemplar"

    def setup(self, split, decoder, init_codes):
        (num_points, obs_dim), d = split.train.shape, split.latent_dim
        encoder = make_encoder(obs_dim, d, split.hidden)
        cache = MAPAPosterior.fit(split.train, kernel=split.likelihood.cache_kernel(),
                                  num_cached=min(self.num_retrieved + 1, num_points), progress=False)
        model = exemplar_model(decoder, encoder, split.likelihood, split.train, cache.table.index)
        return TrainingSetup(model, encoder_guide(encoder, num_points), self.loss(), encoder)

    def continuous_prior(self, setup, codes, seed):
        """``(1/N) sum_m N(mu_phi(x_m), s^2 I)`` over every training point."""
        return ExemplarMixture(codes, pyro.param("exemplar_scale").detach())


@dataclass(frozen=True)
class AutoNormalMethod(Method):
    """Pyro's ``AutoNormal`` on the VAE model: non-amortized local latents."""

    kind = "autonormal"
    autoguide: ClassVar[type] = AutoNormal

    def setup(self, split, decoder, init_codes):
        num_points = len(split.train)
        init = {} if init_codes is None else {"init_loc_fn": init_to_value(values={"z": init_codes})}
        model = vae_model(decoder, split.likelihood, num_points, split.latent_dim)
        guide = self.autoguide(model, create_plates=_create_plates(num_points), **init)
        return TrainingSetup(model, _set_up(guide, split.train), Trace_ELBO(), None)

    def train_codes(self, setup, train):
        return setup.guide.median(train)["z"].detach()


@dataclass(frozen=True)
class AutoDeltaMethod(AutoNormalMethod):
    """Pyro's ``AutoDelta`` on the VAE model: a point per datapoint (MAP)."""

    kind = "autodelta"
    autoguide: ClassVar[type] = AutoDelta


@dataclass(frozen=True)
class MAPA(Method):
    """The empiricalized model with :class:`~pyro_mapa.MAPAGuide` and
    :class:`~pyro_mapa.MAPA_ELBO` of ``K`` neighbours and ``S`` samples.

    :param kernel: the cache's kernel: ``""``, the likelihood's default
        (:meth:`~pyro_mapa.models.Likelihood.cache_kernel`); ``"p<perplexity>"``, the same distance
        with ``T`` calibrated to that median perplexity (:meth:`~pyro_mapa.Kernel.auto`);
        ``"eps<eps>"``, the Bernoulli kernel of that flip probability. Named after an ``@``:
        ``"mapa-1-10@p10"``.
    :param defensive: the least share ``lambda_n`` of the ``S`` draws that go to the uncached
        indices (:class:`~pyro_mapa.infer.IndexProposal`); named ``d<share>`` after the ``@``,
        comma-separated from a kernel: ``"mapa-1-10@p10,d0.99"``.
    """

    num_neighbors: int
    num_samples: int
    kernel: str = ""
    defensive: float = DEFAULT_DEFENSIVE
    kind = "mapa"
    empirical = True

    def __post_init__(self):
        if self.kernel:
            self.cache_kernel(None)  # a bad spec is named at once, before any data
        if not 0.0 <= self.defensive < 1.0:
            raise ValueError(f"{self.kind}: the defensive share must lie in [0, 1), got d{self.defensive:g}")

    @property
    def options(self) -> str:
        """What follows the ``@`` in the label (empty for the defaults)."""
        options = [self.kernel] if self.kernel else []
        if self.defensive != DEFAULT_DEFENSIVE:
            options.append(f"d{self.defensive}")
        return "@" + ",".join(options) if options else ""

    @property
    def label(self) -> str:
        return f"mapa-{self.num_neighbors}-{self.num_samples}{self.options}"

    def cache_kernel(self, likelihood: Likelihood | None) -> Kernel:
        """The cache's kernel for data of ``likelihood`` (see the class docstring)."""
        spec = self.kernel
        try:
            if spec.startswith("p"):
                return Kernel.auto("bernoulli" if likelihood is not None and likelihood.binary else "gaussian", float(spec[1:]))
            if spec.startswith("eps"):
                return Kernel.bernoulli(float(spec[3:]))
        except ValueError as e:
            raise ValueError(f"{self.kind}: bad kernel {spec!r}: {e}") from e
        if spec:
            raise ValueError(f"{self.kind}: unknown kernel {spec!r}: use p<perplexity> (e.g. p10) or eps<flip probability>")
        return likelihood.cache_kernel()

    def num_cached(self, num_points: int) -> int:
        """``K_c`` of the cache: 64, or ``K`` if more."""
        return max(64, self.num_neighbors)

    def bound(self, num_points: int) -> MAPA_ELBO:
        return MAPA_ELBO(self.num_neighbors, self.num_samples, max_plate_nesting=1)

    def setup(self, split, decoder, init_codes):
        num_points = len(split.train)
        model = empirical_model(decoder, split.likelihood, num_points, split.latent_dim, init_codes)
        kernel = self.cache_kernel(split.likelihood)
        posterior = MAPAPosterior.fit(split.train, kernel=kernel, num_cached=self.num_cached(num_points), progress=False)
        guide = MAPAGuide(model, posterior, create_plates=_create_plates(num_points), defensive=self.defensive)
        # a minibatch is enough (the guide holds no per-point parameters), and a trace of all N points
        # would draw the model's i ~ Categorical(N) for each: N^2 work at N = 50,000
        return TrainingSetup(model, _set_up(guide, split.train, num_points=100), self.bound(num_points), None)

    def train_codes(self, setup, train):
        return pyro.param("codes").detach()

    def continuous_prior(self, setup, codes, seed):
        """A 10-component Gaussian mixture fitted to the codes (:func:`~pyro_mapa.fit_prior`)."""
        return fit_prior(codes, "gmm", num_components=10, seed=seed)


@dataclass(frozen=True)
class Exact(MAPA):
    """Exact enumeration of the same model: ``K = N``, ``S = 0`` (any cache will do)."""

    num_neighbors: int = 0
    num_samples: int = 0
    kind = "exact"

    @property
    def label(self) -> str:
        return "exact" + (f"@{self.kernel}" if self.kernel else "")  # S = 0: no proposal, no defensive share

    def num_cached(self, num_points: int) -> int:
        return min(num_points, 64)

    def bound(self, num_points: int) -> MAPA_ELBO:
        return MAPA_ELBO(num_points, 0, max_plate_nesting=1)


#: Every method by kind, with the number of integers its name carries (``mapa-K-S``: 2).
METHODS: dict[str, tuple[type[Method], int]] = {
    "vae": (VAE, 0),
    "iwae": (IWAE, 1),
    "iwae-dreg": (IWAEDReG, 1),
    "vampprior": (VampPrior, 1),
    "exemplar": (ExemplarVAE, 0),
    "autonormal": (AutoNormalMethod, 0),
    "autodelta": (AutoDeltaMethod, 0),
    "mapa": (MAPA, 2),
    "exact": (Exact, 0),
}


def parse_method(name: str) -> Method:
    """The method named ``"vae"``, ``"iwae-S"``, ``"iwae-dreg-S"``, ``"vampprior-K"``, ``"exemplar"``,
    ``"autonormal"``, ``"autodelta"``,
    ``"mapa-K-S"`` or ``"exact"``; MAPA's may name its cache's kernel after an ``@``
    (:class:`MAPA`).

    >>> parse_method("mapa-5-10")
    MAPA(num_neighbors=5, num_samples=10, kernel='', defensive=0.1)
    >>> parse_method("mapa-1-10@p10").label
    'mapa-1-10@p10'
    """
    base, _, options = name.partition("@")
    kind = max((k for k in METHODS if base == k or base.startswith(k + "-")), key=len, default=None)
    numbers = base[len(kind) + 1:].split("-") if kind is not None and base != kind else []
    if kind is None or len(numbers) != METHODS[kind][1] or not all(n.isdigit() for n in numbers):
        raise ValueError(
            f"unknown method {name!r}: use vae, iwae-S, iwae-dreg-S, vampprior-K, exemplar, autonormal, autodelta, "
            "mapa-K-S or exact"
        )
    method_class, numbers = METHODS[kind][0], [int(n) for n in numbers]
    if not options:
        return method_class(*numbers)
    if not issubclass(method_class, MAPA):
        raise ValueError(f"method {name!r}: only mapa-K-S and exact take a cache kernel after '@'")
    settings = {}
    for option in options.split(","):
        if ("defensive" if option.startswith("d") and method_class is MAPA else "kernel") in settings:
            raise ValueError(f"method {name!r}: {option!r} repeats an option (one kernel, one d<share>)")
        if option.startswith("d") and method_class is MAPA:
            try:
                settings["defensive"] = float(option[1:])
            except ValueError:
                raise ValueError(f"method {name!r}: bad defensive share {option!r} (e.g. d0.5)") from None
        else:
            settings["kernel"] = option
    return method_class(*numbers, **settings)


def build_method(method: str | Method, split: Split, decoder: torch.nn.Module, code_init: str = "pca") -> TrainingSetup:
    """The model, guide and loss of ``method`` on ``split``'s training points, around
    ``decoder``, with every guide's parameters set up (an AutoGuide or a MAPAGuide traces
    the model once, on all ``N`` training points). Call it with an empty param store
    (``pyro.clear_param_store()``): ``pyro.module`` and ``pyro.param`` would otherwise
    reuse another run's values.

    :param code_init: where the per-point codes start (MAPA's and exact enumeration's
        codes, AutoDelta's points, AutoNormal's means): ``"pca"``, the training points'
        principal components (:func:`~pyro_mapa.pca_codes`), or ``"random"``: the
        empiricalized model's ``0.1 N(0, I)``, and Pyro's default for the AutoGuides
        (AutoNormal's ``init_to_feasible``: every mean at 0; AutoDelta's ``init_to_median``:
        the median of a few prior draws per point). The encoders of VAE and IWAE have no
        per-point codes and start as they are.
    """
    method = parse_method(method) if isinstance(method, str) else method
    if code_init not in ("pca", "random"):
        raise ValueError(f"code_init must be 'pca' or 'random', got {code_init!r}")
    if len(pyro.get_param_store()):
        raise ValueError(
            f"the param store already holds {sorted(pyro.get_param_store().keys())[:3]}...: build_method would "
            "reuse them; call pyro.clear_param_store() first"
        )
    init_codes = pca_codes(split.train, split.latent_dim) if code_init == "pca" else None
    return method.setup(split, decoder, init_codes)
