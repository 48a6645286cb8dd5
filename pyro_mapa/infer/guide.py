"""``MAPAGuide``: the cached MAPA index posterior as a Pyro guide, with no encoder.

The guide finds the model's index site (``i ~ Categorical`` over the ``N`` codes,
inside the data plate) and samples it from ``q(i | x_n)`` (the cache's
:class:`~pyro_mapa.cache.MAPAIndex`, wrapped in the bound's
:class:`~pyro_mapa.infer.proposal.IndexProposal`) for the datapoints of the current
(sub)sample. Under :class:`~pyro_mapa.MAPA_ELBO` that site becomes the bound's ``K + S``
particles; under ``Trace_ELBO`` or ``Predictive`` it is one draw per datapoint.
"""

from __future__ import annotations

from typing import Callable

import pyro
import torch
from pyro import poutine
from pyro.infer.autoguide import AutoGuide
from pyro.poutine.util import site_is_subsample

from ..cache import MAPAPosterior
from .proposal import DEFAULT_DEFENSIVE, IndexProposal

__all__ = ["MAPAGuide"]


def _num_categories(fn) -> int | None:
    if not (fn.support.is_discrete and fn.has_enumerate_support and fn.event_dim == 0):
        return None
    return len(fn.enumerate_support(expand=False))


