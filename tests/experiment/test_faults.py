"""Faults of distributed jobs: a killed rank, runs side by side, a shared or unusable output folder."""

import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch

from pyro_aevb import RunDirError, TrainConfig, train
from tests.helpers.commands import TINY, assert_same_run, run, single, torchrun

from tests.helpers.common import wait_for


def _children(pid):
    """Every descendant process of ``pid`` (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        for child in (task / "children").read_text().split():
            found += [int(child), *_children(int(child))]
    return found


def _rank_pid(launcher, rank):
    for pid in _children(launcher.pid):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return pid
    return None


def _popen(command):
    import os

    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


# -- a rank dies --------------------------------------------------------------------------------


def test_killed_rank_ends_the_job_and_resume_finishes_it(tmp_path):
    """SIGKILL rank 1 mid-run: the job exits non-zero within 60 s, the last checkpoint is at most one
    checkpoint interval old, and a resumed job ends exactly where an uninterrupted single process does."""
    # Long enough that the job is still running when the test, on a loaded machine, gets to kill it.
    samples = 30000
    args = [*TINY, "--samples", samples, "--eval-points", 6, "--checkpoint-every", 1000]
    out = tmp_path / "killed"
    job = _popen(torchrun(*args, "--out", out))
    assert wait_for(out / "checkpoint.pt", job), "the job ended before its first checkpoint"
    time.sleep(0.5)
    victim = _rank_pid(job, 1)
    assert victim is not None, "rank 1 not found among the launcher's processes"
    import os
    import signal

    os.kill(victim, signal.SIGKILL)
    killed = time.time()
    try:
        _, stderr = job.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        job.kill()
        pytest.fail("the job still runs 60 s after one of its ranks was killed")
    assert job.returncode != 0, "a job that lost a rank must fail"
    assert "rank      : 1" in stderr or "SIGKILL" in stderr, f"torchrun names no failed rank: {stderr[-2000:]}"
    print(f"job ended {time.time() - killed:.1f} s after the kill")
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["samples"] % 1000 == 0 and state["samples"] < samples, f"checkpoint at {state['samples']} samples"

    reference = run(single(*args, "--out", tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr
    resumed = run(torchrun(*args, "--out", out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(out, tmp_path / "reference")


# -- runs side by side ----------------------------------------------------------------------------


def test_concurrent_jobs_in_other_folders_do_not_interfere(tmp_path):
    args = [*TINY, "--samples", 1000]
    jobs = {seed: _popen(torchrun(*args, "--seed", seed, "--out", tmp_path / f"job{seed}")) for seed in (1, 2)}
    for seed, job in jobs.items():
        _, stderr = job.communicate(timeout=240)
        assert job.returncode == 0, f"job with seed {seed}: {stderr[-3000:]}"
    for seed in jobs:
        solo = run(single(*args, "--seed", seed, "--out", tmp_path / f"solo{seed}"))
        assert solo.returncode == 0, solo.stderr
        assert_same_run(tmp_path / f"job{seed}", tmp_path / f"solo{seed}")
    first = (tmp_path / "job1" / "metrics.csv").read_text()
    assert first != (tmp_path / "job2" / "metrics.csv").read_text(), "two seeds gave the same run"


def test_second_job_on_the_same_folder_refuses_and_leaves_the_first_intact(tmp_path):
    args = [*TINY, "--samples", 40000]
    out = tmp_path / "run"
    first = _popen(torchrun(*args, "--out", out))
    assert wait_for(out / "config.json", first), "the first job ended before writing its config"
    second = run(torchrun(*args, "--out", out))
    assert second.returncode != 0, "a second job on a folder in use must fail"
    # While the first job's ranks run, the lock refuses the second ("in use"); if they have just finished
    # (torchrun itself may still be tearing down), the finished run refuses it ("already holds a run").
    # Either way every rank of the second job must say so, and the first run must stay intact.
    refusal = "in use by another run" if "in use by another run" in second.stderr else "already holds a run"
    assert second.stderr.count(refusal) >= 2, f"every rank of the second job should refuse: {second.stderr[-3000:]}"
    _, stderr = first.communicate(timeout=240)
    assert first.returncode == 0, f"the first job was disturbed: {stderr[-3000:]}"
    reference = run(single(*args, "--out", tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr
    assert_same_run(out, tmp_path / "reference")


# -- unusable output folders ----------------------------------------------------------------------


def test_unwritable_folder_fails_every_rank_before_training(tmp_path):
    (tmp_path / "file.txt").write_text("not a folder")
    started = time.time()
    result = run(torchrun(*TINY, "--samples", 1000, "--out", tmp_path / "file.txt" / "run"), timeout=120)
    assert result.returncode != 0
    assert result.stderr.count("cannot write to the output folder") >= 2, result.stderr[-3000:]
    assert "]: Traceback" not in result.stderr, "the ranks should fail with a message, not a traceback"
    assert time.time() - started < 100


def test_full_disk_fails_before_training(tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=100_000))
    config = TrainConfig(dataset="mnist5k", latent_dim=2, hidden=20, samples=200)
    with pytest.raises(RunDirError, match="MiB free"):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "config.json").exists(), "nothing may be written to a full disk"
