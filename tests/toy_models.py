"""Small empiricalized models shared by the tests, with their exact answers."""

import math

import pyro
import pyro.distributions as dist
import torch


class Empirical:
    """An empiricalized Gaussian model with ``N`` codes and a small decoder."""

    def __init__(self, num_points=30, obs_dim=2, sigma=0.5, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.N, self.sigma = num_points, sigma
        self.data = torch.randn(num_points, obs_dim, generator=g, dtype=torch.get_default_dtype())
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, obs_dim))
        self.init_codes = torch.randn(num_points, 1, generator=g, dtype=torch.get_default_dtype())

    def model(self, x, idx=None):
        decoder = pyro.module("decoder", self.net)
        codes = pyro.param("codes", lambda: self.init_codes.clone())
        with pyro.plate("data", self.N, subsample=idx):
            i = pyro.sample("i", dist.Categorical(logits=torch.zeros(self.N)))
            pyro.sample("x", dist.Normal(decoder(codes[i]), self.sigma).to_event(1), obs=x)

    def create_plates(self, x, idx=None):
        return pyro.plate("data", self.N, subsample=idx)

    def log_lik_matrix(self, x):
        """``log p(x_n | f(z_m))`` for every datapoint and code (needs the params)."""
        mean = self.net(pyro.param("codes"))
        return dist.Normal(mean, self.sigma).to_event(1).log_prob(x[:, None, :])

    def exact_log_marginal(self, x):
        """``logsumexp_m log p(x_n | f(z_m)) - log N`` per datapoint."""
        return self.log_lik_matrix(x).logsumexp(-1) - math.log(self.N)
