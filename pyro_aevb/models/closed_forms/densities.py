r"""
The densities of the paper's VAE in closed form, from its nets: the Gaussian KL divergence of
Appendix B of [1], the log-likelihood of Eq. (11) or (12), and diagonal Gaussian log-densities, each
from :math:`\log\sigma^2` as the nets give it.

[1] Auto-Encoding Variational Bayes, Diederik P. Kingma, Max Welling (2013)
"""

import torch
import torch.nn.functional as F

from pyro_aevb.models.distributions import HALF_LOG_2PI
from pyro_aevb.models.nets import loc_and_log_var

__all__ = ["gaussian_neg_kl", "gaussian_neg_kl_log_var", "log_likelihood", "log_normal", "log_std_normal"]

def gaussian_neg_kl(z_loc, z_scale):
    r"""
    :func:`gaussian_neg_kl_log_var` from :math:`\sigma` (``z_scale``), as :math:`\log\sigma^2 = 2\log\sigma`.
    """
    return gaussian_neg_kl_log_var(z_loc, 2 * z_scale.log())


def gaussian_neg_kl_log_var(z_loc, z_log_var):
    r"""
    :math:`-D_{KL}(\mathcal{N}(\mu, \sigma^2 I) \,\|\, \mathcal{N}(0, I)) = \frac12 \sum_j
    (1 + \log\sigma_j^2 - \mu_j^2 - \sigma_j^2)`, Appendix B of [1], summed over the last dimension,
    from :math:`\log\sigma^2` (``z_log_var``) as the encoder gives it: finite wherever
    :math:`\sigma^2` is (:math:`\log\sigma^2` below about 88 in float32).
    """
    return 0.5 * (1 + z_log_var - z_loc**2 - torch.exp(z_log_var)).sum(-1)


def log_likelihood(vae, z, x):
    r"""
    :math:`\log p_\theta(x|z)`, summed over the pixels: Eq. (11) or Eq. (12) of [1] in closed form for
    :meth:`VAE.observation_dist <pyro_aevb.models.vae.VAE.observation_dist>` itself, else
    ``vae.observation_dist(z).log_prob(x)``.

    :param VAE vae: the model.
    :param torch.Tensor z: latent codes ``[..., M, z_dim]``.
    :param torch.Tensor x: the data ``[M, x_dim]``.
    :returns: a tensor of shape ``z.shape[:-1]``.
    """
    if not vae.closed_forms.own_likelihood(vae):
        return vae.observation_dist(z).log_prob(x)
    if vae.likelihood == "bernoulli":
        logits = vae.decoder(z)
        # Summed before negating: one pass over the pixels fewer than Bernoulli.log_prob makes.
        return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
    x_loc, x_log_var = loc_and_log_var(vae.decoder, z)
    # -((x - mu) / sigma)^2 / 2 - log(sigma), with 1/sigma = exp(-log(sigma^2) / 2); the halves taken once, after the sum
    return -0.5 * (((x - x_loc) * torch.exp(-0.5 * x_log_var)).square() + x_log_var).sum(-1) - HALF_LOG_2PI * x.shape[-1]


def log_normal(u, loc, log_var):
    r""":math:`\log \mathcal{N}(u; \mu, \sigma^2 I)` summed over the last dimension, from :math:`\log\sigma^2`."""
    return -0.5 * ((u - loc).square() * torch.exp(-log_var) + log_var).sum(-1) - HALF_LOG_2PI * u.shape[-1]


def log_std_normal(z):
    r""":math:`\log \mathcal{N}(z; 0, I)` summed over the last dimension."""
    return -0.5 * z.square().sum(-1) - HALF_LOG_2PI * z.shape[-1]
