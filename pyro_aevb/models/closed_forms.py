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

The same closed forms give the importance-weighted bound of IWAE and reweighted wake-sleep
(:func:`iwae_loss`, :func:`rws_loss`), wake-sleep's two losses (:func:`direct_wake_loss`,
:func:`direct_sleep_loss`) and the densities of annealed importance sampling's path, with the
gradients of the Bernoulli decoder written out (:meth:`PaperVAEClosedForms.annealing`).

Each computes what Pyro computes on ``vae.model`` and ``vae.guide`` (:class:`~pyro.infer.Trace_ELBO`,
:class:`~pyro.infer.TraceMeanField_ELBO`, the traced losses of the methods) from the same random draws
(the same calls on the same random stream), without tracing the two functions; they agree to
floating-point rounding. The methods receive them as an object, as :class:`~pyro.infer.SVI` receives
its loss: :class:`~pyro_aevb.models.vae.VAE` carries :class:`PaperVAEClosedForms` as ``closed_forms``,
whose objectives (:meth:`~PaperVAEClosedForms.sgvb`, ...) each ``bind`` to a model and guide, or
answer ``None`` for any other pair (a swapped prior, a ``pyro.param`` of its own), which then trains
through the general, traced path.

[1] Auto-Encoding Variational Bayes, Diederik P. Kingma, Max Welling (2013)

