r"""
Reweighted wake-sleep [1], per datapoint, as a training method.

For each datapoint of the minibatch, K particles :math:`z_k \sim q_\phi(z|x)` are drawn without
gradient and weighted by :math:`w_k = p_\theta(x, z_k) / q_\phi(z_k|x)`:

- **wake-θ**: ascend the importance-weighted bound :math:`\hat{\mathcal{L}}_K(x)` in :math:`\theta`,
  whose gradient is :math:`\sum_k \tilde w_k \nabla_\theta \log p_\theta(x, z_k)`;
- **wake-φ**: ascend :math:`\sum_k \tilde w_k \log q_\phi(z_k|x)` in :math:`\phi`, the self-normalised
  weights :math:`\tilde w_k` of the datapoint's own particles (a step towards the posterior in
  :math:`KL(p\|q)`);
- **sleep-φ** (optional, ``sleep_phi=True``): also ascend :math:`\log q_\phi(z|x)` on the model's
  fantasies, as :func:`~pyro_aevb.infer.wake_sleep.sleep_loss` does for wake-sleep.

All are N/M-scaled, and one optimizer step on their sum moves :math:`\theta` and :math:`\phi` together.
As for :class:`~pyro_aevb.infer.aevb.AEVB`, a model may hand the method this loss written out (the
paper's own :class:`~pyro_aevb.models.vae.VAE`: :func:`~pyro_aevb.models.closed_forms.losses.rws_loss`).
Unlike :class:`pyro.infer.ReweightedWakeSleep`, which keeps one weight per particle for the whole
batch, the weights are per datapoint (:class:`~pyro_aevb.infer.iw_elbo.ParticleLayout`), so
minibatches train the right objective.

[1] Reweighted Wake-Sleep, Jörg Bornschein, Yoshua Bengio (2015)
"""

import torch
from pyro.infer.elbo import ELBO
from pyro.infer.util import torch_item

from pyro_aevb._checks import check_whole
from pyro_aevb.infer.aevb import AEVB
from pyro_aevb.infer.importance_weights import log_mean_exp, wake_phi_surrogate, with_gradient_of
from pyro_aevb.infer.iw_elbo import ParticleLayout, particle_traces
from pyro_aevb.infer.sites import check_model
from pyro_aevb.infer.wake_sleep import sleep_loss

__all__ = ["RWS", "ReweightedWakeSleepLoss", "rws_wake_loss"]


def rws_wake_loss(log_p, log_q, scale):
    r"""
    The loss ``-scale * sum L_K`` with the gradient of wake-θ plus wake-φ, from the ``[K, M]``
    log-densities :math:`\log p_\theta(x, z_k)` and :math:`\log q_\phi(z_k|x)` of particles drawn
    without gradient.
    """
    log_w = log_p - log_q.detach()
    bound = log_mean_exp(log_w).sum()
    return -scale * with_gradient_of(bound, bound + wake_phi_surrogate(log_w, log_q).sum())


class ReweightedWakeSleepLoss(ELBO):
    """
    Reweighted wake-sleep's objective with Pyro's ELBO interface, for :class:`~pyro.infer.SVI` on any
    model of :mod:`pyro_aevb.infer.sites` (the data plate's weights as
    :class:`~pyro_aevb.infer.iw_elbo.ImportanceWeightedELBO` keeps them, and the same refusals). The
    sleep phase reads the model's arguments as ``(x, num_data)``.

    :param int num_particles: K.
    :param bool sleep_phi: add the sleep-φ phase.
    """

    def __init__(self, num_particles=5, sleep_phi=False, max_plate_nesting=float("inf")):
        super().__init__(num_particles=check_whole("num_particles", num_particles, 1), max_plate_nesting=max_plate_nesting)
        self.sleep_phi = bool(sleep_phi)
        self._space = None

    def _get_trace(self, model, guide, args, kwargs):
        if self.max_plate_nesting == float("inf"):
            self._guess_max_plate_nesting(model, guide, args, kwargs)
        return particle_traces(model, guide, args, kwargs, self.num_particles, self.max_plate_nesting, rescore=True)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """:returns: :math:`-\\mathcal{L}_K` (N-scaled), with the gradient of the wake (and sleep) updates."""
        model_trace, guide_trace = self._get_trace(model, guide, args, kwargs)
        layout = ParticleLayout(model_trace, guide_trace, self.num_particles, self.max_plate_nesting)
        latents = {name for name, site in guide_trace.nodes.items() if site["type"] == "sample" and not site["is_observed"]}
        loss = rws_wake_loss(layout.log_density(model_trace), layout.log_density(guide_trace, latents), layout.scale)
        if self.sleep_phi and torch.is_grad_enabled():
            x, num_data = args[0], (args[1] if len(args) > 1 else kwargs.get("num_data"))
            if self._space is None:
                self._space = check_model(model, x, guide)
            sleep = sleep_loss(model, guide, x, num_data, self._space)[0]
            loss = with_gradient_of(loss, loss + sleep)
        return loss

    def loss(self, model, guide, *args, **kwargs):
        with torch.no_grad():
            return torch_item(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs):
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward(retain_graph=self.retain_graph)
        return torch_item(loss)


class RWS(AEVB):
    r"""
    The reweighted wake-sleep training method [1]: :class:`~pyro.infer.SVI` on
    :class:`ReweightedWakeSleepLoss`, built and run as :class:`~pyro_aevb.infer.aevb.AEVB` is (its
    optimizer, weight decay, first-step check of the model, and the loss written out for the paper's
    own VAE). A step returns the N-scaled negative importance-weighted bound.

    :param callable model: the model; or an object with ``.model`` and ``.guide``, with ``guide`` left out.
    :param callable guide: the guide.
    :param int num_particles: K, particles per datapoint.
    :param bool sleep_phi: add the sleep-φ phase (the model needs one observed site, holding x).
    :param float lr: the optimizer's step size.
    :param float weight_decay: precision of the Gaussian prior on the parameters.
    :param bool fast_path: allow the loss written out, for the paper's own VAE.
    :param optim: the optimizer, as :class:`~pyro_aevb.infer.aevb.AEVB`'s (``None``: the paper's Adagrad).
    :param closed_form: the loss written out, as :class:`~pyro_aevb.infer.aevb.AEVB`'s (``None``: the
        model owner's ``closed_forms.rws(num_particles, sleep_phi)``, if any).
    """

    def __init__(self, model, guide=None, *, num_particles=5, sleep_phi=False, lr=0.02, weight_decay=1.0,
                 fast_path=True, optim=None, closed_form=None):
        num_particles = check_whole("num_particles", num_particles, 1)
        self.sleep_phi = bool(sleep_phi)
        loss = ReweightedWakeSleepLoss(num_particles, self.sleep_phi)
        self._build(model, guide, loss, lr, weight_decay, fast_path, optim, closed_form,
                    lambda forms: forms.rws(num_particles, self.sleep_phi))
