r"""
The paper's experiments from one command each: Figure 2 (AEVB against wake-sleep, per latent size),
Figure 3 (AEVB, wake-sleep and MCEM by marginal likelihood, small and large training set) and the
Appendix A figures (2-D manifolds, Figure 4; samples for several latent sizes, Figure 5), and the
table that compares the estimators of :math:`\log p_\theta(x)` on trained models
(:mod:`pyro_aevb.experiment.loglik`); and Table 1 of Burda et al. (2015), the VAE against IWAE
(:mod:`pyro_aevb.experiment.iwae_table`).

Every experiment is a set of ordinary run folders under ``OUT/runs/`` (one per setting, named by it),
trained with :func:`pyro_aevb.train` in parallel worker processes. Runs are resumed where they stopped
and finished ones are not redone, so an interrupted experiment continues with the same command, and
experiments that share a setting share its run. Each experiment then writes a results table (CSV and
Markdown) and its figures (PNG and PDF) into ``OUT/<experiment>/``.
"""

import concurrent.futures
import csv
import dataclasses
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from pathlib import Path

from pyro_aevb.errors import UserError
from pyro_aevb.experiment.rundir import RunDir, read_metrics
from pyro_aevb.experiment.build import DEFAULT_HIDDEN
from pyro_aevb.experiment.config import TrainConfig
from pyro_aevb.experiment.load import load_run
from pyro_aevb.experiment.train import train

__all__ = ["FIGURE2_LATENTS", "EXPERIMENTS", "reproduce"]

#: Latent sizes of the paper's Figure 2.
FIGURE2_LATENTS = {"mnist": (3, 5, 10, 20, 200), "frey": (2, 5, 10, 20)}
#: Latent sizes whose samples Figure 5 shows.
FIGURE5_LATENTS = (2, 5, 10, 20)


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
    run = RunDir(run_dir)
    if not (run.checkpoint_path.exists() and run.metrics_path.exists() and (run.path / "reconstructions.png").exists()):
        return False
    try:
        rows = read_metrics(run.metrics_path)
    except (UserError, OSError):  # a damaged metrics.csv: resuming the run repairs it
        return False
    return bool(rows) and rows[-1]["samples"] >= config.samples


