"""The last density of a costly prior, kept for the same unchanged tensor.

An importance sampler scores each draw twice under a prior: once under the proposal, whose
defensive component is the prior, and once under the model (docs/math.md, section 5). For a
mixture of many components that second pass was most of a scorer's time. Without gradients,
the last value's densities are kept and returned again for the same tensor, as long as torch's
version counters say that neither it, the distribution's parameters nor the returned densities
changed in place, nor a parameter was replaced by another tensor (writes through ``.data`` and
fused optimizers are not counted by torch: score a new tensor after those). Both callers get the
same tensor of densities: neither may change it in place for the other (a change is seen, and
the next call computes afresh, but the other caller's copy is the changed one).
"""

from __future__ import annotations

import torch

__all__ = ["RepeatedDensity"]


class RepeatedDensity:
    """Mixin for a distribution whose density is costly: :meth:`log_prob` returns the last result
    again for the same unchanged value. The distribution defines ``_log_prob(value)``, the density
    itself, and ``_memo_parameters()``, the tensors it depends on (``ExemplarMixture``,
    ``GaussianMixture``)."""

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        parameters = self._memo_parameters()
        key = self._memo_key(value, parameters)
        memo = getattr(self, "_memo", None)
        if (key is not None and memo is not None and memo[0] is value and len(memo[1]) == len(parameters)
                and all(a is b for a, b in zip(memo[1], parameters)) and memo[2] == key and memo[3]._version == memo[4]):
            return memo[3]
        result = self._log_prob(value)
        if key is not None:
            self._memo = (value, parameters, key, result, result._version)
        return result

    @staticmethod
    def _memo_key(value: torch.Tensor, parameters: tuple[torch.Tensor, ...]) -> tuple[int, ...] | None:
        """The versions of the value and of the parameters (any in-place change is a new
        value; a parameter replaced by another tensor is told by identity), or ``None`` where
        nothing may be kept (under autograd, in inference mode)."""
        tensors = (value, *parameters)
        if torch.is_grad_enabled() or torch.is_inference_mode_enabled() or any(t.is_inference() for t in tensors):
            return None
        return tuple(t._version for t in tensors)
