"""`pyro-aevb evaluate` on a run folder from `pyro-aevb train`: its estimators, the JSON it writes."""

import json
import os
import subprocess
import sys

import pytest
import torch

from pyro_aevb import TrainConfig, train
from pyro_aevb.experiment.evaluate import evaluate_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate") / "run"
    config = TrainConfig(dataset="mnist5k", latent_dim=2, hidden=50, samples=3000, eval_points=2, eval_train_points=200)
    train(config, out, progress=False)
    return out


@pytest.mark.parametrize("estimator, options", [("is", ["--num-samples", "200"]),
                                                ("hmc", ["--num-samples", "20", "--warmup-steps", "30", "--num-chains", "2"])])
def test_evaluate_writes_json(run_dir, estimator, options, tmp_path):
    out = tmp_path / "result.json"
    result = subprocess.run(
        [sys.executable, "-m", "pyro_aevb", "evaluate", str(run_dir), "--estimator", estimator, "--split", "train",
         "--num-points", "10", "--out", str(out), *options],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    for key in ("estimator", "split", "num_points", "log_marginal_likelihood", "stderr", "diagnostics"):
        assert key in data, f"{key} missing from the JSON"
    assert (data["estimator"], data["split"], data["num_points"]) == (estimator, "train", 10)
    # The command is evaluate_run with the same seed, on one thread as the command ran: the same numbers,
    # datapoint by datapoint (the JSON rounds them to 4 decimals).
    options_kw = {opt.lstrip("-").replace("-", "_"): int(v) for opt, v in zip(options[::2], options[1::2])}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        expected = evaluate_run(run_dir, estimator, "train", 10, seed=0, **options_kw)
    finally:
        torch.set_num_threads(threads)
    assert data["per_datapoint"] == pytest.approx(expected["per_datapoint"], abs=2e-4)
    assert data["log_marginal_likelihood"] == pytest.approx(sum(expected["per_datapoint"]) / 10, abs=1e-3)
    if estimator == "hmc":
        assert {"rhat", "ess", "accept_prob", "num_not_mixed"} <= set(data["diagnostics"])


def test_marginal_likelihood_is_above_the_bound(run_dir):
    """log p(x) ≥ ELBO; the IS estimate (K = 1000) may undershoot log p(x) but, with the encoder as proposal,
    stays above the bound up to its Monte Carlo error (a few tenths of a nat per datapoint here)."""
    result = evaluate_run(run_dir, "is", "test", 50, num_samples=1000)
    assert result["log_marginal_likelihood"] > result["lower_bound"] - 3 * result["mean_estimator_stderr"]


def test_evaluate_errors(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pyro_aevb", "evaluate", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2 and "no checkpoint" in result.stderr and "Traceback" not in result.stderr


def test_evaluate_defaults_to_ais_on_100_points():
    """The docs tell users to report AIS (docs/results.md), so `evaluate` runs it unless told otherwise, on as
    many points as its cost allows; the command and evaluate_run agree."""
    import inspect

    from pyro_aevb.experiment.cli import build_parser

    args = build_parser().parse_args(["evaluate", "runs/x"])
    defaults = inspect.signature(evaluate_run).parameters
    assert (args.estimator, args.num_points) == ("ais", 100)
    assert (defaults["estimator"].default, defaults["num_points"].default) == ("ais", 100)
