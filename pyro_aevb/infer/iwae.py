r"""
The importance-weighted autoencoder of [1] as a training method: AEVB's loop and optimizer on the
bound :math:`\mathcal{L}_K` of :class:`~pyro_aevb.infer.iw_elbo.ImportanceWeightedELBO` instead of
the ELBO.

As for :class:`~pyro_aevb.infer.aevb.AEVB`, a model may hand the method the bound written out: the
closed forms that its owner supplies give ``iwae(num_particles, gradient)`` (for the paper's own
:class:`~pyro_aevb.models.vae.VAE`, :func:`~pyro_aevb.models.closed_forms.losses.iwae_loss`), computed from
the same random draws without tracing.

[1] Importance Weighted Autoencoders, Yuri Burda, Roger Grosse, Ruslan Salakhutdinov (2015)

[2] Doubly Reparameterized Gradient Estimators for Monte Carlo Objectives, George Tucker, Dieterich
Lawson, Shixiang Gu, Chris J. Maddison (2019)
"""

from pyro_aevb._checks import check_choice, check_whole
from pyro_aevb.infer.aevb import AEVB
from pyro_aevb.infer.iw_elbo import GRADIENTS, ImportanceWeightedELBO

__all__ = ["IWAE"]


class IWAE(AEVB):
    r"""
    The IWAE training method [1]: :class:`~pyro.infer.SVI` on
    :class:`~pyro_aevb.infer.iw_elbo.ImportanceWeightedELBO`, built and run as
    :class:`~pyro_aevb.infer.aevb.AEVB` is (its optimizer, weight decay, first-step check of the model,
    and the bound written out for the paper's own VAE).

    :param callable model: the model (:mod:`pyro_aevb.infer.sites`); or an object with ``.model`` and
        ``.guide`` (a :class:`~pyro_aevb.models.vae.VAE`), with ``guide`` left out.
    :param callable guide: the guide, with the same latent sites.
    :param int num_particles: K, importance samples per datapoint (K = 1 is AEVB's estimator A).
    :param str gradient: ``"reparam"`` or ``"dreg"`` (the doubly reparameterised gradient of [2] for the
        guide's parameters).
    :param float lr: the optimizer's step size.
    :param float weight_decay: precision of the Gaussian prior on the parameters.
    :param bool fast_path: allow the bound written out, for the paper's own VAE.
    :param optim: the optimizer, as :class:`~pyro_aevb.infer.aevb.AEVB`'s (``None``: the paper's Adagrad).
    :param closed_form: the bound written out, as :class:`~pyro_aevb.infer.aevb.AEVB`'s (``None``: the
        model owner's ``closed_forms.iwae(num_particles, gradient)``, if any).
    """

    def __init__(self, model, guide=None, *, num_particles=5, gradient="reparam", lr=0.02, weight_decay=1.0,
                 fast_path=True, optim=None, closed_form=None):
        num_particles = check_whole("num_particles", num_particles, 1)
        self.gradient = check_choice("gradient", gradient, GRADIENTS)
        elbo = ImportanceWeightedELBO(num_particles, gradient)
        self._build(model, guide, elbo, lr, weight_decay, fast_path, optim, closed_form,
                    lambda forms: forms.iwae(num_particles, gradient))
