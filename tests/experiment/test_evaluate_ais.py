"""
`pyro-aevb evaluate` with annealed importance sampling and BDMC, and runs without a trained encoder
(MCEM): evaluated without it, as the training loop evaluates them.
"""

import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from pyro_aevb import ConfigError, TrainConfig, load_dataset, load_run, log_marginal_likelihood, train
from pyro_aevb.experiment.evaluate import evaluate_run


# Few draws and transitions: the test is of agreement between the loop and evaluate, not of accuracy.
OPTIONS = {"num_samples": 5, "warmup_steps": 5, "num_chains": 2, "init_proposals": 20}


@pytest.fixture(scope="module")
def mcem_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate-ais") / "mcem"
    config = TrainConfig(
        dataset="mnist5k", method="mcem", latent_dim=2, hidden=20, samples=200, eval_points=1,
        eval_train_points=50, log_marginal_points=4, log_marginal_options=OPTIONS,
    )
    train(config, out, progress=False)
    return out, config


def test_evaluate_reproduces_the_training_loops_estimate(mcem_run):
    # The loop estimated log p(x) with "hmc" (no encoder: chains from prior draws resampled by their
    # likelihood) on the first 4 points of each split, seeded with seed + 2: evaluate does the same.
    out, config = mcem_run
    with open(out / "metrics.csv") as f:
        row = list(csv.DictReader(f))[-1]
    for split in ("train", "test"):
        result = evaluate_run(out, "hmc", split, config.log_marginal_points, seed=config.seed + 2, **OPTIONS)
        assert result["log_marginal_likelihood"] == pytest.approx(float(row[f"{split}_log_marginal"]), abs=1e-4)
        assert "lower_bound" not in result


def test_evaluate_without_an_encoder(mcem_run):
    out, _ = mcem_run
    with pytest.raises(ConfigError, match="no trained encoder"):
        evaluate_run(out, "is", "test", 4)
    result = evaluate_run(out, "ais", "test", 3, num_chains=2, num_temps=5, num_steps=2)
    assert result["estimator"] == "ais" and len(result["per_datapoint"]) == 3
    assert {"ess", "accept_prob", "step_size", "stderr"} <= set(result["diagnostics"])


def test_evaluate_ais_with_bdmc_command(mcem_run, tmp_path):
    out, _ = mcem_run
    path = tmp_path / "result.json"
    result = subprocess.run(
        [sys.executable, "-m", "pyro_aevb", "evaluate", str(out), "--estimator", "ais", "--num-points", "3",
         "--num-chains", "2", "--num-temps", "4", "--num-steps", "2", "--bdmc", "5", "--out", str(path)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(path.read_text())
    bdmc = data["bdmc"]
    assert bdmc["num_points"] == 5 and bdmc["gap"] == pytest.approx(bdmc["upper"] - bdmc["lower"], abs=1e-3)
    # Four temperatures are far too few for this model: the gap is wide, and the command says so.
    assert bdmc["gap"] > 1 and "--num-temps" in result.stderr
    wrong = subprocess.run(
        [sys.executable, "-m", "pyro_aevb", "evaluate", str(out), "--estimator", "ais", "--warmup-steps", "3"],
        capture_output=True, text=True, timeout=300,
    )
    assert wrong.returncode != 0 and "--warmup-steps" in wrong.stderr


def test_training_accepts_ais(tmp_path):
    config = TrainConfig(
        dataset="mnist5k", latent_dim=2, hidden=20, samples=200, eval_points=1, eval_train_points=20,
        log_marginal="ais", log_marginal_points=3, log_marginal_options={"num_chains": 2, "num_temps": 3},
    )
    train(config, tmp_path / "run", progress=False)
    with open(tmp_path / "run" / "metrics.csv") as f:
        row = list(csv.DictReader(f))[-1]
    # The value the training loop wrote is AIS itself on those points, with the evaluation's seed.
    vae = load_run(tmp_path / "run")
    x = load_dataset("mnist5k").eval_split("test")[:3]
    with torch.random.fork_rng():
        torch.manual_seed(config.seed + 2)
        expected = log_marginal_likelihood(vae.model, x, "ais", guide=vae.guide, num_chains=2, num_temps=3)
    assert float(row["test_log_marginal"]) == pytest.approx(expected.mean().item(), abs=1e-3)


def test_ais_start(aevb_run):
    """
    ``ais_start``: AIS and BDMC start from the encoder by default and from the prior on request; each is
    AIS itself with that p0 on the same points and seed (the two differ, so a start that is ignored fails).
    """
    from pyro_aevb.infer.bdmc import bdmc, simulate

    vae = load_run(aevb_run)
    x = load_dataset("mnist5k").eval_split("test")[:3]
    options = {"num_chains": 2, "num_temps": 4, "num_steps": 2}
    estimates = {}
    for start, p0 in (("guide", vae.guide), ("prior", None)):
        result = evaluate_run(aevb_run, "ais", "test", 3, ais_start=start, bdmc=2, **options)
        assert result["ais_start"] == start
        with torch.random.fork_rng():
            torch.manual_seed(0)
            expected = log_marginal_likelihood(vae.model, x, "ais", guide=p0, **options)
            torch.manual_seed(0)  # BDMC draws from the same seed
            x_sim, latents = simulate(vae.model, 2, x)
            lower, upper = bdmc(vae.model, x_sim, latents, p0, **options)
        assert result["log_marginal_likelihood"] == pytest.approx(expected.mean().item(), abs=1e-4)
        assert result["bdmc"]["lower"] == pytest.approx(lower.mean().item(), abs=1e-4)
        assert result["bdmc"]["upper"] == pytest.approx(upper.mean().item(), abs=1e-4)
        estimates[start] = result["log_marginal_likelihood"]
    assert abs(estimates["guide"] - estimates["prior"]) > 1e-3, estimates
    with pytest.raises(ValueError, match="ais_start"):
        evaluate_run(aevb_run, "ais", "test", 3, ais_start="encoder", **options)
