"""
Which estimate of :math:`\\log p_\\theta(x)` to trust, on the trained models of the results page: each
run is evaluated on the same test points by the paper's Appendix D estimator (``hmc``), by importance
sampling with its encoder (``is``), by annealed importance sampling (``ais``), and AIS's own error is
bracketed by bidirectional Monte Carlo on points simulated from the run's model (``bdmc``), with the
seconds each took. ``pyro-aevb reproduce loglik`` trains the runs (or reuses finished ones) and writes
the table.

Every estimate is a JSON file of :func:`~pyro_aevb.experiment.evaluate.evaluate_run` under
``OUT/loglik/<run>/``, with the settings it was asked for; one that is there already, made with the
same settings, is not computed again, so an interrupted table resumes where it stopped. One made with
other settings is refused, naming the file and the settings that differ: it is never reused, nor
overwritten.
"""

import concurrent.futures
import dataclasses
import json
from pathlib import Path

from pyro_aevb.errors import UserError
from pyro_aevb.experiment.atomic import write_atomic
from pyro_aevb.experiment.evaluate import evaluate_run, has_encoder
from pyro_aevb.experiment.paper_runs import figure3
from pyro_aevb.experiment.runs import run_name
from pyro_aevb.experiment.tables import rounded, write_table
from pyro_aevb.experiment.workers import worker_pool

__all__ = ["EstimatorSettings", "LoglikSettings", "loglik_configs", "evaluate_runs", "loglik_table", "read_cached"]

MIXTURE_PRIOR = "pyro_aevb.models.variants:MixturePriorVAE"


@dataclasses.dataclass(kw_only=True)
class EstimatorSettings:
    """
    The settings of the estimates on the test points that the tables of ``reproduce loglik`` and
    ``reproduce iwae`` share (keyword arguments).

    :param int is_samples: importance samples :math:`K` per point of ``is``.
    :param int num_chains: AIS chains :math:`K` per point (forward and reverse alike).
    :param int num_temps: AIS temperatures :math:`T`.
    :param int num_steps: leapfrog steps per AIS transition.
    :param int bdmc: points simulated from each model for the BDMC gap.
    :param int seed: seeds every estimate.
    :param str precision: AIS's products, ``"fp32"`` or ``"bf16"`` (see
        :func:`~pyro_aevb.infer.ais.log_marginal`).
    """

    is_samples: int = 5000
    num_chains: int = 16
    num_temps: int = 1000
    num_steps: int = 10
    bdmc: int = 100
    seed: int = 0
    precision: str = "fp32"

    def ais_job(self, num_points):
        """``("ais", evaluate_run keyword arguments)``: AIS with the BDMC gap, on the first ``num_points`` test points."""
        options = {"estimator": "ais", "split": "test", "num_points": num_points, "seed": self.seed,
                   "bdmc": self.bdmc, "num_chains": self.num_chains, "num_temps": self.num_temps,
                   "num_steps": self.num_steps}
        if self.precision != "fp32":
            options["precision"] = self.precision
        return ("ais", options)

    def is_job(self, num_points):
        """``("is", evaluate_run keyword arguments)``: importance sampling on the first ``num_points`` test points."""
        return ("is", {"estimator": "is", "split": "test", "num_points": num_points, "seed": self.seed,
                       "num_samples": self.is_samples})


@dataclasses.dataclass
class LoglikSettings(EstimatorSettings):
    """
    The estimators' settings of the table: those of :class:`EstimatorSettings`, and

    :param int num_points: the first test points of each data set, the same for every estimator.
    """

    num_points: int = 100

    def jobs(self, has_encoder):
        """``(name, evaluate_run keyword arguments)`` of each estimate; ``is`` only for a run with an encoder."""
        jobs = [self.ais_job(self.num_points),
                ("hmc", {"estimator": "hmc", "split": "test", "num_points": self.num_points, "seed": self.seed})]
        if has_encoder:
            jobs.append(self.is_job(self.num_points))
        return jobs


def loglik_configs(base, num_train=(1000, 50000), mcem_samples=None):
    """
    The runs of the table: Figure 3's (MNIST, :math:`N_z = 3`; AEVB, wake-sleep and MCEM on each
    training-set size), then AEVB on MNIST with :math:`N_z = 20`, on Frey Face with :math:`N_z = 10`,
    and on MNIST with :math:`N_z = 20` under a learnt mixture-of-Gaussians prior
    (:class:`~pyro_aevb.models.variants.MixturePriorVAE`, 10 components).
    """
    aevb = dataclasses.replace(base, method="aevb")
    return figure3(base, num_train, mcem_samples) + [
        dataclasses.replace(aevb, dataset="mnist", latent_dim=20),
        dataclasses.replace(aevb, dataset="frey", latent_dim=10),
        dataclasses.replace(aevb, dataset="mnist", latent_dim=20, model_class=MIXTURE_PRIOR,
                            model_options={"num_components": 10}),
    ]


