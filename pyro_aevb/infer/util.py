r"""
How the library calls a user's model and guide: with the size ``N`` of the data set as ``num_data``
(:func:`check_num_data`), its log-densities scaled by :math:`N/M` for a minibatch of ``M`` rows
(:func:`minibatch_scale`, Eq. (8) of [1]; :func:`per_datapoint` for a model that does not take
``num_data``), traced apart from any enclosing handler (:func:`trace_model`), with its rows repeated
for chains or particles (:func:`repeat_rows`); and the model given as callables or as an object with
``.model`` and ``.guide`` (:func:`model_and_guide`), whose ``closed_forms`` a method may use
(:func:`closed_forms_of`).

[1] Auto-Encoding Variational Bayes, Diederik P. Kingma, Max Welling (2013)
"""

import functools
import inspect
import operator

import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

__all__ = [
    "check_num_data", "closed_forms_of", "cuda_devices", "minibatch_scale", "model_and_guide", "per_datapoint",
    "repeat_rows", "takes_num_data", "trace_model",
]


def cuda_devices(x):
    """The CUDA device of ``x`` as a list, for :func:`torch.random.fork_rng` (empty on the CPU)."""
    return [x.device] if x.device.type == "cuda" else []


def takes_num_data(fn):
    """Whether ``fn`` has a parameter ``num_data`` (the library's contract before any model was accepted)."""
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "num_data" in parameters


def check_num_data(x, num_data):
    """
    The ``num_data`` of a method's ``step(x, num_data=None, *, idx=None)``: ``None`` (scale 1), or the
    data set's size, a whole number of at least the minibatch's rows.

    :returns: ``num_data`` as an int, or ``None``.
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"x must be a tensor [M, ...] with M > 0 rows, got {getattr(x, 'shape', x)!r}")
    if num_data is None:
        return None
    if isinstance(num_data, torch.Tensor) and num_data.numel() == 1 and not num_data.is_floating_point():
        num_data = num_data.item()
    try:
        num_data = operator.index(num_data)
    except TypeError:
        raise TypeError(
            f"num_data must be the data set's size, a whole number, got {type(num_data).__name__}: methods "
            "step as SVI does, step(x, num_data=N, idx=rows), the rows' indices by the keyword idx"
        ) from None
    minibatch_scale(x, num_data)  # refuses N < M
    return num_data


def minibatch_scale(x, num_data=None):
    """The scale :math:`N/M` of Eq. (8) of [1] for a minibatch ``x`` of ``M`` rows of a data set of ``N = num_data`` (1 without it)."""
    if num_data is None:
        return 1.0
    if int(num_data) < x.shape[0]:
        raise ValueError(f"num_data ({num_data}) is smaller than the minibatch ({x.shape[0]})")
    return int(num_data) / x.shape[0]


def per_datapoint(fn):
    r"""
    ``fn(x)`` or ``fn(x, num_data)`` as a function ``f(x, num_data=None)`` whose log-densities carry
    the scale :math:`N/M` of Eq. (8) of [1] for a minibatch ``x`` of ``M`` rows of a data set of
    ``N = num_data``: passed on when ``fn`` takes ``num_data``, applied with :func:`pyro.poutine.scale`
    otherwise. Without ``num_data`` the scale is 1. Idempotent.
    """
    if getattr(fn, "_per_datapoint", False):
        return fn
    if takes_num_data(fn):

        def wrapped(x, num_data=None):
            return fn(x, num_data=num_data)

    else:

        def wrapped(x, num_data=None):
            if num_data is None or int(num_data) == x.shape[0]:
                return fn(x)
            with poutine.scale(scale=minibatch_scale(x, num_data)):
                return fn(x)

    functools.update_wrapper(wrapped, fn)
    wrapped._per_datapoint = True
    wrapped.__wrapped_fn__ = fn
    return wrapped


def repeat_rows(x, times):
    """``x`` stacked ``times`` times along the rows: row ``k * B + b`` is datapoint ``b`` (a chain, a particle)."""
    return x.repeat((times,) + (1,) * (x.dim() - 1))


def trace_model(fn, x, data=None, uncondition=False):
    """
    A trace of ``fn(x)`` (conditioned on ``data``, a dict of site values), hidden from enclosing
    handlers and without subsample sites. ``uncondition`` samples the observed sites instead.
    """
    fn = per_datapoint(fn)
    if data:
        fn = poutine.condition(fn, data=data)
    if uncondition:
        fn = poutine.uncondition(fn)
    with poutine.block():
        trace = poutine.trace(fn).get_trace(x)
    return prune_subsample_sites(trace)


def model_and_guide(model, guide=None, need_guide=True):
    """
    ``(model, guide, owner)`` from the callables, or from an object with ``.model`` and ``.guide`` (a
    :class:`~pyro_aevb.models.vae.VAE`) passed as ``model`` with no ``guide``; ``owner`` is that object,
    or the object whose bound method ``model`` is (``None`` for a plain function).
    """
    owner = getattr(model, "__self__", None)
    if guide is None and callable(getattr(model, "model", None)):
        owner, model, guide = model, model.model, getattr(model, "guide", None)
    if not callable(model):
        raise TypeError(f"model must be a callable Pyro model, or an object with .model and .guide; got {model!r}")
    if need_guide and not callable(guide):
        raise TypeError(f"a guide is needed: pass model and guide callables, or an object with .model and .guide; got {guide!r}")
    return model, guide, owner


def closed_forms_of(fn):
    r"""
    The closed forms that the object whose bound method ``fn`` is supplies as ``closed_forms`` (the
    paper's :class:`~pyro_aevb.models.vae.VAE` supplies
    :class:`~pyro_aevb.models.closed_forms.paper_vae.PaperVAEClosedForms`), or ``None``: a plain function, or
    an object without them. A method asks them for its objective written out; they answer ``None``
    where they do not compute this model's.
    """
    return getattr(getattr(fn, "__self__", None), "closed_forms", None)
