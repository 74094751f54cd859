r"""
Burda, Grosse & Salakhutdinov (2015), "Importance Weighted Autoencoders", Table 1, one stochastic
layer: ``pyro-aevb reproduce iwae`` trains the VAE (:math:`K = 1`) and IWAE with :math:`K = 5`
(and :math:`K = 50` on request) with their setup, and reports for each model

- the test :math:`\log p_\theta(x)` as they report it: the importance-weighted bound with
  :math:`K = 5000` on all 10,000 test digits (the ``is`` estimator with 5,000 samples is exactly
  that bound's estimate: the log of the mean of 5,000 importance weights from the encoder);
- AIS, with the BDMC gap of AIS on points simulated from the model, on the first 1,000 test digits;
- the number of active units (:func:`~pyro_aevb.infer.active_units.active_units`) on the test digits;
- the training wall time.

The setup: 784-200-200-50 nets with tanh hidden layers, a Bernoulli decoder, MNIST binarised afresh
for every minibatch, Adam (:math:`\beta_1 = 0.9`, :math:`\beta_2 = 0.999`, :math:`\epsilon = 10^{-4}`),
minibatches of 20, no weight decay, and the schedule in which stage :math:`i` runs :math:`3^i` epochs
at the step size :math:`0.001 \cdot 10^{-i/7}` (:func:`burda_schedule`). Every model is trained with
:class:`~pyro_aevb.infer.iwae.IWAE`, whose bound at :math:`K = 1` is the ELBO.

The estimates are JSON files of :func:`~pyro_aevb.experiment.evaluate.evaluate_run` (and the active
units' count) under ``OUT/iwae/<run>/``; one that is there already, made with the same settings, is not
computed again, and one made with other settings is refused
(:func:`~pyro_aevb.experiment.loglik.read_cached`).
"""

import dataclasses
import json
from pathlib import Path

from pyro_aevb.data import load_dataset
from pyro_aevb.experiment.atomic import write_atomic
from pyro_aevb.experiment.loglik import EstimatorSettings, read_cached
from pyro_aevb.experiment.rundir import RunDir, read_metrics
from pyro_aevb.experiment.runs import run_name
from pyro_aevb.experiment.tables import rounded, write_table
from pyro_aevb.experiment.load import load_run
from pyro_aevb.experiment.run_data import load_data, read_data_record
from pyro_aevb.infer.active_units import ACTIVITY_THRESHOLD, unit_activity

__all__ = ["BURDA_TABLE1", "IwaeSettings", "burda_schedule", "count_active_units", "iwae_configs", "iwae_table"]

#: Burda et al.'s Table 1, MNIST, one stochastic layer, test log p(x) at the full schedule (8 stages).
BURDA_TABLE1 = {("vae", 1): -86.76, ("iwae", 5): -85.54, ("iwae", 50): -84.78}
#: The number of stages of Burda et al.'s full schedule (3,280 epochs).
FULL_STAGES = 8


def burda_schedule(stages):
    r"""
    Burda et al.'s schedule cut to its first ``stages`` stages: stage :math:`i` runs :math:`3^i` epochs
    at :math:`0.001 \cdot 10^{-i/7}`.

    :returns: ``(epochs, lr_scheduler_options)``: the epochs in all, and the options of
        :class:`torch.optim.lr_scheduler.MultiStepLR` (milestones at the stages' first epochs).
    """
    if isinstance(stages, bool) or not isinstance(stages, int) or not 1 <= stages <= FULL_STAGES:
        raise ValueError(f"stages must be a whole number from 1 to {FULL_STAGES}, got {stages!r}")
    ends = [sum(3**j for j in range(i + 1)) for i in range(stages)]
    return ends[-1], {"milestones": ends[:-1], "gamma": 10 ** (-1 / 7)}


@dataclasses.dataclass
class IwaeSettings(EstimatorSettings):
    """
    What ``reproduce iwae`` trains and how it evaluates: the estimators' settings of
    :class:`~pyro_aevb.experiment.loglik.EstimatorSettings` (``is_samples`` is the :math:`K` of the
    :math:`K = 5000` bound), and

    :param num_particles: the :math:`K` of each model (1: the VAE).
    :param int stages: the schedule's stages (6: 364 epochs, the default; 8: the full 3,280).
    :param int num_train: train on the first this-many training digits (``None``: all 60,000).
    :param int is_points: first test digits of the :math:`K = 5000` bound (Burda et al.: all 10,000).
    :param int ais_points: first test digits of AIS.
    """

    num_particles: tuple = (1, 5)
    stages: int = 6
    num_train: int = None
    is_points: int = 10_000
    ais_points: int = 1000

    def jobs(self, has_encoder):
        """``(name, evaluate_run keyword arguments)`` of each estimate, AIS first (the dearest)."""
        return [self.ais_job(self.ais_points), self.is_job(self.is_points)]


