r"""
The paper's own model in closed form: the quantities that the general methods compute by tracing a
Pyro ``model`` and ``guide``, written out from the nets of a :class:`~pyro_aevb.models.vae.VAE` whose
``model`` and ``guide`` are the class's own (its likelihood,
:meth:`VAE.observation_dist <pyro_aevb.models.vae.VAE.observation_dist>`, may be swapped).

The recognition model is :math:`q_\phi(z|x) = \mathcal{N}(z; \mu, \sigma^2 I)` (Eq. (9) of [1]), the
prior is :math:`\mathcal{N}(0, I)` and :math:`z = \mu + \sigma \odot \epsilon` with
:math:`\epsilon \sim \mathcal{N}(0, I)`. Over a minibatch :math:`X^M` of a data set of size :math:`N`,
the SGVB estimators are

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

The same closed forms give the importance-weighted bound of IWAE and reweighted wake-sleep, wake-sleep's
two losses and the densities of annealed importance sampling's path, with the gradients of the Bernoulli
decoder written out. Each computes what Pyro computes on ``vae.model`` and ``vae.guide``
(:class:`~pyro.infer.Trace_ELBO`, :class:`~pyro.infer.TraceMeanField_ELBO`, the traced losses of the
methods) from the same random draws (the same calls on the same random stream), without tracing the two
functions; they agree to floating-point rounding.

- :mod:`~pyro_aevb.models.closed_forms.densities`: the KL divergence, the log-likelihood, Gaussian densities;
- :mod:`~pyro_aevb.models.closed_forms.losses`: the methods' losses (SGVB, IWAE, RWS, wake-sleep);
- :mod:`~pyro_aevb.models.closed_forms.annealing`: the VAE along AIS's path;
- :mod:`~pyro_aevb.models.closed_forms.paper_vae`: what the methods receive. As :class:`~pyro.infer.SVI`
  receives its loss, the methods receive these closed forms as an object:
  :class:`~pyro_aevb.models.vae.VAE` carries
  :class:`~pyro_aevb.models.closed_forms.paper_vae.PaperVAEClosedForms` as ``closed_forms``, whose
  objectives each ``bind`` to a model and guide, or answer ``None`` for any other pair (a swapped prior,
  a ``pyro.param`` of its own), which then trains through the general, traced path.

[1] Auto-Encoding Variational Bayes, Diederik P. Kingma, Max Welling (2013)

[2] Importance Weighted Autoencoders, Yuri Burda, Roger Grosse, Ruslan Salakhutdinov (2015)
"""

from pyro_aevb.models.closed_forms.annealing import GaussianGuidePath, PaperVAEPath
from pyro_aevb.models.closed_forms.densities import gaussian_neg_kl, gaussian_neg_kl_log_var, log_likelihood
from pyro_aevb.models.closed_forms.losses import (
    direct_sleep_loss, direct_wake_loss, iwae_loss, rws_loss, sgvb_loss, vae_log_weights,
)
from pyro_aevb.models.closed_forms.paper_vae import ClosedFormObjective, PaperVAEClosedForms, Phase

__all__ = [
    "ClosedFormObjective", "GaussianGuidePath", "PaperVAEClosedForms", "PaperVAEPath", "Phase", "direct_sleep_loss",
    "direct_wake_loss", "gaussian_neg_kl", "gaussian_neg_kl_log_var", "iwae_loss", "log_likelihood", "rws_loss",
    "sgvb_loss", "vae_log_weights",
]
