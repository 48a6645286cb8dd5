r"""Likelihoods over decoded rows, scored in one pass: :class:`GatheredNormal`, :class:`GatheredBernoulli`.

In the empiricalized model a step decodes ``U`` distinct codes into parameters
``theta_u`` (means, or logits) and scores each of the ``P x B`` (particle, datapoint) pairs
against the row ``u = index[p, b]``. Written as ``Normal(mu[index], sigma).to_event(1)`` this
costs several ``P x B x D`` temporaries and a slow accumulating backward of the
advanced-index gather. These distributions are the same ones, computed in one of two ways,
whichever touches fewer numbers:

* gather: the rows with ``index_select`` (whose backward is an ``index_add``), ``P x B x D``
  numbers: best when the rows are many (large ``N``, few repeats);
* expand: all ``B x U`` pairs by one matrix product, then the ``P x B`` entries needed: best
  when every row is needed (exact enumeration, ``U = N``) or rows repeat a lot.

Gaussian (``y = (x - c) / sigma``, ``m_u = (mu_u - c) / sigma``; the means and observations
are shifted by the means' average ``c``, which is exact and removes a common offset):

.. math::
    \log p(x_b \mid u) = -\tfrac12 \lVert m_u - y_b \rVert^2 - \textstyle\sum_d \log\sigma_d
        - \tfrac D2 \log 2\pi, \qquad
    \lVert m_u - y_b \rVert^2 = |y_b|^2 - 2 y_b . m_u + |m_u|^2.

Bernoulli with logits ``l_u``:

.. math::
    \log p(x_b \mid u) = x_b . l_u - \textstyle\sum_d \operatorname{softplus}(l_{u,d}).

The expansions are computed in float64 (a ``B x D`` by ``D x U`` product: cheap), since in
float32 they cancel where the direct forms (a difference; torch's per-element Bernoulli
log-density) lose nothing (docs/math.md, section 1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution, constraints

from .._tensors import squared_distances

__all__ = ["GatheredBernoulli", "GatheredNormal"]

#: How many times less a matrix-product entry costs than a gathered one: the expansion is
#: used when it touches at most this many times the entries the gather would. A tuning
#: constant; benchmarks/step_overhead.py measures the two paths.
MATMUL_ADVANTAGE = 32


class _Gathered(TorchDistribution):
    """``Family(params[index]).to_event(1)`` for ``(U, D)`` distinct parameter rows.

    Subclasses give :meth:`_prepared` (parameter rows and observations, transformed alike),
    :meth:`_all_pairs` (the log-density of every observation row under every parameter row)
    and :meth:`_direct` (the log-density under gathered rows).
    """

    #: the name of the parameter rows, for error messages
    _rows_name = "rows"

    def __init__(self, params: torch.Tensor, index: torch.Tensor, validate_args=None):
        name = self._rows_name
        if params.dim() != 2:
            raise ValueError(f"{name} must hold (U, D) distinct rows, got shape {tuple(params.shape)}")
        if index.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"index must be an int64 (or int32) tensor of rows of {name}, got dtype {index.dtype}")
        self.index = index
        super().__init__(index.shape, params.shape[-1:], validate_args=validate_args)
        if self._validate_args and index.numel() and (index.min() < 0 or index.max() >= len(params)):
            raise ValueError(
                f"index must hold rows of {name} in [0, {len(params)}), got values in "
                f"[{int(index.min())}, {int(index.max())}]"
            )

    def _gather(self, rows: torch.Tensor) -> torch.Tensor:
        return rows.index_select(0, self.index.reshape(-1)).reshape(self.index.shape + rows.shape[-1:])

    def _prepared(self, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _all_pairs(self, obs: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _direct(self, gathered: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        rows, obs = self._prepared(value)
        flat = obs.reshape(-1, obs.shape[-1])
        pairs_needed = math.prod(torch.broadcast_shapes(value.shape[:-1], self.index.shape))
        if len(flat) * len(rows) > MATMUL_ADVANTAGE * pairs_needed:
            return self._direct(self._gather(rows), obs)
        pairs = self._all_pairs(flat, rows)  # (observations, U)
        row = torch.arange(len(flat), device=value.device).reshape(value.shape[:-1])
        row, index = torch.broadcast_tensors(row, self.index)
        return pairs.reshape(-1).index_select(0, (row * len(rows) + index).reshape(-1)).reshape(row.shape)


class GatheredNormal(_Gathered):
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
    _rows_name = "loc"

    def __init__(self, loc: torch.Tensor, scale: float | torch.Tensor, index: torch.Tensor, validate_args=None):
        scale = torch.as_tensor(scale, dtype=loc.dtype, device=loc.device)
        if loc.dim() == 2 and scale.dim() > 1 or scale.numel() not in (1, loc.shape[-1]):
            raise ValueError(
                f"scale must be a number or a ({loc.shape[-1]},) vector shared by all rows, got shape "
                f"{tuple(scale.shape)}; for per-row scales use Normal(loc[index], scale[index]).to_event(1)"
            )
        self.loc, self.scale = loc, scale
        super().__init__(loc, index, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(GatheredNormal, _instance)
        new.loc, new.scale, new.index = self.loc, self.scale, self.index.expand(batch_shape)
        super(_Gathered, new).__init__(torch.Size(batch_shape), self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self) -> torch.Tensor:
        return self._gather(self.loc)

    @property
    def variance(self) -> torch.Tensor:
        return self.scale.pow(2).expand(self.batch_shape + self.event_shape)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        noise = torch.randn(self._extended_shape(sample_shape), dtype=self.loc.dtype, device=self.loc.device)
        return self.mean + self.scale * noise

    def _log_normalizer(self) -> torch.Tensor:
        dim = self.loc.shape[-1]
        return self.scale.log().expand(dim).sum() + 0.5 * dim * math.log(2 * math.pi)

    def _prepared(self, value):
        shift = self.loc.detach().mean(0)  # exact; cancels a common offset (per row: a bad value stays in its row)
        return (self.loc - shift) / self.scale, (value - shift) / self.scale

    def _all_pairs(self, obs, rows):
        return -0.5 * squared_distances(obs, rows, precise=True) - self._log_normalizer()

    def _direct(self, gathered, obs):
        return -0.5 * (gathered - obs).pow(2).sum(-1) - self._log_normalizer()


class GatheredBernoulli(_Gathered):
    """``Bernoulli(logits=logits[index]).to_event(1)`` without materialising ``logits[index]`` first.

    :param logits: ``(U, D)`` distinct logits (a decoder run on distinct codes,
        :func:`~pyro_mapa.decode_unique`).
    :param index: integer rows of ``logits``, of any shape: the batch shape.

    >>> logits, index = torch.tensor([[0.0, 3.0], [-2.0, 1.0]]), torch.tensor([[1, 0, 1]])
    >>> x = torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    >>> gathered = GatheredBernoulli(logits, index).log_prob(x)
    >>> torch.allclose(gathered, torch.distributions.Bernoulli(logits=logits[index]).log_prob(x).sum(-1))
    True
    """

    arg_constraints = {"logits": constraints.real}
    support = constraints.independent(constraints.boolean, 1)
    has_rsample = False
    _rows_name = "logits"

    def __init__(self, logits: torch.Tensor, index: torch.Tensor, validate_args=None):
        self.logits = logits
        super().__init__(logits, index, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(GatheredBernoulli, _instance)
        new.logits, new.index = self.logits, self.index.expand(batch_shape)
        super(_Gathered, new).__init__(torch.Size(batch_shape), self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self) -> torch.Tensor:
        return torch.sigmoid(self._gather(self.logits))

    @property
    def variance(self) -> torch.Tensor:
        p = self.mean
        return p * (1 - p)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return torch.bernoulli(self.mean.expand(self._extended_shape(sample_shape)))

    def _prepared(self, value):
        return self.logits, value

    def _all_pairs(self, obs, rows):
        with torch.autocast(rows.device.type, enabled=False):
            logits = rows.double()
            pairs = obs.double() @ logits.T - F.softplus(logits).sum(-1)
        return pairs.to(rows.dtype)

    def _direct(self, gathered, obs):
        gathered, obs = torch.broadcast_tensors(gathered, obs)
        return -F.binary_cross_entropy_with_logits(gathered, obs, reduction="none").sum(-1)
