r"""
Data-parallel training with :mod:`torch.distributed`, for jobs launched by ``torchrun``.

``torchrun --nproc_per_node=K -m pyro_aevb train ...`` starts K processes (ranks) that train one
model together. The semantics, chosen so that a job of K ranks computes what one process computes:

- **Minibatches.** Every rank runs the same :class:`~pyro_aevb.data.MinibatchSampler` (same seed), so
  every rank draws the same global minibatch of M rows (binarized once, for the whole minibatch), and
  rank r trains on its contiguous slice of M/K rows (M must be a multiple of K).
- **Scale and gradients.** Each rank's plate keeps ``num_data = N``, so its loss carries the scale
  N/(M/K); the gradients are averaged over the ranks (:meth:`World.reduce_gradients`), which gives
  the gradient of the N/M-scaled estimator of Eq. (8) of [1] on the global minibatch. The reduction
  runs just before each optimizer step, so the optimizer's weight decay (the Gaussian prior on the
  parameters) is added once to the averaged gradient, not K times, and Adagrad's accumulators stay
  identical on every rank.
- **Random draws.** Inside a training step, every draw whose shape holds the rank's rows (the noise
  :math:`\epsilon` of the reparameterised ``"z"``, wake-sleep's fantasies, MCEM's proposals) is drawn
  for the global minibatch from the random stream, identical on every rank, and the rank keeps its
  slice (:class:`GlobalDraws`). So the ranks together use exactly the draws that one process draws,
  and the result equals a single-process run up to floating-point rounding.
- **Evaluation** is sharded in the same way (each rank evaluates its slice of every chunk of the
  evaluated rows, with the global draws) and the sums are all-reduced.

Only rank 0 touches the run folder (lock, config, metrics, checkpoints, plots); it broadcasts what
it read (the config and checkpoint of a resumed run) and any error, so that all ranks fail together.

[1] Auto-Encoding Variational Bayes, Diederik P. Kingma, Max Welling (2013)
"""

import contextlib
import datetime
import inspect
import os
import weakref

import pyro
import torch
import torch.distributed as dist
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.overrides import TorchFunctionMode

from pyro_aevb.infer.elbo import lower_bound as _lower_bound
from pyro_aevb.infer.util import cuda_devices
from pyro_aevb.infer.marginal import default_is_chunk_size, log_marginal_likelihood

__all__ = ["GlobalDraws", "World", "init_world"]

#: Seconds a rank waits in a collective before the job fails (``$PYRO_AEVB_DIST_TIMEOUT``).
DEFAULT_TIMEOUT = 300


class World:
    """
    The processes of one training job: ``size`` ranks, of which this is ``rank``. A job of one
    process is a :class:`World` of size 1, whose methods do nothing beyond calling what they are given.

    :param int rank: this process's rank.
    :param int size: the number of processes.
    :param int local_rank: the rank on this node (the GPU it uses).
    :param bool owns_group: whether :meth:`close` destroys the process group.
    """

    def __init__(self, rank=0, size=1, local_rank=0, owns_group=False):
        self.rank, self.size, self.local_rank = rank, size, local_rank
        self.is_main = rank == 0
        self._owns_group = owns_group

    def on_main(self, fn):
        """
        Run ``fn()`` on rank 0 only and return its result on every rank; if it raises, every rank
        raises the same exception.
        """
        if self.size == 1:
            return fn()
        result, error = None, None
        if self.is_main:
            try:
                result = fn()
            except Exception as e:
                error = e
        result, error = self.broadcast((result, error))
        if error is not None:
            raise error
        return result

    def broadcast(self, obj):
        """``obj`` of rank 0, on every rank (pickled)."""
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=torch.device("cpu"))
        return box[0]

    def sum(self, values):
        """The sums over the ranks of a list of floats (one all-reduce, in float64)."""
        total = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(total)
        return total.tolist()

    def rows(self, num_rows):
        """``(start, stop)``: this rank's contiguous share of ``num_rows`` rows (as :func:`torch.tensor_split`)."""
        base, extra = divmod(num_rows, self.size)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (self.rank < extra)

    @contextlib.contextmanager
    def reduce_gradients(self):
        """
        While active, every optimizer step first replaces the gradients of Pyro's parameters with
        their average over the ranks (a global pre-hook of :class:`torch.optim.Optimizer`, so it works
        for every method, whichever Pyro optimizer it calls and however often).
        """
        if self.size == 1:
            yield
            return
        handle = register_optimizer_step_pre_hook(_GradientAverager(self.size))
        try:
            yield
        finally:
            handle.remove()

    def close(self):
        if self._owns_group:
            if dist.is_initialized():
                dist.destroy_process_group()