[2] Importance Weighted Autoencoders, Yuri Burda, Roger Grosse, Ruslan Salakhutdinov (2015)
"""

import functools
import math
from collections import namedtuple

import pyro
import torch
import torch.nn.functional as F
from pyro import poutine

from pyro_aevb.infer.importance_weights import dreg_surrogate, log_mean_exp, normalized_weights, scale_grad, with_gradient_of
from pyro_aevb.infer.rws import rws_wake_loss
from pyro_aevb.infer.util import cuda_devices, minibatch_scale
from pyro_aevb.models.nets import BernoulliMLPDecoder, flat_rows, loc_and_log_var

__all__ = [
    "ClosedFormObjective", "GaussianGuidePath", "PaperVAEClosedForms", "PaperVAEPath", "Phase", "direct_sleep_loss",
    "direct_wake_loss", "gaussian_neg_kl", "gaussian_neg_kl_log_var", "iwae_loss", "log_likelihood", "rws_loss",
    "sgvb_loss", "vae_log_weights",
]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


# -- the densities ---------------------------------------------------------------------------------

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
    return -0.5 * (((x - x_loc) * torch.exp(-0.5 * x_log_var)).square() + x_log_var).sum(-1) - _HALF_LOG_2PI * x.shape[-1]


def _log_normal(u, loc, log_var):
    r""":math:`\log \mathcal{N}(u; \mu, \sigma^2 I)` summed over the last dimension, from :math:`\log\sigma^2`."""
    return -0.5 * ((u - loc).square() * torch.exp(-log_var) + log_var).sum(-1) - _HALF_LOG_2PI * u.shape[-1]


def _log_std_normal(z):
    r""":math:`\log \mathcal{N}(z; 0, I)` summed over the last dimension."""
    return -0.5 * z.square().sum(-1) - _HALF_LOG_2PI * z.shape[-1]


# -- the losses ------------------------------------------------------------------------------------

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
    log_q = log_q - _HALF_LOG_2PI * z.shape[-1]
    log_p = log_likelihood(vae, z, x) - 0.5 * (z**2).sum(-1) - _HALF_LOG_2PI * z.shape[-1]
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
    log_prior = -0.5 * (z**2).sum() - _HALF_LOG_2PI * z.numel()
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
    log_q = (-0.5 * ((z - z_loc) * torch.exp(-log_scale)) ** 2 - log_scale).sum() - _HALF_LOG_2PI * z.numel()
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


# -- the objects the methods receive ---------------------------------------------------------------

Phase = namedtuple("Phase", ["loss", "params"])
Phase.__doc__ = """
One descent step of a method's closed-form path: ``loss(x, num_data)``, a scalar tensor, and the
``params`` (tensors in Pyro's param store) that its gradient updates, and no others.
"""


class ClosedFormObjective:
    """
    A method's objective written out for the paper's VAE: :meth:`bind` it to a model and guide on the
    first minibatch.

    :param PaperVAEClosedForms forms: the closed forms, which recognise the model.
    :param callable loss: ``loss(vae, x, num_data)``, the objective's loss.
    :param bool by_phase: two phases, the loss's gradient in the decoder's parameters first and then
        another loss's in the encoder's (wake-sleep); ``loss`` is then a pair of functions.
    """

    def __init__(self, forms, loss, by_phase=False):
        self.forms, self.loss, self.by_phase = forms, loss, by_phase

    def bind(self, model, guide, x, num_data=None):
        """
        :returns: the steps as a tuple of :class:`Phase`, for ``model`` and ``guide`` on minibatches
            like ``x``; ``None`` where this objective does not compute theirs (the general path then).
        """
        vae = self.forms.vae(model, guide)
        params = self.forms.params(vae, x, num_data) if vae is not None else None
        if params is None:
            return None
        if self.by_phase:
            wake, sleep = self.loss
            return (Phase(functools.partial(wake, vae), list(vae.decoder.parameters())),
                    Phase(functools.partial(sleep, vae), list(vae.encoder.parameters())))
        return (Phase(functools.partial(self.loss, vae), params),)


class PaperVAEClosedForms:
    r"""
    The closed forms of the paper's :class:`~pyro_aevb.models.vae.VAE`, as its class attribute
    ``closed_forms``: they recognise the VAE's own ``model`` and ``guide`` (:meth:`vae`,
    :meth:`params`), and give each method its objective written out (:meth:`sgvb`, :meth:`iwae`,
    :meth:`rws`, :meth:`wake_sleep`) and annealed importance sampling its densities
    (:meth:`annealing`). A subclass that overrides ``model`` or ``guide`` inherits the attribute and is
    answered ``None``: it trains and is evaluated through the general path.
    """

    def __set_name__(self, owner, name):
        self.base = owner  # the class whose model, guide and likelihood these closed forms are

    # -- recognition ---------------------------------------------------------------------------
    def vae(self, model, guide=None):
        """
        The VAE whose own ``model`` (and ``guide``) these are, the paper's model; ``None`` for any
        other (a subclass that overrides either function included).
        """
        vae = getattr(model, "__self__", None)
        if not isinstance(vae, self.base) or getattr(model, "__func__", None) is not self.base.model:
            return None
        if guide is not None and (getattr(guide, "__self__", None) is not vae or getattr(guide, "__func__", None) is not self.base.guide):
            return None
        return vae

    def params(self, vae, x, num_data=None):
        """
        The parameters the closed forms train, in Pyro's param store, if they compute ``vae``'s
        objective: its sites must be exactly ``"z"`` and ``"x"``, and its parameters those of its
        modules (no ``pyro.param`` of its own). ``None`` otherwise. Draws nothing from the global
        random stream.
        """
        with torch.random.fork_rng(devices=cuda_devices(x)), torch.no_grad():
            with poutine.block():
                guide_trace = poutine.trace(vae.guide).get_trace(x, num_data)
                model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x, num_data)
        traces = [poutine.util.prune_subsample_sites(trace) for trace in (model_trace, guide_trace)]
        sites = {
            kind: {name for trace in traces for name, site in trace.nodes.items() if site["type"] == kind}
            for kind in ("sample", "param")
        }
        if sites["sample"] != {"z", "x"}:
            return None
        store = pyro.get_param_store()
        params = [store[name].unconstrained() for name in sorted(sites["param"])]
        own = [p for p in vae.parameters() if p.requires_grad]
        if {id(p) for p in params} != {id(p) for p in own} or len(params) != len(own):
            return None
        return params

    def own_likelihood(self, vae):
        """Whether ``vae``'s likelihood is the class's own (Eq. (11) or (12)), not a swapped one."""
        return type(vae).observation_dist is self.base.observation_dist

    def fused_bernoulli(self, vae):
        """Whether ``vae``'s likelihood is the library's Bernoulli MLP decoder itself (logits = loc(features(z)))."""
        return (
            vae.likelihood == "bernoulli"
            and self.own_likelihood(vae)
            and type(vae.decoder).forward is BernoulliMLPDecoder.forward
        )

    # -- the methods' objectives ---------------------------------------------------------------
    def sgvb(self, estimator="B", num_particles=1):
        """AEVB's objective, :func:`sgvb_loss`."""
        return ClosedFormObjective(self, functools.partial(sgvb_loss, estimator=estimator, num_particles=num_particles))

    def iwae(self, num_particles=5, gradient="reparam"):
        """IWAE's objective, :func:`iwae_loss`."""
        return ClosedFormObjective(self, functools.partial(iwae_loss, num_particles=num_particles, gradient=gradient))

    def rws(self, num_particles=5, sleep_phi=False):
        """Reweighted wake-sleep's objective, :func:`rws_loss`."""
        return ClosedFormObjective(self, functools.partial(rws_loss, num_particles=num_particles, sleep_phi=sleep_phi))

    def wake_sleep(self):
        """Wake-sleep's two phases, :func:`direct_wake_loss` on the decoder, then :func:`direct_sleep_loss` on the encoder."""
        return ClosedFormObjective(self, (direct_wake_loss, direct_sleep_loss), by_phase=True)

    # -- annealed importance sampling ----------------------------------------------------------
    def annealing(self, space, model, x, guide=None, precision="fp32"):
        r"""
        The densities of annealed importance sampling's path for ``model`` (and ``guide``, where the
        chains start) on the datapoints ``x``, written out where these closed forms know them:

        - ``model`` is the VAE's own (:meth:`vae`): :math:`\log p(z)` and :math:`\log p(x|z)` from
          the nets, and the guide's Gaussian if ``guide`` is the same VAE's own
          (:class:`PaperVAEPath`);
        - else ``guide`` is a VAE's own, over one latent site of real values: the guide's Gaussian
          alone (:class:`GaussianGuidePath`).

        ``None`` otherwise.

        :param space: the model's :class:`~pyro_aevb.infer.sites.LatentSpace`.
        :param str precision: ``"fp32"`` or ``"bf16"``.
        """
        vae = self.vae(model)
        if vae is not None:
            return PaperVAEPath(vae, flat_rows(x), self.vae(model, guide) is vae if guide is not None else False,
                                guide is None, self.fused_bernoulli(vae), precision)
        owner = getattr(guide, "__self__", None)
        if not isinstance(owner, self.base) or getattr(guide, "__func__", None) is not self.base.guide:
            return None
        if space.names != ["z"] or space.dim != owner.z_dim:
            return None
        with torch.no_grad():  # "z" takes any real value: its map from the unconstrained space is the identity
            probe = torch.randn(2, space.dim, dtype=x.dtype, device=x.device)
            values, log_jacobian = space.unpack(probe)
            if not torch.equal(values["z"].reshape(probe.shape), probe) or torch.as_tensor(log_jacobian).any():
                return None
            return GaussianGuidePath(x, loc_and_log_var(owner.encoder, x))


