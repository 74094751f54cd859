"""
The measurements behind the prose of ``docs/performance.md``: the pieces of a training step and of
the command around it, each timed on its own, as Markdown tables of medians.

1. ``flush``: :class:`~pyro_aevb.optim.FusedAdagrad`'s flush of subnormal weights over the paper's
   MNIST model (816,000 parameters), one ``torch.hardshrink`` pass against the ``masked_fill`` of a
   comparison; and one fused Adagrad step over those parameters with half of them subnormal, with the
   CPU's flush-to-zero mode off and on (``torch.set_flush_denormal``, which reaches the calling thread
   only).
2. ``sparse``: the encoder's first product on a dynamically binarised minibatch (13% ones), dense
   against the sparse ways of computing it.
3. ``minibatch``: the pieces of :meth:`MinibatchSampler.next <pyro_aevb.data.MinibatchSampler.next>`.
4. ``transient``: the median step of ``aevb`` on MNIST over its first 100 steps, one thread, with the
   subnormal weights flushed every 64 steps, every 16, and with flush-to-zero on (the floor); and how
   many encoder weights are subnormal at step 50 under the 64-step schedule.
5. ``subnormals``: how many weights of the plain PyTorch loop (``bench_train.py``'s ``plain-B``, no
   flush) are subnormal, every 1,000 steps.
6. ``startup``: seconds to import torch, torchvision and this package, and to load MNIST, each in a
   fresh interpreter.

Example::

    python benchmarks/bench_parts.py                      # about 4 minutes on 2 cores
    python benchmarks/bench_parts.py --parts flush sparse --threads 1
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F

from bench_train import MODELS, _default_data_dir, make_contender
from pyro_aevb.infer.aevb import AEVB
from pyro_aevb.data import MinibatchSampler, load_dataset
from pyro_aevb.optim import FusedAdagrad
from pyro_aevb.experiment.config import TrainConfig
from pyro_aevb.models.vae import VAE

PARTS = ("flush", "sparse", "minibatch", "transient", "subnormals", "startup")
TINY = torch.finfo(torch.float32).tiny


def median_us(fn, repeats, calls):
    """Median over ``repeats`` of the mean time of ``calls`` calls of ``fn``, in microseconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(times)


def _subnormal_count(tensors):
    return sum(int(((t != 0) & (t.abs() < TINY)).sum()) for t in tensors)


def _mnist_batches(args, count):
    train = load_dataset("mnist", args.data_dir, download=False).train
    sampler = MinibatchSampler(train, 100, args.seed, dynamic_binarize=True)
    return [sampler.next()[1] for _ in range(count)]


@torch.no_grad()
def part_flush(args):
    params = list(VAE(784, 20, 500).parameters())
    flush = FusedAdagrad({"lr": 0.02})
    flush._params = params  # the tensors that its flush goes over, without a param store
    grads = [torch.randn_like(p) for p in params]
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        mask = median_us(lambda: [p.masked_fill_(p.abs() < TINY, 0.0) for p in params], args.repeats, 30)
        shrink = median_us(flush._flush_subnormals, args.repeats, 30)
        rows.append((f"flush, `masked_fill` of a comparison, {threads} thread(s)", mask))
        rows.append((f"flush, `hardshrink` in place, {threads} thread(s)", shrink))
        for ftz in (False, True):
            half = [torch.where(torch.rand_like(p) < 0.5, p * 1e-37, p) for p in params]  # 1e-39: subnormal
            for p, g in zip(half, grads):
                p.grad = g * 1e-37  # gradients as small as the decay of a subnormal weight makes them
            opt = torch.optim.Adagrad(half, lr=1e-9, weight_decay=1.0, fused=True)
            torch.set_flush_denormal(ftz)
            step = median_us(opt.step, args.repeats, 30)
            torch.set_flush_denormal(False)
            rows.append((f"fused Adagrad step, half the weights subnormal, flush-to-zero {'on' if ftz else 'off'}, "
                         f"{threads} thread(s)", step))
    return _table(rows, "µs")


@torch.no_grad()
def part_sparse(args):
    batches = _mnist_batches(args, 50)
    weight = torch.randn(500, 784) * 0.01
    weight_t = weight.t().contiguous()
    grad_h = torch.randn(100, 500)
    density = statistics.mean(float(x.mean()) for x in batches)
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        cases = {
            "dense product `x @ W.T`": lambda x: F.linear(x, weight),
            "dense weight gradient `g.T @ x`": lambda x: grad_h.t().mm(x),
            "`x.nonzero()` alone": lambda x: x.nonzero(),
            "`F.embedding_bag` over the ones (nonzero included)": lambda x: _embedding_bag(x, weight_t),
            "`x.to_sparse_csr()` alone": lambda x: x.to_sparse_csr(),
            "CSR product (conversion included)": lambda x: torch.sparse.mm(x.to_sparse_csr(), weight_t),
            "CSR weight gradient (conversion included)": lambda x: torch.sparse.mm(x.t().contiguous().to_sparse_csr(), grad_h),
        }
        for name, fn in cases.items():
            it = iter(batches * (args.repeats + 1))
            rows.append((f"{name}, {threads} thread(s)", median_us(lambda: fn(next(it)), args.repeats, len(batches))))
    return f"Minibatches of 100 binarised MNIST digits, {density:.1%} ones; W 500 x 784.\n\n" + _table(rows, "µs")


