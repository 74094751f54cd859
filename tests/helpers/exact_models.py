"""
Pyro models written the way Pyro users write them, with free site names, whose log p(x) and posterior
are known in closed form; each guide draws the exact posterior. ``EXACT`` names them for parametrizing.
"""

import math

import pyro
import pyro.distributions as dist
import torch


class TwoSiteLinearGaussian:
    r"""
    A hierarchy :math:`a \to b \to y`: :math:`a \sim \mathcal{N}(0, I_2)`, :math:`b | a \sim
    \mathcal{N}(Aa, s^2)`, :math:`y | a, b \sim \mathcal{N}(W[a; b] + c, \sigma^2 I_5)`, inside a plate
    named ``"rows"``. Jointly Gaussian: :math:`\log p(y)` and the posterior are exact, and the guide
    draws the exact posterior, :math:`a` first, then :math:`b` given :math:`a`.
    """

    def __init__(self, x_dim=5, sigma=0.6, s=0.5, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.A = torch.randn(1, 2, generator=g)
        self.W = torch.randn(x_dim, 3, generator=g)
        self.c = torch.randn(x_dim, generator=g)
        self.sigma, self.s = sigma, s
        # The prior covariance of z = [a; b].
        self.prior_cov = torch.zeros(3, 3)
        self.prior_cov[:2, :2] = torch.eye(2)
        self.prior_cov[:2, 2:] = self.A.T
        self.prior_cov[2:, :2] = self.A
        self.prior_cov[2:, 2:] = self.A @ self.A.T + s**2

    def model(self, y):
        with pyro.plate("rows", y.shape[0]):
            a = pyro.sample("a", dist.Normal(y.new_zeros(2), 1.0).to_event(1))
            b = pyro.sample("b", dist.Normal(a @ self.A.T, self.s).to_event(1))
            loc = torch.cat([a, b], -1) @ self.W.T + self.c
            pyro.sample("y", dist.Normal(loc, self.sigma).to_event(1), obs=y)

    def posterior(self, y):
        precision = torch.linalg.inv(self.prior_cov) + self.W.T @ self.W / self.sigma**2
        cov = torch.linalg.inv(precision)
        mean = (y - self.c) @ self.W / self.sigma**2 @ cov
        return mean, cov

    def guide(self, y):
        mean, cov = self.posterior(y)
        with pyro.plate("rows", y.shape[0]):
            a = pyro.sample("a", dist.MultivariateNormal(mean[:, :2], cov[:2, :2]))
            gain = cov[2:, :2] @ torch.linalg.inv(cov[:2, :2])
            b_loc = mean[:, 2:] + (a - mean[:, :2]) @ gain.T
            b_var = cov[2:, 2:] - gain @ cov[:2, 2:]
            pyro.sample("b", dist.Normal(b_loc, b_var.sqrt().squeeze()).to_event(1))

    def log_px(self, y):
        cov = self.W @ self.prior_cov @ self.W.T + self.sigma**2 * torch.eye(len(self.c))
        return dist.MultivariateNormal(self.c, cov).log_prob(y)

    def sample(self, num):
        z = dist.MultivariateNormal(torch.zeros(3), self.prior_cov).sample((num,))
        return z @ self.W.T + self.c + self.sigma * torch.randn(num, len(self.c))


class GammaPoisson:
    r"""
    A Gamma latent rate per datapoint and ``D`` Poisson counts in a plate nested inside the data
    plate: :math:`r \sim \text{Gamma}(\alpha, \beta)`, :math:`k_j \sim \text{Poisson}(r)`. Conjugate:
    the posterior is :math:`\text{Gamma}(\alpha + S, \beta + D)` with :math:`S = \sum_j k_j`, and
    :math:`\log p(k) = \alpha \log\beta - \log\Gamma(\alpha) + \log\Gamma(\alpha + S) - (\alpha + S)
    \log(\beta + D) - \sum_j \log k_j!`. The latent's support is positive: the estimators work on its log.
    """

    alpha, beta, num_counts = 3.0, 0.5, 4

    def model(self, k):
        with pyro.plate("units", k.shape[0], dim=-1):
            rate = pyro.sample("rate", dist.Gamma(self.alpha, self.beta))
            with pyro.plate("counts", self.num_counts, dim=-2):
                pyro.sample("k", dist.Poisson(rate), obs=k.T)

    def guide(self, k):
        with pyro.plate("units", k.shape[0], dim=-1):
            pyro.sample("rate", dist.Gamma(self.alpha + k.sum(-1), self.beta + self.num_counts))

    def log_px(self, k):
        a, b, d, s = self.alpha, self.beta, self.num_counts, k.sum(-1)
        return (
            a * math.log(b) - math.lgamma(a) + torch.lgamma(a + s) - (a + s) * math.log(b + d)
            - torch.lgamma(k + 1).sum(-1)
        )

    def sample(self, num):
        rate = dist.Gamma(self.alpha, self.beta).sample((num,))
        return dist.Poisson(rate[:, None].expand(num, self.num_counts)).sample()


class RenamedLinearGaussian:
    """The paper's linear-Gaussian case (z ~ N(0, I), x ~ N(Wz + b, σ²I)) with sites "code" and "pixels"."""

    def __init__(self, z_dim=2, x_dim=6, sigma=0.5, seed=2):
        g = torch.Generator().manual_seed(seed)
        self.W, self.b, self.sigma = torch.randn(x_dim, z_dim, generator=g), torch.randn(x_dim, generator=g), sigma

    def model(self, x):
        with pyro.plate("batch", x.shape[0]):
            code = pyro.sample("code", dist.Normal(x.new_zeros(self.W.shape[1]), 1.0).to_event(1))
            pyro.sample("pixels", dist.Normal(code @ self.W.T + self.b, self.sigma).to_event(1), obs=x)

    def guide(self, x):
        precision = torch.eye(self.W.shape[1]) + self.W.T @ self.W / self.sigma**2
        cov = torch.linalg.inv(precision)
        mean = (x - self.b) @ self.W / self.sigma**2 @ cov
        with pyro.plate("batch", x.shape[0]):
            pyro.sample("code", dist.MultivariateNormal(mean, cov))

    def log_px(self, x):
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(len(self.b))
        return dist.MultivariateNormal(self.b, cov).log_prob(x)

    def sample(self, num):
        z = torch.randn(num, self.W.shape[1])
        return z @ self.W.T + self.b + self.sigma * torch.randn(num, len(self.b))


EXACT = {"two-sites": TwoSiteLinearGaussian, "gamma-poisson": GammaPoisson, "renamed": RenamedLinearGaussian}
