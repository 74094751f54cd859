"""
Conversion of the checkpoints of an earlier version (format 1, which pickled the constraint objects
and NumPy's random state) into data only (format 2, :mod:`~pyro_aevb.experiment.state`), which is what
``pyro-aevb convert-checkpoint RUN --trust`` does.
"""

import pickle
from pathlib import Path

import numpy as np
import torch

from pyro_aevb.errors import UnsafeCheckpoint
from pyro_aevb.experiment import checksums
from pyro_aevb.experiment.checkpoint import FORMAT, atomic_save, is_format1_global, load_checkpoint, pickled_globals
from pyro_aevb.experiment.state import CONSTRAINTS, check_data_only, encode_constraint, rng_state_as_data

__all__ = ["convert_legacy"]


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
    except UnsafeCheckpoint as e:
        refused = e
    names = pickled_globals(path)
    if not names or not all(is_format1_global(n) for n in names):
        raise refused  # holds objects that format 1 never stored
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
    rng = state["rng"]
    state["rng"] = rng_state_as_data(rng["torch"], rng["numpy"], rng["python"], rng.get("cuda"))
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
