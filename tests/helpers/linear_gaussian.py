"""
Probabilistic PCA with its answers in closed form (the marginal, the posterior, the maximum-likelihood
solution), and a tiny training run: shared by the tests of AIS and of the baselines, and by
benchmarks/bench_bdmc.py.
"""

import csv
import math

import pyro.distributions as dist
import torch
from torch import nn

from pyro_aevb import VAE, TrainConfig, train


class LinearGaussianVAE(VAE):
    r"""
    Probabilistic PCA as a :class:`VAE`: :math:`x \sim \mathcal{N}(Wz + b, \sigma^2 I)`,
    :math:`z \sim \mathcal{N}(0, I)`, with the library's MLP encoder. Its posterior and its
    maximum-likelihood solution (Tipping & Bishop, 1999) are known in closed form.
    """

    def __init__(self, x_dim, z_dim, hidden_dim=16, likelihood="gaussian", init_std=0.1):
        super().__init__(x_dim, z_dim, hidden_dim, "gaussian", init_std)
        self.decoder = nn.Linear(z_dim, x_dim)
        self.decoder.log_scale = nn.Parameter(torch.zeros(()))

    def observation_dist(self, z):
        return dist.Normal(self.decoder(z), self.decoder.log_scale.exp()).to_event(1)

    def set_params(self, W, b, sigma):
        with torch.no_grad():
            self.decoder.weight.copy_(W)
            self.decoder.bias.copy_(b)
            self.decoder.log_scale.fill_(math.log(sigma))
        return self

    def log_likelihood(self, x):
        """The exact mean :math:`\\log p(x)` per datapoint: :math:`x \\sim \\mathcal{N}(b, WW^T + \\sigma^2 I)`."""
        W, b, log_scale = self.decoder.weight, self.decoder.bias, self.decoder.log_scale
        cov = W @ W.T + (2 * log_scale).exp() * torch.eye(self.x_dim)
        return dist.MultivariateNormal(b, cov).log_prob(x).mean().item()

    def posterior(self, x):
        """The exact posterior :math:`p(z|x)`: means ``[N, Nz]`` and the (shared) covariance."""
        W, b, var = self.decoder.weight, self.decoder.bias, (2 * self.decoder.log_scale).exp()
        cov = torch.linalg.inv(torch.eye(self.z_dim) + W.T @ W / var)
        return ((x - b) @ W / var @ cov).detach(), cov.detach()


def linear_gaussian(z_dim, x_dim, sigma=0.5, seed=1):
    """A :class:`LinearGaussianVAE` (the paper's VAE class, so the direct path) with random W, b; its exact p(x)."""
    g = torch.Generator().manual_seed(seed)
    vae = LinearGaussianVAE(x_dim, z_dim).set_params(
        torch.randn(x_dim, z_dim, generator=g) / math.sqrt(z_dim), torch.randn(x_dim, generator=g), sigma
    )
    W, b = vae.decoder.weight.detach(), vae.decoder.bias.detach()
    marginal = dist.MultivariateNormal(b, W @ W.T + sigma**2 * torch.eye(x_dim))
    return vae, marginal


def ppca_data(num_data, x_dim, z_dim, sigma, seed=0):
    g = torch.Generator().manual_seed(seed)
    W, b = torch.randn(x_dim, z_dim, generator=g), torch.randn(x_dim, generator=g)
    z = torch.randn(num_data, z_dim, generator=g)
    return z @ W.T + b + sigma * torch.randn(num_data, x_dim, generator=g)


def ppca_max_log_likelihood(x, z_dim):
    r"""
    The mean log-likelihood at the ML solution of probabilistic PCA (Tipping & Bishop, 1999):
    :math:`b = \bar x`, :math:`\sigma^2` the mean of the discarded eigenvalues of the sample
    covariance :math:`S`, :math:`W = U(\Lambda - \sigma^2 I)^{1/2}`, where :math:`\mathrm{tr}(C^{-1}S) = D`.
    """
    centered = x - x.mean(0)
    eigvals = torch.linalg.eigvalsh(centered.T @ centered / x.shape[0]).flip(0)
    var = eigvals[z_dim:].mean()
    logdet = eigvals[:z_dim].log().sum() + (x.shape[1] - z_dim) * var.log()
    return (-0.5 * (x.shape[1] * (math.log(2 * math.pi) + 1) + logdet)).item()


def tiny_run_metrics(method, tmp_path):
    """The rows of ``metrics.csv`` of a tiny run of ``method`` on mnist5k, as floats (None for empty)."""
    config = TrainConfig(
        dataset="mnist5k", method=method, samples=200, latent_dim=2, hidden=20,
        eval_points=2, eval_train_points=50, log_marginal_points=20,
    )
    train(config, tmp_path, progress=False)
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows, "metrics.csv has no rows"
    return [{k: float(v) if v else None for k, v in row.items()} for row in rows]
