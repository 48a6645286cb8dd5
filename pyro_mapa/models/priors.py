"""Fit a parametric prior ``p_psi(z)`` to learned codes by maximum likelihood (docs/math.md, section 1).

The final model of MAPA is ``z ~ p_psi``, ``x ~ p(x | f_theta(z))``: a VAE-style model
that can generate new data. Four families:

* ``"gaussian"``: the closed-form MLE (sample mean and biased covariance).
* ``"gmm"``: a Gaussian mixture fitted by scikit-learn's ``GaussianMixture`` (EM with
  k-means initialisation: well kept, and a better optimiser than anything we would
  rewrite), returned as Pyro's ``MixtureSameFamily``.
* ``"flow"``: a neural spline flow on a standard normal base, built from Pyro's own
  ``spline_coupling`` / ``spline`` transforms (hidden layers of ``min(10 d, 128)`` units):
  two couplings with the coordinates reversed between them, so that each half of ``z`` is
  transformed conditionally on the other (a coupling leaves its first half to an
  unconditional spline). Trained by Adam on the negative log-likelihood of minibatches of codes. With
  ``2,000`` codes or more, a tenth of them (at most ``5,000``) is held out: every
  ``100`` steps the held-out log-likelihood is checked, the best parameters are kept, and
  the fit stops after three checks without a gain of ``1e-3`` nats per code.
* ``"exemplar"``: nothing fitted: for codes trained with code noise ``tau``, the smoothed
  empiricalized model's own prior ``(1/N) sum_i N(z; z_i, tau^2 I)`` (docs/math.md, section 10),
  the model whose bound training maximised, scored as an
  :class:`~pyro_mapa.models.exemplar.ExemplarMixture` (one matrix product per chunk of ``z``).
"""

from __future__ import annotations

import copy

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch

from .._checks import as_data_tensor, check_code_noise, check_count
from .._progress import progress_bar
from .exemplar import ExemplarMixture

__all__ = ["PRIOR_FAMILIES", "fit_prior", "prior_from_tensors", "prior_tensors"]

#: The families :func:`fit_prior` fits.
PRIOR_FAMILIES = ("gaussian", "gmm", "flow", "exemplar")


def _gaussian(codes: torch.Tensor, widening: torch.Tensor | float) -> dist.Distribution:
    mean = codes.mean(0)
    centred = codes - mean
    cov = centred.T @ centred / len(codes)
    cov = cov + 1e-6 * cov.diagonal().mean() * torch.eye(len(mean), dtype=codes.dtype, device=codes.device)
    return _normal(mean, cov + widening, codes)


def _normal(loc: torch.Tensor, cov: torch.Tensor, codes: torch.Tensor) -> dist.MultivariateNormal:
    """``MultivariateNormal(loc, cov)``, or an error that says why the fitted covariance is no finite
    positive-definite matrix, instead of torch's constraint message: codes so large that their
    squares overflow (a training run that diverged), or codes that span too few directions."""
    if not (loc.isfinite().all() and cov.isfinite().all()):
        raise ValueError(
            f"the codes' fitted covariance overflows {codes.dtype}: the largest |code| is "
            f"{codes.abs().max().item():.3g} (did training diverge? try a lower learning rate)"
        )
    if (torch.linalg.cholesky_ex(cov).info != 0).any():
        raise ValueError(
            f"the codes' fitted covariance is not positive-definite in {codes.dtype}: the codes (or a mixture "
            "component's share of them) span fewer directions than their dimension; fit fewer components, "
            "or fit in float64"
        )
    return dist.MultivariateNormal(loc, covariance_matrix=cov)


def _gmm(codes: torch.Tensor, num_components: int, seed: int, widening: torch.Tensor | float) -> dist.Distribution:
    from sklearn.mixture import GaussianMixture

    array = codes.detach().cpu().double().numpy()
    # the ridge on each covariance relative to the codes' variance, as the Gaussian's: an absolute one
    # would make the fit depend on the codes' scale (components of fewer codes than dimensions, singular
    # in float32 at a large scale)
    gmm = GaussianMixture(num_components, covariance_type="full", random_state=seed,
                          reg_covar=1e-6 * float(array.var(0).mean()) or 1e-6)
    gmm.fit(array)

    def tensor(a):
        return torch.as_tensor(a, dtype=codes.dtype, device=codes.device)

    components = _normal(tensor(gmm.means_), tensor(gmm.covariances_) + widening, codes)
    return dist.MixtureSameFamily(dist.Categorical(probs=tensor(gmm.weights_)), components)


