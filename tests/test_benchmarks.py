"""
The benchmarks run (at tiny settings: these measure nothing) and what their tables claim holds: the
contenders that draw the same minibatches and noise end at the same bound.
"""

import importlib.util
import json
import sys

import pytest
import torch

from tests.helpers.common import REPO


def _script(name):
    sys.path.insert(0, str(REPO / "benchmarks"))  # the scripts import each other, as when run from there
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _main(bench, args):
    """``bench.main`` on ``args``, leaving the test process's thread count as it was (``--threads`` sets it)."""
    threads = torch.get_num_threads()
    try:
        return bench.main(bench.parse_args(args))
    finally:
        torch.set_num_threads(threads)


def test_throughput_contenders_reach_the_same_bound(shared_data, tmp_path):
    """aevb and plain-B (and aevb-mc and plain-A) train on the same minibatches and noise: same test bound."""
    bench = _script("bench_train")
    out = tmp_path / "train.json"
    args = bench.parse_args([
        "--models", "frey", "--rounds", "2", "--steps", "3", "--warmup-steps", "2", "--eval-points", "50",
        "--contenders", "aevb", "plain-B", "aevb-mc", "plain-A", "pyro-B", "--data-dir", str(shared_data), "--out", str(out),
    ])
    bench.main(args)
    rows = {row["name"]: row for row in json.loads(out.read_text())["results"]["frey"]}
    assert set(rows) == {"aevb", "plain-B", "aevb-mc", "plain-A", "pyro-B"}
    for mine, plain in (("aevb", "plain-B"), ("aevb-mc", "plain-A")):
        # 11 steps: rounding differences (~1e-7 relative per step) stay far below 1e-3 nats.
        assert rows[mine]["test_bound"] == pytest.approx(rows[plain]["test_bound"], abs=1e-3)
        assert len(rows[mine]["samples_per_s"]) == 2 and rows[mine]["ratio"] > 0
    assert rows["plain-B"]["ratio"] == 1.0


def test_million_sample_mode_matches_the_cli_and_the_plain_loop(shared_data, tmp_path):
    """--samples: pyro-aevb train (a subprocess) and the plain loop, same seed, same bound after training."""
    bench = _script("bench_train")
    out = tmp_path / "samples.json"
    _main(bench, [
        "--samples", "500", "--methods", "aevb", "plain-B", "--threads", "1",  # one thread each: the same sums
        "--data-dir", str(shared_data), "--out", str(out),
    ])
    report = json.loads(out.read_text())
    runs = {run["method"]: run for run in report["train_runs"]}
    assert runs["aevb"]["samples"] == runs["plain-B"]["samples"] == 500
    assert runs["aevb"]["total_seconds"] > runs["aevb"]["step_seconds"] > 0
    assert runs["aevb"]["test_bound"] == pytest.approx(runs["plain-B"]["test_bound"], abs=1e-3)
    assert report["summary"][1]["ratio"] == 1.0


def test_marginal_benchmark_runs(shared_data, tmp_path):
    bench = _script("bench_marginal")
    out = tmp_path / "marginal.json"
    bench.main(bench.parse_args([
        "--num-reference", "1", "--num-data", "3", "--repeats", "1", "--warmup-steps", "3", "--num-samples", "3",
        "--data", "mnist", "--data-dir", str(shared_data), "--out", str(out),
    ]))
    rows = json.loads(out.read_text())["rows"]
    assert [row["datapoints"] for row in rows] == [1, 1, 3]
    assert all(row["wall_s"] > 0 for row in rows)


@pytest.mark.parametrize("hidden, multiply_adds", [("8", 2 * 8 + 8 * 784), ("8,6", 2 * 8 + 8 * 6 + 6 * 784)])
def test_marginal_benchmark_ais_runs(shared_data, tmp_path, hidden, multiply_adds):
    """--ais-data: AIS on the paper's VAE (tiny: 2 datapoints, 2 chains, 3 temperatures) and its FLOP-rate ratio."""
    bench = _script("bench_marginal")
    out = tmp_path / "ais.json"
    _main(bench, [
        "--num-reference", "0", "--num-data", "0", "--repeats", "1", "--ais-data", "2", "--ais-chains", "2",
        "--ais-temps", "3", "--num-steps-ais", "2", "--ais-latent", "2", "--ais-hidden", hidden, "--ais-start", "guide",
        "--data", "mnist", "--data-dir", str(shared_data), "--threads", "1", "--out", str(out),
    ])
    report = json.loads(out.read_text())["ais"]
    assert report["datapoints"] == 2 and report["rows"] == 4
    # 2 datapoints x 2 chains x 2 transitions x 2 leapfrog steps, each a forward and backward pass of the decoder
    assert report["useful_flops"] == 2 * 2 * 2 * 2 * 4 * multiply_adds
    assert report["wall_s"] > 0 and report["ratio"] > 0


def test_evaluate_distributed_benchmark_runs():
    """One and two processes (tiny: 4 points in chunks of 2, 3 temperatures) give the same estimates."""
    bench = _script("bench_evaluate_distributed")
    report, same = bench.main(bench.parse_args([
        "--dataset", "mnist5k", "--latent-dim", "2", "--hidden", "8", "--num-points", "4", "--chunk-points", "2",
        "--num-temps", "3", "--repeats", "1", "--nproc", "1", "2",
    ]))
    assert same, "the per-datapoint estimates differ between 1 and 2 processes"
    assert report[1]["wall_ratio"] == 1.0 and report[2]["cpu_s"][0] > 0


