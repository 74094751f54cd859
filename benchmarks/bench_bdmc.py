"""
Bidirectional Monte Carlo (:func:`pyro_aevb.bdmc`) on a small linear-Gaussian model whose log p(x) is
exact: the table of docs/results.md ("How far the AIS estimate is from the truth"). For each number
of temperatures, the mean error of the lower (forward AIS) and upper (reverse AIS) bounds over the
simulated datapoints, their standard errors, the gap and the seconds.

    python benchmarks/bench_bdmc.py --temps 10 100 1000
"""

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: its model is the tests' (tests/helpers)


def main(args):
    from tests.helpers.linear_gaussian import linear_gaussian

    from pyro_aevb.infer.bdmc import bdmc, simulate

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    vae, marginal = linear_gaussian(2, 4, sigma=0.7)
    x, latents = simulate(vae.model, args.num_data, torch.zeros(1, 4))
    exact = marginal.log_prob(x)
    n = math.sqrt(len(exact))
    print("| temperatures $T$ | lower − exact | upper − exact | gap | seconds (1 thread) |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for num_temps in args.temps:
        start = time.perf_counter()
        lower, upper = bdmc(vae.model, x, latents, num_chains=args.num_chains, num_temps=num_temps)
        seconds = time.perf_counter() - start
        low, up = lower - exact, upper - exact
        print(
            f"| {num_temps} | {low.mean():+.3f} ± {low.std() / n:.3f} | {up.mean():+.3f} ± {up.std() / n:.3f} "
            f"| {(upper - lower).mean():.3f} | {seconds:.1f} |"
        )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--temps", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--num-data", type=int, default=400)
    parser.add_argument("--num-chains", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=8)
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
