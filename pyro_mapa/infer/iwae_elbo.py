r"""The importance-weighted autoencoder bound, per datapoint (the IWAE baseline).

.. math::
    \mathcal{L}_S = \sum_n s_n \Big[\log \frac{1}{S} \sum_{s=1}^S
        \frac{p(x_n, z_{n,s})}{q(z_{n,s} \mid x_n)}\Big], \qquad z_{n,s} \sim q(\cdot \mid x_n) \text{ i.i.d.}

Pyro's ``RenyiELBO(alpha=0)`` takes one logsumexp over the whole minibatch, which
is not a valid bound under subsampling; this one takes it per datapoint and
applies the subsampling scale ``s_n`` after it (:mod:`pyro_mapa.infer.importance`).

References: Burda, Grosse, Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016.
"""

from __future__ import annotations

import math

from .._checks import check_count
from .importance import ImportanceWeightedELBO

__all__ = ["IWAE_ELBO"]


class IWAE_ELBO(ImportanceWeightedELBO):
    """Per-datapoint IWAE bound with ``S = num_particles`` i.i.d. draws from a
    reparameterized guide over local latents (inside the data plate).

    :param num_particles: ``S``, draws per datapoint (``S = 1`` is ``Trace_ELBO``).
    :param max_plate_nesting: the model's plate nesting; guessed if infinite.

    >>> elbo = IWAE_ELBO(num_particles=20)
    """

    def __init__(self, num_particles: int = 5, max_plate_nesting: float = float("inf")):
        num_particles = check_count(num_particles, "num_particles")
        super().__init__(num_particles, math.log(num_particles), max_plate_nesting)
