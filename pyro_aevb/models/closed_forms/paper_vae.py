r"""
The object that hands the paper's VAE in closed form to the methods, as :class:`~pyro.infer.SVI` is
handed its loss: :class:`PaperVAEClosedForms`, which :class:`~pyro_aevb.models.vae.VAE` carries as
``closed_forms``, recognises the VAE's own model and guide and gives each method its objective
(:class:`ClosedFormObjective`, bound to a model and guide as a tuple of :class:`Phase`) and annealed
importance sampling its path.
"""

import functools
from collections import namedtuple

import pyro
import torch
from pyro import poutine

from pyro_aevb.infer.util import cuda_devices
from pyro_aevb.models.closed_forms.annealing import GaussianGuidePath, PaperVAEPath
from pyro_aevb.models.closed_forms.losses import direct_sleep_loss, direct_wake_loss, iwae_loss, rws_loss, sgvb_loss
from pyro_aevb.models.nets import BernoulliMLPDecoder, flat_rows, loc_and_log_var

__all__ = ["ClosedFormObjective", "PaperVAEClosedForms", "Phase"]


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
        """
        Whether ``vae``'s likelihood is the library's Bernoulli MLP decoder itself (logits =
        loc(features(z))), with tanh hidden layers (any number of them).
        """
        decoder = vae.decoder
        return (
            vae.likelihood == "bernoulli"
            and self.own_likelihood(vae)
            and type(decoder).forward is BernoulliMLPDecoder.forward
            and type(decoder).features is BernoulliMLPDecoder.features
            and decoder.act is torch.tanh
        )

    # -- the methods' objectives ---------------------------------------------------------------
    def sgvb(self, estimator="B", num_particles=1):
        """AEVB's objective, :func:`~pyro_aevb.models.closed_forms.losses.sgvb_loss`."""
        return ClosedFormObjective(self, functools.partial(sgvb_loss, estimator=estimator, num_particles=num_particles))

    def iwae(self, num_particles=5, gradient="reparam"):
        """IWAE's objective, :func:`~pyro_aevb.models.closed_forms.losses.iwae_loss`."""
        return ClosedFormObjective(self, functools.partial(iwae_loss, num_particles=num_particles, gradient=gradient))

    def rws(self, num_particles=5, sleep_phi=False):
        """Reweighted wake-sleep's objective, :func:`~pyro_aevb.models.closed_forms.losses.rws_loss`."""
        return ClosedFormObjective(self, functools.partial(rws_loss, num_particles=num_particles, sleep_phi=sleep_phi))

    def wake_sleep(self):
        """
        Wake-sleep's two phases, :func:`~pyro_aevb.models.closed_forms.losses.direct_wake_loss` on the
        decoder, then :func:`~pyro_aevb.models.closed_forms.losses.direct_sleep_loss` on the encoder.
        """
        return ClosedFormObjective(self, (direct_wake_loss, direct_sleep_loss), by_phase=True)

    # -- annealed importance sampling ----------------------------------------------------------
    def annealing(self, space, model, x, guide=None, precision="fp32"):
        r"""
        The densities of annealed importance sampling's path for ``model`` (and ``guide``, where the
        chains start) on the datapoints ``x``, written out where these closed forms know them:

        - ``model`` is the VAE's own (:meth:`vae`): :math:`\log p(z)` and :math:`\log p(x|z)` from
          the nets, and the guide's Gaussian if ``guide`` is the same VAE's own
          (:class:`~pyro_aevb.models.closed_forms.annealing.PaperVAEPath`);
        - else ``guide`` is a VAE's own, over one latent site of real values: the guide's Gaussian
          alone (:class:`~pyro_aevb.models.closed_forms.annealing.GaussianGuidePath`).

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
