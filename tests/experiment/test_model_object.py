"""
Your model object through a run: train(model=obj), load_run(path, model=obj) with names and shapes
checked, evaluate_run(model=obj), model functions with their parameters in Pyro's param store,
``--model-class path/to/file.py:Class``, and a class of ``__main__`` named alone refused up front.
"""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_aevb import TrainConfig, load_run, train
from pyro_aevb.errors import ConfigError
from pyro_aevb.experiment.cli import main
from pyro_aevb.experiment.evaluate import evaluate_run

TINY = dict(samples=200, batch_size=20, latent_dim=2, eval_train_points=20, checkpoint_every=100)


class LaplaceVAE(nn.Module):
    """A user's model: real-valued data with a Laplace likelihood, and its amortised guide (the method scales by N/M)."""

    def __init__(self, x_dim=4, z_dim=2, hidden_dim=8):
        super().__init__()
        self.z_dim = z_dim
        self.decoder = nn.Sequential(nn.Linear(z_dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, x_dim))
        self.encoder = nn.Sequential(nn.Linear(x_dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, 2 * z_dim))

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Laplace(self.decoder(z), 0.5).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        loc, log_scale = self.encoder(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


def _data():
    return np.random.RandomState(0).standard_t(3, size=(60, 4)).astype(np.float32)


def _trained(tmp_path, **settings):
    torch.manual_seed(0)
    model = LaplaceVAE(**settings)
    train(TrainConfig(**TINY), out=tmp_path / "run", data=_data(), model=model, progress=False)
    return model


def test_load_run_puts_exactly_the_trained_parameters_into_the_object(tmp_path):
    trained = _trained(tmp_path)
    torch.manual_seed(1)
    fresh = LaplaceVAE()
    assert not torch.equal(fresh.decoder[0].weight, trained.decoder[0].weight)
    loaded = load_run(tmp_path / "run", model=fresh)
    assert loaded is fresh
    for (name, a), (_, b) in zip(trained.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), f"{name} differs from the trained value"
    result = evaluate_run(tmp_path / "run", "is", num_points=5, num_samples=10, data=_data(), model=LaplaceVAE())
    assert np.isfinite(result["log_marginal_likelihood"])


def test_a_model_of_another_shape_is_named(tmp_path):
    _trained(tmp_path)
    with pytest.raises(ConfigError, match=r"'decoder.0.weight' has shape \(8, 2\) in the run's .* but \(5, 2\)"):
        load_run(tmp_path / "run", model=LaplaceVAE(hidden_dim=5))


def test_model_functions_with_params_in_the_store(tmp_path):
    """model=fn, guide=fn: the run's checkpoint holds the param store, and load_run restores it exactly."""

    def model(x, num_data=None):
        loc = pyro.param("loc", torch.zeros(4))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(loc + z.unsqueeze(-1), 1.0).to_event(1), obs=x)

    def guide(x, num_data=None):
        scale = pyro.param("scale", torch.ones(()), constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0]), scale))

    train(TrainConfig(**TINY), out=tmp_path / "run", data=_data(), model=model, guide=guide, progress=False)
    trained = {name: pyro.param(name).detach().clone() for name in ("loc", "scale")}
    assert not torch.equal(trained["loc"], torch.zeros(4)), "training moved nothing"
    pyro.clear_param_store()
    load_run(tmp_path / "run", model=model, guide=guide)
    for name, value in trained.items():
        assert torch.equal(pyro.param(name).detach(), value), f"{name} is not the trained value"
    with pytest.raises(ConfigError, match="pass the model object"):
        load_run(tmp_path / "run")


def test_a_class_in_main_by_name_alone_is_refused_up_front(tmp_path):
    with pytest.raises(ConfigError, match=r"model=.*path/to/script.py:Class"):
        train(TrainConfig(model_class="__main__:LaplaceVAE", **TINY), out=tmp_path / "run", data=_data(), progress=False)
    assert not (tmp_path / "run").exists()


def test_an_object_of_a_main_class_trains_and_load_run_says_to_pass_it(tmp_path):
    cls = type("ScriptVAE", (LaplaceVAE,), {"__module__": "__main__"})
    train(TrainConfig(**TINY), out=tmp_path / "run", data=_data(), model=cls(), progress=False)
    with pytest.raises(ConfigError, match=r"cannot import model class '__main__:ScriptVAE'.*model="):
        load_run(tmp_path / "run")
    assert isinstance(load_run(tmp_path / "run", model=cls()), cls)


def test_model_class_by_file_path_from_the_command_line(tmp_path):
    """--model-class tests/experiment/test_model_object.py:LaplaceVAE: imported from the file, then loaded again from it."""
    np.save(tmp_path / "data.npy", _data())
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(tmp_path / "data.npy"), "--model-class", f"{__file__}:LaplaceVAE",
                 "--samples", "100", "--batch-size", "20", "--latent-dim", "2", "--hidden", "8",
                 "--eval-train-points", "20", "--out", str(run), "--no-progress"]) == 0
    vae = load_run(run)
    assert type(vae).__name__ == "LaplaceVAE" and vae.decoder[0].weight.shape == (8, 2)
