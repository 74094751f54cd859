r"""
The wake-sleep algorithm [2], the first baseline of Section 5 of [1], which uses the same encoder
(recognition model) :math:`q_\phi(z|x)` and decoder :math:`p_\theta(x|z)` for it as for AEVB. Here
they are also trained with the same optimizer, minibatches and budget, but on two separate objectives:

- **wake phase** (:func:`wake_loss`): draw :math:`z \sim q_\phi(z|x)` for each datapoint of the
  minibatch, without a reparameterised gradient, and ascend :math:`\log p_\theta(x, z)` in
  :math:`\theta`;
- **sleep phase** (:func:`sleep_loss`): draw fantasies :math:`(z, x) \sim p_\theta(z)
  p_\theta(x|z)` and ascend :math:`\log q_\phi(z|x)` in :math:`\phi`.

Unlike AEVB, neither phase ascends a bound on the marginal likelihood: the sleep phase fits the
recognition model to the model's own fantasies (the KL divergence :math:`KL(p\|q)` rather than
:math:`KL(q\|p)`). The lower bound :math:`\mathcal{L}(\theta, \phi; x)` is still well defined for
the learned pair, and the training loop reports it with the same code as for AEVB.

Both losses are built from the user's ``model`` and ``guide`` with Pyro's effect handlers, so any model
of the class of :mod:`pyro_aevb.infer.sites` (free site names, several latent sites, a model that takes
``num_data`` or not) is trained unchanged. The sleep phase needs the model's one observed site, whose
fantasy the guide then reads as its ``x``.

**Speed.** As for AEVB (:mod:`pyro_aevb.infer.aevb`), when the model and guide are
:class:`~pyro_aevb.models.vae.VAE`'s own (its likelihood may be swapped), :class:`WakeSleep` computes both
losses directly from the nets after a first traced step (:func:`direct_wake_loss`,
:func:`direct_sleep_loss`): the same densities from the same random draws, without tracing.

[1] Auto-Encoding Variational Bayes, Diederik P. Kingma, Max Welling (2013)

[2] The "wake-sleep" algorithm for unsupervised neural networks, Geoffrey E. Hinton, Peter Dayan,
Brendan J. Frey, Radford M. Neal (1995)
"""

import contextlib

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

from pyro_aevb.infer.aevb import _check_optim, _direct_params
from pyro_aevb.infer.method import TrainingMethod
from pyro_aevb.infer.sgvb import log_likelihood
from pyro_aevb.models.distributions import HALF_LOG_2PI
from pyro_aevb.models.nets import loc_and_log_var
from pyro_aevb.models.vae import flat_rows
from pyro_aevb.infer.sites import (
    check_model, check_num_data, minibatch_scale, model_and_guide, paper_vae, per_datapoint, repeat_rows,
)
from pyro_aevb.optim import FusedAdagrad

__all__ = ["WakeSleep", "direct_sleep_loss", "direct_wake_loss", "sleep_loss", "wake_loss"]


def wake_loss(model, guide, x, num_data=None):
    r"""
    The wake-phase loss :math:`-\frac{N}{M} \sum_{i=1}^M \log p_\theta(x^{(i)}, z^{(i)})` with
    :math:`z^{(i)} \sim q_\phi(z|x^{(i)})` drawn without gradient: its gradient in :math:`\theta`
    is the wake-phase update of [2], and it has no gradient in :math:`\phi`.

    The guide runs under :func:`torch.no_grad` and the model is conditioned on its ``"z"``, so the
    sample is a constant of the loss whatever the guide's distribution.

    :param callable model: a Pyro model ``model(x)`` or ``model(x, num_data)``
        (:mod:`pyro_aevb.infer.sites`).
    :param callable guide: the matching guide.
    :param torch.Tensor x: a minibatch ``[M, D]``.
    :param int num_data: the data set size :math:`N` (``None``: scale 1).
    :returns: the loss (a scalar tensor) and the model's trace, whose ``"param"`` sites are
        :math:`\theta`.
    :rtype: tuple
    """
    model, guide = per_datapoint(model), per_datapoint(guide)
    with torch.no_grad():
        guide_trace = prune_subsample_sites(poutine.trace(guide).get_trace(x, num_data))
    # condition rather than replay: replay refuses a latent that is observed in the guide's trace, as
    # it is when a caller fixes z with an enclosing poutine.condition (the tests do).
    latents = {name: site["value"] for name, site in guide_trace.nodes.items() if site["type"] == "sample"}
    model_trace = poutine.trace(poutine.condition(model, data=latents)).get_trace(x, num_data)
    return -model_trace.log_prob_sum(), model_trace


