r"""
The methods' losses for the paper's VAE, written out from its nets: the SGVB estimators (Eq. (6) and
(10) of [1]), the importance-weighted bound of IWAE [2] and reweighted wake-sleep's loss, and
wake-sleep's two losses. Each draws the random numbers that Pyro's traced computation draws, in the
same order, so that both paths give the same numbers.

[1] Auto-Encoding Variational Bayes, Diederik P. Kingma, Max Welling (2013)

[2] Importance Weighted Autoencoders, Yuri Burda, Roger Grosse, Ruslan Salakhutdinov (2015)
"""

import torch

from pyro_aevb.infer.importance_weights import dreg_surrogate, log_mean_exp, normalized_weights, scale_grad, with_gradient_of
from pyro_aevb.infer.rws import rws_wake_loss
from pyro_aevb.infer.util import minibatch_scale
from pyro_aevb.models.closed_forms.densities import gaussian_neg_kl_log_var, log_likelihood
from pyro_aevb.models.distributions import HALF_LOG_2PI
from pyro_aevb.models.nets import flat_rows, loc_and_log_var

__all__ = ["direct_sleep_loss", "direct_wake_loss", "iwae_loss", "rws_loss", "sgvb_loss", "vae_log_weights"]


def sgvb_loss(vae, x, num_data=None, estimator="B", num_particles=1):
    r"""
    The negative SGVB estimate :math:`-\widetilde{\mathcal{L}}^A` (``estimator="A"``) or
    :math:`-\widetilde{\mathcal{L}}^B` (``"B"``) for a :class:`~pyro_aevb.models.vae.VAE` with the class's own
    ``model`` and ``guide``.

    :param VAE vae: the model.
    :param torch.Tensor x: a minibatch ``[M, x_dim]`` (or ``[M, ...]``, flattened).
    :param int num_data: N; ``None`` means ``M`` (scale 1), as in :func:`~pyro_aevb.models.vae.data_plate`.
    :param str estimator: ``"A"`` or ``"B"``.
    :param int num_particles: L, draws of z per datapoint, made at once.
    :returns: a scalar tensor to differentiate.

    .. warning:: A subclass that overrides ``model`` or ``guide`` (another prior, another recognition
        model) is not this estimator's: train it through :class:`~pyro.infer.SVI`, as
        :class:`~pyro_aevb.infer.aevb.AEVB` does.
    """
    x = flat_rows(x)
    scale = minibatch_scale(x, num_data)
    if estimator not in ("A", "B"):
        raise ValueError(f"estimator must be 'A' or 'B', got {estimator!r}")
    z_loc, z_log_var = loc_and_log_var(vae.encoder, x)
    shape = z_loc.shape if num_particles == 1 else (num_particles,) + z_loc.shape
    eps = z_loc.new_empty(shape).normal_()  # the call LogScaleNormal.rsample makes, so the guide's draws
    z = z_loc + eps * torch.exp(0.5 * z_log_var)
    log_px = log_likelihood(vae, z, x).sum()
    if estimator == "B":
        elbo = log_px / num_particles + gaussian_neg_kl_log_var(z_loc, z_log_var).sum()
    else:
        log_p_minus_log_q = (0.5 * (eps**2 - z**2 + z_log_var)).sum()
        elbo = (log_px + log_p_minus_log_q) / num_particles
    return -scale * elbo


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
    :math:`-\frac{N}{M} \sum_i \hat{\mathcal{L}}_K(x^{(i)})` of [2] for a :class:`~pyro_aevb.models.vae.VAE`
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


def direct_wake_loss(vae, x, num_data=None):
    r"""
    :func:`~pyro_aevb.infer.wake_sleep.wake_loss` for a :class:`~pyro_aevb.models.vae.VAE` with the
    class's ``model`` and ``guide``, computed from the nets: :math:`z = \mu + \sigma \odot \epsilon`
    drawn as the guide draws it, then
    :math:`-\frac{N}{M} \sum_i [\log \mathcal{N}(z^{(i)}; 0, I) + \log p_\theta(x^{(i)}|z^{(i)})]`.
    """
    x = flat_rows(x)
    with torch.no_grad():
        z_loc, z_log_var = loc_and_log_var(vae.encoder, x)
        z = z_loc + z_loc.new_empty(z_loc.shape).normal_() * torch.exp(0.5 * z_log_var)
    log_prior = -0.5 * (z**2).sum() - HALF_LOG_2PI * z.numel()
    return -minibatch_scale(x, num_data) * (log_prior + log_likelihood(vae, z, x).sum())


def direct_sleep_loss(vae, x, num_data=None):
    r"""
    :func:`~pyro_aevb.infer.wake_sleep.sleep_loss` for a :class:`~pyro_aevb.models.vae.VAE` with the
    class's ``model`` and ``guide``, computed from the nets: :math:`z \sim \mathcal{N}(0, I)` and the
    fantasy :math:`x \sim p_\theta(x|z)` drawn as the model draws them, then
    :math:`-\frac{N}{M} \sum_i \log q_\phi(z^{(i)}|x^{(i)})`.
    """
    with torch.no_grad():
        z = x.new_empty(x.shape[0], vae.z_dim).normal_()
        likelihood = vae.observation_dist(z)
        fantasy = likelihood.rsample() if likelihood.has_rsample else likelihood.sample()
    z_loc, z_log_var = loc_and_log_var(vae.encoder, fantasy)
    log_scale = 0.5 * z_log_var  # the guide's LogScaleNormal: no log of an exponential
    log_q = (-0.5 * ((z - z_loc) * torch.exp(-log_scale)) ** 2 - log_scale).sum() - HALF_LOG_2PI * z.numel()
    return -minibatch_scale(x, num_data) * log_q


def rws_loss(vae, x, num_data=None, num_particles=5, sleep_phi=False):
    r"""
    The loss :math:`-\frac{N}{M}\sum_i \hat{\mathcal{L}}_K(x^{(i)})` of reweighted wake-sleep for a
    :class:`~pyro_aevb.models.vae.VAE` with the class's ``model`` and ``guide``, from the nets, with
    the gradient of the wake-θ and wake-φ updates (and of sleep-φ, with ``sleep_phi``, whose loss is not
    added to the value).
    """
    log_p, log_q = vae_log_weights(vae, x, num_particles, draws="fixed")[:2]
    loss = rws_wake_loss(log_p, log_q, minibatch_scale(x, num_data))
    if sleep_phi:
        sleep = direct_sleep_loss(vae, x, num_data)
        loss = with_gradient_of(loss, loss + sleep)
    return loss
