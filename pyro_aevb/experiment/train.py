"""
The training loop shared by every method: minibatches, the sample budget, evaluation at log-spaced
sample counts, metrics, checkpoints, resumption and the progress bar.

The methods themselves (:class:`~pyro_aevb.infer.aevb.AEVB` and the baselines) only know how to take one
step on a minibatch (:class:`~pyro_aevb.infer.method.TrainingMethod`); :data:`~pyro_aevb.experiment.methods.METHODS`
names them. The run's settings are a :class:`~pyro_aevb.experiment.config.TrainConfig`; the model is built by
:mod:`~pyro_aevb.experiment.build`, the data loaded by :mod:`~pyro_aevb.experiment.run_data`, the evaluations
placed by :mod:`~pyro_aevb.experiment.schedule`, and a trained run loaded back by
:func:`~pyro_aevb.experiment.load.load_run`.
"""

import collections
import contextlib
import dataclasses
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
from tqdm.auto import tqdm

from pyro_aevb import __version__
from pyro_aevb.experiment import distributed
from pyro_aevb.experiment import _faultpoints as faultpoints
from pyro_aevb.experiment import plots
from pyro_aevb.experiment.atomic import remove_temporary
from pyro_aevb.experiment.build import accepts, build_model, import_model_class
from pyro_aevb.experiment.checkpoint import FORMAT, load_latest, previous_path, save_checkpoint
from pyro_aevb.experiment.state import get_param_store_state, get_rng_state, set_rng_state
from pyro_aevb.data import DATASETS, MinibatchSampler, check_support
from pyro_aevb.errors import ConfigError, RunDirError, TrainingDiverged, note
from pyro_aevb.infer import progress
from pyro_aevb.infer.elbo import lower_bound
from pyro_aevb.infer.util import cuda_devices
from pyro_aevb.infer.marginal import log_marginal_likelihood
from pyro_aevb.experiment.config import GIVEN_DATA, TrainConfig, make_lr_scheduler, read_config
from pyro_aevb.experiment.load import restore_parameters
from pyro_aevb.experiment.methods import METHODS
from pyro_aevb.experiment.model_object import as_model_object, class_path
from pyro_aevb.experiment.rundir import RunDir, metrics_as_floats
from pyro_aevb.experiment.run_data import DATA_RECORD, load_data, read_data_record
from pyro_aevb.experiment.schedule import EVAL_RATIO, EVAL_RATIO_LOG_MARGINAL, eval_schedule
from pyro_aevb.experiment.tensorboard import TensorBoardLogger

__all__ = ["METRICS_COLUMNS", "train"]

METRICS_COLUMNS = (
    "samples",
    "steps",
    "train_lower_bound",
    "test_lower_bound",
    "train_log_marginal",
    "test_log_marginal",
    "seconds",
)


def train(config, out, resume=False, progress=True, samples=None, data=None, model=None, guide=None, callbacks=(),
          trust_model_file=False):
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
        load the run later (:func:`~pyro_aevb.experiment.load.load_run`), pass an object built the same way as ``model=``.
    :param guide: the guide function, with a model function.
    :param callbacks: functions ``fn(samples, metrics)`` called at every evaluation with the samples
        seen and the evaluation's row of ``metrics.csv`` (a dict of floats, ``None`` where not
        evaluated), on the main process. One that returns ``False`` stops the run cleanly: a checkpoint
        is written and ``resume=True`` continues it. (A tracker such as MLflow logs through one.)
    :param bool trust_model_file: with ``resume``, build a run whose model class is named by a file
        (``path/to/file.py:Class``) by running that file. Without it such a run resumes only when
        ``config`` names the same class again (or with ``model=``): resuming never runs code from a file
        that the run folder names unless you say so.
    :returns: the trained model (a :class:`~pyro_aevb.models.vae.VAE`), as :func:`pyro_aevb.load_run` would.

    .. note:: Pyro's parameter store is global: this clears it.
    """
    prepared = None
    given = as_model_object(model, guide) if model is not None else None
    named = getattr(config, "model_class", None)  # the class the caller names (on resume, the run's is used)
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
        if config.dataset not in DATASETS and config.dataset != GIVEN_DATA:
            # A data file's path is recorded whole, so that the run folder finds it from any directory.
            config = dataclasses.replace(config, dataset=str(Path(config.dataset).expanduser().resolve()))
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
            trusted = trust_model_file or not resume or named == config.model_class
            trainer = _Trainer(config.validate(), run, progress, world, prepared, given, trusted)
            trainer.callbacks = list(callbacks)
            return trainer.run(resume)
    finally:
        world.close()



def _warn_non_finite(row):
    """Say so when an evaluation row holds a non-finite bound or marginal likelihood (it is written as it is)."""
    bad = [f"{key} = {value}" for key, value in row.items() if isinstance(value, float) and not math.isfinite(value)]
    if bad:
        note(
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
        state, _ = load_latest(run.checkpoint_path, log=note)
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
        note(f"{run.config_path} was missing: written again from the settings stored in the checkpoint")
    elif has_checkpoint or run.config_path.exists():
        raise RunDirError(f"{run.path} already holds a run: pass --resume to continue it, or choose another --out")
    return config.validate()


class _Trainer:
    def __init__(self, config, run, progress, world, prepared=None, given=None, trust_model_file=True):
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
                note(f"the likelihood: {config.likelihood} (the data's values are "
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
                note(f"your data range from {low:.4g} to {high:.4g}, but the built-in Gaussian decoder's means lie "
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
            if accepts(import_model_class(config.model_class, trust_model_file), "likelihood"):
                model_options.setdefault("likelihood", self.dataset.likelihood)
            config.model_options = model_options
            self.vae = build_model(config, self.dataset.x_dim, trust_model_file).to(device)
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
        restore_parameters(self.vae, state, self.eval_data["test"][:1], self.run_dir.checkpoint_path)
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
            state, source = load_latest(checkpoint, map_location=config.device if self.world.size == 1 else "cpu", log=note)
            self._saved_at = state["samples"]
            with self._writing("metrics.csv", run_dir.metrics_path):
                remove_temporary(run_dir.path)
                if source != checkpoint and checkpoint.exists():
                    # Kept for inspection; the next checkpoint must not make it the previous generation.
                    checkpoint.replace(checkpoint.with_name("checkpoint.damaged.pt"))
                    note(f"the damaged {checkpoint.name} was moved to checkpoint.damaged.pt")
                self.metrics_rows = run_dir.resume_metrics(state["samples"], state.get("metrics"), METRICS_COLUMNS, log=note)
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
        return TensorBoardLogger(self.run_dir.path / "tensorboard")

    def _watch(self, row):
        """Tell TensorBoard and the callbacks about an evaluation; ``True`` if a callback asks to stop."""
        metrics = metrics_as_floats([row])[0]
        if self.tensorboard is not None:
            self.tensorboard.evaluation(self.samples, metrics)
            if self.dataset.image_shape is not None:
                x = self.dataset.eval_split("test", 10)
                self.tensorboard.figure(
                    "reconstructions", lambda f: plots.plot_reconstructions(self.vae, x, self.dataset.image_shape, f), self.samples
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
                        note(f"a callback stopped the run at {self.samples} samples; checkpoint saved, "
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
    return tqdm(
        total=total, initial=initial, disable=not enabled, unit="samples", unit_scale=True,
        dynamic_ncols=True, file=sys.stderr,
    )


def _versions():
    return {
        "pyro_aevb": __version__,
        "pyro": pyro.__version__,
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

