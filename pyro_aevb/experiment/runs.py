"""
A set of runs trained side by side: ``pyro-aevb reproduce`` trains each setting into its own run folder
``OUT/runs/<name>`` (:func:`run_name` spells the setting out, so equal settings share a run), in worker
processes (:mod:`~pyro_aevb.experiment.workers`), resuming unfinished runs and skipping finished ones.
"""

import concurrent.futures
import dataclasses
import os
import signal
import sys
import threading
from pathlib import Path

from pyro_aevb.errors import UserError
from pyro_aevb.experiment.rundir import RunDir, read_metrics
from pyro_aevb.experiment.config import TrainConfig
from pyro_aevb.experiment.train import train
from pyro_aevb.experiment.workers import stop_pool, worker_pool

__all__ = ["failure_summary", "is_finished", "run_all", "run_name"]


def run_name(config):
    """A run folder name that spells out the setting, so equal settings share one run."""
    parts = [config.dataset, config.method, f"z{config.latent_dim}"]
    if config.hidden is not None:
        parts.append("h" + ("x".join(map(str, config.hidden)) if isinstance(config.hidden, (list, tuple)) else str(config.hidden)))
    if config.num_train is not None:
        parts.append(f"n{config.num_train}")
    if config.num_particles != TrainConfig.num_particles:
        parts.append(f"k{config.num_particles}")
    if config.batch_size != TrainConfig.batch_size:
        parts.append(f"b{config.batch_size}")
    if config.optim != TrainConfig.optim or config.lr_scheduler is not None:
        parts.append(f"{config.optim}{config.lr:g}" + (f"-{config.lr_scheduler}" if config.lr_scheduler else ""))
    if config.model_class != TrainConfig.model_class:
        parts.append(config.model_class.rsplit(":", 1)[1])
        parts += [f"{key}{value}" for key, value in sorted(config.model_options.items())]
    parts.append(f"s{config.samples:.0e}".replace("+", ""))
    if config.log_marginal:
        parts.append(f"lm{config.log_marginal}{config.log_marginal_points}")
    return "-".join(parts)


def is_finished(run_dir, config):
    """Whether the run in ``run_dir`` has trained to ``config``'s budget, its metrics and figures written."""
    run = RunDir(run_dir)
    if not (run.checkpoint_path.exists() and run.metrics_path.exists() and (run.path / "reconstructions.png").exists()):
        return False
    try:
        rows = read_metrics(run.metrics_path)
    except (UserError, OSError):  # a damaged metrics.csv: resuming the run repairs it
        return False
    return bool(rows) and rows[-1]["samples"] >= config.samples


def _train_one(config_dict, out):
    """In a worker: train (or resume) one run."""
    try:
        train(TrainConfig(**config_dict), out, resume=True, progress=False)
    except KeyboardInterrupt:
        # Stopped by a signal, with the checkpoint written. Leave at once rather than take the
        # pool's next run: the pool breaks, and reproduce (if it is still there) reports the stop.
        sys.stderr.flush()
        os._exit(1)
    return out


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run_all(configs, out, jobs=1, log=print, failures=None):
    """
    Train every config in ``configs`` (a list of :class:`~pyro_aevb.experiment.train.TrainConfig`)
    into ``out/runs/<name>``, ``jobs`` at a time, resuming unfinished runs and skipping finished ones.

    Interrupted (Ctrl-C, or SIGTERM to this process), it has every worker checkpoint its run at the end
    of its current step and stop, then raises :class:`KeyboardInterrupt`; killed outright, its workers
    notice within a second and do the same. Either way the same command resumes.

    A run that cannot be trained (its folder damaged beyond what resuming repairs, say) does not stop
    the others: its name and the reason go into ``failures`` (a dict), or, without one, the first
    such run raises :class:`~pyro_aevb.errors.UserError` once the others are done.

    :returns: dict mapping each config's run name to its folder.
    """
    folders = {run_name(c): Path(out) / "runs" / run_name(c) for c in configs}
    todo = [(c, folders[run_name(c)]) for c in configs if not is_finished(folders[run_name(c)], c)]
    log(f"{len(configs) - len(todo)} of {len(configs)} runs already finished; training {len(todo)} with {jobs} worker(s)")
    if not todo:
        return folders
    pool = worker_pool(jobs)
    failed = failures if failures is not None else {}
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main else None
    try:
        with pool:
            futures = {pool.submit(_train_one, dataclasses.asdict(c), str(d)): d for c, d in todo}
            try:
                for future in concurrent.futures.as_completed(futures):
                    name = futures[future].name
                    try:
                        future.result()
                    except concurrent.futures.process.BrokenProcessPool:
                        raise
                    except Exception as e:  # this run only: the others go on
                        reason = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
                        failed[name] = reason
                        log(f"run {name} could not be trained: {reason}")
                        continue
                    log(f"finished {name}")
            except KeyboardInterrupt:
                stop_pool(pool)
                raise KeyboardInterrupt("interrupted; runs checkpointed: the same command resumes them") from None
            except concurrent.futures.process.BrokenProcessPool:
                stop_pool(pool)
                raise UserError(
                    "a worker process stopped before its run had finished (interrupted or killed); the runs "
                    "are checkpointed: the same command resumes them"
                ) from None
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
    if failures is None and failed:
        raise UserError(failure_summary(failed, len(configs)))
    return folders


def failure_summary(failed, total):
    """One sentence naming each run of ``failed`` (run name -> reason) and why it could not be trained."""
    return f"{len(failed)} of {total} runs could not be trained: " + "; ".join(
        f"{name}: {reason}" for name, reason in failed.items())