def iwae_configs(base, settings):
    """The runs of the table: one :class:`~pyro_aevb.experiment.config.TrainConfig` per :math:`K`, from ``base``."""
    epochs, schedule = burda_schedule(settings.stages)
    num_data = settings.num_train
    if num_data is None:
        num_data = load_dataset("mnist", base.data_dir).num_train
    common = dataclasses.replace(
        base, dataset="mnist", binarize="dynamic", likelihood="bernoulli", latent_dim=50, hidden=[200, 200],
        activation="tanh", method="iwae", num_train=settings.num_train, batch_size=20, weight_decay=0.0,
        optim="Adam", lr=1e-3, optim_options={"betas": [0.9, 0.999], "eps": 1e-4}, lr_scheduler="MultiStepLR",
        lr_scheduler_options=schedule, samples=epochs * num_data,
        eval_train_points=min(base.eval_train_points, num_data),
    )
    ks = list(dict.fromkeys(settings.num_particles))
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"num_particles must be whole numbers >= 1, got {settings.num_particles!r}")
    return [dataclasses.replace(common, num_particles=k) for k in ks]


def count_active_units(configs, folders, dest, settings, log=print):
    """
    The active units of each run's encoder on its first ``settings.is_points`` test digits, kept in
    ``dest/<run>/active_units.json`` (and read from there when it exists).

    :returns: dict mapping each run name to ``{"active_units", "num_points", "activity"}``.
    """
    found = {}
    wanted = {"is_points": settings.is_points}
    for config in configs:
        name = run_name(config)
        path = Path(dest) / name / "active_units.json"
        if read_cached(path, wanted) is None:
            vae = load_run(folders[name])
            dataset = load_data(vae.config, record=read_data_record(RunDir(folders[name])))[0]
            x = dataset.eval_split("test", min(settings.is_points, dataset.num_test))
            activity = unit_activity(vae.guide, x)
            result = {"active_units": int((activity > ACTIVITY_THRESHOLD).sum()), "threshold": ACTIVITY_THRESHOLD,
                      "num_points": int(x.shape[0]), "activity": [float(a) for a in activity], "settings": wanted}
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps(result, indent=2) + "\n", durable=False, sync=False)
            log(f"counted the active units of {name}: {result['active_units']} of {activity.numel()}")
        found[name] = read_cached(path, wanted)
    return found


def iwae_table(configs, folders, results, units, path):
    """Write the table as ``path``.csv and ``path``.md, one row per model; returns its rows."""
    rows = []
    for config in configs:
        name = run_name(config)
        by_is, ais = results[name]["is"], results[name]["ais"]
        metrics = read_metrics(RunDir(folders[name]).metrics_path)
        last = metrics[-1] if metrics else {}
        rows.append({
            "model": "VAE" if config.num_particles == 1 else "IWAE",
            "k": config.num_particles,
            "epochs": burda_epochs(config),
            "num_train": config.num_train or "all",
            "test_log_px": rounded(by_is["log_marginal_likelihood"]),
            "test_log_px_stderr": rounded(by_is["stderr"]),
            "burda_et_al_full_schedule": BURDA_TABLE1.get(("vae" if config.num_particles == 1 else "iwae", config.num_particles), ""),
            "is_points": by_is["num_points"],
            "is_samples": by_is["options"]["num_samples"],
            "ais": rounded(ais["log_marginal_likelihood"]),
            "ais_stderr": rounded(ais["stderr"]),
            "ais_points": ais["num_points"],
            "bdmc_gap": rounded(ais["bdmc"]["gap"], 3),
            "active_units": units[name]["active_units"],
            "train_seconds": rounded(last.get("seconds"), 1),
            "is_seconds": rounded(by_is["seconds"], 1),
            "ais_seconds": rounded(ais["seconds"] + ais["bdmc"]["seconds"], 1),
        })
    return write_table(rows, path)


def burda_epochs(config):
    """The epochs of a run of the table, read off its schedule's milestones (the last stage is 3 times the one before)."""
    milestones = config.lr_scheduler_options["milestones"]
    return burda_schedule(len(milestones) + 1)[0]
