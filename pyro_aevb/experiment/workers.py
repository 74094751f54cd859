"""
The worker processes in which ``pyro-aevb reproduce`` trains and evaluates runs side by side: a pool of
spawned processes, each with its share of the cores, that stop on their own when the process that
started them is gone.
"""

import concurrent.futures
import multiprocessing
import os
import signal
import threading
import time

import torch

from pyro_aevb.errors import UserError

__all__ = ["init_worker", "stop_pool", "worker_pool", "worker_threads"]

#: Workers are spawned: each starts a fresh interpreter, not a copy of this process.
_CONTEXT = multiprocessing.get_context("spawn")


def worker_threads(jobs):
    """
    PyTorch threads per worker: ``$OMP_NUM_THREADS`` where it is set, else the cores shared out among
    the ``jobs`` workers. On a machine busy with other work, threads that wait for each other at
    every parallel region are slow (see the performance notes), and ``OMP_NUM_THREADS=1`` avoids it.
    """
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            raise UserError(f"OMP_NUM_THREADS must be a whole number, got {value!r}") from None
    return max(1, (os.cpu_count() or 1) // jobs)


def init_worker(threads, parent):
    """In a new worker: use ``threads`` PyTorch threads, and stop once the process ``parent`` is gone."""
    torch.set_num_threads(threads)
    threading.Thread(target=_stop_when_orphaned, args=(parent,), daemon=True).start()


def _stop_when_orphaned(parent, poll_seconds=1.0):
    """
    In a worker: once the ``reproduce`` process that started it is gone (killed, say), stop training
    the way SIGTERM stops :func:`~pyro_aevb.experiment.train.train`: at the end of the current step, with a
    checkpoint. A worker left on its own would otherwise train on, unwatched, into a run folder that
    the next ``reproduce`` wants to resume.
    """
    while os.getppid() == parent:
        time.sleep(poll_seconds)
    os.kill(os.getpid(), signal.SIGTERM)


def worker_pool(jobs):
    """A pool of ``jobs`` spawned worker processes (:func:`init_worker`), with :func:`worker_threads` threads each."""
    return concurrent.futures.ProcessPoolExecutor(jobs, mp_context=_CONTEXT, initializer=init_worker,
                                                  initargs=(worker_threads(jobs), os.getpid()))


def stop_pool(pool):
    """
    Cancel the pool's waiting jobs and send its workers SIGTERM, on which a training worker checkpoints
    at the end of its step and stops.
    """
    pool.shutdown(wait=False, cancel_futures=True)
    for child in _CONTEXT.active_children():
        child.terminate()
