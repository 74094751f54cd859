r"""
The paper's experiments from one command each: Figure 2 (AEVB against wake-sleep, per latent size),
Figure 3 (AEVB, wake-sleep and MCEM by marginal likelihood, small and large training set) and the
Appendix A figures (2-D manifolds, Figure 4; samples for several latent sizes, Figure 5), and the
table that compares the estimators of :math:`\log p_\theta(x)` on trained models
(:mod:`pyro_aevb.experiment.loglik`); and Table 1 of Burda et al. (2015), the VAE against IWAE
(:mod:`pyro_aevb.experiment.iwae_table`).

Every experiment is a set of ordinary run folders under ``OUT/runs/`` (one per setting, named by it;
:mod:`~pyro_aevb.experiment.paper_runs` holds the settings), trained with :func:`pyro_aevb.train` in
parallel worker processes (:mod:`~pyro_aevb.experiment.runs`). Runs are resumed where they stopped
and finished ones are not redone, so an interrupted experiment continues with the same command, and
experiments that share a setting share its run. Each experiment then writes a results table (CSV and
Markdown, :mod:`~pyro_aevb.experiment.tables`) and its figures (PNG and PDF,
:mod:`~pyro_aevb.experiment.figures`) into ``OUT/<experiment>/``.
"""

import dataclasses
import json
from pathlib import Path

from pyro_aevb.errors import UserError
from pyro_aevb.experiment.figures import draw_figure2, draw_figure3, draw_manifold
from pyro_aevb.experiment.iwae_table import IwaeSettings, count_active_units, iwae_configs, iwae_table
from pyro_aevb.experiment.loglik import LoglikSettings, evaluate_runs, loglik_configs, loglik_table
from pyro_aevb.experiment.paper_runs import figure2, figure3, manifold
from pyro_aevb.experiment.rundir import RunDir, describe_os_error, read_metrics
from pyro_aevb.experiment.runs import failure_summary, run_all, run_name
from pyro_aevb.experiment.tables import rounded, write_table
from pyro_aevb.experiment.build import DEFAULT_HIDDEN
from pyro_aevb.experiment.config import TrainConfig

__all__ = ["EXPERIMENTS", "reproduce"]

EXPERIMENTS = ("figure2", "figure3", "manifold", "loglik", "iwae")


def _table(configs, folders, path, columns):
    """The table of a figure's runs: each run's setting and its last metrics row's ``columns``."""
    rows = []
    for c in configs:
        metrics = read_metrics(RunDir(folders[run_name(c)]).metrics_path)
        last = metrics[-1] if metrics else {}
        row = {"dataset": c.dataset, "method": c.method, "latent_dim": c.latent_dim, "hidden": c.hidden or DEFAULT_HIDDEN[c.dataset],
               "num_train": c.num_train or "", "samples": int(last.get("samples") or 0)}
        for col in columns:
            row[col] = rounded(last.get(col))
        row["train_seconds"] = round(last.get("seconds") or 0.0, 1)
        rows.append(row)
    return write_table(rows, path)


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
        configs = loglik_configs(base, num_train, mcem_samples)
        columns = ()
    elif experiment == "iwae":
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
        raise UserError(failure_summary(failures, len(everything)))
    name = f"figure2-{dataset}" if experiment == "figure2" else experiment
    dest = Path(out) / name
    try:
        if experiment == "loglik":
            settings = loglik or LoglikSettings()
            results = evaluate_runs(configs, folders, dest, settings, jobs=jobs, log=log)
            rows = loglik_table(configs, results, dest / "results")
        elif experiment == "iwae":
            results = evaluate_runs(configs, folders, dest, settings, jobs=jobs, log=log)
            units = count_active_units(configs, folders, dest, settings, log=log)
            rows = iwae_table(configs, folders, results, units, dest / "results")
        else:
            rows = _table(configs, folders, dest / "results", columns)
        if experiment == "figure2":
            draw_figure2(configs, folders, dest, dataset)
        elif experiment == "figure3":
            draw_figure3(configs, folders, dest)
        elif experiment == "manifold":
            draw_manifold(configs, folders, dest)
        (dest / "settings.json").write_text(json.dumps(
            {"experiment": experiment, "runs": {run_name(c): dataclasses.asdict(c) for c in everything},
             **({"estimators": dataclasses.asdict(settings)} if experiment in ("loglik", "iwae") else {})}, indent=2) + "\n")
    except OSError as e:
        reason, action = describe_os_error(e)
        raise UserError(
            f"could not write the results of {experiment} to {e.filename or dest}: {reason}. The runs are "
            f"trained and saved in {Path(out) / 'runs'}; {action}, then run the same command again (finished runs "
            "are not trained again)."
        ) from None
    if failures:
        raise UserError(
            f"{experiment}: table and figures written to {dest} without the damaged runs. "
            + failure_summary(failures, len(everything))
        )
    log(f"{experiment}: {'table' if experiment in ('loglik', 'iwae') else 'table and figures'} written to {dest}")
    return rows
