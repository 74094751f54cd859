"""
`pyro-aevb evaluate` under torchrun: the processes share the chunks of datapoints, and the estimates
are the same, datapoint by datapoint, for 1, 2 and 3 processes; a lost process ends the job.
"""

import json
import os
import re
import subprocess
import sys
import time

# 5 points in chunks of 2: 3 chunks, which 2 processes share 2 + 1 and 3 processes 1 + 1 + 1.
POINTS, CHUNK = 5, 2
ESTIMATES = {
    "is": {"num_samples": 50},
    "hmc": {"num_samples": 5, "warmup_steps": 5, "num_chains": 2},
    "ais": {"num_chains": 2, "num_temps": 10, "num_steps": 2, "bdmc": 3},
}

# Every process evaluates each estimator through the Python API, in the process group it initialised.
_SCRIPT = """
import json, os, sys
import torch.distributed as dist
from pyro_aevb.experiment.evaluate import evaluate_run

run_dir, dest, points, chunk, estimates = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])
dist.init_process_group("gloo")
for estimator, options in estimates.items():
    out = os.path.join(dest, estimator + ".json")
    result = evaluate_run(run_dir, estimator, "test", points, chunk_points=chunk, out=out, **options)
    with open(out + "." + os.environ["RANK"], "w") as f:  # what each rank returned
        json.dump(result, f)
dist.destroy_process_group()
"""


def _torchrun(nproc, *args):
    return [os.path.join(os.path.dirname(sys.executable), "torchrun"), f"--nproc_per_node={nproc}", "--standalone",
            *map(str, args)]


def _run(command, timeout=120):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def test_estimates_do_not_depend_on_the_number_of_processes(aevb_run, tmp_path):
    script = tmp_path / "evaluate.py"
    script.write_text(_SCRIPT)
    results = {}
    for nproc in (1, 2, 3):
        dest = tmp_path / str(nproc)
        dest.mkdir()
        done = _run(_torchrun(nproc, script, aevb_run, dest, POINTS, CHUNK, json.dumps(ESTIMATES)))
        assert done.returncode == 0, done.stderr[-3000:]
        results[nproc] = {e: json.loads((dest / f"{e}.json").read_text()) for e in ESTIMATES}
        for estimator, written in results[nproc].items():
            for rank in range(nproc):
                returned = json.loads((dest / f"{estimator}.json.{rank}").read_text())
                assert returned["per_datapoint"] == written["per_datapoint"], f"rank {rank} returned another {estimator}"
    for estimator in ESTIMATES:
        one = results[1][estimator]
        assert len(one["per_datapoint"]) == POINTS
        for nproc in (2, 3):
            other = results[nproc][estimator]
            assert other["processes"] == nproc
            # Each chunk is computed whole, by one process, from its own stream: bit for bit the same numbers.
            assert other["per_datapoint"] == one["per_datapoint"], f"{estimator} on {nproc} processes"
            assert other["log_marginal_likelihood"] == one["log_marginal_likelihood"], f"{estimator} mean, {nproc}"
            assert other["lower_bound"] == one["lower_bound"], f"lower bound with {estimator}, {nproc} processes"
            assert other["diagnostics"] == one["diagnostics"], f"{estimator} diagnostics, {nproc} processes"
        if estimator == "ais":
            for nproc in (2, 3):
                for key in ("lower", "upper", "gap"):
                    assert results[nproc]["ais"]["bdmc"][key] == one["bdmc"][key], f"bdmc {key}, {nproc} processes"


# Rank 1 kills itself (SIGKILL) when it starts its second chunk.
_DYING = """
import os, signal, sys
from pyro_aevb.experiment import sharded
from pyro_aevb.experiment.cli import main

run_chunk, count = sharded._run_chunk, []

def dying(fn, rows, seed):
    count.append(rows)
    if os.environ["RANK"] == "1" and len(count) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return run_chunk(fn, rows, seed)

sharded._run_chunk = dying
sys.exit(main(sys.argv[1:]))
"""


def test_a_lost_process_ends_the_job(aevb_run, tmp_path):
    script = tmp_path / "dying.py"
    script.write_text(_DYING)
    out = tmp_path / "result.json"
    start = time.monotonic()
    done = _run(_torchrun(2, script, "evaluate", aevb_run, "--estimator", "is", "--num-samples", 20,
                          "--num-points", 8, "--chunk-points", 1, "--out", out, "--no-progress"))
    assert time.monotonic() - start < 60, "the job outlived its lost process by a minute"
    assert done.returncode != 0
    # torchrun's report: "Root Cause (first observed failure): ... rank : 1 (local_rank: 1) ... SIGKILL".
    named = re.search(r"Root Cause[^\n]*\n(.*\n){0,4}\s*rank\s*:\s*1 \(local_rank: 1\)", done.stderr)
    assert named, f"the lost rank is not named: {done.stderr[-3000:]}"
    assert not out.exists(), "a result was written without the lost process's chunks"
