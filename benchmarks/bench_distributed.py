"""
Training throughput of one process against a torchrun job of K processes on this machine (CPU, gloo).

Each configuration trains the same run (same global minibatch M, same budget) in a fresh folder, with
one torch thread per process, and reports the seconds the training steps took (``seconds`` of the
last row of ``metrics.csv``: steps only, without start-up and evaluation) and the wall time of the
whole command.

    python benchmarks/bench_distributed.py --samples 20000 --hidden 500 --nproc 1 2
"""

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _command(nproc, out, args):
    train = ["-m", "pyro_aevb", "train", "--dataset", "mnist5k", "--latent-dim", str(args.latent_dim),
             "--hidden", str(args.hidden), "--samples", str(args.samples), "--batch-size", str(args.batch_size),
             "--eval-points", "1", "--eval-train-points", "100", "--checkpoint-every", str(args.samples),
             "--no-progress", "--out", str(out)]
    if nproc == 1:
        return [sys.executable, *train]
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    return [torchrun, f"--nproc_per_node={nproc}", "--standalone", *train]


def main(args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    print(f"M={args.batch_size}, hidden={args.hidden}, Nz={args.latent_dim}, {args.samples} samples, "
          f"{os.cpu_count()} CPUs")
    print("processes  step seconds  samples/s (steps)  wall seconds")
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for nproc in args.nproc:
                out = Path(tmp) / f"run{nproc}-{repeat}"
                start = time.perf_counter()
                subprocess.run(_command(nproc, out, args), check=True, env=env, capture_output=True)
                wall = time.perf_counter() - start
                with open(out / "metrics.csv", newline="") as f:
                    seconds = float(list(csv.DictReader(f))[-1]["seconds"])
                print(f"{nproc:9d}  {seconds:12.2f}  {args.samples / seconds:17.0f}  {wall:12.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=500)
    parser.add_argument("--latent-dim", type=int, default=20)
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    main(parser.parse_args())
