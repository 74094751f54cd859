r"""
Adagrad (or any :mod:`torch.optim` optimizer) over all of Pyro's parameters with one PyTorch optimizer.

:class:`pyro.optim.Adagrad` keeps one :class:`torch.optim.Adagrad` per parameter tensor and steps them
one by one, each through PyTorch's per-tensor implementation: for the nets of [1] that costs about as
much as the forward and backward passes together. The update is elementwise, so one optimizer over
every parameter, with PyTorch's fused kernel (one pass over each tensor), computes the same update.
:class:`FusedAdagrad` does that behind :class:`~pyro.optim.PyroOptim`'s interface, so that
:class:`~pyro.infer.SVI` takes it unchanged, and it reads and writes the format of
:meth:`PyroOptim.get_state <pyro.optim.PyroOptim.get_state>` (one single-parameter optimizer state per
parameter name), so that checkpoints move freely between the two.

The update of each parameter :math:`\theta` with gradient :math:`g` of the loss
:math:`-\widetilde{\mathcal{L}}^M` (Algorithm 1 of [1], with the weight decay :math:`\lambda` of the
Gaussian prior on :math:`\theta`) is

.. math::

    g \leftarrow g + \lambda \theta, \qquad s \leftarrow s + g^2, \qquad
    \theta \leftarrow \theta - \eta \, g / (\sqrt{s} + \epsilon).

:class:`FusedOptim` does the same for any :mod:`torch.optim` optimizer named by its class (Adam,
say, as Burda et al. (2015) trained their VAEs), with its fused or multi-tensor kernel where it has one.

[1] Auto-Encoding Variational Bayes, Diederik P. Kingma, Max Welling (2013)
"""

import functools
import inspect

import pyro
import torch
from pyro.optim import PyroOptim

__all__ = ["FusedAdagrad", "FusedOptim", "make_optim"]

_ADAGRAD_ARGS = ("lr", "weight_decay", "lr_decay", "eps", "initial_accumulator_value")
_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@functools.cache
def _largest_subnormal(dtype):
    tiny = torch.tensor(torch.finfo(dtype).tiny, dtype=dtype)
    return torch.nextafter(tiny, torch.zeros((), dtype=dtype)).item()


