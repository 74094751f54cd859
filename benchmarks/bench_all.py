"""
Every benchmark of ``docs/performance.md`` in one command, one after the other on a quiet machine:

1. training throughput of the paper's MNIST and Frey Face models (``bench_train.py``): this project's
   AEVB (both estimators) against the plain PyTorch loop and Pyro's VAE-example pattern, with
   PyTorch's default threads and with one thread;
2. one million MNIST training samples (``bench_train.py --samples``): ``pyro-aevb train`` end to end
   against the plain loop, three times each;
3. the marginal-likelihood estimator of Appendix D (``bench_marginal.py``): vectorised against Pyro's
   ``MCMC``, one chain of one datapoint at a time, at equal settings, and at the setting of Figure 3;
4. the pieces of a training step and of the command around it (``bench_parts.py``), the figures
   that the text of ``docs/performance.md`` quotes.

Each part runs in its own process (so that its thread setting is its own) and prints a Markdown table;
this script collects the tables, each under the command that made it, with the machine and the load
average before and after, into one report (``--out``, Markdown; the parts' JSON beside it).

Examples::

    python benchmarks/bench_all.py --out bench/report.md               # about 25 minutes on 2 cores
    python benchmarks/bench_all.py --device cuda --out bench/gpu.md     # adds MNIST at M = 1,000 and 10,000
    python benchmarks/bench_all.py --quick --out /tmp/smoke.md          # a smoke run, seconds
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRAIN, MARGINAL, PIECES = HERE / "bench_train.py", HERE / "bench_marginal.py", HERE / "bench_parts.py"
ALL_CONTENDERS = ["aevb", "aevb-mc", "plain-B", "plain-A", "pyro-B", "pyro-A", "aevb-svi", "aevb-noflush", "plain-B-default"]


def parts(args):
    """``(title, script, arguments)`` of every part, at ``args``' settings."""
    common = ["--data-dir", str(args.data_dir)]
    if args.quick:
        rounds = ["--rounds", "1", "--steps", "2", "--warmup-steps", "1", "--eval-points", "10"]
        samples, repeats = "1000", "1"
        marginal = ["--num-reference", "1", "--num-data", "4", "--repeats", "1", "--warmup-steps", "4", "--num-samples", "4"]
        pieces = ["--repeats", "1", "--plain-steps", "1000"]
    else:
        rounds = ["--rounds", "11", "--steps", "30"]
        samples, repeats = "1e6", "3"
        marginal = ["--num-reference", "20", "--num-data", "1000", "--repeats", "3"]
        pieces = []
    marginal += ["--data", "mnist"]
    device = ["--device", args.device]
    found = [
        ("Training throughput, PyTorch's default threads", TRAIN, rounds + ["--contenders"] + ALL_CONTENDERS + device),
        ("Training throughput, one thread", TRAIN, rounds + ["--contenders"] + ALL_CONTENDERS + ["--threads", "1"] + device),
        (
            "One million MNIST samples" if not args.quick else "MNIST training runs",
            TRAIN,
            ["--samples", samples, "--methods", "aevb", "plain-B", "aevb-mc", "plain-A", "--repeats", repeats] + device,
        ),
        ("Marginal likelihood estimator (Appendix D)", MARGINAL, marginal + device),
        ("The pieces of a step and of the command (CPU)", PIECES, pieces),
    ]
    if args.device != "cpu":  # larger minibatches, where an accelerator has the width for them
        larger = ["--models", "mnist", "--contenders", "aevb", "plain-B", "pyro-B"] + device  # Frey Face has 1,765 frames
        found[1:1] = [
            (f"Training throughput, MNIST, M = {m}", TRAIN, rounds + larger + ["--batch-size", str(m)]) for m in args.batch_sizes
        ]
    return [(title, script, arguments + common) for title, script, arguments in found]


def _load():
    return ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def main(args):
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sections = [f"# Benchmarks\n\n`{' '.join([Path(sys.executable).name] + sys.argv)}`, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n"]
    for i, (title, script, arguments) in enumerate(parts(args), 1):
        json_path = out.with_name(f"{out.stem}-{i}.json")
        command = [sys.executable, str(script)] + arguments + ["--out", str(json_path)]
        shown = " ".join(["python", str(script.relative_to(HERE.parent))] + arguments)
        print(f"[{i}] {title}: {shown}", file=sys.stderr)
        load_before, start = _load(), time.perf_counter()
        result = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
        minutes = (time.perf_counter() - start) / 60
        sections.append(
            f"## {i}. {title}\n\n```bash\n{shown}\n```\n\n"
            f"Load average (1, 5, 15 min) before: {load_before}; after: {_load()}; {minutes:.1f} minutes.\n\n"
            f"{result.stdout.strip()}\n"
        )
        out.write_text("\n".join(sections))  # as it goes: a stopped run keeps its finished parts
    print(f"report written to {out}", file=sys.stderr)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench/report.md", help="the Markdown report; the parts' JSON beside it [bench/report.md]")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("PYRO_AEVB_DATA", HERE.parents[1] / "shared" / "data")))
    parser.add_argument("--device", default="cpu", help="where to train [cpu]")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1000, 10000], help="extra M on a non-CPU device [1000 10000]")
    parser.add_argument("--quick", action="store_true", help="tiny settings: checks that every part runs, measures nothing")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
