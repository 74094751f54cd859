"""
Wall time of ``pyro-aevb evaluate`` on one process against a ``torchrun`` job of K processes on this
machine (CPU, gloo, one torch thread per process), with the check that every job gives the same
estimate for every datapoint.

It trains a short run of the paper's MNIST model (784-``--hidden``-``--latent-dim``; the time of AIS
does not depend on how well the model is trained), then alternates ``evaluate`` with each process count
``--repeats`` times, and reports per count the median of the command's wall time (start-up included)
and of the estimate's own ``seconds``, the CPU seconds of all its processes, and the median of the paired
ratios to one process, with the load averages before and after. On a machine shared with other jobs
the wall times depend on what else runs; the CPU column shows whether the work is split (about the
same in all) or repeated (K times one process's).

    python benchmarks/bench_evaluate_distributed.py --num-points 40 --num-temps 200 --nproc 1 2 --repeats 3
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _command(nproc, run_dir, out, args):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    return [torchrun, f"--nproc_per_node={nproc}", "--standalone", "-m", "pyro_aevb", "evaluate", str(run_dir),
            "--estimator", args.estimator, "--num-points", str(args.num_points),
            *(["--num-temps", str(args.num_temps)] if args.estimator == "ais" else []),
            "--chunk-points", str(args.chunk_points), "--no-progress", "--out", str(out),
            *(["--data-dir", args.data_dir] if args.data_dir else [])]


def _train(run_dir, args, env):
    command = [sys.executable, "-m", "pyro_aevb", "train", "--dataset", args.dataset, "--latent-dim",
               str(args.latent_dim), "--hidden", str(args.hidden), "--samples", "1000", "--eval-points", "1",
               "--eval-train-points", "100", "--no-progress", "--out", str(run_dir),
               *(["--data-dir", args.data_dir] if args.data_dir else [])]
    subprocess.run(command, check=True, env=env, capture_output=True)


def _children_cpu():
    """CPU seconds (user + system) of the finished child processes: every process of a torchrun job."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    load_before = os.getloadavg()
    walls = {n: [] for n in args.nproc}
    seconds = {n: [] for n in args.nproc}
    cpus = {n: [] for n in args.nproc}
    estimates = {}
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        _train(run_dir, args, env)
        for repeat in range(args.repeats):
            for nproc in args.nproc:
                out = Path(tmp) / f"{nproc}-{repeat}.json"
                start, start_cpu = time.perf_counter(), _children_cpu()
                done = subprocess.run(_command(nproc, run_dir, out, args), env=env, capture_output=True, text=True)
                if done.returncode:
                    raise SystemExit(f"evaluate on {nproc} process(es) failed:\n{done.stderr[-3000:]}")
                walls[nproc].append(time.perf_counter() - start)
                cpus[nproc].append(_children_cpu() - start_cpu)
                result = json.loads(out.read_text())
                seconds[nproc].append(result["seconds"])
                estimates.setdefault(nproc, result["per_datapoint"])
    load_after = os.getloadavg()
    first = args.nproc[0]
    same = all(values == estimates[first] for values in estimates.values())
    print(f"`evaluate --estimator {args.estimator}`, {args.dataset} {args.latent_dim}-{args.hidden}-784, "
          f"{args.num_points} points in chunks of {args.chunk_points}, T = {args.num_temps}, one thread per process, "
          f"{os.cpu_count()} CPUs, median of {args.repeats}; load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after")
    print()
    print(f"| processes | wall s (command) | estimate s | s per point | CPU s, all processes | wall vs {first} process(es) "
          f"| estimate vs {first} |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    report = {}
    for nproc in args.nproc:
        wall_ratio = statistics.median(w / w1 for w, w1 in zip(walls[nproc], walls[first]))
        est_ratio = statistics.median(s / s1 for s, s1 in zip(seconds[nproc], seconds[first]))
        wall, est = statistics.median(walls[nproc]), statistics.median(seconds[nproc])
        cpu = statistics.median(cpus[nproc])
        print(f"| {nproc} | {wall:.1f} | {est:.1f} | {est / args.num_points:.3f} | {cpu:.1f} | {wall_ratio:.2f} "
              f"| {est_ratio:.2f} |")
        report[nproc] = {"wall_s": walls[nproc], "estimate_s": seconds[nproc], "cpu_s": cpus[nproc], "wall_ratio": wall_ratio,
                         "estimate_ratio": est_ratio}
    print()
    print(f"per-datapoint estimates identical across process counts: {same}")
    if args.out:
        Path(args.out).write_text(json.dumps({"arguments": vars(args), "load": [load_before, load_after],
                                              "identical": same, "results": report}, indent=2))
    return report, same


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist", help="[mnist]")
    parser.add_argument("--data-dir", help="data directory (see pyro_aevb.data)")
    parser.add_argument("--latent-dim", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=500)
    parser.add_argument("--estimator", choices=["ais", "hmc", "is"], default="ais")
    parser.add_argument("--num-points", type=int, default=40)
    parser.add_argument("--num-temps", type=int, default=200, help="ais: temperatures [200]")
    parser.add_argument("--chunk-points", type=int, default=10)
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="also write the results as JSON here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