def _flow(codes: torch.Tensor, num_steps: int, batch_size: int, seed: int, progress: bool | None) -> dist.Distribution:
    # its own generator and gradients on: the caller's random state is left alone, and a
    # fit inside ``torch.no_grad()`` (a scoring loop) still trains
    with torch.random.fork_rng(), torch.enable_grad():
        torch.manual_seed(seed)
        return _train_flow(codes, num_steps, batch_size, progress)


#: How often the flow's held-out log-likelihood is checked, and how many checks without a gain stop it.
CHECK_EVERY, PATIENCE = 100, 3


def _flow_layers(d: int, dtype: torch.dtype, device: torch.device) -> torch.nn.ModuleList:
    """The flow's trainable splines: one for ``d = 1``, else two couplings (``min(10 d, 128)`` hidden units)."""
    width = min(10 * d, 128)
    splines = [T.Spline(d, count_bins=16, bound=5.0)] if d == 1 else [
        T.spline_coupling(d, hidden_dims=[width, width], count_bins=16, bound=5.0) for _ in range(2)
    ]
    return torch.nn.ModuleList(splines).to(device=device, dtype=dtype)


def _flow_distribution(splines: torch.nn.ModuleList, loc: torch.Tensor, scale: torch.Tensor) -> dist.Distribution:
    """``N(0, I)`` through the splines (the coordinates reversed between two couplings), then ``loc + scale z``."""
    d = len(loc)
    transforms = list(splines) if d == 1 else [
        splines[0], T.Permute(torch.arange(d - 1, -1, -1, device=loc.device)), splines[1]
    ]
    base = dist.Normal(torch.zeros(d, dtype=loc.dtype, device=loc.device), 1.0).to_event(1)
    return dist.TransformedDistribution(base, [*transforms, T.AffineTransform(loc, scale)])


