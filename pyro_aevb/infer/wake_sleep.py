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

**Speed.** As for AEVB (:mod:`pyro_aevb.infer.aevb`), a model may hand the method both losses written
out: the closed forms that its owner supplies give ``wake_sleep()``, whose phases :class:`WakeSleep`
steps after a first traced step (for the paper's own :class:`~pyro_aevb.models.vae.VAE`,
:func:`~pyro_aevb.models.closed_forms.losses.direct_wake_loss` and
:func:`~pyro_aevb.models.closed_forms.losses.direct_sleep_loss`): the same densities from the same random
draws, without tracing.

[1] Auto-Encoding Variational Bayes, Diederik P. Kingma, Max Welling (2013)

[2] The "wake-sleep" algorithm for unsupervised neural networks, Geoffrey E. Hinton, Peter Dayan,
Brendan J. Frey, Radford M. Neal (1995)
"""

import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

from pyro_aevb.infer.descent import ValidatedOnce, descend, descend_phases, method_optim, trace_params
from pyro_aevb.infer.method import TrainingMethod
from pyro_aevb.infer.sites import check_model
from pyro_aevb.infer.util import check_num_data, closed_forms_of, model_and_guide, per_datapoint, repeat_rows

__all__ = ["WakeSleep", "sleep_loss", "wake_loss"]


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
    :param bool fast_path: compute both losses written out, for the paper's own
        :class:`~pyro_aevb.models.vae.VAE` (``False`` traces the model and guide at every step).
    :param closed_form: both losses written out, an object whose ``bind(model, guide, x, num_data)``
        returns the two phases (:class:`~pyro_aevb.models.closed_forms.paper_vae.Phase`: the wake loss and the
        decoder's parameters, the sleep loss and the encoder's) or ``None`` where it does not compute
        this pair's; ``None``: the model owner's ``closed_forms.wake_sleep()``, if any.
    """

    has_encoder = True

    def __init__(self, model, guide=None, *, lr=0.02, num_particles=1, weight_decay=1.0, fast_path=True, optim=None,
                 closed_form=None):
        if int(num_particles) != num_particles or num_particles < 1:
            raise ValueError(f"num_particles must be a positive integer, got {num_particles}")
        self.optim = method_optim(lr, weight_decay, optim)
        self.model, self.guide, self.vae = model_and_guide(model, guide)
        self.fast_path = bool(fast_path)
        forms = closed_forms_of(self.model) if closed_form is None and self.fast_path else None
        self.closed_form = forms.wake_sleep() if forms is not None else closed_form
        self.num_particles = int(num_particles)
        self._validation = ValidatedOnce()
        self._first_step = True
        self._space = None
        self._phases = None  # the closed form's (wake, sleep) steps, once the first step has bound it

    @property
    def uses_fast_path(self):
        """Whether the steps compute the losses written out rather than from traces (known after the first)."""
        return self._phases is not None

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
            if self.fast_path and self.closed_form is not None:
                self._phases = self.closed_form.bind(self.model, self.guide, x, num_data)
            with self._validation():  # the first step traces, under the caller's validation setting
                return self._traced_step(x, num_data)
        with self._validation():  # off: distributions built by a swapped likelihood skip their checks
            if self._phases is None:
                return self._traced_step(x, num_data)
            return descend_phases(self.optim, self._phases, x, num_data)

    def _traced_step(self, x, num_data):
        wake_loss_value, wake_trace = wake_loss(self.model, self.guide, x, num_data)
        wake = descend(self.optim, wake_loss_value, trace_params(wake_trace))
        sleep_loss_value, sleep_trace = sleep_loss(self.model, self.guide, x, num_data, self._space)
        sleep = descend(self.optim, sleep_loss_value, trace_params(sleep_trace))
        return wake + sleep
