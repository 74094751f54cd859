"""
What the sha256 of a checkpoint costs: its share of a checkpoint write, and of a checkpoint read.

A run of the paper's MNIST model (784-500-20, Adagrad, the sampler of 60,000 points) is trained for
one step and its checkpoint state read back; then, interleaved, ``repeats`` times each:

- ``serialize``: ``torch.save`` of the state to memory;
- ``sha256``: the digest of those bytes (:func:`pyro_aevb.experiment.checksums.digest`);
- ``record``: the two small writes of ``checksums.json`` around the rotation, with a flush of the folder;
- ``save``: the whole :func:`~pyro_aevb.experiment.checkpoint.save_checkpoint` (serialize; write and
  flush while the digest is computed in a thread; rotate; record);
- ``plain``: the same write without digests or rotation (:func:`~pyro_aevb.experiment.checkpoint.atomic_save`);
- ``load``: the whole :func:`~pyro_aevb.experiment.checkpoint.load_checkpoint` (read, verify, unpickle).

Medians in milliseconds; what the digests add to a save (``save`` less ``plain``, an upper bound, as it
includes the rotation's link and rename) as a share of it, and the digest's share of a load.

Example::

    python benchmarks/bench_checksum.py                    # about a minute
    python benchmarks/bench_checksum.py --dataset mnist5k --hidden 20 --repeats 3
"""

import argparse
import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pyro_aevb.experiment import checksums
from pyro_aevb.experiment.checkpoint import atomic_save, load_checkpoint, previous_path, save_checkpoint
from pyro_aevb.experiment.config import TrainConfig
from pyro_aevb.experiment.train import train


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--latent-dim", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the medians as JSON here")
    return parser.parse_args(argv)


def _timed(fn):
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def main(args):
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / "run"
        config = TrainConfig(dataset=args.dataset, data_dir=args.data_dir, latent_dim=args.latent_dim,
                             hidden=args.hidden, samples=100, eval_points=1, eval_train_points=100)
        train(config, run, progress=False)
        state = load_checkpoint(run / "checkpoint.pt")
        path = Path(folder) / "bench" / "checkpoint.pt"
        path.parent.mkdir()
        save_checkpoint(state, path)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        data = buffer.getvalue()

        def record():
            digest = checksums.digest(data)
            after = checksums.before_rotation(path, previous_path(path), digest)
            folder = os.open(path.parent, os.O_RDONLY)  # as save_checkpoint flushes the folder between the two
            os.fsync(folder)
            os.close(folder)
            checksums.after_rotation(path, previous_path(path), digest, after)

        parts = {
            "serialize": lambda: torch.save(state, io.BytesIO()),
            "sha256": lambda: checksums.digest(data),
            "record": record,
            "save": lambda: save_checkpoint(state, path),
            "plain": lambda: atomic_save(state, path.with_name("plain.pt")),
            "load": lambda: load_checkpoint(path),
        }
        times = {name: [] for name in parts}
        for _ in range(args.repeats):  # interleaved, so that a change in the machine's load hits all alike
            for name, fn in parts.items():
                times[name].append(_timed(fn))
    medians = {name: statistics.median(values) for name, values in times.items()}
    medians["bytes"] = len(data)
    print(f"checkpoint of {args.dataset}, {args.hidden} hidden, Nz = {args.latent_dim}: {len(data) / 2**20:.1f} MiB, "
          f"median of {args.repeats}, one thread, {os.cpu_count()} CPUs")
    print("| part | ms |\n| --- | ---: |")
    for name in parts:
        print(f"| {name} | {medians[name]:.2f} |")
    medians["save_share"] = (medians["save"] - medians["plain"]) / medians["save"]
    medians["load_share"] = medians["sha256"] / medians["load"]
    print(f"| (save - plain) / save | {medians['save_share']:.1%} |")
    print(f"| sha256 / save | {medians['sha256'] / medians['save']:.1%} |")
    print(f"| sha256 / load | {medians['load_share']:.1%} |")
    if args.out is not None:
        args.out.write_text(json.dumps(medians, indent=1) + "\n")
    return medians


if __name__ == "__main__":
    main(parse_args())