class MAPAGuide(AutoGuide):
    """A guide for an empiricalized model that samples the index site from MAPA.

    :param model: a Pyro model with an index site ``i ~ Categorical(N)`` inside a
        plate of size ``N`` (the data plate), ``N`` being the cache's training points.
    :param posterior: the :class:`~pyro_mapa.MAPAPosterior` of the training data.
    :param create_plates: as for any ``AutoGuide``: a function of the model's
        arguments returning the data plate with the model's ``subsample``; needed
        when the model subsamples.
    :param index_site: the index site's name; found automatically if ``None``.
    :param defensive: least probability the proposal ``r_n`` puts on the indices
        outside the cache (:mod:`pyro_mapa.infer.proposal`).
    :param shared_tail: the datapoints of a batch draw their uncached indices from one shared
        stream, so that they decode the same codes there (:class:`~pyro_mapa.infer.IndexProposal`).
    :param check_data: at the first call, check that the model's observations in the
        data plate are the data the cache was built from (when their shapes agree). Training on
        fresh draws of the data (dynamic binarization) observes other values by design: make
        the first call on the fixed data the cache was built from, or pass ``False``.

    Calling the guide returns ``{index_site: indices}``, like the other AutoGuides.

    >>> import pyro, pyro.distributions as dist
    >>> from pyro.infer import SVI
    >>> from pyro_mapa import MAPA_ELBO, MAPAPosterior
    >>> X, net = torch.randn(20, 2), torch.nn.Linear(1, 2)
    >>> def model(x, idx):
    ...     pyro.module("decoder", net)
    ...     codes = pyro.param("codes", lambda: torch.randn(20, 1))
    ...     with pyro.plate("data", 20, subsample=idx):
    ...         i = pyro.sample("i", dist.Categorical(logits=torch.zeros(20)))
    ...         pyro.sample("x", dist.Normal(net(codes[i]), 0.5).to_event(1), obs=x)
    >>> guide = MAPAGuide(model, MAPAPosterior.fit(X, scale=0.5, num_cached=8),
    ...                   create_plates=lambda x, idx: pyro.plate("data", 20, subsample=idx))
    >>> svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), loss=MAPA_ELBO(num_neighbors=2, num_samples=3))
    >>> idx = torch.tensor([0, 5, 7])
    >>> loss = svi.step(X[idx], idx)  # one step on 3 of the 20 points
    >>> guide(X[idx], idx)["i"].shape
    torch.Size([3])
    """

    def __init__(
        self,
        model: Callable,
        posterior: MAPAPosterior,
        *,
        create_plates: Callable | None = None,
        index_site: str | None = None,
        defensive: float = DEFAULT_DEFENSIVE,
        shared_tail: bool = False,
        check_data: bool = True,
    ):
        if not isinstance(posterior, MAPAPosterior):
            raise TypeError(f"posterior must be a MAPAPosterior, got {type(posterior).__name__}")
        super().__init__(model, create_plates=create_plates)
        self.posterior = posterior
        self.index_site = index_site
        self.defensive = defensive
        self.shared_tail = shared_tail
        self.check_data = check_data
        self._plate_name = None

    def _setup_prototype(self, *args, **kwargs) -> None:
        # unlike AutoGuide's, this prototype keeps observed and subsample sites: the data check needs them
        self.prototype_trace = poutine.block(poutine.trace(self.model).get_trace)(*args, **kwargs)
        name, site = self._find_index_site()
        num_points = self.posterior.num_points
        frames = [
            f
            for f in site["cond_indep_stack"]
            if (f.full_size or f.size) == num_points
        ]
        if len(frames) != 1:
            sizes = {f.name: f.full_size or f.size for f in site["cond_indep_stack"]}
            raise ValueError(
                f"index site '{name}' sits in plates {sizes}, but the MAPA cache was built from N={num_points} "
                f"points: put it inside one plate of size {num_points} (the data plate)"
            )
        frame = frames[0]
        others = [f.name for f in site["cond_indep_stack"] if f.vectorized and f is not frame]
        if others:
            raise ValueError(
                f"index site '{name}' sits in plates {others} besides the data plate '{frame.name}': it must sit "
                "in the data plate only (one index per datapoint)"
            )
        if frame.size != num_points and self.create_plates is None:
            raise ValueError(
                f"the model subsamples plate '{frame.name}' ({frame.size} of {num_points}); pass "
                "create_plates=lambda *args, **kwargs: pyro.plate(..., subsample=...) so that the guide "
                "sees the same datapoints as the model"
            )
        if self.create_plates is not None:
            with poutine.block():  # a plate made here must not leave a site in the caller's trace
                plates = self.create_plates(*args, **kwargs)
            names = [p.name for p in ([plates] if isinstance(plates, pyro.plate) else plates)]
            if frame.name not in names:
                raise ValueError(
                    f"create_plates returned plates {names}, but the index site '{name}' sits in plate "
                    f"'{frame.name}': return pyro.plate('{frame.name}', {num_points}, subsample=...)"
                )
        self.index_site, self._plate_name = name, frame.name
        self._prototype_frames = {frame.name: frame}
        if self.check_data:
            self._check_observations(frame.name)

    def _find_index_site(self) -> tuple[str, dict]:
        num_points = self.posterior.num_points
        latent = {
            name: site
            for name, site in self.prototype_trace.iter_stochastic_nodes()
            if not site_is_subsample(site)
        }
        if self.index_site is not None:
            if self.index_site not in latent:
                raise ValueError(f"index_site '{self.index_site}' is not a latent site of the model: {sorted(latent)}")
            candidates = {self.index_site: latent[self.index_site]}
        else:
            candidates = {n: s for n, s in latent.items() if _num_categories(s["fn"]) is not None}
        matching = {n: s for n, s in candidates.items() if _num_categories(s["fn"]) == num_points}
        if len(matching) == 1:
            return next(iter(matching.items()))
        if len(matching) > 1:
            raise ValueError(f"several sites could be the index site: {sorted(matching)}; pass index_site=")
        found = {n: _num_categories(s["fn"]) for n, s in candidates.items()}
        raise ValueError(
            f"no index site over the N={num_points} training codes (an i ~ Categorical(N) site inside the "
            f"data plate); discrete sites found, with their number of categories: {found}"
        )

    def _check_observations(self, plate_name: str) -> None:
        data = self.posterior.data
        idx = self.prototype_trace.nodes[plate_name]["value"]
        for name, site in self.prototype_trace.nodes.items():
            if site["type"] != "sample" or not site["is_observed"]:
                continue
            if not any(f.name == plate_name for f in site["cond_indep_stack"]):
                continue
            value = site["value"]
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != (len(idx), data.shape[1]):
                continue
            expected = data[idx.to(data.device)]
            if not torch.allclose(value.to(expected), expected):
                raise ValueError(
                    f"the model's observations at site '{name}' are not the data the MAPA cache was built from "
                    f"(at the datapoints {idx[:5].tolist()}...): build the cache from the same data, in the same "
                    "order; or, if the site observes something else by design (fresh draws of binarized data at "
                    "each step), make the first call on the cache's data or pass check_data=False"
                )

    def forward(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        """Sample the index site from ``q(i | x_n)`` for the datapoints of the plate."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        plate = self._create_plates(*args, **kwargs)[self._plate_name]
        with plate as idx:
            model_dim = self._prototype_frames[self._plate_name].dim
            if plate.dim != model_dim:
                raise ValueError(
                    f"create_plates made plate '{plate.name}' at dim {plate.dim}, but the model's is at dim "
                    f"{model_dim}: pass dim={model_dim} to it"
                )
            # batch dims of the plate: the datapoints at the plate's dim, 1s to its right
            idx = idx.reshape((-1,) + (1,) * (-plate.dim - 1))
            q = IndexProposal(self.posterior.index_distribution(idx), self.defensive, self.shared_tail)
            return {self.index_site: pyro.sample(self.index_site, q)}

    @torch.no_grad()
    def median(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        """The most probable index per datapoint of the plate (its own, for distinct data)."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        idx = self._create_plates(*args, **kwargs)[self._plate_name].indices
        return {self.index_site: self.posterior.index_distribution(idx).table.index[..., 0]}
