"""The comparison's methods as objects: each says how it builds its model, guide and loss,
where its training codes are, and which continuous prior scores it.

The interface is :mod:`~pyro_mapa.experiments.method_base`'s; the amortized-encoder methods live
in :mod:`~pyro_mapa.experiments.encoder_methods`; here are Pyro's AutoGuides, MAPA and exact
enumeration, and the registry. Adding a method is one class and one entry in :data:`METHODS`; the
training loop (:mod:`pyro_mapa.experiments.training`) asks the method, never its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pyro
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoDelta, AutoNormal, init_to_value

from .._checks import check_code_noise, check_num_neighbors
from ..cache import Kernel, MAPAPosterior, NeighborhoodBatches
from ..infer import DEFAULT_DEFENSIVE, MAPA_ELBO, MAPAGuide
from ..models import ExemplarMixture, Likelihood, fit_prior, pca_codes
from .baselines import (
    empirical_model,
    smoothed_empirical_model,
    smoothed_guide,
    vae_model,
)
from .encoder_methods import IWAE, VAE, ExemplarVAE, IWAEDReG, VampPrior
from .method_base import Method, TrainingSetup, data_plates, set_up_guide
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
    "SmoothedMAPA",
    "TrainingSetup",
    "VAE",
    "VampPrior",
    "build_method",
    "parse_method",
]




#: The family fitted to an empiricalized model's codes for scoring, unless a method names another.
DEFAULT_PRIOR = "gmm10"


@dataclass(frozen=True)
class AutoNormalMethod(Method):
    """Pyro's ``AutoNormal`` on the VAE model: non-amortized local latents."""

    kind = "autonormal"
    autoguide: ClassVar[type] = AutoNormal

    def setup(self, split, decoder, init_codes):
        num_points = len(split.train)
        init = {} if init_codes is None else {"init_loc_fn": init_to_value(values={"z": init_codes})}
        model = vae_model(decoder, split.likelihood, num_points, split.latent_dim)
        guide = self.autoguide(model, create_plates=data_plates(num_points), **init)
        return TrainingSetup(model, set_up_guide(guide, split.train), Trace_ELBO(), None)

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
    :param group_size: minibatches of neighbourhoods of ``g`` points that share codes
        (:class:`~pyro_mapa.NeighborhoodBatches`), ``g<size>`` after the ``@``; 1: uniform batches.
    :param shared_tail: the points of a batch draw their uncached indices from one shared stream,
        so that they decode the same codes there (:class:`~pyro_mapa.infer.IndexProposal`);
        ``shared`` after the ``@``.
    :param prior: the family :func:`~pyro_mapa.fit_prior` fits to the trained codes for the
        continuous model that is scored: ``"gmm<k>"`` (a ``k``-component Gaussian mixture; the
        comparison's default ``gmm10``), ``"gaussian"``, ``"flow"`` or, with code noise,
        ``"exemplar"`` (the smoothed model's own prior, nothing fitted); named after the ``@`` too
        (``"mapa-1-10@gmm100"``). Training does not depend on it, only the scored model
        (and so the best-validation checkpoint).
    :param code_noise: ``tau``: training decodes each code with ``N(0, tau^2 I)`` noise added
        (:func:`~pyro_mapa.models.observe_empirical`), and the scored prior is the fitted law
        plus that noise (each covariance ``+ tau^2 I``, :func:`~pyro_mapa.fit_prior`);
        ``noise<tau>`` after the ``@`` (``"mapa-1-10@shared,gmm100,noise0.2"``); not with the flow.
    """

    num_neighbors: int
    num_samples: int
    kernel: str = ""
    defensive: float = DEFAULT_DEFENSIVE
    group_size: int = 1
    shared_tail: bool = False
    prior: str = DEFAULT_PRIOR
    code_noise: float = 0.0
    kind = "mapa"
    empirical = True

    def __post_init__(self):
        if self.kernel:
            self.cache_kernel(None)  # a bad spec is named at once, before any data
        self.prior_family()
        if not 0.0 <= self.defensive < 1.0:
            raise ValueError(f"{self.kind}: the defensive share must lie in [0, 1), got d{self.defensive:g}")
        if self.group_size < 1:
            raise ValueError(f"{self.kind}: the group size must be at least 1, got g{self.group_size}")
        check_code_noise(self.code_noise, f"{self.kind}: the code noise", self.prior_family()["family"])

    @property
    def options(self) -> str:
        """What follows the ``@`` in the label (empty for the defaults)."""
        options = [self.kernel] if self.kernel else []
        if self.defensive != DEFAULT_DEFENSIVE:
            options.append(f"d{self.defensive}")
        if self.group_size != 1:
            options.append(f"g{self.group_size}")
        if self.shared_tail:
            options.append("shared")
        if self.prior != DEFAULT_PRIOR:
            options.append(self.prior)
        if self.code_noise:
            options.append(f"noise{self.code_noise:g}")
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

    def prior_family(self) -> dict:
        """:func:`~pyro_mapa.fit_prior`'s ``family`` and options for :attr:`prior`.

        >>> MAPA(1, 10, prior="gmm100").prior_family()
        {'family': 'gmm', 'num_components': 100}
        """
        spec = self.prior
        if spec in ("gaussian", "flow", "exemplar"):
            return {"family": spec}
        if spec.startswith("gmm") and spec[3:].isdigit() and int(spec[3:]) > 0:
            return {"family": "gmm", "num_components": int(spec[3:])}
        raise ValueError(f"{self.kind}: unknown prior {spec!r}: use gmm<components> (e.g. gmm100), gaussian, flow "
                         "or exemplar")

    def num_cached(self, num_points: int) -> int:
        """``K_c`` of the cache: 64, or ``K`` if more, and at most the ``N`` training points
        (``K > N`` is refused by name)."""
        check_num_neighbors(self.num_neighbors, num_points, f"{self.label}: K")
        return min(num_points, max(64, self.num_neighbors))

    def bound(self, num_points: int) -> MAPA_ELBO:
        return MAPA_ELBO(self.num_neighbors, self.num_samples, max_plate_nesting=1)

    def batches(self, posterior: MAPAPosterior) -> NeighborhoodBatches | None:
        """Neighbourhoods of ``group_size`` points from the cache, or ``None`` (uniform batches)."""
        return NeighborhoodBatches(posterior.table, self.group_size) if self.group_size > 1 else None

    def setup(self, split, decoder, init_codes):
        num_points = len(split.train)
        model = empirical_model(decoder, split.likelihood, num_points, split.latent_dim, init_codes, self.code_noise)
        kernel = self.cache_kernel(split.likelihood)
        posterior = MAPAPosterior.fit(split.train, kernel=kernel, num_cached=self.num_cached(num_points), progress=False)
        guide = MAPAGuide(model, posterior, create_plates=data_plates(num_points), defensive=self.defensive,
                          shared_tail=self.shared_tail)
        # a minibatch is enough (the guide holds no per-point parameters), and a trace of all N points
        # would draw the model's i ~ Categorical(N) for each: N^2 work at N = 50,000
        return TrainingSetup(model, set_up_guide(guide, split.train, num_points=100), self.bound(num_points), None,
                             self.batches(posterior))

    def train_codes(self, setup, train):
        return pyro.param("codes").detach()

    def continuous_prior(self, setup, codes, seed):
        """The family :attr:`prior` fitted to the codes (:func:`~pyro_mapa.fit_prior`; by default
        a 10-component Gaussian mixture), widened by the code noise: the law of ``z + tau eps``."""
        return fit_prior(codes, seed=seed, progress=False, code_noise=self.code_noise, **self.prior_family())


@dataclass(frozen=True)
class SmoothedMAPA(MAPA):
    """MAPA on the smoothed empiricalized model, leave-one-out
    (:func:`~pyro_mapa.experiments.baselines.smoothed_empirical_model`): ``z ~ N(z_i, tau^2 I)``
    around the code MAPA's particle ``i`` picks, ``tau`` learned. The trained model's prior is
    the mixture ``(1/N) sum_m N(z_m, tau^2 I)`` itself, so none is fitted afterwards. Named
    ``smoothed-mapa-K-S`` (options as :class:`MAPA`'s). Each particle decodes its own ``z``:
    ``K + S`` decoder passes per point and step."""

    kind = "smoothed-mapa"
    empirical = False

    def __post_init__(self):
        super().__post_init__()
        if self.prior != DEFAULT_PRIOR:
            raise ValueError(f"{self.kind}: its trained model is its own mixture prior; no {self.prior!r} is fitted")
        if self.code_noise:
            raise ValueError(f"{self.kind}: its codes are smoothed by its own learned tau; no code noise is added")

    @property
    def label(self) -> str:
        return f"smoothed-mapa-{self.num_neighbors}-{self.num_samples}{self.options}"

    def setup(self, split, decoder, init_codes):
        num_points = len(split.train)
        model = smoothed_empirical_model(decoder, split.likelihood, num_points, split.latent_dim, init_codes)
        posterior = MAPAPosterior.fit(split.train, kernel=self.cache_kernel(split.likelihood),
                                      num_cached=self.num_cached(num_points), progress=False)
        index_guide = MAPAGuide(model, posterior, create_plates=data_plates(num_points), defensive=self.defensive,
                                shared_tail=self.shared_tail)
        guide = set_up_guide(smoothed_guide(index_guide), split.train, num_points=100)
        return TrainingSetup(model, guide, self.bound(num_points), None, self.batches(posterior))

    def continuous_prior(self, setup, codes, seed):
        """The trained mixture, ``(1/N) sum_m N(z_m, tau^2 I)``."""
        return ExemplarMixture(codes, pyro.param("smoothing_scale").detach())


@dataclass(frozen=True)
class Exact(MAPA):
    """Exact enumeration of the same model: ``K = N``, ``S = 0`` (any cache will do)."""

    num_neighbors: int = 0
    num_samples: int = 0
    kind = "exact"

    def __post_init__(self):
        if self.prior_family()["family"] == "exemplar":  # before MAPA's check, which would ask for code noise
            raise ValueError(f"{self.kind}: the 'exemplar' prior is the smoothed model's, trained with code noise, "
                             "which exact enumeration does not take: use gmm<k> or gaussian")
        super().__post_init__()
        given = [f"d{self.defensive:g}"] * (self.defensive != DEFAULT_DEFENSIVE) + [f"g{self.group_size}"] * (
            self.group_size != 1) + ["shared"] * self.shared_tail + [f"noise{self.code_noise:g}"] * bool(self.code_noise)
        if given:
            raise ValueError(f"{self.kind}: it sums over all N indices exactly: no proposal share (d), no minibatch "
                             f"groups (g), no shared draws and no code noise, got {', '.join(given)}")

    @property
    def label(self) -> str:
        return "exact" + self.options  # the kernel and the prior: d, g and shared are refused above

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
    "smoothed-mapa": (SmoothedMAPA, 2),
    "exact": (Exact, 0),
}


def parse_method(name: str) -> Method:
    """The method named ``"vae"``, ``"iwae-S"``, ``"iwae-dreg-S"``, ``"vampprior-K"``, ``"exemplar"``,
    ``"autonormal"``, ``"autodelta"``,
    ``"mapa-K-S"``, ``"smoothed-mapa-K-S"`` or ``"exact"``; MAPA's may name its cache's kernel, defensive
    share, group size, shared tail draws and prior after an ``@`` (:class:`MAPA`).

    >>> parse_method("mapa-5-10")
    MAPA(num_neighbors=5, num_samples=10, kernel='', defensive=0.1, group_size=1, shared_tail=False, prior='gmm10', code_noise=0.0)
    >>> parse_method("mapa-1-10@gmm100,p10").label
    'mapa-1-10@p10,gmm100'
    """
    base, _, options = name.partition("@")
    kind = max((k for k in METHODS if base == k or base.startswith(k + "-")), key=len, default=None)
    numbers = base[len(kind) + 1:].split("-") if kind is not None and base != kind else []
    if kind is None or len(numbers) != METHODS[kind][1] or not all(n.isdigit() for n in numbers):
        raise ValueError(
            f"unknown method {name!r}: use vae, iwae-S, iwae-dreg-S, vampprior-K, exemplar, autonormal, autodelta, "
            "mapa-K-S, smoothed-mapa-K-S or exact"
        )
    method_class, numbers = METHODS[kind][0], [int(n) for n in numbers]
    if not options:
        return method_class(*numbers)
    if not issubclass(method_class, MAPA):
        raise ValueError(f"method {name!r}: only mapa-K-S, smoothed-mapa-K-S and exact take options after '@'")
    settings = {}
    for option in options.split(","):
        if option.startswith(("gmm", "gaussian", "flow", "exemplar")):
            key = "prior"
        elif option == "shared":
            key = "shared_tail"
        elif option.startswith("noise"):
            key = "code_noise"
        else:  # exact enumeration refuses a share or groups itself, by name
            key = {"d": "defensive", "g": "group_size"}.get(option[:1], "kernel")
        if key in settings:
            raise ValueError(f"method {name!r}: {option!r} repeats an option "
                             "(one kernel, one d<share>, one g<size>, one shared, one prior, one noise<tau>)")
        if key == "defensive":
            try:
                settings["defensive"] = float(option[1:])
            except ValueError:
                raise ValueError(f"method {name!r}: bad defensive share {option!r} (e.g. d0.5)") from None
        elif key == "group_size":
            if not option[1:].isdigit():
                raise ValueError(f"method {name!r}: bad group size {option!r} (e.g. g10)")
            settings["group_size"] = int(option[1:])
        elif key == "shared_tail":
            settings["shared_tail"] = True
        elif key == "code_noise":
            try:
                settings["code_noise"] = float(option[len("noise"):])
            except ValueError:
                raise ValueError(f"method {name!r}: bad code noise {option!r} (e.g. noise0.2)") from None
        else:
            settings[key] = option  # the kernel or the prior: the class names a bad one
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