def test_bench_all_parts():
    """The one command's parts: both thread settings, the million samples, the marginal likelihood; more M on a GPU."""
    bench = _script("bench_all")
    cpu = bench.parts(bench.parse_args(["--data-dir", "data"]))
    assert [title for title, _, _ in cpu] == [
        "Training throughput, PyTorch's default threads", "Training throughput, one thread",
        "One million MNIST samples", "Marginal likelihood estimator (Appendix D)",
        "The pieces of a step and of the command (CPU)",
    ]
    assert "1e6" in cpu[2][2] and all("--data-dir" in arguments for _, _, arguments in cpu)
    gpu = bench.parts(bench.parse_args(["--device", "cuda", "--data-dir", "data"]))
    sizes = [arguments[arguments.index("--batch-size") + 1] for _, _, arguments in gpu if "--batch-size" in arguments]
    assert sizes == ["1000", "10000"]
    assert all(arguments[arguments.index("--device") + 1] == "cuda" for _, script, arguments in gpu if script != bench.PIECES)


def test_pieces_benchmark_runs(shared_data, tmp_path):
    """Every part runs; the flush leaves no subnormal weight at step 50, the 64-step schedule leaves many."""
    bench = _script("bench_parts")
    report = _main(bench, [
        "--repeats", "1", "--plain-steps", "1000", "--threads", "1", "--parts", "flush", "sparse", "minibatch",
        "transient", "subnormals", "--data-dir", str(shared_data), "--out", str(tmp_path / "parts.json"),
    ])
    assert set(report) == {"flush", "sparse", "minibatch", "transient", "subnormals"}
    counts = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in report["transient"].splitlines()
              if "subnormal weights at step 50" in line}
    assert int(counts["flush every 64 steps: subnormal weights at step 50"].replace(",", "")) > 1000
    assert counts["flush-to-zero mode on (the floor): subnormal weights at step 50"] == "0"


def test_bdmc_benchmark_brackets(capsys):
    """
    The table's bounds bracket the exact log p(x) of its linear-Gaussian model: forward AIS is below it in
    expectation and reverse AIS above. T = 5 temperatures is a short path, so each bound is off by about
    half a nat; over 200 simulated datapoints its mean is off by more than 4 of its standard errors (0.10 and
    0.06 nats), so each is asked to be on its side by 2. The gap is the upper mean minus the lower.
    """
    bench = _script("bench_bdmc")
    bench.main(bench.parse_args(["--temps", "5", "--num-data", "200", "--num-chains", "2"]))
    row = capsys.readouterr().out.strip().splitlines()[-1]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    (lower, lower_se), (upper, upper_se) = (map(float, cell.split("±")) for cell in cells[1:3])
    assert cells[0] == "5", row
    assert lower + 2 * lower_se < 0, f"forward AIS is not below the exact log p(x): {row}"
    assert upper - 2 * upper_se > 0, f"reverse AIS is not above the exact log p(x): {row}"
    assert float(cells[3]) == pytest.approx(upper - lower, abs=2e-3), f"the gap is not upper - lower: {row}"


def test_iwae_contenders_train_the_same_objective(shared_data, tmp_path):
    """The IWAE contender and the hand-written loop: the same loss and gradients on the same draws, and both run."""
    bench = _script("bench_train")
    from pyro_aevb.models.closed_forms import iwae_loss

    torch.manual_seed(0)
    vae = bench.burda_vae(784)
    x = torch.rand(20, 784).round()
    results = []
    for loss_fn in (iwae_loss, bench.plain_iwae_loss):
        torch.manual_seed(1)
        loss = loss_fn(vae, x, 60000, 5)
        results.append((loss, torch.autograd.grad(loss, list(vae.parameters()))))
    (mine, grads), (plain, expected) = results
    assert torch.allclose(mine, plain, rtol=1e-6), f"losses {mine.item()} and {plain.item()}"
    for a, b in zip(grads, expected):  # float32 sums in another order
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-3 * b.abs().max().item()), "gradients differ"
    out = tmp_path / "iwae.json"
    _main(bench, ["--models", "frey", "--rounds", "2", "--steps", "3", "--warmup-steps", "2", "--eval-points", "50",
                  "--contenders", "iwae", "plain-iwae", "--data-dir", str(shared_data), "--out", str(out)])
    rows = {row["name"]: row for row in json.loads(out.read_text())["results"]["frey"]}
    assert rows["iwae"]["ratio"] > 0 and rows["plain-iwae"]["ratio"] == 1.0


def test_checksum_benchmark_runs(tmp_path):
    """The digests' cost is measured on a real checkpoint; a save with digests includes the hash's bytes."""
    bench = _script("bench_checksum")
    medians = _main(bench, ["--dataset", "mnist5k", "--hidden", "20", "--latent-dim", "2", "--repeats", "1",
                            "--out", str(tmp_path / "checksum.json")])
    assert medians["bytes"] > 0 and all(medians[k] > 0 for k in ("serialize", "sha256", "record", "save", "plain", "load"))
    assert json.loads((tmp_path / "checksum.json").read_text())["bytes"] == medians["bytes"]
