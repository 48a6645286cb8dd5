"""What ``pyro-mapa train`` learns, in one file: the decoder, the codes, the fitted prior and
the settings, with a fingerprint of the training data and a checksum (as the cache is saved:
:mod:`pyro_mapa._files`), written atomically."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pyro.distributions as dist
import torch

from .._checks import as_data_tensor, check_count
from .._files import fingerprint, read_checked_file, write_checked_file
from ..evaluation import empirical_log_likelihood
from ..models import BernoulliLikelihood, Likelihood, NormalLikelihood, make_decoder
from ..models.priors import prior_from_tensors, prior_tensors

__all__ = ["FORMAT", "TrainedModel"]

FORMAT = "pyro-mapa-model/1"  # the settings are under the checksum too


def _likelihood_settings(likelihood: Likelihood) -> dict:
    if isinstance(likelihood, BernoulliLikelihood):
        return {"likelihood": "bernoulli"}
    if isinstance(likelihood, NormalLikelihood):
        return {"likelihood": "normal", "sigma": likelihood.sigma}
    raise ValueError(f"cannot save a model with a likelihood of type {type(likelihood).__name__}")


def _likelihood_from_settings(settings: dict) -> Likelihood:
    if settings["likelihood"] == "bernoulli":
        return BernoulliLikelihood()
    if settings["likelihood"] == "normal":
        return NormalLikelihood(settings["sigma"])
    raise ValueError(f"unknown likelihood {settings['likelihood']!r}")


@dataclass
class TrainedModel:
    """A trained empiricalized model and its fitted prior: ``z ~ prior``, ``x ~ p(x | f(z))``
    generates new data; the empiricalized model ``i ~ Categorical(N)``, ``x ~ p(x | f(z_i))``
    is what MAPA trained, and scores new data exactly (:meth:`log_likelihood`).

    :param decoder: the network ``make_decoder(latent_dim, D, hidden, layers)``.
    :param codes: the training points' codes, ``N x d``.
    :param likelihood: the observation model.
    :param prior: the prior fitted to the codes (:func:`~pyro_mapa.fit_prior`).
    :param data_fingerprint: the training data's fingerprint (:meth:`save` and :meth:`load` check it).
    :param settings: how it was trained (``hidden``, ``K``, ``S``, ``epochs``, ...), kept in the file.
    """

    decoder: torch.nn.Module
    codes: torch.Tensor
    likelihood: Likelihood
    prior: dist.Distribution
    data_fingerprint: str
    settings: dict = field(default_factory=dict)

    @staticmethod
    def fingerprint_of(data: torch.Tensor) -> str:
        """The fingerprint a model trained on ``data`` carries."""
        return fingerprint(data, {"file": FORMAT})

    def sample(self, num_samples: int) -> torch.Tensor:
        """``num_samples`` new observations, ``z ~ prior``, ``x ~ p(x | f(z))``, from torch's
        generator (seed it with ``pyro.set_rng_seed``)."""
        check_count(num_samples, "num_samples")
        with torch.no_grad():
            z = self.prior.sample((num_samples,))
            return self.likelihood.distribution(self.decoder(z)).sample()

    def log_likelihood(self, x) -> torch.Tensor:
        """Exact ``log p(x_n | theta, Z)`` of the empiricalized model for each row of ``x``
        (docs/math.md, section 1): a logsumexp over the ``N`` codes, no sampling."""
        x = as_data_tensor(x, binary=self.likelihood.binary).to(self.codes.device, self.codes.dtype)
        if x.shape[1] != self.settings.get("obs_dim", x.shape[1]):
            raise ValueError(f"x has {x.shape[1]} columns; the model was trained on {self.settings['obs_dim']}")
        return empirical_log_likelihood(self.decoder, self.codes, x, self.likelihood)

    def save(self, path: str | os.PathLike) -> None:
        """Write the model to ``path`` atomically (an existing file is replaced only once the new
        one is completely written)."""
        family, prior = prior_tensors(self.prior)
        tensors = {"codes": self.codes, **{f"decoder.{k}": v for k, v in self.decoder.state_dict().items()},
                   **{f"prior.{k}": v for k, v in prior.items()}}
        settings = {**self.settings, **_likelihood_settings(self.likelihood), "prior_family": family}
        write_checked_file(path, FORMAT, tensors, self.data_fingerprint, checked=("settings",), settings=settings)

    @classmethod
    def load(cls, path: str | os.PathLike, data=None) -> "TrainedModel":
        """A model :meth:`save` wrote; given ``data``, it must be the data the model was trained on.

        :raises ValueError: if the file is not a complete, intact model file, or ``data`` is other data.
        """
        payload = read_checked_file(path, (FORMAT,), "pyro-mapa model", checked=("settings",))
        settings, tensors = dict(payload["settings"]), payload["tensors"]
        try:
            likelihood = _likelihood_from_settings(settings)
            codes = tensors["codes"]
            # files written before the layers were a setting hold a tanh decoder
            decoder = make_decoder(codes.shape[1], settings["obs_dim"], settings["hidden"],
                                   settings.get("layers", "tanh")).to(codes.dtype)
            decoder.load_state_dict({k[len("decoder."):]: v for k, v in tensors.items() if k.startswith("decoder.")})
            prior = prior_from_tensors(settings.pop("prior_family"),
                                       {k[len("prior."):]: v for k, v in tensors.items() if k.startswith("prior.")})
        except (KeyError, ValueError, RuntimeError) as e:  # written by another version, or by hand
            raise ValueError(f"{path} is not a readable pyro-mapa model: {e}") from e
        if data is not None:
            data = as_data_tensor(data, binary=likelihood.binary)
            if cls.fingerprint_of(data) != payload["fingerprint"]:
                raise ValueError(f"{path} was trained on other data (N={len(tensors['codes'])}, D={settings['obs_dim']}); "
                                 f"the data given has shape {tuple(data.shape)}")
        for name in ("likelihood", "sigma"):
            settings.pop(name, None)
        return cls(decoder.requires_grad_(False), codes, likelihood, prior, payload["fingerprint"], settings)
