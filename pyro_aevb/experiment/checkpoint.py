"""
Checkpoints: the exact state a resumed run needs (parameters, optimizer state, random streams, the
metrics rows so far, the settings), stored as *data only* and written atomically in two generations.

**Data only.** A checkpoint holds tensors, numbers, strings, ``None``, lists, tuples and dicts, nothing
else, and is read with ``torch.load(..., weights_only=True)``: opening a run folder never runs code from
it. What PyTorch would otherwise pickle as objects is stored as data: random-number states as tensors
(:func:`get_rng_state`), and the constraint of each ``pyro.param`` as a name and its numeric parameters
(:func:`encode_constraint`). :func:`save_checkpoint` checks every entry before it writes and names the
one it cannot store. A file that holds anything else is refused (:class:`~pyro_aevb.errors.UnsafeCheckpoint`)
without being run; one written by an earlier version, whose constraints and NumPy states were pickled
objects, is converted by ``pyro-aevb convert-checkpoint RUN --trust`` (:func:`convert_legacy`).

**Atomic, two generations.** The new checkpoint is written to a temporary file in the same folder and
flushed to disk; then the current ``checkpoint.pt`` becomes ``checkpoint.prev.pt`` (a hard link renamed
into place) and the new file is renamed over ``checkpoint.pt``. Each rename is atomic, so a run killed
at any instant leaves a complete ``checkpoint.pt`` and, from the second checkpoint on, the generation
before it. :func:`load_latest` falls back to ``checkpoint.prev.pt`` when ``checkpoint.pt`` is damaged.

**Checked.** The sha256 of each generation is recorded when it is written and checked whenever it is
read (:mod:`~pyro_aevb.experiment.checksums`): a file whose bytes changed after it was written is
damaged, and :func:`load_latest` falls back past it, naming it. A checkpoint written before digests
were recorded is read, with a note that it cannot be verified.
"""

import collections
import io
import os
import pickle
import random
import shutil
import threading
import zipfile
from pathlib import Path

import numpy as np
import pyro
import torch
from torch.distributions import constraints, transform_to

from pyro_aevb.errors import CheckpointError, DamagedCheckpoint, UnsafeCheckpoint
from pyro_aevb.experiment import _faultpoints as faultpoints
from pyro_aevb.experiment import checksums
from pyro_aevb.experiment.atomic import move_into_place, remove_quietly, sync_folder, write_atomic, write_temporary

__all__ = [
    "CONSTRAINTS",
    "FORMAT",
    "atomic_save",
    "check_data_only",
    "convert_legacy",
    "decode_constraint",
    "encode_constraint",
    "get_param_store_state",
    "get_rng_state",
    "load_checkpoint",
    "load_latest",
    "previous_path",
    "restore_param_store",
    "save_checkpoint",
    "set_rng_state",
]

#: The checkpoint format this version writes. 1: pickled constraint objects and NumPy states (read only
#: after ``pyro-aevb convert-checkpoint``); 2: data only.
FORMAT = 2


# -- constraints as data ---------------------------------------------------------------------------


def _pyro_constraints():
    import pyro.distributions.constraints as pyro_constraints

    return pyro_constraints


def _singletons():
    """Named constraint objects of ``torch.distributions.constraints`` and Pyro's, by name."""
    found = {}
    for module in (constraints, _pyro_constraints()):
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
    c, p = constraints, _pyro_constraints()
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
_SINGLETONS = _singletons()


def encode_constraint(constraint, param="?"):
    """
    A constraint as data: ``{"constraint": name}`` for a named object (``positive``, ``real``, ...),
    ``{"constraint": kind, "args": [...]}`` for the others, whose arguments are numbers, tensors or
    encoded constraints. Raises :class:`~pyro_aevb.errors.CheckpointError`, naming ``param``, for a
    constraint of a kind outside :data:`CONSTRAINTS`.
    """
    for name, obj in _SINGLETONS.items():
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
        if name not in _SINGLETONS:
            raise DamagedCheckpoint(f"unknown constraint {name!r}")
        return _SINGLETONS[name]
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
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
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


def _rng_from_legacy(state):
    """The format-1 random states (NumPy's tuple with an array, Python's tuple of ints) as data."""
    kind, keys, pos, has_gauss, cached_gaussian = state["numpy"]
    version, internal, gauss_next = state["python"]
    new = {
        "torch": state["torch"],
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next},
    }
    if "cuda" in state:
        new["cuda"] = list(state["cuda"])
    return new


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


# -- writing ---------------------------------------------------------------------------------------


def previous_path(path):
    """Where the generation before ``path`` is kept: ``checkpoint.pt`` -> ``checkpoint.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def atomic_save(obj, path, digest=False):
    """
    ``torch.save`` ``obj`` to ``path`` atomically (no previous generation kept); with ``digest``,
    returns the file's sha256.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getbuffer(), mode=0o600)
    return checksums.digest(buffer.getbuffer()) if digest else None


