r"""The importance-weighted autoencoder bound, per datapoint (the IWAE baseline).

.. math::
    \mathcal{L}_S = \sum_n s_n \Big[\log \frac{1}{S} \sum_{s=1}^S
        \frac{p(x_n, z_{n,s})}{q(z_{n,s} \mid x_n)}\Big], \qquad z_{n,s} \sim q(\cdot \mid x_n) \text{ i.i.d.}

Pyro's ``RenyiELBO(alpha=0)`` takes one logsumexp over the whole minibatch, which
is not a valid bound under subsampling; this one takes it per datapoint and
applies the subsampling scale ``s_n`` after it (:mod:`pyro_mapa.infer.importance`).

**Doubly-reparameterized gradients** (``estimator="dreg"``; docs/math.md, section 4). With ``log w_s = log p(x, z_s)
- log q_phi(z_s | x)``, ``z_s = g_phi(eps_s)`` and normalised weights
``w~_s = w_s / sum_t w_t``, the standard gradient of the guide's parameters carries the
score term ``-sum_s w~_s d log q_phi / d phi``, whose signal-to-noise ratio falls as ``S``
grows. Its expectation can be rewritten by reparameterizing it once more, giving

.. math::
    \nabla_\phi \mathcal{L}_S = \mathbb{E}\Big[\sum_s \tilde w_s^2\,
        \frac{\partial \log w_s}{\partial z_s} \frac{\partial z_s}{\partial \phi}\Big],
    \qquad \nabla_\theta \mathcal{L}_S = \mathbb{E}\Big[\sum_s \tilde w_s\, \nabla_\theta \log p_\theta(x, z_s)\Big],

where ``d log w_s / d z_s`` is taken with ``q``'s parameters held fixed (no score term). It
is zero for every draw when ``q`` is the exact posterior (``log w`` is constant). Here:
``log q`` is evaluated with the guide's parameters detached, the surrogate is
``sum_n s_n sum_s stop(w~_s) log w_s``, and a hook on each draw ``z_s`` multiplies the
gradient that flows back through it by ``w~_s`` (so ``phi`` sees ``w~_s^2``, ``theta``
``w~_s``). The hook makes the rewrite exact for guides whose sites' parameters do not
depend on other latent draws (an amortized encoder, a mean-field guide of plain
``pyro.sample`` sites); a guide with a site whose parameters depend on another site's draw
(AutoNormal's ``Delta`` sites replay its auxiliary draws) is refused, and so is a masked
site (where ``log q`` is masked out there is no score term to rewrite).

References: Burda, Grosse, Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016;
Tucker, Lawson, Gu, Maddison, "Doubly Reparameterized Gradient Estimators for Monte Carlo
Objectives", ICLR 2019; Rainforth et al., "Tighter Variational Bounds are Not Necessarily
Better", ICML 2018.
"""

from __future__ import annotations

import math
from typing import Callable

import pyro.distributions as dist
import torch
from pyro.poutine.util import site_is_subsample

from .._checks import check_count
from .importance import ImportanceWeightedELBO, importance_weights

__all__ = ["ESTIMATORS", "IWAE_ELBO"]

#: The gradient estimators of :class:`IWAE_ELBO`.
ESTIMATORS = ("standard", "dreg")


def _detached(fn: dist.Distribution) -> dist.Distribution:
    """``fn`` with its parameters cut from the graph: ``log q_{stop(phi)}``."""
    if isinstance(fn, dist.Independent):
        return dist.Independent(_detached(fn.base_dist), fn.reinterpreted_batch_ndims)
    if isinstance(fn, dist.MaskedDistribution):
        return _detached(fn.base_dist).mask(fn._mask)
    if isinstance(fn, dist.ExpandedDistribution):
        return _detached(fn.base_dist).expand(fn.batch_shape)
    if isinstance(fn, dist.MultivariateNormal):
        return dist.MultivariateNormal(fn.loc.detach(), scale_tril=fn.scale_tril.detach())
    params = {name: getattr(fn, name) for name in fn.arg_constraints if name in vars(fn)}
    try:
        return type(fn)(**{name: value.detach() for name, value in params.items()}, validate_args=False)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"IWAE_ELBO(estimator='dreg') cannot hold the parameters of a {type(fn).__name__} fixed: use "
            "Normal, MultivariateNormal or another distribution built from its arg_constraints"
        ) from e


