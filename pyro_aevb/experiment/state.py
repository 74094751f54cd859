"""
The exact state a resumed run needs, as *data only*: tensors, numbers, strings, ``None``, lists, tuples
and dicts, which ``torch.load(..., weights_only=True)`` reads back without running any code.

What PyTorch would otherwise pickle as objects is stored as data: the random-number states as tensors
(:func:`get_rng_state`), and the constraint of each ``pyro.param`` as a name and its numeric parameters
(:func:`encode_constraint`). :func:`check_data_only` names the entry of a state that is anything else.
The files that hold such a state are :mod:`~pyro_aevb.experiment.checkpoint`'s.
"""

import collections
import random

import numpy as np
import pyro
import pyro.distributions.constraints as pyro_constraints
import torch
from torch.distributions import constraints, transform_to

from pyro_aevb.errors import CheckpointError, DamagedCheckpoint

__all__ = [
    "CONSTRAINTS",
    "NAMED_CONSTRAINTS",
    "check_data_only",
    "decode_constraint",
    "encode_constraint",
    "get_param_store_state",
    "get_rng_state",
    "restore_param_store",
    "rng_state_as_data",
    "set_rng_state",
]


# -- constraints as data ---------------------------------------------------------------------------


def _singletons():
    """Named constraint objects of ``torch.distributions.constraints`` and Pyro's, by name."""
    found = {}
    for module in (constraints, pyro_constraints):
        for name in dir(module):
            obj = getattr(module, name)
            if isinstance(obj, constraints.Constraint) and not name.startswith("_") and name not in found:
                found[name] = obj
    return found


def _classes():
    """
    Constraint classes by a stable name, with the attributes their constructor takes, in order. Every
    class of ``torch.distributions.constraints`` that a ``pyro.param`` can have, and Pyro's additions.
    """
    c, p = constraints, pyro_constraints
    table = {
        # parameter-free
        "real": (c._Real, ()),
        "boolean": (c._Boolean, ()),
        "simplex": (c._Simplex, ()),
        "lower_triangular": (c._LowerTriangular, ()),
        "lower_cholesky": (c._LowerCholesky, ()),
        "corr_cholesky": (c._CorrCholesky, ()),
        "positive_definite": (c._PositiveDefinite, ()),
        "positive_semidefinite": (c._PositiveSemidefinite, ()),
        "square": (c._Square, ()),
        "symmetric": (c._Symmetric, ()),
        "one_hot": (c._OneHot, ()),
        # with numeric parameters (floats or tensors)
        "greater_than": (c._GreaterThan, ("lower_bound",)),
        "greater_than_eq": (c._GreaterThanEq, ("lower_bound",)),
        "less_than": (c._LessThan, ("upper_bound",)),
        "interval": (c._Interval, ("lower_bound", "upper_bound")),
        "half_open_interval": (c._HalfOpenInterval, ("lower_bound", "upper_bound")),
        "integer_interval": (c._IntegerInterval, ("lower_bound", "upper_bound")),
        "integer_greater_than": (c._IntegerGreaterThan, ("lower_bound",)),
        "integer_less_than": (c._IntegerLessThan, ("upper_bound",)),
        "multinomial": (c._Multinomial, ("upper_bound",)),
        # built from other constraints
        "independent": (c._IndependentConstraint, ("base_constraint", "reinterpreted_batch_ndims")),
        "cat": (c._Cat, ("cseq", "dim", "lengths")),
        "stack": (c._Stack, ("cseq", "dim")),
        "mixture_same_family": (c.MixtureSameFamilyConstraint, ("base_constraint",)),
    }
    for name, cls_name in [
        ("integer", "_Integer"),
        ("sphere", "_Sphere"),
        ("corr_matrix", "_CorrMatrix"),
        ("ordered_vector", "_OrderedVector"),
        ("positive_ordered_vector", "_PositiveOrderedVector"),
        ("softplus_positive", "_SoftplusPositive"),
        ("softplus_lower_cholesky", "_SoftplusLowerCholesky"),
        ("unit_lower_cholesky", "_UnitLowerCholesky"),
    ]:
        if hasattr(p, cls_name):
            table[name] = (getattr(p, cls_name), ())
    return table


#: Constraint kinds that round-trip: ``{name: (class, constructor attributes)}``.
CONSTRAINTS = _classes()
#: The named constraint objects (``positive``, ``real``, ...) of torch and Pyro, by name.
NAMED_CONSTRAINTS = _singletons()


def encode_constraint(constraint, param="?"):
    """
    A constraint as data: ``{"constraint": name}`` for a named object (``positive``, ``real``, ...),
    ``{"constraint": kind, "args": [...]}`` for the others, whose arguments are numbers, tensors or
    encoded constraints. Raises :class:`~pyro_aevb.errors.CheckpointError`, naming ``param``, for a
    constraint of a kind outside :data:`CONSTRAINTS`.
    """
    for name, obj in NAMED_CONSTRAINTS.items():
        if constraint is obj:
            return {"constraint": name}
    for name, (cls, attrs) in CONSTRAINTS.items():
        if type(constraint) is cls:
            return {"constraint": name, "args": [_encode_arg(getattr(constraint, a), param, name) for a in attrs]}
    raise CheckpointError(
        f"the constraint of pyro.param {param!r}, {constraint!r} ({type(constraint).__module__}."
        f"{type(constraint).__qualname__}), cannot be stored in a checkpoint: only the constraints of "
        f"torch.distributions.constraints and pyro.distributions.constraints can ({', '.join(sorted(CONSTRAINTS))})"
    )


