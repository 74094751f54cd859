"""
What every training method's step shares: its optimizer (:func:`method_optim`: the paper's Adagrad
unless another is given), one descent step on a loss (:func:`descend`: backward, the optimizer's
update of the given parameters, their gradients cleared; :func:`descend_phases` for a step made of
several), and Pyro's validation on the first step only (:class:`ValidatedOnce`).
"""

import contextlib

import pyro

from pyro_aevb.optim import FusedAdagrad

__all__ = ["ValidatedOnce", "check_optim", "descend", "descend_phases", "method_optim", "trace_params"]


def check_optim(lr, weight_decay):
    """:raises ValueError: unless ``lr > 0`` and ``weight_decay >= 0``."""
    if not lr > 0 or not weight_decay >= 0:
        raise ValueError(f"need lr > 0 and weight_decay >= 0, got {lr} and {weight_decay}")


def method_optim(lr, weight_decay, optim=None):
    r"""
    A method's optimizer: ``optim`` (a :class:`~pyro.optim.PyroOptim`) if given, else Adagrad with the
    global step size ``lr`` and the weight decay :math:`\lambda` (:class:`~pyro_aevb.optim.FusedAdagrad`,
    the paper's). ``lr`` and ``weight_decay`` are checked either way.
    """
    check_optim(lr, weight_decay)
    return FusedAdagrad({"lr": lr, "weight_decay": weight_decay}) if optim is None else optim


def trace_params(trace):
    """The unconstrained tensors of the ``"param"`` sites of ``trace``, as Pyro's SVI collects them."""
    return {site["value"].unconstrained() for site in trace.nodes.values() if site["type"] == "param"}


def descend(optim, loss, params):
    """
    One step of ``optim`` on ``params``, and no other: the gradient of ``loss``, the update, and the
    gradients reset to ``None`` afterwards, so that a later step on other parameters does not apply
    weight decay to these again.

    :returns: the loss, a Python float.
    """
    loss.backward()
    optim(params)
    for p in params:
        p.grad = None
    return loss.item()


def descend_phases(optim, phases, x, num_data=None):
    """
    One :func:`descend` for each phase ``(loss, params)`` in turn (a
    :class:`~pyro_aevb.models.closed_forms.paper_vae.Phase`), on ``loss(x, num_data)``, each loss computed after
    the update before it.

    :returns: the sum of the losses, a Python float.
    """
    return sum(descend(optim, loss(x, num_data), params) for loss, params in phases)


class ValidatedOnce:
    """
    Pyro's validation (of distribution arguments and supports at every sample site) under the caller's
    setting on the first step only, off afterwards: a model's mistakes surface at the first step, and
    later steps skip the per-site checks.
    """

    def __init__(self):
        self._first = True

    def __call__(self):
        if self._first:
            self._first = False
            return contextlib.nullcontext()
        return pyro.validation_enabled(False)