class IWAE_ELBO(ImportanceWeightedELBO):
    """Per-datapoint IWAE bound with ``S = num_particles`` i.i.d. draws from a
    reparameterized guide over local latents (inside the data plate).

    :param num_particles: ``S``, draws per datapoint (``S = 1`` is ``Trace_ELBO``).
    :param max_plate_nesting: the model's plate nesting; guessed if infinite.
    :param estimator: the gradient: ``"standard"`` (of the bound itself) or ``"dreg"``
        (doubly reparameterized; the same expectation, lower variance for the guide's
        parameters). The bound's value is the same.

    >>> elbo = IWAE_ELBO(num_particles=20, estimator="dreg")
    """

    def __init__(self, num_particles: int = 5, max_plate_nesting: float = float("inf"), estimator: str = "standard"):
        num_particles = check_count(num_particles, "num_particles")
        if estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
        super().__init__(num_particles, math.log(num_particles), max_plate_nesting)
        self.estimator = estimator

    def differentiable_loss(self, model: Callable, guide: Callable, *args, **kwargs) -> torch.Tensor:
        """The negative bound; with ``estimator="dreg"`` its gradient is the doubly
        reparameterized one (module docstring)."""
        if self.estimator == "standard":
            return super().differentiable_loss(model, guide, *args, **kwargs)
        model_trace, guide_trace = self._get_trace(model, guide, args, kwargs)
        draws = []
        for site in guide_trace.nodes.values():
            if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
                continue
            if _is_masked(site) or isinstance(_leaf(site["fn"]), dist.Delta):
                raise ValueError(
                    f"IWAE_ELBO(estimator='dreg'): guide site '{site['name']}' is masked, or a point mass (Delta, as "
                    "AutoNormal's and AutoDelta's sites are); DReG needs unmasked, reparameterized sites with a "
                    "density, such as an amortized encoder's (or use estimator='standard')"
                )
            for other in draws:  # a site whose parameters depend on an earlier draw
                if any(p is not None and p.requires_grad and _depends_on(p, other["value"]) for p in _parameters(site["fn"])):
                    raise ValueError(
                        f"IWAE_ELBO(estimator='dreg'): guide site '{site['name']}' depends on the draw of "
                        f"'{other['name']}'; DReG here needs sites whose parameters depend on x and parameters only"
                    )
            site["unscaled_log_prob"] = _detached(site["fn"]).log_prob(site["value"])
            draws.append(site)
        weights = importance_weights(model_trace, guide_trace, self._particle_dim(), self.log_normalizer)
        normalised = torch.softmax(weights.log_weights.detach(), 0)  # w~_s per cell
        for site in draws:
            value = site["value"]
            if value.requires_grad:
                factor = normalised.reshape(normalised.shape + (1,) * (value.dim() - normalised.dim()))
                value.register_hook(lambda grad, factor=factor: grad * factor)
        # a draw of weight 0 (log w = -inf) contributes nothing, rather than 0 * -inf
        finite = torch.where(normalised > 0, weights.log_weights, 0.0)
        surrogate = (weights.scale * (normalised * finite).sum(0)).sum() + weights.global_log_prob
        bound = weights.bound()
        return -(bound.detach() + surrogate - surrogate.detach())


def _leaf(fn: dist.Distribution) -> dist.Distribution:
    """The distribution under Pyro's and torch's wrappers."""
    while isinstance(fn, (dist.Independent, dist.MaskedDistribution, dist.ExpandedDistribution)):
        fn = fn.base_dist
    return fn


def _is_masked(site: dict) -> bool:
    fn = site["fn"]
    while isinstance(fn, (dist.Independent, dist.ExpandedDistribution, dist.MaskedDistribution)):
        if isinstance(fn, dist.MaskedDistribution) and fn._mask is not True:
            return True
        fn = fn.base_dist
    return site["mask"] is not None and site["mask"] is not True


def _parameters(fn: dist.Distribution) -> list[torch.Tensor]:
    fn = _leaf(fn)
    return [getattr(fn, name) for name in fn.arg_constraints if name in vars(fn)]


def _depends_on(tensor: torch.Tensor, source: torch.Tensor) -> bool:
    """Whether ``source`` lies on ``tensor``'s autograd graph."""
    target = source.grad_fn
    if target is None:
        return False
    seen, stack = set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        if node is target:
            return True
        seen.add(node)
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    return False
