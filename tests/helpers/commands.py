"""
Command lines of training runs, in one process or as a torchrun job of several, and the check that two
runs computed the same: shared by the tests of distributed training and of its faults.
"""

import os
import subprocess
import sys

import pytest
import torch

from pyro_aevb import load_run
from pyro_aevb.experiment.rundir import read_metrics

TINY = ["--dataset", "mnist5k", "--latent-dim", 2, "--hidden", 20, "--eval-points", 3,
        "--eval-train-points", 200, "--checkpoint-every", 500, "--no-progress"]

# Float32 sums split over two ranks and averaged in another order: the bounds (hundreds of nats)
# agree to about 1e-7 relative per step; 1e-5 leaves room for 20 steps of Adagrad.
RTOL = 1e-5


def torchrun(*args, nproc=2):
    """The command line of ``torchrun --standalone`` (a free port, so jobs run side by side) training ``args``."""
    return [os.path.join(os.path.dirname(sys.executable), "torchrun"), f"--nproc_per_node={nproc}", "--standalone",
            "-m", "pyro_aevb", "train", *map(str, args)]


def run(command, timeout=240):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def single(*args):
    return [sys.executable, "-m", "pyro_aevb", "train", *map(str, args)]


def assert_same_run(out, reference, rtol=RTOL):
    """Same metrics (but the timings) and the same final parameters, within ``rtol``."""
    rows, expected = read_metrics(out / "metrics.csv"), read_metrics(reference / "metrics.csv")
    assert [r["samples"] for r in rows] == [r["samples"] for r in expected], "evaluated at other sample counts"
    for row, want in zip(rows, expected):
        for key, value in want.items():
            if key != "seconds" and value is not None:
                assert row[key] == pytest.approx(value, rel=rtol), f"{key} at {want['samples']:.0f} samples"
    params = load_run(out).state_dict()
    for name, value in load_run(reference).state_dict().items():
        # Rounding differences grow with the steps (Adagrad divides by small accumulators early on): after
        # 400 steps of the tiny net they reach 1e-4; a wrong N/M scale or weight decay is off by far more.
        torch.testing.assert_close(params[name], value, rtol=1e-3, atol=1e-3, msg=f"parameter {name} differs")
