"""Smoke tests of `pyro-aevb reproduce`: each experiment at a tiny budget on real data."""

import csv
import subprocess
import sys

import pytest

from pyro_aevb.reproduce import FIGURE2_LATENTS, FIGURE5_LATENTS


def reproduce(*args, data, out, timeout=900):
    result = subprocess.run(
        [sys.executable, "-m", "pyro_aevb", "reproduce", *map(str, args), "--data-dir", str(data), "--out", str(out),
         "--eval-points", "2", "--jobs", "2"],
        capture_output=True, text=True, timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def table(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("dataset", ["mnist", "frey"])
def test_figure2(dataset, shared_data, tmp_path):
    reproduce("figure2", "--dataset", dataset, "--samples", 300, data=shared_data, out=tmp_path)
    dest = tmp_path / f"figure2-{dataset}"
    for name in (f"figure2-{dataset}.png", f"figure2-{dataset}.pdf", "results.csv", "results.md"):
        assert (dest / name).is_file(), f"{name} missing"
    rows = table(dest / "results.csv")
    cells = {(r["method"], int(r["latent_dim"])) for r in rows}
    expected = {(m, z) for m in ("aevb", "wake-sleep") for z in FIGURE2_LATENTS[dataset]}
    assert cells == expected, f"table cells {sorted(cells)} differ from {sorted(expected)}"
    assert all(r["train_lower_bound"] and r["test_lower_bound"] for r in rows), "a bound is missing"
    # A second call finds every run finished and only redraws.
    again = reproduce("figure2", "--dataset", dataset, "--samples", 300, data=shared_data, out=tmp_path)
    assert f"{len(expected)} of {len(expected)} runs already finished" in again.stdout


def test_figure3(shared_data, tmp_path):
    reproduce("figure3", "--samples", 200, "--num-train", 100, 300, "--log-marginal-points", 4,
              data=shared_data, out=tmp_path)
    dest = tmp_path / "figure3"
    assert (dest / "figure3.png").is_file() and (dest / "figure3.pdf").is_file()
    rows = table(dest / "results.csv")
    cells = {(r["method"], int(r["num_train"])) for r in rows}
    assert cells == {(m, n) for m in ("aevb", "wake-sleep", "mcem") for n in (100, 300)}
    assert all(r["train_log_marginal"] and r["test_log_marginal"] for r in rows), "a marginal likelihood is missing"


def test_manifold(shared_data, tmp_path):
    reproduce("manifold", "--samples", 300, data=shared_data, out=tmp_path)
    dest = tmp_path / "manifold"
    for name in ("figure4.png", "figure4.pdf", "figure5.png", "figure5.pdf", "results.csv"):
        assert (dest / name).is_file(), f"{name} missing"
    rows = table(dest / "results.csv")
    assert {(r["dataset"], int(r["latent_dim"])) for r in rows} == {("frey", 2)} | {("mnist", z) for z in FIGURE5_LATENTS}
