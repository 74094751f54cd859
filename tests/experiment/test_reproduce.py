"""Smoke tests of `pyro-aevb reproduce`: each experiment at a tiny budget on real data."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyro_aevb.experiment.checkpoint import load_checkpoint
from pyro_aevb.errors import UserError
from pyro_aevb.experiment.plots import plot_lower_bound
from pyro_aevb.experiment.paper_runs import FIGURE2_LATENTS, FIGURE5_LATENTS
from pyro_aevb.experiment.workers import worker_threads
from tests.helpers.common import wait_for


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
    reproduce("figure3", "--samples", 300, "--mcem-samples", 200, "--num-train", 100, 300, "--log-marginal-points", 4,
              data=shared_data, out=tmp_path)
    dest = tmp_path / "figure3"
    assert (dest / "figure3.png").is_file() and (dest / "figure3.pdf").is_file()
    rows = table(dest / "results.csv")
    cells = {(r["method"], int(r["num_train"])) for r in rows}
    assert cells == {(m, n) for m in ("aevb", "wake-sleep", "mcem") for n in (100, 300)}
    budgets = {r["method"]: int(r["samples"]) for r in rows}
    assert budgets == {"aevb": 300, "wake-sleep": 300, "mcem": 200}, f"samples trained per method: {budgets}"
    assert all(r["train_log_marginal"] and r["test_log_marginal"] for r in rows), "a marginal likelihood is missing"


def test_manifold(shared_data, tmp_path):
    reproduce("manifold", "--samples", 300, data=shared_data, out=tmp_path)
    dest = tmp_path / "manifold"
    for name in ("figure4.png", "figure4.pdf", "figure5.png", "figure5.pdf", "results.csv"):
        assert (dest / name).is_file(), f"{name} missing"
    rows = table(dest / "results.csv")
    assert {(r["dataset"], int(r["latent_dim"])) for r in rows} == {("frey", 2)} | {("mnist", z) for z in FIGURE5_LATENTS}


def _proc_stat(pid):
    """(state, parent pid) of a process from /proc, or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def _workers(parent):
    """The pool's worker processes of ``parent`` (children running multiprocessing's spawn_main)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (_proc_stat(entry.name) or (None, None))[1] == parent:
            with open(entry / "cmdline", "rb") as f:
                if b"spawn_main" in f.read():
                    pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_stopped_experiment_leaves_no_worker_training(sig, shared_data, tmp_path):
    """
    Stopping `reproduce` mid-run (SIGTERM, or SIGKILL with no chance to clean up) stops its workers
    too, each with a checkpoint of its run, instead of leaving them training unwatched into folders
    the next call resumes.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyro_aevb", "reproduce", "figure2", "--dataset", "frey", "--samples", "1e7",
         "--eval-points", "2", "--jobs", "2", "--data-dir", str(shared_data), "--out", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        runs = [tmp_path / "runs" / f"frey-{method}-z2-s1e07" for method in ("aevb", "wake-sleep")]
        for run in runs:  # into the training loop: its first evaluation (1,000 samples) is written
            assert wait_for(run / "metrics.csv", proc), f"{run.name} did not start: {proc.communicate()[1][-2000:]}"
            deadline = time.time() + 120
            while len((run / "metrics.csv").read_text().splitlines()) < 2 and time.time() < deadline:
                time.sleep(0.1)
        workers = _workers(proc.pid)
        assert len(workers) == 2, f"expected 2 workers, found {workers}"
        os.kill(proc.pid, sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    # A stopped worker finishes its step (milliseconds here) and writes a checkpoint; an orphan polls
    # for its parent once a second.
    deadline = time.time() + 30
    while any((_proc_stat(pid) or ("Z",))[0] != "Z" for pid in workers) and time.time() < deadline:
        time.sleep(0.1)
    alive = [pid for pid in workers if (_proc_stat(pid) or ("Z",))[0] != "Z"]
    assert not alive, f"workers {alive} still running 30 s after the experiment was stopped"
    if sig == signal.SIGTERM:
        assert proc.returncode == 130 and "the same command resumes" in stderr, (proc.returncode, stderr[-2000:])
    for run in runs:
        assert (run / "checkpoint.pt").exists(), (sorted(p.name for p in run.iterdir()), stderr[-3000:])
        state = load_checkpoint(run / "checkpoint.pt")
        assert 0 < state["samples"] < 10**7, f"{run.name}: checkpoint at {state['samples']} samples"


def test_worker_threads_follow_omp_num_threads(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert [worker_threads(jobs) for jobs in (1, 2, 3, 16)] == [8, 4, 2, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert worker_threads(1) == 1  # one run on a busy machine: no threads waiting for each other
    monkeypatch.setenv("OMP_NUM_THREADS", "two")
    with pytest.raises(UserError, match="OMP_NUM_THREADS"):
        worker_threads(1)


def test_lower_bound_axis_fits_the_points_from_y_from(tmp_path):
    rows = [
        {"samples": s, "train_lower_bound": b, "test_lower_bound": b - 1}
        for s, b in ((10, -500.0), (100, -120.0), (1000, -100.0))
    ]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    plot_lower_bound({"AEVB": rows}, None, ax=ax, y_from=100)
    low, high = ax.get_ylim()
    assert -123 < low < -121 and -100 < high < -98, (low, high)  # -121 and -100, padded by 5% of 21
    fig, ax = plt.subplots()
    plot_lower_bound({"AEVB": rows}, None, ax=ax)
    assert ax.get_ylim()[0] < -500
    plt.close("all")


def test_loglik(shared_data, tmp_path):
    """
    The table of log p(x) estimators: every run of Figure 3 and the three others, each with Appendix D,
    AIS and BDMC, and importance sampling where the run has an encoder; every cell is the estimate that
    evaluate_run writes for that run and estimator; a second call computes nothing again.
    """
    import json

    from pyro_aevb.experiment.evaluate import evaluate_run

    args = ("loglik", "--samples", 300, "--mcem-samples", 200, "--num-train", 100, "--log-marginal-points", 4,
            "--test-points", 3, "--is-samples", 10, "--num-chains", 2, "--num-temps", 3, "--bdmc", 3)
    reproduce(*args, data=shared_data, out=tmp_path)
    dest = tmp_path / "loglik"
    rows = table(dest / "results.csv")
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(rows) == len(runs) == 6, runs  # AEVB, wake-sleep, MCEM on 100 digits; MNIST z20, Frey z10, mixture
    assert any("MixturePriorVAE" in name for name in runs) and any(name.startswith("frey-aevb-z10") for name in runs)
    for row in rows:
        for column in ("appendix_d", "ais", "bdmc_lower", "bdmc_upper", "bdmc_gap", "ais_seconds", "bdmc_seconds"):
            assert row[column] != "", (row["model"], column)
        assert (row["is"] == "") == (", mcem," in row["model"]), row
        assert abs(float(row["bdmc_gap"]) - (float(row["bdmc_upper"]) - float(row["bdmc_lower"]))) < 0.02, row
    # A cell is the estimate of evaluate_run with the table's settings (the Frey Face run's AIS, say).
    frey = next(name for name in runs if name.startswith("frey"))
    saved = json.loads((dest / frey / "ais.json").read_text())
    again = evaluate_run(tmp_path / "runs" / frey, "ais", num_points=3, data_dir=shared_data, num_chains=2,
                         num_temps=3, num_steps=10)
    assert again["log_marginal_likelihood"] == pytest.approx(saved["log_marginal_likelihood"], abs=1e-4)
    frey_row = next(r for r in rows if r["model"].startswith("frey"))
    assert float(frey_row["ais"]) == pytest.approx(saved["log_marginal_likelihood"], abs=0.01)
    second = reproduce(*args, data=shared_data, out=tmp_path)
    assert "0 estimates to compute" in second.stdout, second.stdout[-2000:]


def test_loglik_names_a_failed_estimate_and_keeps_the_rest(tmp_path):
    """An estimate that fails (here: its run folder is gone) is named with its run; the command can be rerun."""
    from pyro_aevb.experiment.loglik import LoglikSettings, evaluate_runs
    from pyro_aevb.experiment.runs import run_name
    from pyro_aevb.experiment.config import TrainConfig

    config = TrainConfig(dataset="mnist5k", latent_dim=2, hidden=20, samples=300)
    with pytest.raises(UserError, match=f"estimate of {run_name(config)} failed.*the same command computes the rest"):
        evaluate_runs([config], {run_name(config): tmp_path / "missing"}, tmp_path / "loglik",
                      LoglikSettings(num_points=2), log=lambda line: None)


def test_iwae(shared_data, tmp_path):
    """
    Burda et al.'s Table 1 at toy sizes (2 stages: 4 epochs of 100 digits): one row per K, trained with
    their setup; each row's log p(x) is the saved K-sample importance-weighted bound, its active units
    the count of unit_activity over the threshold; a second call trains and computes nothing again.
    """
    import json

    from pyro_aevb.experiment.iwae_table import burda_schedule

    args = ("iwae", "--num-train", 100, "--stages", 2, "--num-particles", 1, 3, "--is-points", 5, "--is-samples", 10,
            "--ais-points", 3, "--num-chains", 2, "--num-temps", 3, "--bdmc", 3)
    reproduce(*args, data=shared_data, out=tmp_path)
    rows = table(tmp_path / "iwae" / "results.csv")
    assert [(r["model"], int(r["k"]), int(r["epochs"])) for r in rows] == [("VAE", 1, 4), ("IWAE", 3, 4)], rows
    runs = {int(r["k"]): r for r in rows}
    for k, row in runs.items():
        for column in ("test_log_px", "ais", "bdmc_gap", "active_units", "train_seconds"):
            assert row[column] != "", (k, column)
    assert runs[1]["burda_et_al_full_schedule"] == "-86.76"
    folders = sorted((tmp_path / "runs").iterdir())
    assert len(folders) == 2
    for folder in folders:
        config = json.loads((folder / "config.json").read_text())["config"]
        assert config["hidden"] == [200, 200] and config["latent_dim"] == 50 and config["batch_size"] == 20
        assert config["optim"] == "Adam" and config["optim_options"] == {"betas": [0.9, 0.999], "eps": 1e-4}
        assert config["lr"] == 1e-3 and config["lr_scheduler_options"]["milestones"] == [1]
        assert config["samples"] == 4 * 100 and config["binarize"] == "dynamic" and config["weight_decay"] == 0
        saved = json.loads((tmp_path / "iwae" / folder.name / "is.json").read_text())
        assert saved["options"] == {"num_samples": 10} and saved["num_points"] == 5
        row = runs[config["num_particles"]]
        assert float(row["test_log_px"]) == pytest.approx(saved["log_marginal_likelihood"], abs=0.01)
        units = json.loads((tmp_path / "iwae" / folder.name / "active_units.json").read_text())
        assert int(row["active_units"]) == sum(a > 1e-2 for a in units["activity"]) == units["active_units"]
    # The schedule: stage i is 3^i epochs at 0.001 * 10^(-i/7).
    epochs, options = burda_schedule(8)
    assert epochs == 3280 and options["milestones"] == [1, 4, 13, 40, 121, 364, 1093]
    lrs = [1e-3 * options["gamma"] ** sum(e >= m for m in options["milestones"]) for e in (0, 1, 3, 4, 1093)]
    assert lrs == pytest.approx([1e-3, 1e-3 * 10 ** (-1 / 7), 1e-3 * 10 ** (-1 / 7), 1e-3 * 10 ** (-2 / 7), 1e-4])
    assert burda_schedule(6)[0] == 364
    second = reproduce(*args, data=shared_data, out=tmp_path)
    assert "2 of 2 runs already finished" in second.stdout and "0 estimates to compute" in second.stdout
    assert "counted" not in second.stdout
    # Other estimator settings in the same folder: the saved estimates are refused by name, not reused.
    other = [*map(str, args)]
    other[other.index("--is-samples") + 1] = "20"
    third = subprocess.run(
        [sys.executable, "-m", "pyro_aevb", "reproduce", *other, "--data-dir", str(shared_data), "--out", str(tmp_path),
         "--eval-points", "2"], capture_output=True, text=True, timeout=600)
    assert third.returncode != 0 and "is.json holds a result made with other settings" in third.stderr, third.stderr
    assert "num_samples 10 there, 20 now" in third.stderr, third.stderr


def test_saved_results_are_reused_only_with_their_settings(tmp_path):
    """read_cached: a result made with the same settings is read; other settings or none recorded are refused by name."""
    import json

    from pyro_aevb.experiment.loglik import read_cached

    path = tmp_path / "ais.json"
    assert read_cached(path, {"num_temps": 1000}) is None
    path.write_text(json.dumps({"log_marginal_likelihood": -90.0, "settings": {"num_temps": 1000, "seed": 0}}))
    assert read_cached(path, {"num_temps": 1000, "seed": 0})["log_marginal_likelihood"] == -90.0
    with pytest.raises(UserError, match=r"ais.json holds a result made with other settings .*num_temps 1000 there, 100 now"):
        read_cached(path, {"num_temps": 100, "seed": 0})
    with pytest.raises(UserError, match=r"precision 'unset' there, 'bf16' now"):
        read_cached(path, {"num_temps": 1000, "seed": 0, "precision": "bf16"})
    path.write_text(json.dumps({"log_marginal_likelihood": -90.0}))
    with pytest.raises(UserError, match="it does not record its settings"):
        read_cached(path, {"num_temps": 1000})
    path.write_text("{not json")
    with pytest.raises(UserError, match="could not read .*ais.json"):
        read_cached(path, {"num_temps": 1000})


def test_iwae_bad_settings_are_named(tmp_path):
    from pyro_aevb.experiment.iwae_table import IwaeSettings, burda_schedule, iwae_configs
    from pyro_aevb.experiment.config import TrainConfig

    for stages in (0, 9, 2.0):
        with pytest.raises(ValueError, match="stages must be a whole number from 1 to 8"):
            burda_schedule(stages)
    with pytest.raises(ValueError, match="num_particles must be whole numbers >= 1"):
        iwae_configs(TrainConfig(), IwaeSettings(num_particles=(1, 0), num_train=100))
    result = subprocess.run([sys.executable, "-m", "pyro_aevb", "reproduce", "iwae", "--num-train", "100", "200",
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "give --num-train one number, got [100, 200]" in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists()
