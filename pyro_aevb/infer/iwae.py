r"""
The importance-weighted autoencoder of [1] as a training method: AEVB's loop and optimizer on the
bound :math:`\mathcal{L}_K` of :class:`~pyro_aevb.infer.iw_elbo.ImportanceWeightedELBO` instead of
the ELBO.

For the paper's own :class:`~pyro_aevb.models.vae.VAE` (its likelihood may be swapped), the steps
compute the same bound from the nets (:func:`iwae_loss`), from the same random draws, without
tracing, as :class:`~pyro_aevb.infer.aevb.AEVB` does with :func:`~pyro_aevb.infer.sgvb.sgvb_loss`.

[1] Importance Weighted Autoencoders, Yuri Burda, Roger Grosse, Ruslan Salakhutdinov (2015)

[2] Doubly Reparameterized Gradient Estimators for Monte Carlo Objectives, George Tucker, Dieterich
Lawson, Shixiang Gu, Chris J. Maddison (2019)
"""

import functools

import torch

from pyro_aevb._checks import check_choice, check_whole
from pyro_aevb.infer.aevb import AEVB
from pyro_aevb.infer.importance_weights import dreg_surrogate, log_mean_exp, normalized_weights, scale_grad, with_gradient_of
from pyro_aevb.infer.iw_elbo import GRADIENTS, ImportanceWeightedELBO
from pyro_aevb.infer.sgvb import log_likelihood
from pyro_aevb.infer.sites import minibatch_scale
from pyro_aevb.models.distributions import HALF_LOG_2PI
from pyro_aevb.models.nets import loc_and_log_var

__all__ = ["IWAE", "iwae_loss", "vae_log_weights"]


def vae_log_weights(vae, x, num_particles, draws="reparam"):
    r"""
    The log-densities that make the log-weights :math:`\log p_\theta(x, z_k) - \log q_\phi(z_k|x)` of a
    :class:`~pyro_aevb.models.vae.VAE` with the class's ``model`` and ``guide``, for K draws
    :math:`z_k = \mu + \sigma \odot \epsilon_k` made as the guide makes them (one call for all).

    :param str draws: ``"reparam"``: :math:`\log q` at the draw, as the guide's distribution scores
        its own draw (:math:`-\frac12\epsilon^2 - \log\sigma`); ``"path"``: :math:`\log q` written in
        :math:`z` (for DReG's path derivative); ``"fixed"``: the draws without gradient, :math:`\log q`
        with gradient in :math:`\phi` only (for reweighted wake-sleep).
    :returns: ``(log_p, log_q, z, z_loc, log_scale)``: :math:`\log p_\theta(x, z_k)` and
        :math:`\log q_\phi(z_k|x)` of shape ``[K, M]``,
        ``z`` ``[K, M, z_dim]``, the encoder's :math:`\mu` and :math:`\log\sigma` ``[M, z_dim]``.
    """
    z_loc, z_log_var = loc_and_log_var(vae.encoder, x)
    log_scale = 0.5 * z_log_var
    eps = z_loc.new_empty((num_particles,) + z_loc.shape).normal_()
    z = z_loc + eps * torch.exp(log_scale)
    if draws == "fixed":
        z = z.detach()
    if draws == "reparam":
        log_q = (-0.5 * eps**2 - log_scale).sum(-1)
    else:
        log_q = (-0.5 * ((z - z_loc) * torch.exp(-log_scale)) ** 2 - log_scale).sum(-1)
    log_q = log_q - HALF_LOG_2PI * z.shape[-1]
    log_p = log_likelihood(vae, z, x) - 0.5 * (z**2).sum(-1) - HALF_LOG_2PI * z.shape[-1]
    return log_p, log_q, z, z_loc, log_scale


def iwae_loss(vae, x, num_data=None, num_particles=5, gradient="reparam"):
    r"""
    :math:`-\frac{N}{M} \sum_i \hat{\mathcal{L}}_K(x^{(i)})` for a :class:`~pyro_aevb.models.vae.VAE`
    with the class's own ``model`` and ``guide``, with the gradient of
    :class:`~pyro_aevb.infer.iw_elbo.ImportanceWeightedELBO` (``"reparam"`` or ``"dreg"``) on the
    same draws.
    """
    scale = minibatch_scale(x, num_data)
    if gradient == "reparam":
        log_p, log_q = vae_log_weights(vae, x, num_particles)[:2]
        log_w = log_p - log_q
        return -scale * log_mean_exp(log_w).sum()
    log_p, log_q, z, z_loc, log_scale = vae_log_weights(vae, x, num_particles, draws="path")
    log_w = log_p - log_q
    log_q_direct = (-0.5 * ((z.detach() - z_loc) * torch.exp(-log_scale)) ** 2 - log_scale).sum(-1)
    scale_grad(z, normalized_weights(log_w).unsqueeze(-1))
    bound = log_mean_exp(log_w).sum()
    return -scale * with_gradient_of(bound, dreg_surrogate(log_w, log_q_direct).sum())


class IWAE(AEVB):
    r"""
    The IWAE training method [1]: :class:`~pyro.infer.SVI` on
    :class:`~pyro_aevb.infer.iw_elbo.ImportanceWeightedELBO`, built and run as
    :class:`~pyro_aevb.infer.aevb.AEVB` is (its optimizer, weight decay, first-step check of the model,
    and the direct computation for the paper's own VAE).

    :param callable model: the model (:mod:`pyro_aevb.infer.sites`); or an object with ``.model`` and
        ``.guide`` (a :class:`~pyro_aevb.models.vae.VAE`), with ``guide`` left out.
    :param callable guide: the guide, with the same latent sites.
    :param int num_particles: K, importance samples per datapoint (K = 1 is AEVB's estimator A).
    :param str gradient: ``"reparam"`` or ``"dreg"`` (the doubly reparameterised gradient of [2] for the
        guide's parameters).
    :param float lr: the optimizer's step size.
    :param float weight_decay: precision of the Gaussian prior on the parameters.
    :param bool fast_path: allow the direct computation for the paper's own VAE.
    :param optim: the optimizer, as :class:`~pyro_aevb.infer.aevb.AEVB`'s (``None``: the paper's Adagrad).
    """

    def __init__(self, model, guide=None, *, num_particles=5, gradient="reparam", lr=0.02, weight_decay=1.0,
                 fast_path=True, optim=None):
        num_particles = check_whole("num_particles", num_particles, 1)
        self.gradient = check_choice("gradient", gradient, GRADIENTS)
        elbo = ImportanceWeightedELBO(num_particles, gradient)
        direct_loss = functools.partial(iwae_loss, num_particles=num_particles, gradient=gradient)
        self._build(model, guide, elbo, direct_loss, lr, weight_decay, fast_path, optim)