def sleep_loss(model, guide, x, num_data=None, space=None):
    r"""
    The sleep-phase loss :math:`-\frac{N}{M} \sum_{i=1}^M \log q_\phi(z^{(i)}|x^{(i)})` on ``M``
    fantasies :math:`(z^{(i)}, x^{(i)}) \sim p_\theta(z) p_\theta(x|z)`: its gradient in
    :math:`\phi` is the sleep-phase update of [2], and it has no gradient in :math:`\theta`.

    The fantasies come from the model itself under :func:`~pyro.poutine.uncondition`, which turns
    the observed site into a sampled one: its value is drawn with the distribution's own
    ``sample()``, so a Bernoulli likelihood gives binary fantasies even though the model's
    Bernoulli skips validation to accept grey levels as observations. ``x`` only sets the
    number ``M`` of fantasies (and the device). The guide then runs on the fantasy of the model's
    observed site (reshaped to ``x``'s shape), conditioned on the fantasy latents.

    :param callable model: a Pyro model ``model(x)`` or ``model(x, num_data)`` with one observed site
        (:mod:`pyro_aevb.infer.sites`).
    :param callable guide: the matching guide.
    :param torch.Tensor x: a minibatch ``[M, D]`` (its values are not used).
    :param int num_data: the data set size :math:`N` (``None``: scale 1).
    :param space: the model's :class:`~pyro_aevb.infer.sites.LatentSpace` (found on ``x`` if not given).
    :returns: the loss (a scalar tensor) and the guide's trace, whose ``"param"`` sites are
        :math:`\phi`; its input ``x`` (``trace.nodes["_INPUT"]["args"][0]``) holds the fantasies.
    :rtype: tuple
    """
    space = space or check_model(model, x, guide)
    observed = space.observed_site(_SLEEP)
    model, guide = per_datapoint(model), per_datapoint(guide)
    # uncondition samples the observed site with its distribution's sample(): binary for a Bernoulli,
    # whatever grey levels x holds. no_grad: Normal fantasies would otherwise be reparameterised in theta.
    with torch.no_grad():
        model_trace = poutine.trace(poutine.uncondition(model)).get_trace(x, num_data)
    latents = {name: model_trace.nodes[name]["value"] for name in space.names}
    fantasy = model_trace.nodes[observed]["value"].reshape(x.shape)
    guide = poutine.condition(guide, data=latents)
    guide_trace = poutine.trace(guide).get_trace(fantasy, num_data)
    return -guide_trace.log_prob_sum(), guide_trace


#: What the sleep phase needs the model's one observed site for (its errors say so).
_SLEEP = "wake-sleep's sleep phase, which feeds the guide the model's fantasy of x (train it with AEVB or MCEM),"


