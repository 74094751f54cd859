"""
Networks, optimizers and learning-rate schedules: several hidden layers and other activations for the
built-in nets, any torch.optim optimizer (one fused optimizer over all parameters), a schedule stepped
once per epoch, and exact resumption of both the optimizer's and the schedule's state.
"""

import math

import numpy as np
import pyro
import pyro.optim
import pytest
import torch

from pyro_aevb import AEVB, VAE, TrainConfig, train
from pyro_aevb.errors import ConfigError
from pyro_aevb.optim import FusedOptim, make_optim

TINY = dict(batch_size=20, hidden=[8, 6], latent_dim=2, eval_train_points=20, checkpoint_every=200,
            optim="Adam", lr=0.01, lr_scheduler="MultiStepLR", lr_scheduler_options=dict(milestones=[1, 3], gamma=0.5))
BURDA = dict(milestones=[1, 4, 13, 40, 121, 364, 1093], gamma=10 ** (-1 / 7))


def _data():
    return (np.random.RandomState(0).rand(110, 5) > 0.5).astype(np.float32)  # 99 training rows, 11 held out


def _params(run):
    return {k: v for k, v in torch.load(run / "checkpoint.pt", weights_only=True)["vae"].items()}


def test_resume_with_adam_and_a_schedule_is_exact(tmp_path):
    """Stopped at 600 samples (mid-epoch, between milestones) and resumed to 1200: bit for bit the same run."""
    data = _data()
    train(TrainConfig(samples=1200, **TINY), out=tmp_path / "whole", data=data, progress=False)
    train(TrainConfig(samples=600, **TINY), out=tmp_path / "parts", data=data, progress=False)
    train(None, out=tmp_path / "parts", resume=True, samples=1200, data=data, progress=False)
    whole, parts = _params(tmp_path / "whole"), _params(tmp_path / "parts")
    assert whole.keys() == parts.keys()
    for name in whole:
        assert torch.equal(whole[name], parts[name]), f"{name} differs after resuming"
    states = [torch.load(tmp_path / run / "checkpoint.pt", weights_only=True) for run in ("whole", "parts")]
    assert states[0]["lr_scheduler"] == states[1]["lr_scheduler"]
    assert states[0]["method"]["optim"].keys() == states[1]["method"]["optim"].keys()


def test_burdas_schedule_steps_once_per_epoch(tmp_path):
    """MultiStepLR with Burda et al.'s milestones: after 14 epochs three milestones (1, 4, 13) have passed."""
    data = _data()  # 99 training rows; batch 33: three steps an epoch
    settings = dict(TINY, batch_size=33, lr=1e-3, lr_scheduler_options=BURDA)
    train(TrainConfig(samples=14 * 99, **settings), out=tmp_path / "run", data=data, progress=False)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["lr_scheduler"]
    assert state["last_epoch"] == 14
    assert state["_last_lr"][0] == pytest.approx(1e-3 * 10 ** (-3 / 7), rel=1e-12)


def test_fused_adam_makes_adams_update():
    """FusedOptim(Adam) over all parameters moves each as pyro.optim.Adam's per-tensor optimizers do."""
    values = []
    for optim in (make_optim("Adam", lr=0.1, weight_decay=0.5), pyro.optim.Adam({"lr": 0.1, "weight_decay": 0.5})):
        pyro.clear_param_store()
        params = [pyro.param("a", torch.ones(3)).unconstrained(), pyro.param("b", torch.full((2, 2), -1.0)).unconstrained()]
        for step in range(4):
            for p in params:
                p.grad = torch.full_like(p, 0.3 * (step + 1))
            optim(params)
        values.append(torch.cat([p.detach().flatten() for p in params]))
    assert isinstance(make_optim("Adam"), FusedOptim)
    assert not torch.equal(values[0], torch.tensor([1.0] * 3 + [-1.0] * 4)), "nothing moved"
    # float32, four steps of fused vs per-tensor kernels: rounding of order 1e-7
    assert torch.allclose(values[0], values[1], rtol=1e-6, atol=1e-7)

def test_deeper_nets_compute_what_they_say():
    """hidden_dim=(8, 6), relu: h = relu(W2 relu(W1 x + b1) + b2), and the fast path agrees with SVI."""
    torch.manual_seed(0)
    vae = VAE(5, 2, (8, 6), activation="relu", init_std=0.3)
    x = torch.rand(4, 5)
    enc = vae.encoder
    h = torch.relu(enc.deeper[0](torch.relu(enc.hidden(x))))
    loc, _ = enc(x)
    assert torch.equal(loc, enc.loc(h))
    losses = []
    for fast_path in (True, False):
        pyro.clear_param_store()
        pyro.set_rng_seed(1)
        losses.append(AEVB(VAE(5, 2, (8, 6), activation="relu", init_std=0.3), fast_path=fast_path).step(x, 40))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


@pytest.mark.parametrize("settings, message", [
    (dict(optim="Adamm"), "unknown optimizer 'Adamm'"),
    (dict(optim="Adam", optim_options={"betas": 3}), "optim 'Adam'"),
    (dict(lr_scheduler="StepLRR"), "unknown lr_scheduler"),
    (dict(lr_scheduler="StepLR"), "cannot build lr_scheduler StepLR"),
    (dict(lr_scheduler_options={"gamma": 0.5}), "only with an lr_scheduler"),
    (dict(activation="swish"), "unknown activation 'swish'"),
    (dict(hidden=[200, 0]), "hidden must be"),
], ids=["optim", "optim-option", "scheduler", "scheduler-option", "options-alone", "activation", "hidden"])
def test_bad_settings_are_refused_before_a_run_folder_exists(tmp_path, settings, message):
    with pytest.raises(ConfigError, match=message):
        train(TrainConfig(samples=100, **settings), out=tmp_path / "run", data=_data(), progress=False)
    assert not (tmp_path / "run").exists()


def test_paper_defaults_are_unchanged():
    config = TrainConfig()
    assert (config.optim, config.lr_scheduler, config.activation, config.hidden) == ("Adagrad", None, "tanh", None)
    assert math.isclose(config.lr, 0.02)
