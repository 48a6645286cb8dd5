r"""An importance-sampling proposal from an encoder fitted to a trained model's posterior.

Where :func:`~pyro_mapa.evaluation.laplace_mixture_proposal` fails (at ``D = 784`` its
weights have an effective sample size near 1: docs/math.md, section 5), the common fallback
is an amortized Gaussian ``q_phi(z | x) = N(mu_phi(x), diag sigma_phi(x)^2)`` fitted *after*
training to the trained model's posterior, with the model frozen: the parameters ``phi``
maximise the per-datapoint importance-weighted bound

.. math::
    \mathcal{L}_S(\phi) = \sum_n \log \frac{1}{S} \sum_{s=1}^S
        \frac{p(z_{n,s})\, p(x_n \mid f(z_{n,s}))}{q_\phi(z_{n,s} \mid x_n)}

(:class:`~pyro_mapa.infer.IWAE_ELBO`; ``S > 1`` makes ``q_phi`` cover the posterior rather
than sit inside it, which is what a proposal needs). It is the same for every method: the
VAE's own encoder is not used, so a method is not scored by the encoder it trained with.
The proposal mixes ``q_phi``, widened by ``inflation``, with the prior as a defensive
component,

.. math::
    r(z \mid x) = w_0\, p(z) + (1 - w_0)\, N(z; \mu_\phi(x), \text{inflation}^2 \operatorname{diag} \sigma_\phi(x)^2),

so that the weights stay bounded by ``p(x | f(z)) / w_0``. The estimate stays unbiased for
any ``phi`` (its draws are independent of the fit), whichever points ``q_phi`` was fitted on.

An amortized ``q_phi`` is one network for all points, so it fits no point's posterior exactly
(the amortization gap). :meth:`EncoderProposal.refined` closes it for the points being scored:
each one's Gaussian starts at the encoder's and its own ``mu_n, log sigma_n`` are fitted by the
same bound on that point alone (semi-amortized inference; docs/math.md, section 5).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import pyro
import pyro.distributions as dist
import torch

from .._checks import check_count
from .._progress import progress_bar
from .._tensors import row_chunks
from ..infer import IWAE_ELBO
from ..models import Likelihood, as_likelihood
from .mixtures import DefensiveMixture, fast_prior

__all__ = ["EncoderProposal"]

#: The range a proposal's log scale is kept in (an untrained encoder's outputs can be anything).
LOG_SCALE_RANGE = (-10.0, 5.0)


class EncoderProposal:
    """A proposal guide ``proposal(x)`` for the latent site ``site`` of the model
    ``z ~ prior``, ``x ~ p(x | decoder(z))`` in a plate over the rows of ``x``, whose main
    component is an encoder fitted to that model's posterior by :meth:`fit`.

    :param encoder: ``x -> (loc, log scale)`` concatenated on the last dimension (``2 d``
        outputs); its parameters are fitted here, in place (nothing enters Pyro's param store).
    :param decoder: ``f``, frozen while the encoder is fitted (its parameters get no gradient).
    :param prior: the model's prior ``p(z)``, the defensive component too.
    :param likelihood: the observation model, or a number: the Gaussian's ``sigma``.
    :param num_particles: ``S`` of the fitting bound.
    :param prior_weight: ``w_0``.
    :param inflation: how much wider than ``q_phi`` the main component is.
    :param lr: Adam's learning rate for the encoder.

    The encoder carries over between calls of :meth:`fit` (a fit after a few more training
    steps starts from the last one), and between models with the same latent dimension:
    call :meth:`set_model` with the new decoder and prior.
    """

    def __init__(
        self,
        encoder: torch.nn.Module,
        decoder: Callable[[torch.Tensor], torch.Tensor],
        prior: dist.Distribution,
        likelihood: Likelihood | float,
        *,
        num_particles: int = 5,
        prior_weight: float = 0.1,
        inflation: float = 1.0,
        lr: float = 1e-3,
        site: str = "z",
    ):
        if not 0.0 < prior_weight < 1.0:
            raise ValueError(f"prior_weight must lie in (0, 1), got {prior_weight}")
        if not inflation > 0:
            raise ValueError(f"inflation must be positive, got {inflation}")
        self.encoder, self.likelihood, self.site = encoder, as_likelihood(likelihood), site
        self.prior_weight, self.inflation = prior_weight, inflation
        self.bound = IWAE_ELBO(check_count(num_particles, "num_particles"), max_plate_nesting=1)
        self.refining_bound = IWAE_ELBO(num_particles, max_plate_nesting=1, estimator="dreg")
        self.optimizer = torch.optim.Adam(encoder.parameters(), lr=lr)
        self.set_model(decoder, prior)

    def set_model(self, decoder: Callable[[torch.Tensor], torch.Tensor], prior: dist.Distribution) -> None:
        """The model whose posterior the encoder is fitted to, and the proposal's defensive component
        (the prior, as :func:`~pyro_mapa.evaluation.mixtures.fast_prior` gives it: the same density)."""
        self.decoder, self.prior = decoder, fast_prior(prior)

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's location and log scale (kept in :data:`LOG_SCALE_RANGE`) for each row of ``x``."""
        loc, log_scale = self.encoder(x).chunk(2, dim=-1)
        return loc, log_scale.clamp(*LOG_SCALE_RANGE)

    def _model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", len(x)):
            z = pyro.sample(self.site, self.prior)
            pyro.sample("x", self.likelihood.distribution(self.decoder(z)), obs=x)

    def _gaussian_guide(self, x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor) -> None:
        with pyro.plate("data", len(x)):
            pyro.sample(self.site, dist.Normal(loc, log_scale.exp()).to_event(1))

    def _fitting_guide(self, x: torch.Tensor) -> None:
        self._gaussian_guide(x, *self._encode(x))

    @contextmanager
    def _frozen_decoder(self) -> Iterator[None]:
        """The decoder's parameters take no gradient inside (their flags restored after)."""
        frozen = [p for p in getattr(self.decoder, "parameters", list)() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        try:
            with torch.enable_grad():
                yield
        finally:
            for p in frozen:
                p.requires_grad_(True)

    def _step(self, bound: IWAE_ELBO, optimizer: torch.optim.Optimizer, guide: Callable, x: torch.Tensor, step: int,
              divisor: int = 1) -> float:
        """One Adam step of ``guide``'s parameters on ``bound``'s loss over the rows of ``x``, divided by ``divisor``."""
        loss = bound.differentiable_loss(self._model, guide, x) / divisor
        if not torch.isfinite(loss):
            raise ValueError(f"the fitting bound is {loss.item()} at step {step}: lower lr")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    def fit(self, data: torch.Tensor, num_steps: int, batch_size: int = 100, progress: bool | None = False) -> float:
        """Take ``num_steps`` Adam steps on the bound over minibatches of ``data`` (drawn with
        torch's global generator); the decoder's parameters keep their gradients untouched.

        :returns: the bound per point, averaged over the last tenth of the steps.
        """
        check_count(num_steps, "num_steps")
        check_count(batch_size, "batch_size")
        tail, tail_length = 0.0, max(1, num_steps // 10)
        with self._frozen_decoder():
            for step in progress_bar(range(num_steps), progress=progress, desc="scoring encoder", leave=False):
                x = data[torch.randint(0, len(data), (min(batch_size, len(data)),))]
                loss = self._step(self.bound, self.optimizer, self._fitting_guide, x, step, divisor=len(x))
                if step >= num_steps - tail_length:
                    tail -= loss / tail_length
        return tail

    def refined(self, x: torch.Tensor, num_steps: int, lr: float = 0.05,
                progress: bool | None = False) -> Callable[[torch.Tensor], None]:
        """This proposal for the rows of ``x`` alone, each row's main component
        ``N(mu_n, diag sigma_n^2)`` started at the encoder's and fitted to that row's posterior by
        ``num_steps`` Adam steps on the same bound as :meth:`fit`, with its doubly reparameterized
        gradient (the standard gradient's variance stays above zero at the posterior, DReG's goes to
        zero), the rate falling from ``lr`` to 0 on a cosine (Adam moves each coordinate by about the
        rate whatever its gradient: falling to 0, the last iterate settles however sharp the
        posterior) and Adam's second moment kept over about 100 steps (the first steps' large
        gradients would otherwise slow the last ones). The bound is a sum over rows and each row's
        ``mu_n, log sigma_n`` enter only its own term, so fitting the rows in chunks of
        :data:`~pyro_mapa._tensors.CHUNK_ENTRIES` entries (memory stays bounded) solves the problem
        of fitting them all at once. Encoder and decoder are left as they are; the draws come from
        torch's global generator.

        :returns: a guide that takes the values of ``x`` alone (other points are refused: their
            fits are not in it).
        """
        check_count(num_steps, "num_steps")
        locs, log_scales = [], []
        with self._frozen_decoder():
            for rows in progress_bar(row_chunks(x), progress=progress, desc="refining proposals", leave=False):
                with torch.no_grad():
                    loc, log_scale = (value.clone().requires_grad_() for value in self._encode(rows))

                def guide(rows, loc=loc, log_scale=log_scale):
                    self._gaussian_guide(rows, loc, log_scale)

                optimizer = torch.optim.Adam([loc, log_scale], lr=lr, betas=(0.9, 0.99))
                schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, num_steps)
                for step in range(num_steps):
                    self._step(self.refining_bound, optimizer, guide, rows, step)
                    schedule.step()
                    with torch.no_grad():  # projected, not clamped: a clamp would stop its gradient for good
                        log_scale.clamp_(*LOG_SCALE_RANGE)
                locs.append(loc.detach())
                log_scales.append(log_scale.detach())
        return _RefinedProposal(self, x, torch.cat(locs), torch.cat(log_scales).exp())

    def _propose(self, x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> None:
        """``r(z | x)``: ``N(loc, inflation^2 scale^2)`` mixed with the prior, over the rows of ``x``."""
        main = dist.Normal(loc, self.inflation * scale).to_event(1)
        with pyro.plate("data", len(x)):
            pyro.sample(self.site, DefensiveMixture(main, self.prior, self.prior_weight))

    def __call__(self, x: torch.Tensor) -> None:
        with torch.no_grad():
            loc, log_scale = self._encode(x)
        self._propose(x, loc, log_scale.exp())


class _RefinedProposal:
    """:meth:`EncoderProposal.refined`'s guide: the proposal's mixture with each row's own fit."""

    def __init__(self, proposal: EncoderProposal, x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor):
        self.proposal, self.x, self.loc, self.scale = proposal, x.clone(), loc, scale  # x changed in place is refused

    def __call__(self, x: torch.Tensor) -> None:
        if x.shape != self.x.shape or x.device != self.x.device or not torch.equal(x, self.x):
            raise ValueError(f"this proposal was refined for {tuple(self.x.shape)} points and takes those alone, "
                             f"got other points {tuple(x.shape)}: call refined() with them")
        self.proposal._propose(x, self.loc, self.scale)