def _train_flow(codes: torch.Tensor, num_steps: int, batch_size: int, progress: bool | None) -> dist.Distribution:
    held_out = min(len(codes) // 10, 5000) if len(codes) >= 2000 else 0
    if held_out:
        order = torch.randperm(len(codes), device=codes.device)
        codes, check = codes[order[held_out:]], codes[order[:held_out]]
    # standardise first (an affine map), so that the spline's bounded region covers the codes
    loc, scale = codes.mean(0), codes.std(0).clamp_min(1e-6)
    splines = _flow_layers(codes.shape[1], codes.dtype, codes.device)
    flow = _flow_distribution(splines, loc, scale)
    optimizer = torch.optim.Adam(splines.parameters(), lr=1e-2)
    best, best_state, stale = -float("inf"), None, 0
    for step in progress_bar(range(num_steps), progress=progress, desc="fitting flow prior", leave=False):
        optimizer.zero_grad()
        batch = codes if len(codes) <= batch_size else codes[torch.randint(0, len(codes), (batch_size,))]
        loss = -flow.log_prob(batch).mean()
        loss.backward()
        optimizer.step()
        if held_out and (step + 1) % CHECK_EVERY == 0:
            with torch.no_grad():
                score = flow.log_prob(check).mean().item()
            if score > best + 1e-3:
                best, best_state, stale = score, copy.deepcopy(splines.state_dict()), 0
            else:
                stale += 1
                if stale >= PATIENCE:
                    break
    if best_state is not None:
        splines.load_state_dict(best_state)
    splines.requires_grad_(False)
    return _flow_distribution(splines, loc, scale)


def fit_prior(
    codes: torch.Tensor,
    family: str = "gaussian",
    *,
    num_components: int = 10,
    num_steps: int = 1000,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool | None = None,
    code_noise: float = 0.0,
) -> dist.Distribution:
    """Fit ``p_psi(z)`` to ``codes`` (``N x d``) by maximum likelihood.

    :param family: ``"gaussian"``, ``"gmm"``, ``"flow"`` or ``"exemplar"`` (the codes themselves,
        each widened by ``code_noise``, which must then be positive).
    :param num_components: mixture components (``"gmm"``).
    :param num_steps: Adam steps at most (``"flow"``; it may stop earlier on held-out codes).
    :param batch_size: codes per step (``"flow"``; all of them if fewer): the cost of a fit
        does not grow with ``N``.
    :param seed: seeds the GMM initialisation and the flow's parameters.
    :param progress: progress bar for the flow; ``None`` shows one on a terminal only.
    :param code_noise: ``tau``: for codes trained with ``N(0, tau^2 I)`` noise
        (:class:`~pyro_mapa.models.EmpiricalModel`'s ``code_noise``), the law of
        ``z + tau eps`` for ``z`` from the fitted Gaussian or mixture: every covariance
        ``+ tau^2 I`` (docs/math.md, section 10); for ``"exemplar"``, ``N(z_i, tau^2 I)`` at each
        code. Not for the flow (no closed form).
    :returns: a Pyro distribution with event shape ``(d,)`` and no parameters that
        require gradients.

    >>> prior = fit_prior(torch.randn(500, 2) + 3.0)
    >>> prior.event_shape, prior.mean.round().tolist()
    (torch.Size([2]), [3.0, 3.0])
    """
    codes = as_data_tensor(codes, "codes").detach()
    code_noise = check_code_noise(code_noise, prior_family=family)
    widening = code_noise ** 2 * torch.eye(codes.shape[1], dtype=codes.dtype, device=codes.device) if code_noise else 0
    if family == "gaussian":
        return _gaussian(codes, widening)
    if family == "gmm":
        check_count(num_components, "num_components")
        if num_components > len(codes):
            raise ValueError(f"num_components={num_components} is larger than the number of codes {len(codes)}")
        return _gmm(codes, num_components, seed, widening)
    if family == "exemplar":
        return ExemplarMixture(codes.clone(), code_noise)  # a snapshot, as the fitted families are
    if family == "flow":
        check_count(num_steps, "num_steps")
        check_count(batch_size, "batch_size")
        return _flow(codes, num_steps, batch_size, seed, progress)
    raise ValueError(f"family must be one of {PRIOR_FAMILIES}, got {family!r}")


def prior_tensors(prior: dist.Distribution) -> tuple[str, dict[str, torch.Tensor]]:
    """The family and the tensors of a prior :func:`fit_prior` returned, for a file
    (:func:`prior_from_tensors` rebuilds it)."""
    if isinstance(prior, dist.MultivariateNormal):
        return "gaussian", {"loc": prior.loc, "covariance_matrix": prior.covariance_matrix}
    if isinstance(prior, dist.MixtureSameFamily) and isinstance(prior.component_distribution, dist.MultivariateNormal):
        components = prior.component_distribution
        return "gmm", {"weights": prior.mixture_distribution.probs, "means": components.loc,
                       "covariances": components.covariance_matrix}
    if isinstance(prior, dist.TransformedDistribution) and isinstance(prior.transforms[-1], T.AffineTransform):
        splines = torch.nn.ModuleList(t for t in prior.transforms if isinstance(t, torch.nn.Module))
        standardise = prior.transforms[-1]
        return "flow", {"loc": standardise.loc, "scale": standardise.scale,
                        **{f"splines.{k}": v for k, v in splines.state_dict().items()}}
    if isinstance(prior, ExemplarMixture) and not prior.scale.dim():
        return "exemplar", {"locs": prior.locs, "scale": prior.scale}
    raise ValueError(f"cannot save a prior of type {type(prior).__name__}: fit it with fit_prior "
                     f"({', '.join(PRIOR_FAMILIES)})")


def prior_from_tensors(family: str, tensors: dict[str, torch.Tensor]) -> dist.Distribution:
    """The prior :func:`prior_tensors` took apart."""
    if family == "gaussian":
        return dist.MultivariateNormal(tensors["loc"], covariance_matrix=tensors["covariance_matrix"])
    if family == "gmm":
        components = dist.MultivariateNormal(tensors["means"], covariance_matrix=tensors["covariances"])
        return dist.MixtureSameFamily(dist.Categorical(probs=tensors["weights"]), components)
    if family == "flow":
        loc = tensors["loc"]
        splines = _flow_layers(len(loc), loc.dtype, loc.device)
        splines.load_state_dict({k[len("splines."):]: v for k, v in tensors.items() if k.startswith("splines.")})
        splines.requires_grad_(False)
        return _flow_distribution(splines, loc, tensors["scale"])
    if family == "exemplar":
        return ExemplarMixture(tensors["locs"], tensors["scale"])
    raise ValueError(f"unknown prior family {family!r}")
