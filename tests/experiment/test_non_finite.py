"""Non-finite numbers in an evaluation are said, with the row or the datapoints they belong to, and counted."""

import csv
import math

import pytest
import torch

from pyro_aevb import TrainConfig, train
from pyro_aevb.errors import RunWarning
from pyro_aevb.experiment import evaluate as evaluate_module
from pyro_aevb.experiment import train as train_module


def test_summary_counts_and_names_non_finite_diagnostics():
    info = {
        "stderr": torch.tensor([0.5, float("nan"), 1.5, float("inf")]),
        "accept_prob": torch.tensor([[0.8, 0.9, 0.7, 0.6], [0.8, 0.9, float("-inf"), 0.6]]),  # chains x datapoints
        "not_mixed": torch.tensor([False, True, False, False]),
    }
    with pytest.warns(RunWarning) as record:
        summary = evaluate_module._summarise(info)
    messages = [str(w.message) for w in record]
    assert any("'stderr': 2 non-finite value(s) of 4, at datapoint(s) 1, 3" in m for m in messages), messages
    assert any("'accept_prob': 1 non-finite value(s) of 8, at datapoint(s) 2;" in m for m in messages), messages
    assert summary["stderr"] == {"mean": 1.0, "min": 0.5, "max": 1.5, "num_non_finite": 2}
    assert summary["accept_prob"]["num_non_finite"] == 1 and summary["accept_prob"]["min"] == pytest.approx(0.6)
    assert summary["num_not_mixed"] == 1 and summary["not_mixed_indices"] == [1]


def test_summary_of_finite_diagnostics_says_nothing(recwarn):
    summary = evaluate_module._summarise({"stderr": torch.tensor([0.5, 1.5])})
    assert summary["stderr"] == {"mean": 1.0, "min": 0.5, "max": 1.5, "num_non_finite": 0}
    assert not [w for w in recwarn if issubclass(w.category, RunWarning)]


def test_non_finite_estimates_are_named():
    with pytest.warns(RunWarning, match=r"log p\(x\) is not finite at 1 of 3 datapoint\(s\): 2"):
        evaluate_module._warn_non_finite_estimates(torch.tensor([-90.0, -95.0, float("-inf")]))


def test_a_non_finite_bound_in_an_evaluation_row_is_said(tmp_path, monkeypatch):
    """The row still goes to metrics.csv as it is, but a warning names its samples, step and column."""
    real = train_module.lower_bound
    calls = []

    def bound(model, guide, x, **kwargs):
        calls.append(x.shape[0])
        return float("-inf") if len(calls) == 4 else real(model, guide, x, **kwargs)  # the second row's test bound

    monkeypatch.setattr(train_module, "lower_bound", bound)
    config = TrainConfig(dataset="mnist5k", latent_dim=2, hidden=20, eval_points=2, eval_train_points=200, samples=2000)
    with pytest.warns(RunWarning, match=r"evaluation at 2000 samples \(step 20\) gave a non-finite test_lower_bound = -inf"):
        train(config, tmp_path / "run", progress=False)
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["test_lower_bound"]) for r in rows][1] == -math.inf
    assert all(math.isfinite(float(r["train_lower_bound"])) for r in rows)