class FusedOptim(PyroOptim):
    r"""
    One :mod:`torch.optim` optimizer over every parameter that :class:`~pyro.infer.SVI` hands it, with
    the interface of :class:`~pyro.optim.PyroOptim`: ``__call__(params)``, :meth:`get_state` and
    :meth:`set_state` (in PyroOptim's format: one single-parameter optimizer state per parameter name).

    :param optim_constructor: a :class:`torch.optim.Optimizer` subclass, e.g. :class:`torch.optim.Adam`.
    :param dict optim_args: its keyword arguments (``lr``, ``weight_decay``, ``betas``, ...).
    :param str implementation: ``"fused"`` (one-pass kernel, where the optimizer has one for the
        parameter's device and type; else ``"foreach"``) or ``"foreach"`` (multi-tensor, where it has
        one; else its default).
    """

    def __init__(self, optim_constructor, optim_args, implementation="fused"):
        if not (isinstance(optim_constructor, type) and issubclass(optim_constructor, torch.optim.Optimizer)):
            raise ValueError(f"optim_constructor must be a torch.optim.Optimizer subclass, got {optim_constructor!r}")
        if implementation not in ("fused", "foreach"):
            raise ValueError(f"implementation must be 'fused' or 'foreach', got {implementation!r}")
        parameters = inspect.signature(optim_constructor).parameters
        unknown = set(optim_args) - set(parameters) - {"fused", "foreach"}
        if unknown:
            raise ValueError(f"{optim_constructor.__name__} takes no {sorted(unknown)}; it takes {sorted(set(parameters) - {'params'})}")
        super().__init__(optim_constructor, dict(optim_args))
        self.implementation = implementation
        self._kernels = {k for k in ("fused", "foreach") if k in parameters}
        self.optimizer = None  # created with the first parameters
        self._params = []  # in the order they joined
        self._known = set()
        self._waiting = {}  # per-name states from set_state, for parameters not seen yet

    def add_params(self, params):
        """
        Let ``params`` (tensors of Pyro's param store) join the optimizer before its first step, so that
        a learning-rate scheduler can be built over it (its ``optimizer``) from the start.
        """
        new = [p for p in params if p not in self._known]
        if new:
            self._add(new)
        return self.optimizer

    def __call__(self, params, *args, **kwargs):
        """One step on ``params``: tensors of Pyro's param store, holding their gradients."""
        if not isinstance(params, (set, frozenset)):
            params = set(params)
        new = [p for p in params if p not in self._known]
        if new:
            self._add(new)
        hidden = []
        if len(params) < len(self._params):
            # Only this step's parameters move (as in PyroOptim): hide the others' gradients.
            for p in self._params:
                if p not in params and p.grad is not None:
                    hidden.append((p, p.grad))
                    p.grad = None
        self.optimizer.step()
        for p, grad in hidden:
            p.grad = grad

    def _add(self, new):
        store = pyro.get_param_store()
        new.sort(key=lambda p: store.param_name(p) or "")  # a stable order, for a reproducible state listing
        for fused in (True, False):
            params = [p for p in new if self._fused(p) == fused]
            if not params:
                continue
            group = {"params": params}
            if "fused" in self._kernels:
                group["fused"] = fused or None
            if "foreach" in self._kernels:
                group["foreach"] = (not fused) or None
            if self.optimizer is None:
                self.optimizer = self.pt_optim_constructor([group], **self.pt_optim_args)
            else:
                self.optimizer.add_param_group(group)
        for p in new:
            self._known.add(p)
            self._params.append(p)
            state = self._waiting.pop(store.param_name(p), None)
            if state is not None:
                self._load_param_state(p, state)

    def _fused(self, param):
        return (
            self.implementation == "fused" and "fused" in self._kernels
            and param.device.type in ("cpu", "cuda") and param.dtype in _FUSED_DTYPES
        )

    def _load_param_state(self, param, state):
        """Load one parameter's state, in :class:`~pyro.optim.PyroOptim`'s format (a one-tensor state dict)."""
        saved = next(iter(state["state"].values()), None)
        if not saved:
            self.optimizer.state.pop(param, None)  # saved before its first step: start afresh
            return
        loaded = {}
        for key, value in saved.items():
            if key == "step":
                # The fused kernels read the step count on the parameter's device, the others on the CPU.
                loaded[key] = torch.tensor(
                    float(value), dtype=torch.float32, device=param.device if self._fused(param) else "cpu"
                )
            elif isinstance(value, torch.Tensor):
                loaded[key] = value.detach().to(device=param.device, dtype=param.dtype, copy=True)
            else:
                loaded[key] = value
        self.optimizer.state[param] = loaded

    def get_state(self):
        """
        :returns: ``{parameter name: state dict of a one-parameter optimizer}``, the format of
            :meth:`pyro.optim.PyroOptim.get_state`, with the states loaded but not yet used.
        :rtype: dict
        """
        store = pyro.get_param_store()
        state = dict(self._waiting)
        if self.optimizer is None:
            return state
        for group in self.optimizer.param_groups:
            # The settings as the optimizer's defaults have them, so that PyroOptim can load them too.
            settings = {k: v for k, v in group.items() if k != "params"}
            settings.update({k: None for k in self._kernels})
            for p in group["params"]:
                saved = self.optimizer.state.get(p)
                param_state = {}
                if saved:
                    param_state[0] = {k: _saved(k, v) for k, v in saved.items()}
                state[store.param_name(p)] = {"state": param_state, "param_groups": [dict(settings, params=[0])]}
        return state

    def set_state(self, state_dict):
        """
        Load a state from :meth:`get_state` or from :meth:`pyro.optim.PyroOptim.get_state`: at once for
        the parameters this optimizer holds, and for the others when they first appear.
        """
        store = pyro.get_param_store()
        live = {store.param_name(p): p for p in self._params}
        for name, param_state in state_dict.items():
            if name in live:
                self._load_param_state(live[name], param_state)
            else:
                self._waiting[name] = param_state


def _saved(key, value):
    """A copy of one entry of a parameter's optimizer state (the step count on the CPU, as PyroOptim keeps it)."""
    if not isinstance(value, torch.Tensor):
        return value
    return value.detach().cpu().clone() if key == "step" else value.detach().clone()


