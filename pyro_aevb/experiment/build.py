"""
Building a run's model from its settings: the class that ``config.model_class`` names, with the
keyword arguments its constructor takes.
"""

import importlib
import inspect

import torch

from pyro_aevb.errors import ConfigError
from pyro_aevb.experiment.model_object import import_from_file

__all__ = ["DEFAULT_HIDDEN", "MOVED_MODULES", "accepts", "build_model", "import_model_class", "model_kwargs"]

#: Hidden units per data set, as in Appendix C of the paper.
DEFAULT_HIDDEN = {"mnist": 500, "frey": 200, "mnist5k": 500}


#: Modules that held the model classes before the package was split into subpackages: run folders
#: written then name their class by the old path (``pyro_aevb.vae:VAE``) in ``config.json``.
MOVED_MODULES = {
    "pyro_aevb.vae": "pyro_aevb.models.vae",
    "pyro_aevb.variants": "pyro_aevb.models.variants",
    "pyro_aevb.nets": "pyro_aevb.models.nets",
}


def import_model_class(path, trust_model_file=True):
    """
    The class that ``path`` (``"module:Class"``, or ``"path/to/file.py:Class"``) names; paths of moved
    modules are mapped to their new home.

    :param bool trust_model_file: whether a class named by a file may be imported from it, which runs
        the file. ``False`` where ``path`` comes from a run folder rather than from the caller: loading a
        run never runs code from a file that the folder names, unless the caller says so.
    :raises ConfigError: for a class named by a file when ``trust_model_file`` is false, saying how to
        load the run.
    """
    module, _, name = path.partition(":")
    module = MOVED_MODULES.get(module, module)
    if module.endswith(".py"):
        if not trust_model_file:
            raise ConfigError(
                f"the run names its model class by a file, {path!r}, and loading a run does not run code from a "
                "file that its folder names. Pass the model object, built as the run's was (model=...); or, if you "
                "trust that file, say so: trust_model_file=True, or --trust-model-file on the command line "
                f"(train --resume also trusts the file when given --model-class {path} again)"
            )
        cls = import_from_file(module, name)
    else:
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as e:
            raise ConfigError(
                f"cannot import model class {path!r}: {e}. Pass the model object (load_run(path, model=...), "
                "train(config, out, model=...)), or name the class by its file: path/to/file.py:Class"
            ) from None
    # Only a model class is built from a run's config.json: never another callable it might name.
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise ConfigError(f"model class {path!r} is not a torch.nn.Module subclass with Pyro .model and .guide")
    return cls


def model_kwargs(cls, config, x_dim):
    """
    The keyword arguments of ``cls`` for this run: ``x_dim``, ``z_dim`` (``--latent-dim``) and
    ``hidden_dim`` (``--hidden``) where its constructor takes them (Pyro's tutorial ``VAE(z_dim,
    hidden_dim, use_cuda)`` takes no ``x_dim``), then ``config.model_options``.
    """
    hidden = config.hidden or DEFAULT_HIDDEN.get(config.dataset, 500)
    offered = dict(
        x_dim=x_dim,
        z_dim=config.latent_dim,
        hidden_dim=tuple(hidden) if isinstance(hidden, (list, tuple)) else hidden,
    )
    if config.activation != "tanh":
        offered["activation"] = config.activation
        if not accepts(cls, "activation"):
            raise ConfigError(f"{config.model_class} takes no activation, so --activation {config.activation} cannot reach it")
    kwargs = {key: value for key, value in offered.items() if accepts(cls, key)}
    kwargs.update(config.model_options)
    return kwargs


def accepts(cls, name):
    """Whether the constructor of ``cls`` takes the keyword argument ``name``."""
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def build_model(config, x_dim, trust_model_file=True):
    """
    Instantiate ``config.model_class`` for data of dimension ``x_dim``; ``trust_model_file`` as for
    :func:`import_model_class`.
    """
    cls = import_model_class(config.model_class, trust_model_file)
    kwargs = model_kwargs(cls, config, x_dim)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"cannot build {config.model_class} with {kwargs}: {e}") from None

