"""Data-parallel training under torchrun: a job of two CPU processes computes what one process computes."""

import os
import sys

import pyro.distributions as dist
import pytest
import torch

from tests.helpers.commands import TINY, assert_same_run, run, single, torchrun

from pyro_aevb import ConfigError, TrainConfig
from pyro_aevb.experiment.distributed import GlobalDraws, World
from pyro_aevb.experiment.rundir import RunDir
from pyro_aevb.experiment.train import _Trainer


# -- the random draws of the global minibatch -----------------------------------------------------------


@pytest.mark.parametrize(
    "draw, shape",
    [
        (lambda loc: dist.Normal(loc, 1.0).rsample(), (6, 7)),
        (lambda loc: dist.Normal(loc, 1.0).rsample((4,)), (6, 7)),  # particles, L = 4 rows on one rank [L, M, Nz]
        (lambda loc: dist.Normal(loc.repeat(3, 1), 1.0).rsample(), (6, 7)),  # rows repeated, as wake-sleep's L
        (lambda p: dist.Bernoulli(probs=p.sigmoid()).sample(), (6, 5)),
        (lambda loc: torch.randn_like(loc) + torch.rand_like(loc), (6, 7)),
    ],
    ids=["rsample", "particles", "repeated-rows", "bernoulli", "like"],
)
def test_ranks_draw_the_rows_one_process_draws(draw, shape):
    """Each rank's draws under GlobalDraws are its rows of the single-process draw, from the same seed."""
    params = torch.randn(shape)
    torch.manual_seed(1)
    whole = draw(params)
    blocks = whole.shape[-2] // shape[0] if whole.dim() == 2 else 1
    for start, stop in [(0, 2), (2, 6)]:  # uneven shares, as evaluation has them
        torch.manual_seed(1)
        with GlobalDraws(stop - start, shape[0], start):
            part = draw(params[start:stop])
        expected = whole.unflatten(-2, (blocks, shape[0]))[..., start:stop, :].flatten(-3, -2) if blocks > 1 \
            else whole[..., start:stop, :]
        torch.testing.assert_close(part, expected, rtol=0, atol=0, msg=f"rows {start}:{stop}")


def test_draws_of_other_shapes_are_left_alone():
    torch.manual_seed(2)
    whole = torch.randn(7)
    torch.manual_seed(2)
    with GlobalDraws(3, 6, 3):
        assert torch.equal(torch.randn(7), whole)


# -- settings a job refuses --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [(dict(batch_size=99), "multiple of the 2 processes"), (dict(method="mcem"), "not sharded")],
    ids=["batch-size", "mcem"],
)
def test_a_job_refuses_what_it_cannot_shard(options, message, tmp_path):
    config = TrainConfig(dataset="mnist5k", latent_dim=2, hidden=20, samples=200, **options)
    with pytest.raises(ConfigError, match=message):
        _Trainer(config.validate(), RunDir(tmp_path), False, World(rank=0, size=2))


# -- two processes against one ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--samples", 1000, "--log-marginal", "is", "--log-marginal-points", 50,
         "--log-marginal-option", "num_samples=20"],
        ["--samples", 1000, "--method", "wake-sleep"],
        ["--samples", 1000, "--method", "iwae", "--num-particles", 3],
        ["--samples", 1000, "--method", "rws", "--num-particles", 3],
    ],
    ids=["aevb+is", "wake-sleep", "iwae", "rws"],
)
def test_two_processes_equal_one(args, tmp_path):
    one = run(single(*TINY, *args, "--out", tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    two = run(torchrun(*TINY, *args, "--out", tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-3000:]
    assert_same_run(tmp_path / "two", tmp_path / "one")
    written = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert not [n for n in written if n.endswith(".tmp")], f"temporary files left: {written}"


_CLOSE_SCRIPT = """
import os, sys, torch, pyro
from pyro_aevb.experiment import distributed
from pyro_aevb.optim import FusedAdagrad

threads = lambda: len(os.listdir("/proc/self/task"))
before = threads()
world = distributed.init_world()
param = pyro.param("w", torch.randn(5))
(param ** 2).sum().backward()
with world.reduce_gradients():
    FusedAdagrad({"lr": 0.1})([param])  # torch.optim's first step, as training takes it
world.close()
# One file per rank: two ranks printing to one pipe can interleave their lines.
with open(os.path.join(sys.argv[1], "threads-" + os.environ["RANK"]), "w") as f:
    f.write(f"{before} {threads()}")
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_closing_the_world_stops_the_process_group_threads(tmp_path):
    """
    After World.close, none of gloo's threads are left: a process group that outlives close releases its
    last tensors during interpreter shutdown, which aborts the process now and then.
    """
    script = tmp_path / "close.py"
    script.write_text(_CLOSE_SCRIPT)
    command = [os.path.join(os.path.dirname(sys.executable), "torchrun"), "--nproc_per_node=2", "--standalone",
               str(script), str(tmp_path)]
    done = run(command, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    counts = [path.read_text().split() for path in sorted(tmp_path.glob("threads-*"))]
    assert len(counts) == 2, f"one count per rank expected, found {counts}"
    for before, after in counts:
        assert int(after) <= int(before), f"{after} threads after close, {before} before the job began"
