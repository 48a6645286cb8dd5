"""KL warm-up for the ELBO-trained encoder methods (docs/math.md, section 8).

During the first ``W`` decoder passes of training, the model's and the guide's log-densities of
every site but the observation are multiplied by ``beta = min(1, passes / W)``, so that Trace_ELBO
optimises ``E_q[log p(x | z)] - beta KL(q(z | x) || p(z))`` (Bowman et al. 2016; the VampPrior
and Exemplar VAE papers train this way). From ``W`` passes on it is the ELBO again.
"""

from __future__ import annotations

from pyro.poutine.messenger import Messenger

__all__ = ["KLWarmup"]


class KLWarmup(Messenger):
    """Scales the log-density of every site but ``observed`` by :attr:`beta`; wrap both the model
    and the guide with the same instance and set ``beta`` before each step
    (:meth:`set_progress`). Pyro's ``poutine.scale`` scales every site inside it, the observation
    too: this handler leaves the likelihood alone.

    :param num_passes: ``W``, the decoder passes over which ``beta`` rises linearly from 0 to 1.
    :param observed: the name of the likelihood's site.
    """

    def __init__(self, num_passes: int, observed: str = "x") -> None:
        if num_passes <= 0:
            raise ValueError(f"num_passes must be positive, got {num_passes}")
        super().__init__()
        self.num_passes, self.observed, self.beta = num_passes, observed, 0.0

    def set_progress(self, passes: int) -> None:
        """``beta = min(1, passes / W)``."""
        self.beta = min(1.0, passes / self.num_passes)

    def _process_message(self, msg) -> None:
        if msg["type"] == "sample" and msg["name"] != self.observed and self.beta != 1.0:
            msg["scale"] = self.beta * msg["scale"]