class _GradientAverager:
    """
    Averages the gradients of Pyro's parameters over the ranks, once per backward pass. Methods
    built on :class:`~pyro.optim.PyroOptim` step one optimizer per parameter: the first step of a
    batch reduces every gradient present (in one all-reduce, in the order of the parameters' names,
    which all ranks share) and marks it, so that the later steps of the same batch skip it.
    """

    def __init__(self, size):
        self.size = size
        self._done = {}  # name -> (weak reference to the reduced gradient, its version after reduction)

    def __call__(self, optimizer, args, kwargs):
        pending = []
        for name, param in sorted(pyro.get_param_store().named_parameters()):
            grad = param.grad
            if grad is None:
                continue
            done = self._done.get(name)
            if done is not None and done[0]() is grad and done[1] == grad._version:
                continue
            pending.append((name, grad))
        if not pending:
            return
        groups = {}
        for name, grad in pending:
            groups.setdefault((grad.device, grad.dtype), []).append(grad)
        for grads in groups.values():
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat.div_(self.size)
            offset = 0
            for g in grads:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()
        for name, grad in pending:
            self._done[name] = (weakref.ref(grad), grad._version)


def init_world():
    """
    The job this process belongs to: from ``torchrun``'s environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), initialising the default process group (gloo
    for CPU tensors, NCCL for CUDA tensors when CUDA is available) with a timeout of
    ``$PYRO_AEVB_DIST_TIMEOUT`` seconds (default 300), after which a collective that a lost rank never
    joins fails instead of hanging. Outside ``torchrun``, or with one process: a :class:`World` of size 1.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    owns_group = not dist.is_initialized()
    if owns_group:
        # torch.optim's first step imports torch._dynamo; imported after the process group exists, it
        # keeps the group alive past destroy_process_group, and gloo's worker threads then release
        # their last tensors during interpreter shutdown, which aborts the process now and then
        # ("terminate called without an active exception"). Imported first, it holds nothing. Imported
        # here, not at the top: it is slow to import, and only a job of several processes needs it.
        import torch._dynamo  # noqa: F401

        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        timeout = datetime.timedelta(seconds=float(os.environ.get("PYRO_AEVB_DIST_TIMEOUT", DEFAULT_TIMEOUT)))
        dist.init_process_group(backend, timeout=timeout)
    return World(dist.get_rank(), dist.get_world_size(), local_rank, owns_group)


# -- the random draws of the global minibatch ----------------------------------------------------------

# How each random function is redrawn at the global size: "fill" fills its first argument in place
# with scalar parameters, "like" draws with its first argument's shape, "params" draws elementwise
# with tensor parameters of the output's shape.
_RANDOM = {
    torch.Tensor.normal_: "fill",
    torch.Tensor.uniform_: "fill",
    torch.Tensor.exponential_: "fill",
    torch.Tensor.cauchy_: "fill",
    torch.Tensor.log_normal_: "fill",
    torch.Tensor.geometric_: "fill",
    torch.rand_like: "like",
    torch.randn_like: "like",
    torch.bernoulli: "params",
    torch.Tensor.bernoulli: "params",
    torch.normal: "params",
    torch.poisson: "params",
    torch._standard_gamma: "params",
    torch._sample_dirichlet: "params",
}


class GlobalDraws(TorchFunctionMode):
    r"""
    Draws every batch-shaped random tensor for the global minibatch and keeps this rank's rows.

    Inside the context, a random draw (``normal_``, ``uniform_``, ``bernoulli``, ``normal``,
    ``rand_like``, ``randn_like``, the gamma and Dirichlet samplers, ...) whose shape has a dimension
    of ``rows`` (this rank's rows), or of ``q * rows`` (rows repeated ``q`` times, block after block,
    as :meth:`torch.Tensor.repeat` lays out particles; dimension -2, where Pyro puts the data plate
    of a draw with a vector event, is looked at first, then those left of it, then the last), is
    drawn with that dimension ``total``
    (respectively ``q * total``) long, its tensor parameters tiled to that size, and the rows
    ``offset:offset + rows`` of each block are returned. Every rank draws the same global tensor
    from the same random stream; a single process would draw exactly that tensor, so the ranks'
    slices are its rows. Draws of other shapes are left alone, identical on every rank, as on one process.

    Draws whose consumption of the random stream does not depend on the parameters (normal,
    uniform, Bernoulli: everything the library's models draw) equal the single-process draws
    exactly; the others (gamma, Dirichlet) are exact in distribution.

    :param int rows: this rank's rows.
    :param int total: the rows of the global minibatch.
    :param int offset: the position of this rank's first row in it.
    """

    def __init__(self, rows, total, offset):
        super().__init__()
        if not 0 < rows <= total or not 0 <= offset <= total - rows:
            raise ValueError(f"need 0 < rows <= total and 0 <= offset <= total - rows, got {rows}, {total}, {offset}")
        self.rows, self.total, self.offset = rows, total, offset

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = _RANDOM.get(func)
        if kind is None or not args or not isinstance(args[0], torch.Tensor):
            return func(*args, **kwargs)
        shape = args[0].shape
        found = self._batch_dim(shape)
        if found is None:
            return func(*args, **kwargs)
        dim, blocks = found
        full_shape = shape[:dim] + (blocks * self.total,) + shape[dim + 1 :]
        if kind == "fill":
            full = args[0].new_empty(full_shape)
            func(full, *args[1:], **kwargs)
            with torch.no_grad():
                args[0].copy_(self._take(full, dim, blocks))
            return args[0]
        if kind == "like":
            return self._take(func(args[0].new_empty(full_shape), *args[1:], **kwargs), dim, blocks)
        index = self._tile_index(blocks, args[0].device)
        tiled = [
            a.index_select(dim, index) if isinstance(a, torch.Tensor) and a.shape == shape else a for a in args
        ]
        return self._take(func(*tiled, **kwargs), dim, blocks)

    def _batch_dim(self, shape):
        # Pyro's batch dimensions sit left of the event's: look at dim -2 first, then leftwards, then -1.
        order = [*range(len(shape) - 2, -1, -1), len(shape) - 1] if shape else []
        for dim in order:
            if shape[dim] == self.rows:
                return dim, 1
        if self.rows > 1:
            for dim in order:
                if shape[dim] > 0 and shape[dim] % self.rows == 0:
                    return dim, shape[dim] // self.rows
        return None

    def _take(self, full, dim, blocks):
        if blocks == 1:
            return full.narrow(dim, self.offset, self.rows).contiguous()
        full = full.unflatten(dim, (blocks, self.total)).narrow(dim + 1, self.offset, self.rows)
        return full.flatten(dim, dim + 1).contiguous()

    def _tile_index(self, blocks, device):
        # Global position p of block j reads local row j * rows + (p - offset) mod rows, so that this
        # rank's rows sit at their own positions (the others hold copies, valid parameters).
        position = torch.arange(self.total, device=device)
        local = (position - self.offset).remainder(self.rows)
        return (local + self.rows * torch.arange(blocks, device=device)[:, None]).reshape(-1)


# -- sharded evaluation ------------------------------------------------------------------------------


def lower_bound(world, model, guide, x, seed):
    """
    :func:`pyro_aevb.infer.elbo.lower_bound` of ``x`` with a seed, computed by all the ranks together:
    each evaluates its share of every chunk with the global draws, and the sums are all-reduced.
    """
    chunk_size = inspect.signature(_lower_bound).parameters["chunk_size"].default
    total = 0.0
    with torch.random.fork_rng(devices=cuda_devices(x)), torch.no_grad():
        torch.manual_seed(seed)
        for chunk in torch.split(x, chunk_size):
            start, stop = world.rows(chunk.shape[0])
            if stop > start:
                with GlobalDraws(stop - start, chunk.shape[0], start):
                    total += _lower_bound(model, guide, chunk[start:stop], chunk_size=chunk_size) * (stop - start)
    return world.sum([total])[0] / x.shape[0]


def log_marginal(world, model, x, seed, estimator, guide=None, **options):
    """
    The mean of :func:`pyro_aevb.infer.marginal.log_marginal_likelihood` over ``x`` (seeded with ``seed``),
    computed by all the ranks together: each estimates its share of the rows, with the global draws.
    """
    if estimator == "is" and "chunk_size" not in options:
        options["chunk_size"] = default_is_chunk_size(x.shape[0])  # the chunks of one process
    start, stop = world.rows(x.shape[0])
    total = 0.0
    if stop > start:
        with torch.random.fork_rng(devices=cuda_devices(x)), GlobalDraws(stop - start, x.shape[0], start):
            torch.manual_seed(seed)
            total = float(log_marginal_likelihood(model, x[start:stop], estimator=estimator, guide=guide, **options).sum())
    return world.sum([total])[0] / x.shape[0]