class GaussianGuidePath:
    r"""
    The guide of a :class:`~pyro_aevb.models.vae.VAE` along annealed importance sampling's path: its
    Gaussian :math:`q(z|x)` from the encoder, once per chunk of datapoints, in closed form; the model's
    densities are left to the general path.

    :ivar x: the datapoints.
    :ivar direct_guide: the encoder's :math:`(\mu, \log\sigma^2)` ``[B, D]``.
    """

    model_densities = None  #: the model's densities are traced
    gradients = None  #: by autograd
    bf16 = False  #: no bfloat16 products

    def __init__(self, x, direct_guide):
        self.x, self.direct_guide = x, direct_guide

    def log_guide(self, u):
        """:math:`\\log q(u|x)` ``[C, B]`` at the states ``u`` ``[C, B, D]``."""
        return _log_normal(u, *self.direct_guide)


class PaperVAEPath(GaussianGuidePath):
    r"""
    The paper's VAE along annealed importance sampling's path, for the ``B`` datapoints ``x``
    (flattened): its latent ``"z"`` takes any real value, so the states ``u`` ``[C, B, D]`` are ``z``
    itself, and the prior :math:`\mathcal{N}(0, I)`, the likelihood and the guide's Gaussian are written
    out from the nets, without tracing the model at each leapfrog step. For its Bernoulli decoder,
    :math:`\log p(x|z) = x \cdot \ell - \sum_j \mathrm{softplus}(\ell_j)` with the logits
    :math:`\ell = W h + b`, whose first term is :math:`h \cdot (W^\top x) + b \cdot x` with
    :math:`W^\top x` computed once per datapoint; with chains from the prior or from the VAE's own
    guide, the gradients are written out too (:meth:`fused_gradients`).

    With ``precision="bf16"``, the gradients of the inner leapfrog steps of that decoder take their
    matrix products in bfloat16 (:meth:`fused_gradients`); every density, and the gradient at the
    ends of each trajectory, stays in float32.

    :param VAE vae: the model.
    :param torch.Tensor x: the datapoints ``[B, x_dim]``.
    :param bool own_guide: the chains start from the VAE's own guide (its Gaussian in closed form).
    :param bool from_prior: the chains start from the prior.
    :param bool fused: the decoder is the library's Bernoulli MLP (:meth:`PaperVAEClosedForms.fused_bernoulli`).
    :param str precision: ``"fp32"`` or ``"bf16"``.
    :ivar gradients: :meth:`fused_gradients`, or ``None`` (autograd through the densities).
    :ivar bool bf16: whether the inner steps take bfloat16 products.
    """

    def __init__(self, vae, x, own_guide, from_prior, fused, precision="fp32"):
        self.vae, self.x = vae, x
        self.direct_guide = None
        self._x_proj = None
        self.gradients = None
        self._bf16 = None  # the decoder's weights in bfloat16, for precision="bf16"
        with torch.no_grad():
            if own_guide:
                self.direct_guide = loc_and_log_var(vae.encoder, x)
            if fused:
                last = vae.decoder.loc
                self._x_proj = (x @ last.weight, x @ last.bias)  # [B, H] and [B]
                if from_prior or self.direct_guide is not None:
                    # The bias as one more column of the weights, against a column of ones after h: the
                    # logits in one product, without addmm's copy of the bias into every row.
                    self._w_bias = torch.cat([last.weight, last.bias[:, None]], 1)  # [X, H + 1]
                    self._x_proj_bias = x @ self._w_bias  # [B, H + 1]: (W^T x, b . x)
                    self.gradients = self.fused_gradients
                    if precision == "bf16":
                        hidden = vae.decoder.hidden
                        self._bf16 = (hidden.weight.bfloat16(), hidden.bias.bfloat16(), self._w_bias.bfloat16(),
                                      last.weight.bfloat16())
        self.bf16 = self._bf16 is not None

    def model_densities(self, u):
        """``(log_prior, log_joint)`` ``[C, B]`` at the states ``u`` ``[C, B, D]``."""
        log_prior = _log_std_normal(u)
        return log_prior, log_prior + self._log_lik(u)

    def _log_lik(self, z):
        if self._x_proj is None:
            return log_likelihood(self.vae, z, self.x)
        decoder = self.vae.decoder
        h = decoder.features(z)
        x_weight, x_bias = self._x_proj
        return (h * x_weight).sum(-1) + x_bias - F.softplus(decoder.loc(h)).sum(-1)

    def fused_gradients(self, u, values=True):
        r"""
        ``(log_p0, log_joint, grad_log_p0, grad_log_joint)`` at ``u`` ``[C, B, D]`` for the paper's VAE
        with its Bernoulli decoder, the gradients written out: with :math:`h = \tanh(W_1 z + b_1)` and
        the logits :math:`\ell = W h + b`, :math:`\nabla_z \log p(x|z) = W_1^\top ((1 - h^2) \odot
        W^\top (x - \sigma(\ell)))`, one sigmoid per pixel and no softplus; the softplus of the log-likelihood
        only with ``values``.
        """
        with torch.no_grad():  # no graph through the parameters
            if self._bf16 is not None and not values:
                return None, None, self._guide_grad(u), self._bf16_grad(u) - u
            return self._fused_terms(u, values)

    def _bf16_grad(self, u):
        r"""
        :math:`\nabla_z \log p(x|z)` with the products in bfloat16 (AMX), for the inner leapfrog steps.
        Any force that is a function of the position alone keeps the leapfrog map volume-preserving and,
        used alike at the inner steps of every trajectory, reversible; the energies of the accept test
        and the weights are float32. So the chains and the weights stay exact; only the acceptance rate
        can fall.
        """
        w_hidden, b_hidden, w_bias, w_last = self._bf16
        h = torch.tanh(F.linear(u.bfloat16(), w_hidden, b_hidden))
        grad_h = self._x_proj[0] - (torch.sigmoid_(F.pad(h, (0, 1), value=1.0) @ w_bias.T) @ w_last).float()
        return (grad_h * (1 - h.float().square())) @ self.vae.decoder.hidden.weight

    def _guide_grad(self, u):
        if self.direct_guide is None:
            return -u
        loc, log_var = self.direct_guide
        return (loc - u) * torch.exp(-log_var)

    def _fused_terms(self, u, values):
        decoder = self.vae.decoder
        h = torch.tanh(decoder.hidden(u))
        h_one = F.pad(h, (0, 1), value=1.0)  # [C, B, H + 1]
        logits = h_one @ self._w_bias.T
        log_lik = (h_one * self._x_proj_bias).sum(-1) - F.softplus(logits).sum(-1) if values else None
        grad_h = self._x_proj[0] - torch.sigmoid_(logits) @ decoder.loc.weight
        grad_lik = (grad_h * (1 - h.square())) @ decoder.hidden.weight
        grad_p0 = self._guide_grad(u)
        if not values:
            log_p0 = None
        elif self.direct_guide is None:
            log_p0 = _log_std_normal(u)
        else:
            log_p0 = self.log_guide(u)
        log_joint = _log_std_normal(u) + log_lik if values else None
        return log_p0, log_joint, grad_p0, grad_lik - u
