r"""A Normal likelihood over decoded rows, scored in one pass.

In the empiricalized model a step decodes ``U`` distinct codes into means
``mu_u`` and scores each of the ``P x B`` (particle, datapoint) pairs against the
row ``u = index[p, b]``. Written as ``Normal(mu[index], sigma).to_event(1)`` this
costs several ``P x B x D`` temporaries (``torch.distributions.Normal`` broadcasts
``sigma`` and its logarithm to the full shape) and a slow accumulating backward of
the advanced-index gather. :class:`GatheredNormal` is the same
distribution, computed with ``y = (x - c) / sigma`` and ``m_u = (mu_u - c) / sigma``
(the ``U`` means and ``B`` observations are shifted by the means' average ``c``, which
is exact and removes a common offset, and scaled before anything is gathered) as

.. math::
    \log p(x_b \mid u) = -\tfrac12 \lVert m_u - y_b \rVert^2
        - \textstyle\sum_d \log\sigma_d - \tfrac D2 \log 2\pi,

in one of two ways, whichever touches fewer numbers:

* gather: ``m[index] - y`` with ``index_select`` (whose backward is an ``index_add``),
  ``P x B x D`` numbers: best when the rows are many (large ``N``, few repeats);
* expand: ``||m_u - y_b||^2 = |y_b|^2 - 2 y_b . m_u + |m_u|^2`` for all ``B x U`` pairs by
  one matrix product, then the ``P x B`` entries needed: best when every row is needed
  (exact enumeration, ``U = N``) or rows repeat a lot. The expansion is computed in
  float64 (a matrix product of ``B x D`` and ``D x U``: cheap), since in float32 it loses
  about ``eps (spread / sigma)^2 D`` where the direct difference loses nothing.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution, constraints

from .._tensors import squared_distances

__all__ = ["GatheredNormal"]

#: How many times less a matrix-product entry costs than a gathered one: the expansion is
#: used when it touches at most this many times the entries the gather would. A tuning
#: constant; benchmarks/step_overhead.py measures the two paths.
MATMUL_ADVANTAGE = 32


class GatheredNormal(TorchDistribution):
    """``Normal(loc[index], scale).to_event(1)`` without materialising ``loc[index]`` first.

    :param loc: ``(U, D)`` distinct means (a decoder run on distinct codes,
        :func:`~pyro_mapa.decode_unique`).
    :param scale: standard deviations shared by all rows: a number or a ``(D,)`` tensor.
    :param index: integer rows of ``loc``, of any shape: the batch shape.

    >>> loc, index = torch.tensor([[0.0, 0.0], [1.0, 2.0]]), torch.tensor([[1, 0, 1]])
    >>> x = torch.tensor([[1.0, 1.0], [0.0, 1.0], [2.0, 2.0]])
    >>> gathered = GatheredNormal(loc, 0.5, index).log_prob(x)
    >>> torch.allclose(gathered, torch.distributions.Normal(loc[index], 0.5).log_prob(x).sum(-1))
    True
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.independent(constraints.real, 1)
    has_rsample = True

    def __init__(self, loc: torch.Tensor, scale: float | torch.Tensor, index: torch.Tensor, validate_args=None):
        if loc.dim() != 2:
            raise ValueError(f"loc must hold (U, D) distinct means, got shape {tuple(loc.shape)}")
        scale = torch.as_tensor(scale, dtype=loc.dtype, device=loc.device)
        if scale.dim() > 1 or scale.numel() not in (1, loc.shape[-1]):
            raise ValueError(
                f"scale must be a number or a ({loc.shape[-1]},) vector shared by all rows, got shape "
                f"{tuple(scale.shape)}; for per-row scales use Normal(loc[index], scale[index]).to_event(1)"
            )
        if index.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"index must be an int64 (or int32) tensor of rows of loc, got dtype {index.dtype}")
        self.loc, self.scale, self.index = loc, scale, index
        super().__init__(index.shape, loc.shape[-1:], validate_args=validate_args)
        if self._validate_args and index.numel() and (index.min() < 0 or index.max() >= len(loc)):
            raise ValueError(
                f"index must hold rows of loc in [0, {len(loc)}), got values in [{int(index.min())}, {int(index.max())}]"
            )

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(GatheredNormal, _instance)
        new.loc, new.scale, new.index = self.loc, self.scale, self.index.expand(batch_shape)
        super(GatheredNormal, new).__init__(torch.Size(batch_shape), self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _gather(self, rows: torch.Tensor) -> torch.Tensor:
        return rows.index_select(0, self.index.reshape(-1)).reshape(self.index.shape + rows.shape[-1:])

    @property
    def mean(self) -> torch.Tensor:
        return self._gather(self.loc)

    @property
    def variance(self) -> torch.Tensor:
        return self.scale.pow(2).expand(self.batch_shape + self.event_shape)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        noise = torch.randn(self._extended_shape(sample_shape), dtype=self.loc.dtype, device=self.loc.device)
        return self.mean + self.scale * noise

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        dim = self.loc.shape[-1]
        shift = self.loc.detach().mean(0)  # exact; cancels a common offset (per row: a bad value stays in its row)
        means, obs = (self.loc - shift) / self.scale, (value - shift) / self.scale
        rows = obs.reshape(-1, dim)
        pairs_needed = math.prod(torch.broadcast_shapes(value.shape[:-1], self.index.shape))
        if len(rows) * len(means) <= MATMUL_ADVANTAGE * pairs_needed:
            pairs = squared_distances(rows, means, precise=True)
            row = torch.arange(len(rows), device=value.device).reshape(value.shape[:-1])
            row, index = torch.broadcast_tensors(row, self.index)
            squared = pairs.reshape(-1).index_select(0, (row * len(means) + index).reshape(-1)).reshape(row.shape)
        else:
            squared = (self._gather(means) - obs).pow(2).sum(-1)
        log_norm = self.scale.log().expand(dim).sum() + 0.5 * dim * math.log(2 * math.pi)
        return -0.5 * squared - log_norm
