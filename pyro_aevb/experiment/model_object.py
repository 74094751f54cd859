"""
Your model object in a run: a :class:`torch.nn.Module` with Pyro ``.model`` and ``.guide`` methods, or a
pair of functions whose parameters live in Pyro's param store, trained by :func:`~pyro_aevb.train`
(``model=``) and filled with a run's trained parameters by :func:`~pyro_aevb.load_run` (``model=``).

This is PyTorch's ``state_dict`` idiom: the architecture comes from the caller, the weights from the
run folder, and their names and shapes are checked against each other first. Model classes may also
be named by a file's path (``path/to/file.py:Class``), imported from that file: by training, and by
loading a run only when the caller trusts the file (``trust_model_file``), since importing runs it.
"""

import hashlib
import importlib.util
import sys
from pathlib import Path

import torch

from pyro_aevb.errors import ConfigError

__all__ = ["ModelFunctions", "as_model_object", "check_state", "class_path", "import_from_file"]


class ModelFunctions(torch.nn.Module):
    """
    A Pyro ``model`` and ``guide`` given as functions, as a module with ``.model`` and ``.guide``; their
    parameters are in Pyro's param store (which the run's checkpoint holds), so the module has none.
    """

    def __init__(self, model, guide):
        super().__init__()
        self.model, self.guide = model, guide


def as_model_object(model, guide=None):
    """
    The object a run trains: ``model`` itself when it is a :class:`torch.nn.Module` with ``.model`` and
    ``.guide``; :class:`ModelFunctions` for ``model=fn, guide=fn``.

    :raises ConfigError: naming what is missing.
    """
    if isinstance(model, torch.nn.Module) and callable(getattr(model, "model", None)):
        if guide is not None:
            raise ConfigError("model= is a module with its own .guide: pass no guide=")
        if not callable(getattr(model, "guide", None)):
            raise ConfigError(f"the model object {type(model).__name__} has a .model but no .guide method")
        return model
    if callable(model) and not isinstance(model, torch.nn.Module):
        if not callable(guide):
            raise ConfigError("model= is a function: pass its guide as guide= (a function too)")
        return ModelFunctions(model, guide)
    raise ConfigError(
        f"model= must be a torch.nn.Module with Pyro .model and .guide methods, or a model function with "
        f"guide= a guide function; got {type(model).__name__}"
    )


def class_path(obj):
    """What ``config.json`` records of a model object: ``module:Class`` (or ``module:function`` for functions)."""
    named = obj.model if isinstance(obj, ModelFunctions) else type(obj)
    module = getattr(named, "__module__", None) or "__main__"
    file = getattr(sys.modules.get(module), "__file__", None)
    if module.startswith("_pyro_aevb_file_") and file:  # imported from a file: the file's path again
        module = file
    return f"{module}:{getattr(named, '__qualname__', type(named).__name__)}"


def import_from_file(path, name):
    """
    The attribute ``name`` of the Python file ``path`` (``--model-class path/to/file.py:Class``), imported
    once under a module name made from the file's resolved path.
    """
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise ConfigError(f"cannot import model class {path}:{name}: the file {file} does not exist")
    module_name = "_pyro_aevb_file_" + hashlib.sha256(str(file).encode()).hexdigest()[:16]
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # before running it, as import does (dataclasses need it)
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            del sys.modules[module_name]
            raise ConfigError(f"cannot import model class {path}:{name}: running {file} raised {type(e).__name__}: {e}") from None
    try:
        return getattr(module, name)
    except AttributeError:
        raise ConfigError(f"cannot import model class {path}:{name}: {file} defines no {name!r}") from None


def check_state(saved, live, what):
    """
    Check that ``live`` (name -> tensor of the caller's object) has the names and shapes of ``saved``
    (the run's): :raises ConfigError: at the first mismatch, naming it.
    """
    for name, value in saved.items():
        if name not in live:
            raise ConfigError(
                f"the run's {what} has a parameter {name!r} of shape {tuple(value.shape)} that the model given "
                f"does not have (it has {', '.join(sorted(live)) or 'none'}); build the model as the run was built"
            )
        if tuple(live[name].shape) != tuple(value.shape):
            raise ConfigError(
                f"parameter {name!r} has shape {tuple(value.shape)} in the run's {what} but "
                f"{tuple(live[name].shape)} in the model given; build the model as the run was built"
            )
    extra = sorted(set(live) - set(saved))
    if extra:
        raise ConfigError(f"the model given has a parameter {extra[0]!r} that the run's {what} does not have")