def direct_wake_loss(vae, x, num_data=None):
    r"""
    :func:`wake_loss` for a :class:`~pyro_aevb.models.vae.VAE` with the class's ``model`` and ``guide``,
    computed from the nets: :math:`z = \mu + \sigma \odot \epsilon` drawn as the guide draws it, then
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
    :func:`sleep_loss` for a :class:`~pyro_aevb.models.vae.VAE` with the class's ``model`` and ``guide``,
    computed from the nets: :math:`z \sim \mathcal{N}(0, I)` and the fantasy
    :math:`x \sim p_\theta(x|z)` drawn as the model draws them, then
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


def _descend(optim, loss, trace):
    """
    One step of ``optim`` on the parameters that ``trace`` touched (its ``"param"`` sites, as Pyro's
    SVI collects them), and no other: their gradients are reset to ``None`` afterwards, so a later
    step on another trace does not apply weight decay to them again.
    """
    params = {site["value"].unconstrained() for site in trace.nodes.values() if site["type"] == "param"}
    loss.backward()
    optim(params)
    for p in params:
        p.grad = None
    return loss.item()


class ValidatedOnce:
    """
    Pyro's validation (of distribution arguments and supports at every sample site) under the caller's
    setting on the first step only, off afterwards, as :class:`~pyro_aevb.infer.aevb.AEVB` does: a model's
    mistakes surface at the first step, and later steps skip the per-site checks.
    """

    def __init__(self):
        self._first = True

    def __call__(self):
        if self._first:
            self._first = False
            return contextlib.nullcontext()
        return pyro.validation_enabled(False)


class WakeSleep(TrainingMethod):
    r"""
    The wake-sleep training method [2] as [1] ran it: on each minibatch, one Adagrad step of
    :math:`\theta` on :func:`wake_loss`, then one Adagrad step of :math:`\phi` on :func:`sleep_loss`
    (whose fantasies come from the updated :math:`\theta`).

    Each phase steps only the parameters its own trace touched, so :math:`\theta` moves only with
    the wake gradient and :math:`\phi` only with the sleep gradient, weight decay included. As in
    :class:`~pyro_aevb.infer.aevb.AEVB`, weight decay :math:`\lambda` is the Gaussian prior on the
    parameters against the N-scaled losses, the optimizer is
    :class:`~pyro_aevb.optim.FusedAdagrad` (the update of ``pyro.optim.Adagrad``, in one pass), and
    Pyro validates the first step only.

    :param callable model: the model (:mod:`pyro_aevb.infer.sites`); or an object with ``.model`` and
        ``.guide`` (a :class:`~pyro_aevb.models.vae.VAE`), with ``guide`` left out.
    :param callable guide: the guide, with the same latent sites.
    :param float lr: Adagrad's global step size.
    :param int num_particles: L: each datapoint's row is repeated L times, so each phase averages L
        samples per datapoint; this needs :math:`N \ge LM`.
    :param float weight_decay: precision of the Gaussian prior on the parameters.
    :param optim: the optimizer, a :class:`~pyro.optim.PyroOptim` such as
        :func:`pyro_aevb.optim.make_optim` returns (Adam, say); ``None``: Adagrad with ``lr`` and
        ``weight_decay`` (:class:`~pyro_aevb.optim.FusedAdagrad`, the paper's).
    :param bool fast_path: compute both losses from the nets for the paper's own
        :class:`~pyro_aevb.models.vae.VAE` (``False`` traces the model and guide at every step).
    """

    has_encoder = True

    def __init__(self, model, guide=None, *, lr=0.02, num_particles=1, weight_decay=1.0, fast_path=True, optim=None):
        if int(num_particles) != num_particles or num_particles < 1:
            raise ValueError(f"num_particles must be a positive integer, got {num_particles}")
        _check_optim(lr, weight_decay)
        self.model, self.guide, self.vae = model_and_guide(model, guide)
        self.fast_path = bool(fast_path)
        self.num_particles = int(num_particles)
        self.optim = FusedAdagrad({"lr": lr, "weight_decay": weight_decay}) if optim is None else optim
        self._validation = ValidatedOnce()
        self._first_step = True
        self._space = None
        self._phase_params = None  # (decoder, encoder) parameters on the direct path

    @property
    def uses_fast_path(self):
        """Whether the steps compute the losses from the nets rather than from traces (known after the first)."""
        return self._phase_params is not None

    def step(self, x, num_data=None, *, idx=None):
        """
        One wake step and one sleep step on the minibatch ``x``, called as
        :meth:`SVI.step <pyro.infer.SVI.step>` is: ``num_data`` (the data set's size) is passed on to a
        model that takes it and scales the others' log-densities by :math:`N/M`; without it the scale is 1.

        :param torch.Tensor x: the minibatch ``[M, ...]``.
        :param int num_data: the data set's size :math:`N` (``None``: scale 1).
        :param idx: the rows' indices in the data set; not used.
        :returns: the sum of the wake and sleep losses, each scaled to the whole data set.
        """
        num_data = check_num_data(x, num_data)
        if self.num_particles > 1:
            x = repeat_rows(x, self.num_particles)
        if self._first_step:
            self._first_step = False
            self._space = check_model(self.model, x, self.guide)
            self._space.observed_site(_SLEEP)
            vae = paper_vae(self.model, self.guide) if self.fast_path else None
            if vae is not None and _direct_params(vae, x, num_data) is not None:
                self._phase_params = (list(vae.decoder.parameters()), list(vae.encoder.parameters()))
            with self._validation():  # the first step traces, under the caller's validation setting
                return self._traced_step(x, num_data)
        if self._phase_params is None:
            with self._validation():
                return self._traced_step(x, num_data)
        losses = []
        with self._validation():  # off: distributions built by a swapped likelihood skip their checks
            for loss_fn, params in zip((direct_wake_loss, direct_sleep_loss), self._phase_params):
                loss = loss_fn(self.vae, x, num_data)
                loss.backward()
                self.optim(params)
                for p in params:
                    p.grad = None
                losses.append(loss.item())
        return sum(losses)

    def _traced_step(self, x, num_data):
        wake = _descend(self.optim, *wake_loss(self.model, self.guide, x, num_data))
        sleep = _descend(self.optim, *sleep_loss(self.model, self.guide, x, num_data, self._space))
        return wake + sleep

    def state_dict(self):
        return {"optim": self.optim.get_state()}

    def load_state_dict(self, state):
        self.optim.set_state(state["optim"])
