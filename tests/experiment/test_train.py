"""The training loop, the command line and the run folder: end to end, resumption, and every user error."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pyro
import pytest
import torch
from filelock import FileLock

from pyro_aevb import (
    ConfigError, DataError, RunDirError, TrainConfig, TrainingDiverged, VAE, load_dataset, load_run, log_marginal_likelihood,
    lower_bound, train,
)
from pyro_aevb.data import DATASETS, Dataset
from pyro_aevb.experiment.methods import METHODS

from tests.helpers.common import wait_for

TINY = dict(dataset="mnist5k", latent_dim=2, hidden=20, eval_points=3, eval_train_points=200, checkpoint_every=500)


def cli(*args, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "pyro_aevb", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )


def metrics_without_time(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


# -- end to end ----------------------------------------------------------------------------------


def test_cli_train_writes_the_run_folder(tmp_path):
    out = tmp_path / "run"
    result = cli("train", "--dataset", "mnist5k", "--latent-dim", 2, "--hidden", 20, "--samples", 2000,
                 "--eval-points", 3, "--out", out, "--no-progress")
    assert result.returncode == 0, result.stderr
    for name in ("config.json", "metrics.csv", "checkpoint.pt", "checksums.json", "lower_bound.png", "reconstructions.png",
                 "manifold.png"):
        assert (out / name).is_file(), f"{name} missing from the run folder"
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["samples"] == 2000 and config["config"]["seed"] == 0
    assert {"torch", "pyro", "pyro_aevb", "numpy", "python"} <= set(config["versions"])
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["samples", "steps", "train_lower_bound", "test_lower_bound"] and "seconds" in header
    vae = load_run(out)
    x = torch.rand(3, 784).round()
    trace = pyro.poutine.trace(vae.guide).get_trace(x)
    assert trace.nodes["z"]["value"].shape == (3, 2), "guide's z site has event shape [Nz]"
    model_trace = pyro.poutine.trace(pyro.poutine.replay(vae.model, trace=trace)).get_trace(x)
    assert model_trace.nodes["x"]["is_observed"], "model's x site is observed"


def test_help_explains_every_option():
    for args in (["--help"], ["train", "--help"]):
        result = cli(*args)
        assert result.returncode == 0
    text = cli("train", "--help").stdout
    for option in ("--dataset", "--data-dir", "--latent-dim", "--hidden", "--method", "--samples", "--lr",
                   "--batch-size", "--seed", "--device", "--out", "--resume", "--binarize"):
        assert option in text, f"{option} missing from `pyro-aevb train --help`"


def test_python_api_returns_model_with_metrics(tmp_path):
    config = TrainConfig(samples=1000, **TINY)
    vae = train(config, tmp_path / "run", progress=False)
    assert isinstance(vae, VAE) and vae.metrics[-1]["samples"] == 1000
    # The recorded bound is the returned model's, recomputed independently on the whole test split with
    # the evaluation's seed: a metric from other parameters, other data or another estimator would differ.
    test_x = load_dataset(config.dataset).eval_split("test")
    expected = lower_bound(vae.model, vae.guide, test_x, seed=config.seed + 1)
    assert vae.metrics[-1]["test_lower_bound"] == pytest.approx(expected, rel=1e-6)
    train_x = load_dataset(config.dataset).eval_split("train", config.eval_train_points)
    assert vae.metrics[-1]["train_lower_bound"] == pytest.approx(lower_bound(vae.model, vae.guide, train_x, seed=config.seed + 1), rel=1e-6)


@pytest.mark.parametrize("dataset, margin", [("mnist", 200.0), ("frey", 300.0)])
def test_short_real_run_raises_the_bound(dataset, margin, shared_data, tmp_path):
    """3,000 samples (30 steps) of the paper's settings lift the bound far above its value at the N(0, 0.01)
    initialisation: MNIST starts near 784·log(1/2) ≈ -543 nats per datapoint."""
    config = TrainConfig(dataset=dataset, data_dir=str(shared_data), samples=3000, eval_points=2, eval_train_points=1000)
    vae = train(config, tmp_path / "run", progress=False)
    dataset = load_dataset(dataset, shared_data)
    x = {"train": dataset.eval_split("train", 1000), "test": dataset.eval_split("test")}
    pyro.clear_param_store()
    fresh = VAE(dataset.x_dim, config.latent_dim, vae.hidden_dim, likelihood=dataset.likelihood)
    for split in ("train", "test"):
        start = lower_bound(fresh.model, fresh.guide, x[split], seed=0)
        gain = vae.metrics[-1][f"{split}_lower_bound"] - start
        assert gain > margin, f"{split}: bound rose by {gain:.1f} nats from {start:.1f}, expected > {margin}"


# -- resumption ----------------------------------------------------------------------------------


def _device_run_resumes_and_loads_on_the_cpu(method, device, tmp_path):
    """
    ``--device DEVICE`` end to end, checked against references that are exact on that device: a run of 1,000
    samples resumed to 2,000 writes the metrics and ends at the parameters of one uninterrupted run of 2,000
    (the checkpoint keeps the device's random stream); its last row is the trained model's bound (or, without
    an encoder, its Appendix D log p(x)) recomputed on DEVICE from the saved run with the evaluation's seed;
    and the run read back on the CPU holds the same parameters, bit for bit.
    """
    args = ["train", "--dataset", "mnist5k", "--latent-dim", 2, "--hidden", 20, "--method", method, "--device", device,
            "--eval-points", 3, "--eval-train-points", 200, "--no-progress"]
    out, whole = tmp_path / "run", tmp_path / "whole"
    for extra in (["--samples", 1000, "--out", out], ["--samples", 2000, "--out", out, "--resume"],
                  ["--samples", 2000, "--out", whole]):
        result = cli(*args, *extra)
        assert result.returncode == 0, result.stderr
    rows, expected = metrics_without_time(out / "metrics.csv"), metrics_without_time(whole / "metrics.csv")
    assert int(rows[-1]["samples"]) == 2000 and [r["samples"] for r in rows] == [r["samples"] for r in expected]
    # 20 steps of the same kernels on the same device: float32 rounding at most (reductions with atomics
    # may add in another order), far below what other draws or a lost optimiser state change.
    for row, want in zip(rows, expected):
        for key, value in want.items():
            if value:
                assert float(row[key]) == pytest.approx(float(value), rel=1e-5), f"{key} at {want['samples']} samples"
    on_device, reference = load_run(out, device=device), load_run(whole, device=device)
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(on_device.state_dict()[name], value, rtol=1e-4, atol=1e-4, msg=f"parameter {name}")
    # The last row, recomputed: the same code on the same device and seed, so metrics.csv's six decimals.
    config = on_device.config
    data = load_dataset("mnist5k").to(device)
    for split, x in (("train", data.eval_split("train", 200)), ("test", data.eval_split("test"))):
        if not METHODS[method].has_encoder:
            column = f"{split}_log_marginal"
            with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
                torch.manual_seed(config.seed + 2)
                recomputed = log_marginal_likelihood(on_device.model, x[: config.log_marginal_points], "hmc")
            recomputed = recomputed.mean().item()
        else:
            column = f"{split}_lower_bound"
            recomputed = lower_bound(on_device.model, on_device.guide, x, seed=config.seed + 1)
        assert float(rows[-1][column]) == pytest.approx(recomputed, rel=1e-6), f"{column}: {rows[-1][column]} != {recomputed}"
    on_cpu = load_run(out)
    for name, value in on_device.state_dict().items():
        assert on_cpu.state_dict()[name].device.type == "cpu", f"{name} was not read onto the CPU"
        assert torch.equal(on_cpu.state_dict()[name], value.cpu()), f"{name} differs when read onto the CPU"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
@pytest.mark.parametrize("method", ["aevb", "aevb-mc", "wake-sleep", "mcem", "mcem-is", "iwae", "rws"])
def test_cli_trains_on_cuda_resumes_and_loads_on_the_cpu(method, tmp_path):
    _device_run_resumes_and_loads_on_the_cpu(method, "cuda", tmp_path)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_killed_and_resumed_run_writes_the_same_metrics(sig, tmp_path):
    args = ["train", "--dataset", "mnist5k", "--latent-dim", 2, "--hidden", 50, "--samples", 20000,
            "--eval-points", 12, "--eval-train-points", 500, "--checkpoint-every", 2000, "--no-progress"]
    reference = cli(*args, "--out", tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr

    out = tmp_path / "interrupted"
    proc = subprocess.Popen([sys.executable, "-m", "pyro_aevb", *map(str, args), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(out / "checkpoint.pt", proc), "the run ended before writing its first checkpoint"
    time.sleep(0.3)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    else:
        assert proc.returncode == 130, f"Ctrl-C should save and exit 130, got {proc.returncode}: {stderr}"
        assert "checkpoint saved" in stderr
    killed_at = torch.load(out / "checkpoint.pt", weights_only=False)["samples"]
    assert killed_at < 20000, "the run finished before it was interrupted"

    resumed = cli(*args, "--out", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert metrics_without_time(out / "metrics.csv") == metrics_without_time(tmp_path / "reference" / "metrics.csv")


def test_resume_refuses_changed_settings(tmp_path):
    out = tmp_path / "run"
    train(TrainConfig(samples=500, **TINY), out, progress=False)
    result = cli("train", "--out", out, "--resume", "--dataset", "frey")
    assert result.returncode == 2 and "dataset='frey'" in result.stderr and "Traceback" not in result.stderr


def test_resume_extends_the_budget(tmp_path):
    out = tmp_path / "run"
    train(TrainConfig(samples=500, **TINY), out, progress=False)
    vae = train(None, out, resume=True, progress=False, samples=1000)
    assert vae.metrics[-1]["samples"] == 1000


# -- faults and user errors -------------------------------------------------------------------------


class ExplodingVAE(VAE):
    """Its likelihood turns NaN after a given number of steps."""

    steps = 0

    def model(self, x, num_data=None):
        if num_data is not None:  # a training step (evaluation passes no num_data)
            ExplodingVAE.steps += 1
            if ExplodingVAE.steps > 12:
                x = x * float("nan")
        super().model(x, num_data)


def test_nan_stops_the_run_and_keeps_the_last_checkpoint(tmp_path):
    ExplodingVAE.steps = 0
    config = TrainConfig(samples=3000, model_class=f"{__name__}:ExplodingVAE", **TINY)
    with pytest.raises(TrainingDiverged, match="at step 13 ") as info:
        train(config, tmp_path / "run", progress=False)
    assert "intact" in str(info.value)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert state["samples"] == 1000, f"last good checkpoint at {state['samples']} samples, expected 1000"
    assert all(torch.isfinite(v).all() for v in state["vae"].values()), "checkpoint holds non-finite parameters"


def test_bernoulli_data_outside_unit_interval_is_refused(tmp_path, monkeypatch):
    bad = Dataset(name="bad", train=torch.full((200, 4), 2.0), test=torch.rand(20, 4), image_shape=(2, 2),
                  likelihood="bernoulli", binarize="none")
    monkeypatch.setitem(DATASETS, "bad", lambda data_dir, download: bad)
    with pytest.raises(DataError, match=r"outside \[0, 1\]"):
        train(TrainConfig(dataset="bad", samples=100, binarize="none"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoint.pt").exists(), "nothing may be trained on bad data"


def test_data_dimension_must_match_the_model(tmp_path):
    config = TrainConfig(samples=100, model_options={"x_dim": 560}, **TINY)
    with pytest.raises(ConfigError, match="784"):
        train(config, tmp_path / "run", progress=False)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "nosuchset"], "unknown data set 'nosuchset'"),
        (["--dataset", "mnist", "--data-dir", "{tmp}/nowhere"], "does not exist"),
        (["--dataset", "mnist5k", "--out", "{tmp}/file.txt/run"], "cannot write to the output folder"),
        (["--dataset", "mnist5k", "--lr", "-1"], "lr > 0"),
    ],
    ids=["unknown-dataset", "missing-data-dir", "unwritable-out", "bad-lr"],
)
def test_cli_user_errors_exit_cleanly(args, message, tmp_path):
    (tmp_path / "file.txt").write_text("not a folder")
    args = [a.format(tmp=tmp_path) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "run")]
    result = cli("train", *args, "--samples", 100)
    assert result.returncode == 2, f"expected exit 2, got {result.returncode}: {result.stderr}"
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_second_run_on_a_locked_folder_refuses(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with FileLock(out / ".lock", timeout=0):
        result = cli("train", "--dataset", "mnist5k", "--samples", 100, "--out", out)
    assert result.returncode == 2 and "in use by another run" in result.stderr


def test_existing_run_is_not_overwritten(tmp_path):
    out = tmp_path / "run"
    train(TrainConfig(samples=200, **TINY), out, progress=False)
    before = (out / "checkpoint.pt").read_bytes()
    with pytest.raises(RunDirError, match="already holds a run"):
        train(TrainConfig(samples=200, **TINY), out, progress=False)
    assert (out / "checkpoint.pt").read_bytes() == before


def test_load_run_ignores_another_models_params(tmp_path):
    """Loading two runs with different data dimensions in one process: the second must not pick up the
    first one's parameters from Pyro's global param store."""
    a = train(TrainConfig(samples=200, **TINY), tmp_path / "a", progress=False)
    pyro.clear_param_store()
    b = train(TrainConfig(samples=200, **{**TINY, "latent_dim": 3}), tmp_path / "b", progress=False)
    x = torch.rand(5, 784).round()
    first, second = load_run(tmp_path / "a"), load_run(tmp_path / "b")
    assert second.z_dim == 3 and first.z_dim == 2
    for loaded, trained in ((first, a), (second, b)):
        for (name, p), q in zip(loaded.state_dict().items(), trained.state_dict().values()):
            assert torch.equal(p, q), f"{name} differs after load_run"
    assert lower_bound(first.model, first.guide, x, seed=1) == lower_bound(a.model, a.guide, x, seed=1)
    assert lower_bound(first.model, first.guide, x, seed=1) != lower_bound(second.model, second.guide, x, seed=1)


def test_a_second_sigterm_still_lets_the_checkpoint_be_written():
    """
    SIGTERM only asks for a stop at the end of the step, however often it comes (reproduce and a worker's
    parent watch both send one); a second Ctrl-C (SIGINT) stops at once.
    """
    from pyro_aevb.experiment.train import _InterruptFlag

    with _InterruptFlag() as flag:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag.is_set
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs between bytecodes, at the latest here


def test_default_evaluation_schedule_is_sparse_and_the_papers_stays_available(monkeypatch):
    from pyro_aevb.experiment import reproduce
    from pyro_aevb.experiment.schedule import eval_schedule

    # Default (eval_points=None): no two evaluations less than a factor 2 apart (10 with log p(x)).
    default = eval_schedule(10**6, 100)
    assert default[0] == 1000 and default[-1] == 10**6 and len(default) == 10
    assert all(b >= 2 * a for a, b in zip(default, default[1:]))
    assert eval_schedule(20000, 100, min_ratio=10) == [1000, 20000]
    assert eval_schedule(10**6, 100, min_ratio=10) == [1000, 10000, 100000, 10**6]
    # An explicit count keeps the paper's log-spaced schedule, crowded at the start for a short run.
    paper = eval_schedule(20000, 100, 30)
    assert len(paper) == 30 and paper[:3] == [1000, 1200, 1300]
    # The defaults evaluate fewer points than the paper's figures; reproduce pins the figures' settings.
    config = TrainConfig()
    assert (config.eval_points, config.eval_train_points, config.log_marginal_points) == (None, 1000, 100)
    seen = []

    def capture(base, *args):
        seen.append(base)
        raise KeyboardInterrupt

    monkeypatch.setattr(reproduce, "figure2", capture)
    with pytest.raises(KeyboardInterrupt):
        reproduce.reproduce("figure2", out=None)
    assert (seen[0].eval_points, seen[0].eval_train_points, seen[0].log_marginal_points) == (20, 10_000, 100)