class FusedAdagrad(FusedOptim):
    r"""
    One :class:`torch.optim.Adagrad` over every parameter that :class:`~pyro.infer.SVI` hands it, with
    the interface of :class:`~pyro.optim.PyroOptim`: ``__call__(params)``, :meth:`~FusedOptim.get_state` and
    :meth:`~FusedOptim.set_state`.

    Parameters seen for the first time (a ``pyro.param`` that a model creates mid-training, say) join
    the optimizer when they first appear; a call moves only the parameters it is given, as
    :class:`~pyro.optim.PyroOptim` does.

    :param dict optim_args: keyword arguments of :class:`torch.optim.Adagrad`: ``lr``,
        ``weight_decay``, ``lr_decay``, ``eps``, ``initial_accumulator_value``.
    :param str implementation: ``"fused"`` (PyTorch's one-pass kernel, on CPU and CUDA; parameters on
        other devices use ``"foreach"``) or ``"foreach"``.
    :param int flush_subnormals_every: every this many steps (counted by the first parameter's step
        count, which checkpoints keep), set to zero the CPU parameters smaller in magnitude than the
        smallest normal number of their type (:math:`1.2 \cdot 10^{-38}` in float32); ``None``: never.

    .. note:: Why flush: the weight decay shrinks the weights that no data moves (those of MNIST's
        always-blank border pixels) geometrically towards zero, into the subnormal range, where x86
        CPUs compute through a slow microcode path; with a few ten thousand such weights the update
        costs several times more than with none (measured in ``docs/performance.md``). A weight below
        :math:`10^{-38}` contributes nothing to the bound, and zero is where the decay takes it.

    .. note:: The step size and the other settings are this object's: a state loaded with
        :meth:`~FusedOptim.set_state` brings each parameter's accumulated squared gradients and step count, not the
        settings it was saved with (a resumed run may change ``lr``).
    """

    def __init__(self, optim_args, implementation="fused", flush_subnormals_every=16):
        if flush_subnormals_every is not None and (int(flush_subnormals_every) != flush_subnormals_every or flush_subnormals_every < 1):
            raise ValueError(f"flush_subnormals_every must be a positive integer or None, got {flush_subnormals_every}")
        unknown = set(optim_args) - set(_ADAGRAD_ARGS)
        if unknown:
            raise ValueError(f"FusedAdagrad takes {_ADAGRAD_ARGS}, got {sorted(unknown)}")
        super().__init__(torch.optim.Adagrad, optim_args, implementation)
        self.flush_subnormals_every = flush_subnormals_every

    def __call__(self, params, *args, **kwargs):
        """One Adagrad step on ``params``: tensors of Pyro's param store, holding their gradients."""
        super().__call__(params)
        if self.flush_subnormals_every is not None:
            state = self.optimizer.state.get(self._params[0])
            if state and int(state["step"]) % self.flush_subnormals_every == 0:
                self._flush_subnormals()

    @torch.no_grad()
    def _flush_subnormals(self):
        for p in self._params:
            if p.device.type == "cpu" and p.is_floating_point():
                # One in-place pass: hardshrink zeroes |p| <= λ, and λ is the largest subnormal number.
                torch.hardshrink(p, _largest_subnormal(p.dtype), out=p)


def make_optim(name="Adagrad", lr=0.02, weight_decay=1.0, **options):
    """
    The optimizer of a training run: :class:`FusedAdagrad` for ``"Adagrad"`` (the paper's), else
    :class:`FusedOptim` over the :mod:`torch.optim` class of that name, with the step size ``lr``, the
    weight decay (the Gaussian prior on the parameters) and the class's other ``options``.

    :raises ValueError: for an unknown name or option, naming them.
    """
    known = sorted(n for n, c in vars(torch.optim).items()
                   if isinstance(c, type) and issubclass(c, torch.optim.Optimizer) and c is not torch.optim.Optimizer)
    if name not in known:
        raise ValueError(f"unknown optimizer {name!r}; torch.optim has {', '.join(known)}")
    cls = getattr(torch.optim, name)
    if cls is torch.optim.LBFGS:
        raise ValueError("LBFGS needs a closure that re-evaluates the loss, which a step on a minibatch does not have")
    args = dict(options, lr=lr)
    if weight_decay or "weight_decay" in inspect.signature(cls).parameters:
        args["weight_decay"] = weight_decay
    if cls is torch.optim.Adagrad:
        return FusedAdagrad(args)
    return FusedOptim(cls, args)