def worker_threads(jobs):
    """
    PyTorch threads per worker: ``$OMP_NUM_THREADS`` where it is set, else the cores shared out among
    the ``jobs`` workers. On a machine busy with other work, threads that wait for each other at
    every parallel region are slow (see the performance notes), and ``OMP_NUM_THREADS=1`` avoids it.
    """
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            raise UserError(f"OMP_NUM_THREADS must be a whole number, got {value!r}") from None
    return max(1, (os.cpu_count() or 1) // jobs)


def _worker_init(threads, parent):
    import torch

    torch.set_num_threads(threads)
    threading.Thread(target=_stop_when_orphaned, args=(parent,), daemon=True).start()


def _stop_when_orphaned(parent, poll_seconds=1.0):
    """
    In a worker: once the ``reproduce`` process that started it is gone (killed, say), stop training
    the way SIGTERM stops :func:`~pyro_aevb.experiment.train.train`: at the end of the current step, with a
    checkpoint. A worker left on its own would otherwise train on, unwatched, into a run folder that
    the next ``reproduce`` wants to resume.
    """
    while os.getppid() == parent:
        time.sleep(poll_seconds)
    os.kill(os.getpid(), signal.SIGTERM)


def _train_one(config_dict, out):
    try:
        train(TrainConfig(**config_dict), out, resume=True, progress=False)
    except KeyboardInterrupt:
        # Stopped by a signal, with the checkpoint written. Leave at once rather than take the
        # pool's next run: the pool breaks, and reproduce (if it is still there) reports the stop.
        sys.stderr.flush()
        os._exit(1)
    return out


def _stop_workers(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _stop(pool, context):
    pool.shutdown(wait=False, cancel_futures=True)
    for child in context.active_children():
        child.terminate()  # SIGTERM: a training worker checkpoints at the end of its step and stops


def run_all(configs, out, jobs=1, log=print, failures=None):
    """
    Train every config in ``configs`` (a list of :class:`TrainConfig`) into ``out/runs/<name>``,
    ``jobs`` at a time, resuming unfinished runs and skipping finished ones.

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
    threads = worker_threads(jobs)
    failed = failures if failures is not None else {}
    context = multiprocessing.get_context("spawn")
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop_workers) if main else None
    try:
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context, initializer=_worker_init,
                                                    initargs=(threads, os.getpid())) as pool:
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
                _stop(pool, context)
                raise KeyboardInterrupt("interrupted; runs checkpointed: the same command resumes them") from None
            except concurrent.futures.process.BrokenProcessPool:
                _stop(pool, context)
                raise UserError(
                    "a worker process stopped before its run had finished (interrupted or killed); the runs "
                    "are checkpointed: the same command resumes them"
                ) from None
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
    if failures is None and failed:
        raise UserError(_failure_summary(failed, len(configs)))
    return folders


def _failure_summary(failed, total):
    return f"{len(failed)} of {total} runs could not be trained: " + "; ".join(
        f"{name}: {reason}" for name, reason in failed.items())


def _paper(config, **changes):
    return dataclasses.replace(config, **changes)


def figure2(base, dataset):
    """AEVB and wake-sleep for each latent size of Figure 2, at the paper's settings."""
    base = _paper(base, dataset=dataset)
    return [_paper(base, method=m, latent_dim=z) for z in FIGURE2_LATENTS[dataset] for m in ("aevb", "wake-sleep")]


def figure3(base, num_train=(1000, 50000), mcem_samples=None):
    """
    MNIST, Nz = 3, 100 hidden units; AEVB, wake-sleep and MCEM by marginal likelihood. MCEM's runs
    take ``mcem_samples`` (default: the same budget): its HMC E-step costs tens of times more per
    sample than the other two methods' steps, which is why the paper calls it impractical on the full
    data set.
    """
    base = _paper(base, dataset="mnist", latent_dim=3, hidden=100)
    configs = []
    for n in num_train:
        for method in ("aevb", "wake-sleep", "mcem"):
            samples = int(mcem_samples or base.samples) if method == "mcem" else base.samples
            configs.append(_paper(base, method=method, num_train=n, samples=samples, log_marginal="hmc",
                                  eval_train_points=min(base.eval_train_points, n)))
    return configs


def manifold(base):
    """Nz = 2 models on MNIST and Frey Face (Figure 4), and MNIST models with several Nz (Figure 5)."""
    configs = [_paper(base, dataset="frey", latent_dim=2, method="aevb")]
    configs += [_paper(base, dataset="mnist", latent_dim=z, method="aevb") for z in FIGURE5_LATENTS]
    return configs


EXPERIMENTS = ("figure2", "figure3", "manifold", "loglik", "iwae")


def _table(configs, folders, path, columns):
    rows = []
    for c in configs:
        metrics = read_metrics(RunDir(folders[run_name(c)]).metrics_path)
        last = metrics[-1] if metrics else {}
        row = {"dataset": c.dataset, "method": c.method, "latent_dim": c.latent_dim, "hidden": c.hidden or DEFAULT_HIDDEN[c.dataset],
               "num_train": c.num_train or "", "samples": int(last.get("samples") or 0)}
        for col in columns:
            value = last.get(col)
            row[col] = "" if value is None else round(value, 2)
        row["train_seconds"] = round(last.get("seconds") or 0.0, 1)
        rows.append(row)
    return write_table(rows, path)


def write_table(rows, path):
    """Write ``rows`` (dicts with the same keys) as ``path``.csv and as a Markdown table ``path``.md."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(r[h]) for h in header) + " |" for r in rows]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return rows


def _save(fig, path):
    import matplotlib.pyplot as plt

    fig.tight_layout()
    for suffix in (".png", ".pdf"):
        # bbox "tight": tight_layout leaves no room for the titles of axes that are switched off (Figure 5).
        fig.savefig(path.with_suffix(suffix), dpi=120, bbox_inches="tight", pad_inches=0.05)
    plt.close(fig)


def _panels(n, width=3.6, height=3.2):
    from pyro_aevb.experiment.plots import _pyplot

    plt = _pyplot()
    ncol = min(n, 3 if n > 4 else n)
    nrow = -(-n // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(width * ncol, height * nrow), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes.flat


def _y_from(configs):
    """The panels' y-axes show the last two decades of training, as the paper's figures do (from 1e5 of 1e7)."""
    return max(c.samples for c in configs) / 100


def _draw_figure2(configs, folders, dest, dataset):
    from pyro_aevb.experiment.plots import plot_lower_bound

    latents = sorted({c.latent_dim for c in configs})
    fig, axes = _panels(len(latents))
    label = {"aevb": "AEVB", "wake-sleep": "Wake-Sleep"}
    y_from = _y_from(configs)
    for ax, z in zip(axes, latents):
        curves = {label[c.method]: read_metrics(RunDir(folders[run_name(c)]).metrics_path)
                  for c in configs if c.latent_dim == z}
        plot_lower_bound(curves, None, title=f"{'MNIST' if dataset == 'mnist' else 'Frey Face'}, $N_z = {z}$", ax=ax,
                         y_from=y_from)
    _save(fig, dest / f"figure2-{dataset}")


def _draw_figure3(configs, folders, dest):
    from pyro_aevb.experiment.plots import plot_lower_bound

    sizes = sorted({c.num_train for c in configs})
    fig, axes = _panels(len(sizes), width=4.5, height=3.6)
    label = {"aevb": "AEVB", "wake-sleep": "Wake-Sleep", "mcem": "MCEM"}
    y_from = _y_from(configs)
    for ax, n in zip(axes, sizes):
        curves = {label[c.method]: read_metrics(RunDir(folders[run_name(c)]).metrics_path)
                  for c in configs if c.num_train == n}
        plot_lower_bound(curves, None, metric="log_marginal", title=f"$N_{{train}} = {n}$", ax=ax,
                         y_from=y_from)
    _save(fig, dest / "figure3")


def _draw_manifold(configs, folders, dest):
    import torch

    from pyro_aevb.experiment.plots import image_grid, plot_manifold

    two_d = [c for c in configs if c.latent_dim == 2]
    fig, axes = _panels(len(two_d), width=5, height=5)
    for ax, c in zip(axes, two_d):
        vae = load_run(folders[run_name(c)])
        shape = (28, 20) if c.dataset == "frey" else (28, 28)
        plot_manifold(vae, shape, None, num=20 if c.dataset == "mnist" else 12, ax=ax,
                      title=f"({'a' if c.dataset == 'frey' else 'b'}) Learned {'Frey Face' if c.dataset == 'frey' else 'MNIST'} manifold")
    _save(fig, dest / "figure4")
    mnist = [c for c in configs if c.dataset == "mnist"]
    fig, axes = _panels(len(mnist), width=3.6, height=3.8)
    for ax, c in zip(axes, mnist):
        vae = load_run(folders[run_name(c)])
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            images = vae.decode(vae.sample_prior(100))
        ax.imshow(image_grid(images.clamp(0, 1), (28, 28), 10), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"({'abcd'[mnist.index(c)]}) {c.latent_dim}-D latent space")
        ax.axis("off")
    _save(fig, dest / "figure5")


def reproduce(experiment, out="results", dataset="mnist", samples=None, jobs=1, data_dir=None,
              num_train=(1000, 50000), log_marginal_points=100, eval_points=20, lr=0.02, mcem_samples=None,
              loglik=None, iwae=None, log=print):
    r"""
    Run one of the paper's experiments and write its table and figures.

    :param str experiment: ``"figure2"``, ``"figure3"``, ``"manifold"``, ``"loglik"`` (the runs of
        Figure 3, MNIST :math:`N_z = 20`, Frey Face :math:`N_z = 10` and a mixture prior, each
        evaluated by every estimator of :math:`\log p_\theta(x)`: :mod:`pyro_aevb.experiment.loglik`)
        or ``"iwae"`` (Burda et al.'s Table 1, one stochastic layer: :mod:`pyro_aevb.experiment.iwae_table`).
    :param out: the results folder.
    :param str dataset: ``"mnist"`` or ``"frey"`` (``figure2`` only).
    :param int samples: the budget per run, in training samples (default: 1e6 for figure2 and manifold,
        1e6 for figure3; the paper ran to about 1e8).
    :param int jobs: runs trained at once, in separate processes.
    :param int mcem_samples: ``figure3`` and ``loglik``: the budget of the MCEM runs (default: ``samples``).
    :param loglik: ``loglik`` only: the estimators' settings, a
        :class:`~pyro_aevb.experiment.loglik.LoglikSettings` (default: its defaults).
    :param iwae: ``iwae`` only (Burda et al.'s Table 1, :mod:`pyro_aevb.experiment.iwae_table`): the
        models, the schedule's stages and the estimators' settings, an
        :class:`~pyro_aevb.experiment.iwae_table.IwaeSettings` (default: its defaults). Its runs
        take their budget, step size and data from it, not from ``samples``, ``lr`` and ``num_train``.
    :returns: the rows of the results table.
    """
    # The evaluation settings are the figures' own, not the training defaults (which evaluate less).
    base = TrainConfig(samples=int(samples or 1_000_000), data_dir=data_dir, eval_points=eval_points, lr=lr,
                       log_marginal_points=log_marginal_points, eval_train_points=10_000)
    if experiment == "figure2":
        configs = figure2(base, dataset)
        columns = ("train_lower_bound", "test_lower_bound")
    elif experiment == "figure3":
        configs = figure3(base, num_train, mcem_samples)
        columns = ("train_log_marginal", "test_log_marginal", "train_lower_bound", "test_lower_bound")
    elif experiment == "manifold":
        configs = manifold(base)
        columns = ("train_lower_bound", "test_lower_bound")
    elif experiment == "loglik":
        from pyro_aevb.experiment.loglik import loglik_configs

        configs = loglik_configs(base, num_train, mcem_samples)
        columns = ()
    elif experiment == "iwae":
        from pyro_aevb.experiment.iwae_table import IwaeSettings, iwae_configs

        settings = iwae or IwaeSettings()
        configs = iwae_configs(base, settings)
        columns = ()
    else:
        raise ValueError(f"experiment must be one of {EXPERIMENTS}, got {experiment!r}")
    for c in configs:
        c.validate()
    failures = {}
    folders = run_all(configs, out, jobs=jobs, log=log, failures=failures)
    everything = configs
    configs = [c for c in configs if run_name(c) not in failures]
    if not configs:
        raise UserError(_failure_summary(failures, len(everything)))
    name = f"figure2-{dataset}" if experiment == "figure2" else experiment
    dest = Path(out) / name
    try:
        if experiment == "loglik":
            from pyro_aevb.experiment.loglik import LoglikSettings, evaluate_runs, loglik_table

            settings = loglik or LoglikSettings()
            results = evaluate_runs(configs, folders, dest, settings, jobs=jobs, log=log)
            rows = loglik_table(configs, results, dest / "results")
        elif experiment == "iwae":
            from pyro_aevb.experiment.iwae_table import count_active_units, iwae_table
            from pyro_aevb.experiment.loglik import evaluate_runs

            results = evaluate_runs(configs, folders, dest, settings, jobs=jobs, log=log)
            units = count_active_units(configs, folders, dest, settings, log=log)
            rows = iwae_table(configs, folders, results, units, dest / "results")
        else:
            rows = _table(configs, folders, dest / "results", columns)
        if experiment == "figure2":
            _draw_figure2(configs, folders, dest, dataset)
        elif experiment == "figure3":
            _draw_figure3(configs, folders, dest)
        elif experiment == "manifold":
            _draw_manifold(configs, folders, dest)
        (dest / "settings.json").write_text(json.dumps(
            {"experiment": experiment, "runs": {run_name(c): dataclasses.asdict(c) for c in everything},
             **({"estimators": dataclasses.asdict(settings)} if experiment in ("loglik", "iwae") else {})}, indent=2) + "\n")
    except OSError as e:
        from pyro_aevb.experiment.rundir import describe_os_error

        reason, action = describe_os_error(e)
        raise UserError(
            f"could not write the results of {experiment} to {e.filename or dest}: {reason}. The runs are "
            f"trained and saved in {Path(out) / 'runs'}; {action}, then run the same command again (finished runs "
            "are not trained again)."
        ) from None
    if failures:
        raise UserError(
            f"{experiment}: table and figures written to {dest} without the damaged runs. "
            + _failure_summary(failures, len(everything))
        )
    log(f"{experiment}: {'table' if experiment in ('loglik', 'iwae') else 'table and figures'} written to {dest}")
    return rows
