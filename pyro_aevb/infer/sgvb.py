r"""
The SGVB estimators of [1] for the paper's own model, written out in closed form: the fast path of
:class:`~pyro_aevb.infer.aevb.AEVB`.

For a :class:`~pyro_aevb.models.vae.VAE` whose ``model`` and ``guide`` are the class's own, the recognition
model is :math:`q_\phi(z|x) = \mathcal{N}(z; \mu, \sigma^2 I)` (Eq. (9)), the prior is
:math:`\mathcal{N}(0, I)` and :math:`z = \mu + \sigma \odot \epsilon` with
:math:`\epsilon \sim \mathcal{N}(0, I)`. Over a minibatch :math:`X^M` of a data set of size :math:`N`,

.. math::

    \widetilde{\mathcal{L}}^A &= \frac{N}{M} \sum_{i=1}^M \frac{1}{L} \sum_{l=1}^L
        \log p_\theta(x^{(i)}|z^{(i,l)}) + \log p_\theta(z^{(i,l)}) - \log q_\phi(z^{(i,l)}|x^{(i)})
        \qquad \text{(Eq. (6))}

    \widetilde{\mathcal{L}}^B &= \frac{N}{M} \sum_{i=1}^M \frac{1}{2} \sum_{j=1}^J
        \left(1 + \log \sigma_{ij}^2 - \mu_{ij}^2 - \sigma_{ij}^2\right)
        + \frac{1}{L} \sum_{l=1}^L \log p_\theta(x^{(i)}|z^{(i,l)})
        \qquad \text{(Eq. (10), Appendix B)}

where, at the drawn :math:`z`, :math:`\log p(z) - \log q(z|x) = \sum_j -\tfrac12 z_j^2 + \tfrac12
\epsilon_j^2 + \tfrac12 \log\sigma_j^2`. Every term takes :math:`\log\sigma^2` as the encoder's head
gives it (:func:`~pyro_aevb.models.nets.loc_and_log_var`), never the log of :math:`\sigma`, so the loss and its
gradients stay finite where :math:`\sigma^2` underflows; the Gaussian likelihood likewise takes the
decoder's log-variance. The log-likelihood is Eq. (11) (Bernoulli, from the decoder's logits) or
Eq. (12) (Gaussian) when the model keeps :meth:`VAE.observation_dist <pyro_aevb.models.vae.VAE.observation_dist>`,
and the swapped distribution's ``log_prob`` otherwise.

These are the quantities that :class:`~pyro.infer.Trace_ELBO` and
:class:`~pyro.infer.TraceMeanField_ELBO` compute on ``vae.model`` and ``vae.guide`` from the same
draws of :math:`\epsilon` (the same calls on the same random stream), without tracing the two
functions; they agree to floating-point rounding (``tests/infer/test_fast_path.py``).

[1] Auto-Encoding Variational Bayes, Diederik P. Kingma, Max Welling (2013)
"""


import torch
import torch.nn.functional as F

from pyro_aevb.infer.sites import minibatch_scale
from pyro_aevb.models.distributions import HALF_LOG_2PI
from pyro_aevb.models.nets import loc_and_log_var
from pyro_aevb.models.vae import VAE, flat_rows

__all__ = ["gaussian_neg_kl", "gaussian_neg_kl_log_var", "log_likelihood", "sgvb_loss"]


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
    if type(vae).observation_dist is not VAE.observation_dist:
        return vae.observation_dist(z).log_prob(x)
    if vae.likelihood == "bernoulli":
        logits = vae.decoder(z)
        # Summed before negating: one pass over the pixels fewer than Bernoulli.log_prob makes.
        return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
    x_loc, x_log_var = loc_and_log_var(vae.decoder, z)
    # -((x - mu) / sigma)^2 / 2 - log(sigma), with 1/sigma = exp(-log(sigma^2) / 2); the halves taken once, after the sum
    return -0.5 * (((x - x_loc) * torch.exp(-0.5 * x_log_var)).square() + x_log_var).sum(-1) - HALF_LOG_2PI * x.shape[-1]


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
