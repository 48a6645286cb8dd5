"""Small empiricalized models shared by the tests, with their exact answers."""

import math

import pyro
import pyro.distributions as dist
import torch

from pyro_mapa import decode_unique
from pyro_mapa.models import BernoulliLikelihood, NormalLikelihood


class Empirical:
    """An empiricalized Gaussian model with ``N`` codes and a small decoder, its likelihood
    written with torch's distribution on the gathered outputs."""

    def __init__(self, num_points=30, obs_dim=2, sigma=0.5, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.N, self.sigma, self.likelihood = num_points, sigma, NormalLikelihood(sigma)
        self.data = torch.randn(num_points, obs_dim, generator=g, dtype=torch.get_default_dtype())
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, obs_dim))
        self.init_codes = torch.randn(num_points, 1, generator=g, dtype=torch.get_default_dtype())

    def model(self, x, idx=None):
        decoder = pyro.module("decoder", self.net)
        codes = pyro.param("codes", lambda: self.init_codes.clone())
        with pyro.plate("data", self.N, subsample=idx):
            i = pyro.sample("i", dist.Categorical(logits=torch.zeros(self.N)))
            pyro.sample("x", self.likelihood.distribution(decoder(codes[i])), obs=x)

    def create_plates(self, x, idx=None):
        return pyro.plate("data", self.N, subsample=idx)

    def log_lik_matrix(self, x):
        """``log p(x_n | f(z_m))`` for every datapoint and code (needs the params), by torch."""
        return self.likelihood.distribution(self.net(pyro.param("codes"))).log_prob(x[:, None, :])

    def exact_log_marginal(self, x):
        """``logsumexp_m log p(x_n | f(z_m)) - log N`` per datapoint."""
        return self.log_lik_matrix(x).logsumexp(-1) - math.log(self.N)


class GatheredEmpirical(Empirical):
    """The same model, its likelihood written with decode_unique and the gathered form
    (GatheredNormal here)."""

    def model(self, x, idx=None):
        decoder = pyro.module("decoder", self.net)
        codes = pyro.param("codes", lambda: self.init_codes.clone())
        with pyro.plate("data", self.N, subsample=idx):
            i = pyro.sample("i", dist.Categorical(logits=torch.zeros(self.N)))
            out, rows = decode_unique(decoder, codes, i)
            pyro.sample("x", self.likelihood.gathered(out, rows), obs=x)


class BernoulliEmpirical(GatheredEmpirical):
    """The gathered model with a Bernoulli likelihood (GatheredBernoulli): ``N`` binary points
    of ``D`` features, codes of dimension 2."""

    def __init__(self, num_points=25, obs_dim=12, seed=4):
        g = torch.Generator().manual_seed(seed)
        self.N, self.likelihood = num_points, BernoulliLikelihood()
        self.data = (torch.rand(num_points, obs_dim, generator=g) < 0.3).to(torch.get_default_dtype())
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, obs_dim))
        self.init_codes = torch.randn(num_points, 2, generator=g, dtype=torch.get_default_dtype())
