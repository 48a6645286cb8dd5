r"""Per-datapoint, plate-aware importance-weighted bounds (docs/math.md, section 4).

Model and guide run once inside an outermost particle plate of ``P`` particles.
For each datapoint ``n`` (each cell of the plates that hold every latent site),
particle ``p`` gets the log-weight

.. math:: \log p(x_n, z_{n,p}) - \log w_{n,p},

where ``log w`` is the guide's log-density at its sites (``log q`` for i.i.d.
particles, MAPA's particle weights for :class:`~pyro_mapa.MAPA_ELBO`). The bound is

.. math:: \sum_n s_n \Big[\operatorname{logsumexp}_p(\log p(x_n, z_{n,p}) - \log w_{n,p}) - c\Big],

one logsumexp *per datapoint*, then the subsampling scale ``s_n = N / batch``,
with ``c = log P`` for i.i.d. particles (IWAE) and ``c = 0`` for MAPA. Pyro's
``RenyiELBO`` instead takes one logsumexp over the whole minibatch, which is not a
valid bound under subsampling; this module is what both our ELBOs share.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import pyro
import torch
from pyro.infer.elbo import ELBO
from pyro.infer.enum import get_importance_trace
from pyro.infer.util import is_validation_enabled
from pyro.poutine.messenger import Messenger
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample
from pyro.util import warn_if_nan

__all__ = ["PARTICLE_PLATE", "ImportanceWeights", "ImportanceWeightedELBO", "importance_weights"]

#: Name of the outermost plate that holds the particles.
PARTICLE_PLATE = "_pyro_mapa_particles"


class ImportanceWeights(NamedTuple):
    """Per-particle, per-datapoint log-weights and what the bound needs besides.

    :param log_weights: ``(P, *cells)``, ``log p(x_n, z_{n,p}) - log w_{n,p}``.
    :param scale: the subsampling scale ``s_n`` of each cell (a number or a tensor
        broadcastable to ``cells``).
    :param global_log_prob: scaled log-density of observed sites outside the local
        plates (the same for every particle), added once.
    :param log_normalizer: ``c``: ``log P`` for i.i.d. particles, 0 for MAPA.
    :param num_fixed: leading particles that are fixed, not drawn (MAPA's ``K`` neighbours).
    """

    log_weights: torch.Tensor
    scale: float | torch.Tensor
    global_log_prob: torch.Tensor | float
    log_normalizer: float
    num_fixed: int = 0

    def per_datapoint(self) -> torch.Tensor:
        """``logsumexp_p(log_weights) - c`` for each cell: the per-datapoint bound.

        Particles whose weight is below ``e^10 tiny`` relative to the cell's largest (``tiny``:
        the dtype's smallest normal number) are left out: their share of the sum is below the
        dtype's resolution, and their gradients would be denormal numbers, whose slow path
        doubled the time of a MAPA step. Leaving terms out only lowers the estimate, so the
        bound stays a bound.
        """
        log_w = self.log_weights
        floor = log_w.detach().max(0).values + (math.log(torch.finfo(log_w.dtype).tiny) + 10.0)
        return torch.where(log_w < floor, -math.inf, log_w).logsumexp(0) - self.log_normalizer

    def bound(self) -> torch.Tensor:
        """The scaled bound ``sum_n s_n * per_datapoint_n + global``."""
        return (self.scale * self.per_datapoint()).sum() + self.global_log_prob


class _SubsampleRecorder(Messenger):
    """Records the indices each subsampled plate asks for or draws (``get_importance_trace``
    prunes the subsample sites, and replays the guide's indices into the model)."""

    def __init__(self):
        super().__init__()
        self.indices = {}

    def _process_message(self, msg) -> None:
        if site_is_subsample(msg) and msg["value"] is not None:  # given by the program, before any replay
            self.indices[msg["name"]] = msg["value"]

    def _postprocess_message(self, msg) -> None:
        if site_is_subsample(msg):
            self.indices.setdefault(msg["name"], msg["value"])


def _check_same_datapoints(model: dict[str, torch.Tensor], guide: dict[str, torch.Tensor]) -> None:
    """The model's and the guide's subsampled plates hold the same datapoints (a guide that
    proposes for other points than the model scores gives no bound of anything)."""
    for name in model.keys() & guide.keys():
        if model[name].shape != guide[name].shape or not torch.equal(model[name], guide[name]):
            raise ValueError(
                f"plate '{name}' subsamples other datapoints in the guide than in the model (guide "
                f"{guide[name][:5].tolist()}..., model {model[name][:5].tolist()}...): give the guide's "
                "create_plates the model's subsample (e.g. pyro.plate(name, N, subsample=idx))"
            )


def _vectorized_frames(site: dict) -> frozenset:
    return frozenset(f for f in site["cond_indep_stack"] if f.vectorized and f.name != PARTICLE_PLATE)


def _masked_log_prob(site: dict) -> torch.Tensor:
    log_prob = site["unscaled_log_prob"]
    mask = site["mask"]
    if mask is not None and mask is not True:
        log_prob = torch.where(torch.as_tensor(mask, device=log_prob.device), log_prob, log_prob.new_zeros(()))
    return log_prob


def _same_scale(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.equal(torch.as_tensor(a), torch.as_tensor(b))
    return a == b


def _local_frames(model_trace: Trace, guide_trace: Trace) -> frozenset:
    """The plates around every latent site of the guide (one cell per datapoint); raise
    if a model latent has no proposal or the latents share no plate."""
    unguided = [
        name
        for name, site in model_trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and name not in guide_trace.nodes
    ]
    if unguided:
        raise ValueError(
            f"the model's latent sites {unguided} are not in the guide: the importance weights need a "
            "proposal for every latent site"
        )
    latent = [
        site
        for site in guide_trace.nodes.values()
        if site["type"] == "sample" and not site["is_observed"] and not site["infer"].get("is_auxiliary")
    ]
    if not latent:
        raise ValueError("the guide has no latent sample site: there is nothing to importance-weight")
    local = frozenset.intersection(*(_vectorized_frames(site) for site in latent))
    if not local:
        raise ValueError(
            f"latent sites {[s['name'] for s in latent]} share no pyro.plate: the per-datapoint bound needs "
            "local latents, inside the data plate"
        )
    return local


def importance_weights(
    model_trace: Trace, guide_trace: Trace, particle_dim: int, log_normalizer: float, num_fixed: int = 0
) -> ImportanceWeights:
    """Split traces run under the particle plate into per-datapoint log-weights.

    The local plates are those around every latent site of the guide. Sites inside
    all of them contribute per datapoint (inner plates are summed out); observed
    sites outside all of them are added once and may not depend on the particle.
    """
    local = _local_frames(model_trace, guide_trace)
    log_weights, scale, global_log_prob = 0.0, None, 0.0
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        for name, site in trace.nodes.items():
            if site["type"] != "sample":  # auxiliary sites count too: pyro.factor marks its sites auxiliary
                continue
            frames = _vectorized_frames(site)
            log_prob = _masked_log_prob(site)
            if local <= frames:
                for frame in frames - local:
                    if log_prob.dim() >= -frame.dim:
                        log_prob = log_prob.sum(frame.dim, keepdim=True)
                if scale is None:
                    scale = site["scale"]
                elif not _same_scale(scale, site["scale"]):
                    raise ValueError(
                        f"site '{name}' has scale {site['scale']} but other sites of the same datapoints have "
                        f"{scale}: the per-datapoint bound needs one subsampling scale per datapoint"
                    )
                log_weights = log_weights + sign * log_prob
            elif frames & local:
                raise ValueError(
                    f"site '{name}' sits in some but not all of the plates {sorted(f.name for f in local)} "
                    "that hold the latent sites; the per-datapoint bound cannot assign it to datapoints"
                )
            else:
                if log_prob.dim() >= -particle_dim and log_prob.shape[particle_dim] > 1:
                    varies = log_prob - log_prob.narrow(particle_dim, 0, 1)
                    if varies.abs().max() > 0:
                        raise ValueError(
                            f"site '{name}' is outside the data plate but differs between particles: a global "
                            "latent (or an AutoContinuous guide's joint latent) has no per-datapoint weight; put "
                            "the latents inside the data plate (e.g. AutoNormal instead of AutoDiagonalNormal)"
                        )
                    log_prob = log_prob.narrow(particle_dim, 0, 1)
                global_log_prob = global_log_prob + site["scale"] * sign * log_prob.sum()
    while log_weights.dim() < -particle_dim:
        log_weights = log_weights.unsqueeze(0)
    log_weights = log_weights.movedim(particle_dim, 0)
    scale = scale.squeeze(particle_dim) if isinstance(scale, torch.Tensor) and scale.dim() >= -particle_dim else scale
    return ImportanceWeights(log_weights, scale, global_log_prob, log_normalizer, num_fixed)


class ImportanceWeightedELBO(ELBO):
    """Base of the per-datapoint importance-weighted bounds; the loss is the negative bound.

    :param num_particles: ``P``, particles per datapoint.
    :param log_normalizer: ``c`` (``log P`` for i.i.d. particles, 0 for MAPA).
    :param max_plate_nesting: the model's plate nesting; guessed if infinite.
    :param num_fixed: leading particles that are fixed rather than drawn.

    Subclasses may say how the guide produces its particles (:meth:`_particle_guide`)
    and which guide sites they accept (:meth:`_check_guide_site`, :meth:`_check_guide_sites`).
    """

    def __init__(
        self, num_particles: int, log_normalizer: float, max_plate_nesting: float = float("inf"), num_fixed: int = 0
    ):
        super().__init__(num_particles=1, max_plate_nesting=max_plate_nesting, vectorize_particles=False)
        self.num_particles = num_particles
        self.log_normalizer = log_normalizer
        self.num_fixed = num_fixed

    def _particle_guide(self, guide: Callable, particle_dim: int) -> Callable:
        return guide

    def _check_guide_site(self, site: dict) -> None:
        """Raise if a guide site's draws cannot be differentiated through."""
        if not site["fn"].has_rsample:
            raise ValueError(
                f"{type(self).__name__} needs reparameterized guide sites; site '{site['name']}' "
                f"({type(site['fn']).__name__}) has no rsample"
            )

    def _check_guide_sites(self, sites: list[dict]) -> None:
        """Raise if the guide's latent sites, together, cannot give this bound's particles."""

    def _particle_dim(self) -> int:
        return -(self.max_plate_nesting + 1)

    def _get_trace(self, model: Callable, guide: Callable, args: tuple, kwargs: dict):
        """Model and guide traces with every site inside the outermost particle plate."""
        if self.max_plate_nesting == float("inf"):
            self._guess_max_plate_nesting(model, guide, args, kwargs)
        particles = pyro.plate(PARTICLE_PLATE, self.num_particles, dim=self._particle_dim())
        model_plates, guide_plates = _SubsampleRecorder(), _SubsampleRecorder()  # Pyro prunes subsample sites
        model_trace, guide_trace = get_importance_trace(
            "flat",
            self.max_plate_nesting + 1,
            model_plates(particles(model)),
            guide_plates(self._particle_guide(particles(guide), self._particle_dim())),
            args,
            kwargs,
        )
        _check_same_datapoints(model_plates.indices, guide_plates.indices)
        latent = [
            site
            for site in guide_trace.nodes.values()
            if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
        ]
        for site in latent:
            self._check_guide_site(site)
        self._check_guide_sites(latent)
        return model_trace, guide_trace

    def importance_weights(self, model: Callable, guide: Callable, *args, **kwargs) -> ImportanceWeights:
        """Run model and guide once under the particle plate; return their
        :class:`ImportanceWeights` (per-particle, per-datapoint log-weights)."""
        model_trace, guide_trace = self._get_trace(model, guide, args, kwargs)
        return importance_weights(
            model_trace, guide_trace, self._particle_dim(), self.log_normalizer, self.num_fixed
        )

    def differentiable_loss(self, model: Callable, guide: Callable, *args, **kwargs) -> torch.Tensor:
        """The negative bound, differentiable in the model's and guide's parameters."""
        loss = -self.importance_weights(model, guide, *args, **kwargs).bound()
        if is_validation_enabled():
            warn_if_nan(loss, "loss")
        return loss

    def loss(self, model: Callable, guide: Callable, *args, **kwargs) -> float:
        """The negative bound as a float (no gradients)."""
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model: Callable, guide: Callable, *args, **kwargs) -> float:
        """The negative bound; its gradients are accumulated into the parameters.

        :raises ValueError: if the bound is NaN or infinite, before any gradient reaches the
            parameters (a backward pass from it would make them NaN).
        """
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if not torch.isfinite(loss):
            raise ValueError(
                f"the bound is {float(loss.detach())}: a site's log-density is NaN or infinite (a decoder that "
                "returns inf or NaN, or data outside a likelihood's support); the parameters were left as they were"
            )
        if loss.requires_grad:
            loss.backward(retain_graph=self.retain_graph)
        return float(loss.detach())

