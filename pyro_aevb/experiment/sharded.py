"""
Estimates per datapoint computed by the processes of a ``torchrun`` job together, with the same
result for any number of processes.

The datapoints are cut into chunks of ``chunk_points`` consecutive points, the same chunks whatever
the number of processes, and each chunk is computed whole by one process from its own random stream,
seeded by :func:`chunk_seed` from the evaluation's seed and the chunk's index alone. A datapoint's
estimate thus depends on the seed, the chunk size and its index, never on how many processes share
the work. Chunk ``i`` goes to rank ``i mod P`` (round-robin, so that the ranks' shares differ by at
most one chunk); after the last round every rank gathers every chunk's result.
"""

import contextlib
import hashlib
import os

import torch
import torch.distributed as dist

from pyro_aevb._checks import check_whole
from pyro_aevb.experiment.distributed import World, init_world
from pyro_aevb.infer import progress

__all__ = ["CHUNK_POINTS", "chunk_seed", "evaluation_world", "map_chunks"]

#: Datapoints per chunk by default: 800 rows per pass for AIS's 16 chains; 200 chunks for 10,000 points.
CHUNK_POINTS = 50


def chunk_seed(seed, index):
    """
    The seed of chunk ``index`` of an evaluation seeded with ``seed``: ``seed`` itself for chunk 0 (so an
    evaluation of one chunk draws what a single call of the estimator with ``seed`` draws), and for the
    others 63 bits of a hash of both numbers, so that no two chunks, of this seed or another, share a stream.
    """
    if index == 0:
        return seed
    digest = hashlib.sha256(f"pyro-aevb chunk {seed} {index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def evaluation_world():
    """
    The processes that share an evaluation: the default process group when one is initialised (the
    caller keeps it), else the job of ``torchrun``'s environment
    (:func:`~pyro_aevb.experiment.distributed.init_world`), else this process alone.
    """
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return init_world()


def map_chunks(world, num_points, chunk_points, seed, fn, on_progress=None):
    """
    ``fn(rows, chunk_seed)`` for every chunk of ``num_points`` datapoints, split among the ranks of
    ``world``; every rank returns the list of all the chunks' results, in the chunks' order.

    :param World world: the ranks that share the work.
    :param int num_points: the datapoints, ``0 .. num_points - 1``.
    :param int chunk_points: datapoints per chunk (the last may have fewer).
    :param int seed: the evaluation's seed; chunk ``i`` is computed under
        :func:`torch.manual_seed` of :func:`chunk_seed` ``(seed, i)``, in a forked random stream.
    :param callable fn: ``fn(rows, seed)`` with ``rows`` a :class:`slice` of the datapoints; returns a
        picklable result (CPU tensors).
    :param callable on_progress: on rank 0, called with the number of datapoints done so far by all the
        ranks (estimated between rounds from rank 0's own fraction done).
    :returns: ``[fn(rows_0, ...), fn(rows_1, ...), ...]``, on every rank.
    """
    check_whole("chunk_points", chunk_points, 1)
    bounds = [slice(s, min(s + chunk_points, num_points)) for s in range(0, num_points, chunk_points)]
    mine = {}
    done = 0
    for first in range(0, len(bounds), world.size):
        round_points = sum(r.stop - r.start for r in bounds[first : first + world.size])
        index = first + world.rank
        if index < len(bounds):
            report = (lambda f: on_progress(done + f * round_points)) if on_progress and world.is_main else None
            with progress.reporting(report) if report else contextlib.nullcontext():
                mine[index] = _run_chunk(fn, bounds[index], chunk_seed(seed, index))
        done += round_points
        if world.size > 1:
            world.sum([0.0])  # the round's barrier: the bar moves with the slowest rank, and a lost rank surfaces here
        if on_progress and world.is_main:
            on_progress(done)
    if world.size == 1:
        return [mine[i] for i in range(len(bounds))]
    gathered = [None] * world.size
    dist.all_gather_object(gathered, mine)
    merged = {i: result for part in gathered for i, result in part.items()}
    return [merged[i] for i in range(len(bounds))]


def _run_chunk(fn, rows, seed):
    devices = [torch.device("cuda", torch.cuda.current_device())] if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return fn(rows, seed)
