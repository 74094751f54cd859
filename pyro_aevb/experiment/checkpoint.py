"""
Atomic checkpoints and the exact state a resumed run needs: parameters, optimizer state, random streams.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed over
the old one (``os.replace`` is atomic on POSIX and Windows), so a run killed at any instant leaves
either the previous checkpoint or the new one, never a torn file.
"""

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import pyro
import torch
from torch.distributions import transform_to

__all__ = ["atomic_save", "get_rng_state", "load_checkpoint", "restore_param_store", "set_rng_state"]


def atomic_save(obj, path):
    """``torch.save`` ``obj`` to ``path`` atomically."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with _suppress():
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def load_checkpoint(path, map_location="cpu"):
    """Load a checkpoint written by :func:`atomic_save`."""
    return torch.load(path, map_location=map_location, weights_only=False)


def get_rng_state():
    """The state of every random stream that training draws from."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def restore_param_store(saved_state):
    """
    Copy saved values into the param store *in place*.

    The store must already hold the live parameters (run the model and the guide once first):
    copying in place keeps the tensors that the modules, the store and the optimizer share as the
    same objects. Parameters that are only in ``saved_state`` (``pyro.param`` sites not yet run) are
    added.
    """
    store = pyro.get_param_store()
    with torch.no_grad():
        for name, value in saved_state["params"].items():
            if name in store:
                store._params[name].copy_(value)  # the unconstrained tensor, shared with modules and optimizer
            else:
                constraint = saved_state["constraints"][name]
                store.setdefault(name, transform_to(constraint)(value), constraint)


def _fsync_dir(folder):
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return True