def save_checkpoint(state, path):
    """
    Write ``state`` (checked by :func:`check_data_only`) to ``path`` atomically, keeping the checkpoint
    it replaces as :func:`previous_path`, and record the sha256 of both
    (:mod:`~pyro_aevb.experiment.checksums`). Raises :class:`OSError` when the disk is full or the
    folder cannot be written; ``path`` and its previous generation are then as they were.
    """
    path = Path(path)
    check_data_only(state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getbuffer()
    prev = previous_path(path)

    def record():
        # The digest of the bytes meant to be written, not of those on the disk; recorded, and flushed,
        # before the renames. hashlib lets go of the GIL: this runs while the file is written and flushed.
        new_digest = checksums.digest(data)
        prev_digests = checksums.before_rotation(path, prev, new_digest)
        sync_folder(path.parent)
        return new_digest, prev_digests

    recording = _Background(record)
    try:
        tmp = write_temporary(path, data, mode=0o600, point="checkpoint-write")
    except BaseException:
        recording.join()
        raise
    try:
        new_digest, prev_digests = recording.result()
        if path.exists():
            _keep_previous(path)
        faultpoints.reached("checkpoint-rotate")
    except BaseException:
        remove_quietly(tmp)
        raise
    move_into_place(tmp, path, sync=False)
    faultpoints.reached("checkpoint-digest")
    checksums.after_rotation(path, prev, new_digest, prev_digests)
    sync_folder(path.parent)


class _Background(threading.Thread):
    """``fn(*args)`` in a thread; :meth:`result` waits for it and returns its value or raises its error."""

    def __init__(self, fn, *args):
        super().__init__(daemon=True)
        self._call, self._value, self._error = (fn, args), None, None
        self.start()

    def run(self):
        fn, args = self._call
        try:
            self._value = fn(*args)
        except BaseException as e:  # handed to the caller of result()
            self._error = e

    def result(self):
        self.join()
        if self._error is not None:
            raise self._error
        return self._value


def _keep_previous(path):
    """Make ``path``'s current file the previous generation, atomically, leaving ``path`` in place."""
    prev = previous_path(path)
    link = prev.with_name(f".{prev.name}.tmp")
    remove_quietly(link)
    try:
        os.link(path, link)
    except OSError:  # a file system without hard links: copy (the disk needs room for it)
        shutil.copyfile(path, link)
        with open(link, "rb") as f:
            os.fsync(f.fileno())
    os.replace(link, prev)
    # If prev already was a link to path's file (a run killed after this step last time), rename(2) does
    # nothing and leaves the link behind.
    remove_quietly(link)


# -- reading ---------------------------------------------------------------------------------------

#: What format 1 pickled besides tensors: constraint classes and NumPy's random state.
_LEGACY_NUMPY = {"numpy.dtype", "numpy.ndarray", "numpy._core.multiarray._reconstruct",
                 "numpy.core.multiarray._reconstruct", "numpy._core.multiarray.scalar", "numpy.core.multiarray.scalar"}
_CONSTRAINT_MODULES = ("torch.distributions.constraints.", "pyro.distributions.constraints.")


def _legacy_global(name):
    if name in _LEGACY_NUMPY or name.startswith("numpy.dtypes."):
        return True
    if name.startswith(_CONSTRAINT_MODULES):
        cls_name = name.rpartition(".")[2]
        return any(cls.__name__ == cls_name for cls, _ in CONSTRAINTS.values())
    return False


def _unsafe_globals(path):
    """The Python objects that ``path``'s pickle names beyond plain data (read without running it)."""
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # not a zip archive (a bare pickle, say): nothing is run, we only cannot list them
        return None


def load_checkpoint(path, map_location="cpu", log=None):
    """
    Read a checkpoint: its bytes are checked against the sha256 recorded when it was written
    (:func:`~pyro_aevb.experiment.checksums.verify`), then read with ``torch.load(..., weights_only=True)``,
    which rebuilds tensors, numbers, strings, lists and dicts and refuses anything else without running it.
    ``log`` (a function of one string) is told when the file cannot be verified (no digest recorded).

    :raises UnsafeCheckpoint: the file holds other Python objects (an earlier version's format, or a
        file that is not what ``pyro-aevb train`` writes).
    :raises DamagedCheckpoint: the file is empty, truncated, not a checkpoint, or not the bytes that were written.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DamagedCheckpoint(f"{path} does not exist") from None
    except OSError as e:
        raise DamagedCheckpoint(f"{path} cannot be read: {e.strerror or e}") from None
    size = len(data)
    if size == 0:
        raise DamagedCheckpoint(f"{path} is empty (0 bytes)")
    unverified = checksums.verify(path, data)
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        _refuse(path)
    except (RuntimeError, EOFError, ValueError, KeyError, OSError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        reason = str(e).split(". ")[0] or type(e).__name__
        raise DamagedCheckpoint(f"{path} ({size:,} bytes) is damaged, truncated or not a checkpoint: {reason}") from None
    if not isinstance(state, dict) or not isinstance(state.get("format"), int) or "samples" not in state:
        raise DamagedCheckpoint(f"{path} is not a pyro-aevb checkpoint (no format and sample count in it)")
    if state["format"] > FORMAT:
        raise CheckpointError(
            f"{path} was written by a newer pyro-aevb (checkpoint format {state['format']}; this version reads "
            f"up to {FORMAT}): upgrade pyro-aevb to use this run"
        )
    if unverified is not None and log is not None:
        log(unverified)
    return state


def _refuse(path):
    names = _unsafe_globals(path)
    run = path.parent
    if names and all(_legacy_global(n) for n in names):
        raise UnsafeCheckpoint(
            f"{path} is in the format of an earlier pyro-aevb, which pickled Python objects "
            f"({', '.join(sorted(names))}); this version reads only tensors, numbers, strings, lists and dicts, "
            f"and ran nothing from it. If you wrote this run, convert it once: "
            f"pyro-aevb convert-checkpoint {run} --trust"
        ) from None
    what = f" ({', '.join(sorted(names))})" if names else ""
    raise UnsafeCheckpoint(
        f"{path} holds Python objects that a pyro-aevb checkpoint never contains{what}: refused, and nothing in it "
        "was run. Do not use this run folder unless you know where the file came from."
    ) from None


def load_latest(path, map_location="cpu", log=None):
    """
    The newest intact generation of the checkpoint ``path``: ``path`` itself, or, where it is damaged
    (empty, truncated, or its bytes differ from those written) or missing, :func:`previous_path`.
    ``log`` (a function of one string) is told when the previous generation is used, naming the
    damaged file and how far back it goes, and when a generation cannot be verified.

    :returns: ``(state, the path it was read from)``.
    :raises DamagedCheckpoint: neither generation is readable.
    :raises UnsafeCheckpoint: a generation holds Python objects (never skipped over: it is reported).
    """
    path = Path(path)
    prev = previous_path(path)
    try:
        return load_checkpoint(path, map_location, log), path
    except DamagedCheckpoint as damaged:
        if not prev.exists():
            raise DamagedCheckpoint(f"{damaged}; there is no earlier checkpoint ({prev.name}) to fall back on") from None
        try:
            state = load_checkpoint(prev, map_location, log)
        except DamagedCheckpoint as also:
            raise DamagedCheckpoint(f"{damaged}; the earlier checkpoint is damaged too: {also}") from None
        if log is not None:
            log(f"{damaged}; using the earlier checkpoint {prev.name}, at {state['samples']:,} samples")
        return state, prev


# -- converting format 1 ---------------------------------------------------------------------------


def _legacy_safe_globals():
    objs = [np.dtype, np.ndarray]
    for module_name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            module = __import__(module_name, fromlist=["_reconstruct"])
            objs += [module._reconstruct, module.scalar]
            break
        except (ImportError, AttributeError):
            continue
    objs += [type(np.dtype(t)) for t in ("uint32", "int64", "float64", "float32", "uint8", "bool")]
    objs += [cls for cls, _ in CONSTRAINTS.values()]
    return objs


def convert_legacy(path):
    """
    Rewrite a format-1 checkpoint at ``path`` as data only (format 2), in place and atomically.

    Only the objects format 1 stored besides tensors are rebuilt (the constraint classes of torch and
    Pyro, NumPy arrays and dtypes), by ``torch.load``'s restricted unpickler with exactly those allowed:
    no other code from the file is run, and a file naming anything else is refused.

    :returns: ``True`` if the file was converted, ``False`` if it already was data only.
    """
    path = Path(path)
    try:
        load_checkpoint(path)
        return False
    except UnsafeCheckpoint:
        pass
    names = _unsafe_globals(path)
    if not names or not all(_legacy_global(n) for n in names):
        _refuse(path)
    try:
        with torch.serialization.safe_globals(_legacy_safe_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpoint(f"{path} could not be converted: {str(e).splitlines()[0]}") from None
    store = state["param_store"]
    state["param_store"] = {
        "params": {n: v.detach().clone() for n, v in store["params"].items()},
        "constraints": {n: encode_constraint(c, n) for n, c in store["constraints"].items()},
    }
    state["rng"] = _rng_from_legacy(state["rng"])
    state = _to_data(state)
    state["format"] = FORMAT
    check_data_only(state, f"{path} converted")
    checksums.record(path, atomic_save(state, path, digest=True))
    return True


def _to_data(obj):
    """NumPy scalars and arrays left anywhere in a format-1 state, as numbers and tensors."""
    if isinstance(obj, dict):
        return {k: _to_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_data(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