def _evaluate_one(run_dir, dest, options):
    """In a worker: one estimate, written to ``dest`` with the ``settings`` it was asked for."""
    result = evaluate_run(run_dir, **options)
    write_atomic(dest, json.dumps({**result, "settings": options}, indent=2) + "\n", durable=False, sync=False)
    return dest


def read_cached(path, settings):
    """
    The JSON result at ``path`` if it was made with ``settings`` (its ``"settings"`` entry); ``None``
    if there is none.

    :raises UserError: the file holds a result made with other settings (naming those that differ),
        or cannot be read.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"could not read {path}: {e}; delete it and run the same command again") from None
    wanted = json.loads(json.dumps(settings))  # as JSON has it: tuples as lists
    found = result.get("settings") if isinstance(result, dict) else None
    if found != wanted:
        if isinstance(found, dict):
            differ = ", ".join(f"{key} {found.get(key, 'unset')!r} there, {wanted.get(key, 'unset')!r} now"
                               for key in sorted(set(found) | set(wanted)) if found.get(key) != wanted.get(key))
        else:
            differ = "it does not record its settings"
        raise UserError(f"{path} holds a result made with other settings than this command's ({differ}); it is "
                        "neither reused nor overwritten: delete it, or write to another --out")
    return result


def evaluate_runs(configs, folders, dest, settings, jobs=1, log=print):
    """
    Every estimate of every run in ``configs`` (``folders`` maps their run names to run folders) into
    ``dest/<run>/<estimator>.json``, ``jobs`` at a time in worker processes; estimates already there
    with the same settings are kept, and one with other settings is refused (:func:`read_cached`).
    The dearest estimates (AIS with BDMC) are started first.

    :returns: dict mapping each run name to ``{estimator: result}``.
    """
    planned = [(run_name(config), estimator, options) for config in configs
               for estimator, options in settings.jobs(has_encoder(config))]
    path = {(name, estimator): Path(dest) / name / f"{estimator}.json" for name, estimator, _ in planned}
    results = {}
    for name, estimator, options in planned:
        results.setdefault(name, {})[estimator] = read_cached(path[name, estimator], options)
    todo = [job for job in planned if results[job[0]][job[1]] is None]
    todo.sort(key=lambda job: job[1] != "ais")
    log(f"{len(todo)} estimates to compute with {jobs} worker(s)")
    if todo:
        with worker_pool(jobs) as pool:
            futures = {}
            for name, estimator, options in todo:
                path[name, estimator].parent.mkdir(parents=True, exist_ok=True)
                job = pool.submit(_evaluate_one, str(folders[name]), str(path[name, estimator]), options)
                futures[job] = (name, estimator)
            for future in concurrent.futures.as_completed(futures):
                name, estimator = futures[future]
                try:
                    future.result()
                except Exception as e:
                    pool.shutdown(wait=False, cancel_futures=True)
                    reason = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
                    raise UserError(f"the {estimator} estimate of {name} failed: {reason}. The estimates written so "
                                    f"far are kept in {dest}; the same command computes the rest") from None
                log(f"estimated {estimator} for {name}")
    for name, estimator, options in planned:
        if results[name][estimator] is None:
            results[name][estimator] = read_cached(path[name, estimator], options)
    return results


def _label(config):
    prior = "mixture prior" if config.model_class == MIXTURE_PRIOR else "N(0, I) prior"
    train = f", N_train = {config.num_train}" if config.num_train else ""
    return f"{config.dataset}, {config.method}, Nz = {config.latent_dim}, {prior}{train}"


def loglik_table(configs, results, path):
    """Write the table as ``path``.csv and ``path``.md; returns its rows."""
    rows = []
    for config in configs:
        found = results[run_name(config)]
        ais, hmc, by_is = found["ais"], found["hmc"], found.get("is")
        rows.append({
            "model": _label(config),
            "samples": config.samples,
            "test_points": ais["num_points"],
            "lower_bound": rounded(ais.get("lower_bound")),
            "appendix_d": rounded(hmc["log_marginal_likelihood"]),
            "appendix_d_seconds": rounded(hmc["seconds"], 1),
            "appendix_d_not_mixed": hmc["diagnostics"].get("num_not_mixed", ""),
            "is": rounded(by_is["log_marginal_likelihood"]) if by_is else "",
            "is_seconds": rounded(by_is["seconds"], 1) if by_is else "",
            "ais": rounded(ais["log_marginal_likelihood"]),
            "ais_stderr": rounded(ais["stderr"]),
            "ais_seconds": rounded(ais["seconds"], 1),
            "bdmc_lower": rounded(ais["bdmc"]["lower"], 3),
            "bdmc_upper": rounded(ais["bdmc"]["upper"], 3),
            "bdmc_gap": rounded(ais["bdmc"]["gap"], 3),
            "bdmc_seconds": rounded(ais["bdmc"]["seconds"], 1),
        })
    return write_table(rows, path)