def _encode_arg(value, param, kind):
    if isinstance(value, constraints.Constraint):
        return encode_constraint(value, param)
    if isinstance(value, (list, tuple)):
        return [_encode_arg(v, param, kind) for v in value]
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if value is None or isinstance(value, (bool, int, float)):
        return value
    raise CheckpointError(f"the {kind} constraint of pyro.param {param!r} has a parameter {value!r} that cannot be stored")


def decode_constraint(data):
    """The constraint that :func:`encode_constraint` encoded."""
    name = data["constraint"]
    if "args" not in data:
        if name not in NAMED_CONSTRAINTS:
            raise DamagedCheckpoint(f"unknown constraint {name!r}")
        return NAMED_CONSTRAINTS[name]
    if name not in CONSTRAINTS:
        raise DamagedCheckpoint(f"unknown constraint kind {name!r}")
    cls, _ = CONSTRAINTS[name]
    return cls(*[_decode_arg(a) for a in data["args"]])


def _decode_arg(value):
    if isinstance(value, dict) and "constraint" in value:
        return decode_constraint(value)
    if isinstance(value, list):
        return [_decode_arg(v) for v in value]
    return value


# -- random streams as tensors ---------------------------------------------------------------------


def get_rng_state():
    """The state of every random stream that training draws from, as tensors and numbers."""
    cuda = None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return rng_state_as_data(torch.get_rng_state(), np.random.get_state(), random.getstate(), cuda)


def rng_state_as_data(torch_state, numpy_state, python_state, cuda=None):
    """
    The random streams' states as :func:`set_rng_state` takes them: NumPy's (the tuple of
    ``np.random.get_state()``) and Python's (that of ``random.getstate()``) as tensors and numbers.
    """
    kind, keys, pos, has_gauss, cached_gaussian = numpy_state
    version, internal, gauss_next = python_state
    state = {
        "torch": torch_state,
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next},
    }
    if cuda is not None:
        state["cuda"] = list(cuda)
    return state


def set_rng_state(state):
    """Restore the streams that :func:`get_rng_state` saved."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# -- the param store -------------------------------------------------------------------------------


def get_param_store_state():
    """Pyro's param store as data: unconstrained values, and each constraint encoded."""
    store = pyro.get_param_store()
    return {
        "params": {name: value.detach().clone() for name, value in store._params.items()},
        "constraints": {name: encode_constraint(c, name) for name, c in store._constraints.items()},
    }


def restore_param_store(saved_state):
    """
    Copy saved values into the param store *in place*.

    The store must already hold the live parameters (run the model and the guide once first):
    copying in place keeps the tensors that the modules, the store and the optimizer share as the
    same objects. Parameters that are only in ``saved_state`` (``pyro.param`` sites not yet run) are
    added, with their decoded constraints.
    """
    store = pyro.get_param_store()
    with torch.no_grad():
        for name, value in saved_state["params"].items():
            if name in store:
                store._params[name].copy_(value)  # the unconstrained tensor, shared with modules and optimizer
            else:
                constraint = saved_state["constraints"][name]
                if not isinstance(constraint, constraints.Constraint):  # Pyro's own get_state() holds objects
                    constraint = decode_constraint(constraint)
                store.setdefault(name, transform_to(constraint)(value), constraint)


# -- data only -------------------------------------------------------------------------------------

_SCALARS = (bool, int, float, str, type(None))


def check_data_only(obj, where="checkpoint"):
    """
    Raise :class:`~pyro_aevb.errors.CheckpointError`, naming the entry, unless ``obj`` holds only tensors,
    numbers, strings, ``None``, lists, tuples and dicts with string or integer keys.
    """
    if isinstance(obj, _SCALARS):
        return
    if isinstance(obj, torch.Tensor):
        if type(obj) not in (torch.Tensor, torch.nn.Parameter):
            raise CheckpointError(f"{where} is a {type(obj).__qualname__}, a tensor subclass that a checkpoint cannot hold")
        return
    if isinstance(obj, (list, tuple)) and type(obj) in (list, tuple):
        for i, v in enumerate(obj):
            check_data_only(v, f"{where}[{i}]")
        return
    if type(obj) in (dict, collections.OrderedDict):  # state_dict() is an OrderedDict, which torch.load reads
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise CheckpointError(f"{where} has a key {k!r} of type {type(k).__qualname__}; keys must be strings or integers")
            check_data_only(v, f"{where}[{k!r}]")
        return
    raise CheckpointError(
        f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}; a checkpoint holds only tensors, "
        "numbers, strings, lists and dicts"
    )