def _embedding_bag(x, weight_t):
    rows, cols = x.nonzero().unbind(1)
    offsets = torch.searchsorted(rows, torch.arange(x.shape[0]))
    return F.embedding_bag(cols, weight_t, offsets, mode="sum")


def part_minibatch(args):
    train = load_dataset("mnist", args.data_dir, download=False).train
    sampler = MinibatchSampler(train, 100, args.seed, dynamic_binarize=True)
    generator = torch.Generator().manual_seed(args.seed)
    index = torch.randperm(train.shape[0], generator=generator)[:100]
    grey = train.index_select(0, index)
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        rows += [
            (f"`index_select` of 100 rows, {threads} thread(s)", median_us(lambda: train.index_select(0, index), args.repeats, 300)),
            (f"`torch.bernoulli`, {threads} thread(s)", median_us(lambda: torch.bernoulli(grey, generator=generator), args.repeats, 300)),
            (f"`torch.rand(...) < x`, {threads} thread(s)",
             median_us(lambda: torch.rand(grey.shape, generator=generator) < grey, args.repeats, 300)),
            (f"`MinibatchSampler.next`, {threads} thread(s)", median_us(sampler.next, args.repeats, 300)),
        ]
    return _table(rows, "µs")


def part_transient(args):
    torch.set_num_threads(1)
    batches = _mnist_batches(args, 100)
    settings = {"flush every 64 steps": (64, False), "flush every 16 steps": (16, False),
                "flush-to-zero mode on (the floor)": (None, True)}
    medians, at_50 = {name: [] for name in settings}, {}
    for _ in range(args.repeats):  # the settings in turns, so that a slow spell of the machine hits all
        for name, (every, ftz) in settings.items():
            pyro.clear_param_store()
            pyro.set_rng_seed(args.seed)
            method = AEVB(VAE(784, 20, 500))
            method.optim.flush_subnormals_every = every
            torch.set_flush_denormal(ftz)
            times = []
            for step, x in enumerate(batches, 1):
                start = time.perf_counter()
                method.step(x, 60000)
                times.append((time.perf_counter() - start) * 1e3)
                if step == 50:
                    at_50[name] = _subnormal_count(method.vae.parameters())
            torch.set_flush_denormal(False)
            medians[name].append(statistics.median(times))
    rows = []
    for name in settings:
        rows.append((f"{name}: median step, ms (median of {args.repeats} runs)", statistics.median(medians[name])))
        rows.append((f"{name}: subnormal weights at step 50", at_50[name]))
    return "`aevb` on MNIST, one thread, the first 100 steps from the same seed.\n\n" + _table(rows, "")


def part_subnormals(args):
    dataset = load_dataset("mnist", args.data_dir, download=False)
    config = TrainConfig(dataset="mnist", latent_dim=MODELS["mnist"], seed=args.seed)
    contender = make_contender("plain-B", dataset, config, torch.device("cpu"))
    rows = []
    for done in range(1000, args.plain_steps + 1, 1000):
        seconds = contender.train_steps(1000)
        rows.append((f"step {done:,}: subnormal weights (seconds for the last 1,000 steps: {seconds:.1f})",
                     _subnormal_count(contender.vae.parameters())))
    return "The plain loop (`plain-B`), MNIST, no flush.\n\n" + _table(rows, "")


def part_startup(args):
    snippets = {
        "import torch": "import torch",
        "import torchvision (after torch)": "import torch; t = time.perf_counter(); import torchvision",
        "import pyro_aevb.experiment.cli and pyro_aevb.experiment.train": "import pyro_aevb.experiment.cli, pyro_aevb.experiment.train",
        "load MNIST with pyro_aevb (after imports)": (
            "from pyro_aevb.data import load_dataset; t = time.perf_counter(); "
            f"load_dataset('mnist', {str(args.data_dir)!r}, download=False)"
        ),
        "read MNIST's two image files with torchvision (after torch)": (
            "import torch; t = time.perf_counter(); from torchvision.datasets import MNIST; "
            f"[MNIST(root={str(args.data_dir)!r}, train=s, download=False).data for s in (True, False)]"
        ),
    }
    rows = []
    for name, code in snippets.items():
        script = f"import time; t = time.perf_counter(); {code}; print(time.perf_counter() - t)"
        seconds = [float(subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout)
                   for _ in range(args.repeats)]
        rows.append((name, statistics.median(seconds)))
    return "Each in a fresh interpreter.\n\n" + _table(rows, "s")


def _table(rows, unit):
    lines = [f"| measurement | {f'median ({unit})' if unit else 'value'} |", "| --- | ---: |"]
    lines += [f"| {name} | {value:,.2f} |" if isinstance(value, float) else f"| {name} | {value:,} |" for name, value in rows]
    return "\n".join(lines)


def main(args):
    report = {}
    for part in args.parts:
        text = globals()[f"part_{part}"](args)
        report[part] = text
        print(f"### {part}\n\n{text}\n", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return report


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts for flush, sparse, minibatch [1 2]")
    parser.add_argument("--repeats", type=int, default=9, help="timed repeats per measurement [9]")
    parser.add_argument("--plain-steps", type=int, default=10000, help="steps of the plain loop for subnormals [10000]")
    parser.add_argument("--data-dir", type=Path, default=Path(_default_data_dir()), help="[$PYRO_AEVB_DATA or ../shared/data]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the tables as JSON here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
