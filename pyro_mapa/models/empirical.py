r"""The empiricalized model (docs/math.md, section 1): every training point ``m`` has a code
``z_m``, and

.. math::
    i \sim \mathrm{Categorical}(1/N), \qquad x \sim p(x \mid f_\theta(z_i)),

with the decoder run once per distinct index of a step (:func:`~pyro_mapa.decode_unique`)
and the likelihood's gathered form scoring every particle against it.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_

from .._checks import check_code_noise
from .decode import decode_unique
from .likelihoods import Likelihood, as_likelihood

__all__ = ["EmpiricalModel", "observe_empirical"]


def observe_empirical(decoder: torch.nn.Module, codes: torch.Tensor, likelihood: Likelihood,
                      x: torch.Tensor | None, idx: torch.Tensor | None = None, sparse: bool = False,
                      code_noise: float = 0.0) -> torch.Tensor:
    """The empiricalized model's sites, ``i ~ Categorical(N)`` and ``x ~ p(x | f(z_i))``, in the
    data plate of the ``N = len(codes)`` points, subsampled by ``idx``; returns ``i``. ``sparse``:
    the codes get a sparse gradient (:func:`~pyro_mapa.decode_unique`).

    ``code_noise``: ``tau > 0`` decodes ``z_u + tau eps_u``, ``eps_u ~ N(0, I)`` drawn afresh for
    each distinct code ``u`` a call decodes (docs/math.md, section 10): a noise injected as dropout
    is, from torch's generator, not a latent site (no guide infers it), so it costs no decoder passes."""
    num_points = len(codes)
    if code_noise:
        plain = decoder

        def decoder(z: torch.Tensor) -> torch.Tensor:
            return plain(z + code_noise * torch.randn_like(z))

    with pyro.plate("data", num_points, subsample=idx):
        i = pyro.sample("i", dist.Categorical(logits=codes.new_zeros(num_points)))
        out, rows = decode_unique(decoder, codes, i, sparse=sparse)
        pyro.sample("x", likelihood.gathered(out, rows), obs=x)
    return i


class EmpiricalModel(PyroModule):
    """The empiricalized model as a module: the decoder and the ``N x d`` codes are its
    parameters, so that it trains with Pyro's ``SVI`` and param store, or as
    ``MAPA_ELBO(K, S)(model, guide)`` (an ``ELBOModule``) with a torch optimiser, under
    ``DistributedDataParallel`` too (:mod:`pyro_mapa.trainer`). Called as ``model(x, idx)``.

    :param decoder: ``f_theta``, ``d -> D`` outputs (turned into a ``PyroModule`` in place, as
        Pyro's ``to_pyro_module_`` does, so that its parameters are Pyro parameters).
    :param codes: the initial codes, ``N x d`` (e.g. :func:`~pyro_mapa.pca_codes`).
    :param likelihood: a :class:`~pyro_mapa.models.Likelihood`, or a Gaussian's ``sigma``.
    :param sparse: the codes' gradient sparse, only the rows a step decoded, for
        ``torch.optim.SparseAdam`` (at millions of points a dense optimiser's pass over all
        ``N x d`` codes each step costs more than the step; benchmarks/RESULTS.md).
    :param code_noise: ``tau``: each decoded code perturbed by ``N(0, tau^2 I)`` noise
        (:func:`observe_empirical`); fit the prior with ``fit_prior(..., code_noise=tau)``.
    """

    def __init__(self, decoder: torch.nn.Module, codes: torch.Tensor, likelihood: Likelihood | float,
                 sparse: bool = False, code_noise: float = 0.0):
        super().__init__()
        if codes.dim() != 2:
            raise ValueError(f"codes must be N x d, got shape {tuple(codes.shape)}")
        code_noise = check_code_noise(code_noise)
        if not isinstance(decoder, PyroModule):
            to_pyro_module_(decoder)
        self.decoder = decoder
        self.codes = torch.nn.Parameter(codes.detach().clone())
        self.likelihood = as_likelihood(likelihood)
        self.sparse = sparse
        self.code_noise = code_noise

    def forward(self, x: torch.Tensor | None = None, idx: torch.Tensor | None = None) -> torch.Tensor:
        return observe_empirical(self.decoder, self.codes, self.likelihood, x, idx, self.sparse, self.code_noise)
