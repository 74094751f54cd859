"""
Your model object through a run: train(model=obj), load_run(path, model=obj) with names and shapes
checked, evaluate_run(model=obj), model functions with their parameters in Pyro's param store,
``--model-class path/to/file.py:Class`` (the file run again on loading or resuming only when trusted),
and a class of ``__main__`` named alone refused up front.
"""

import inspect
import json
import re
import sys

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


#: A user's model file, written by the tests: LaplaceVAE's source as ``FileVAE``, after a line that
#: appends to the file ``RAN`` names, so that a test sees whether (and how often) the file was run.
MODEL_FILE = """
import os

import pyro
import pyro.distributions as dist
from torch import nn

with open(os.environ["RAN"], "a") as f:
    f.write("ran\\n")


""" + inspect.getsource(LaplaceVAE).replace("class LaplaceVAE", "class FileVAE")


def _file_run(tmp_path, monkeypatch):
    """A run trained from the command line with --model-class FILE.py:FileVAE; returns (run, class path, ran)."""
    script, ran = tmp_path / "user_model.py", tmp_path / "ran.txt"
    script.write_text(MODEL_FILE)
    monkeypatch.setenv("RAN", str(ran))
    np.save(tmp_path / "data.npy", _data())
    run, named = tmp_path / "run", f"{script}:FileVAE"
    assert main(["train", "--dataset", str(tmp_path / "data.npy"), "--model-class", named,
                 "--samples", "100", "--batch-size", "20", "--latent-dim", "2", "--hidden", "8",
                 "--eval-train-points", "20", "--checkpoint-every", "100", "--out", str(run), "--no-progress"]) == 0
    assert ran.read_text() == "ran\n", "training named the file: it was imported once"
    # A fresh process would import it again: forget the module, so that a run of it shows in RAN.
    for name in [n for n in sys.modules if n.startswith("_pyro_aevb_file_")]:
        monkeypatch.delitem(sys.modules, name)
    ran.unlink()
    return run, named, ran


def test_model_class_by_file_path_is_trained_and_loaded_again_only_when_trusted(tmp_path, monkeypatch, capsys):
    """--model-class path/to/file.py:Class trains from the file; loading the run runs that file only on request."""
    run, named, ran = _file_run(tmp_path, monkeypatch)
    with pytest.raises(ConfigError, match=r"names its model class by a file.*trust_model_file=True.*model="):
        load_run(run)
    assert main(["evaluate", str(run), "--estimator", "is", "--num-points", "5", "--num-samples", "4", "--no-progress"]) != 0
    assert "--trust-model-file" in capsys.readouterr().err
    assert not ran.exists(), "loading ran the file that the run folder names"
    vae = load_run(run, trust_model_file=True)
    assert type(vae).__name__ == "FileVAE" and vae.decoder[0].weight.shape == (8, 2)
    assert ran.read_text() == "ran\n"
    assert main(["evaluate", str(run), "--estimator", "is", "--num-points", "5", "--num-samples", "4",
                 "--trust-model-file", "--no-progress"]) == 0


def test_resuming_a_run_named_by_file_runs_the_file_only_when_named_again_or_trusted(tmp_path, monkeypatch, capsys):
    run, named, ran = _file_run(tmp_path, monkeypatch)
    more = ["--samples", "140", "--out", str(run), "--no-progress", "--resume"]
    assert main(["train", *more]) != 0
    assert re.search(r"names its model class by a file.*--model-class", capsys.readouterr().err)
    assert not ran.exists(), "resuming ran the file that the run folder names"
    assert main(["train", *more, "--model-class", named]) == 0  # the same command as the first: trusted
    assert ran.read_text() == "ran\n"
    assert main(["train", "--samples", "160", "--out", str(run), "--no-progress", "--resume", "--trust-model-file"]) == 0
    assert load_run(run, trust_model_file=True).metrics[-1]["samples"] >= 160


def test_a_tampered_config_naming_another_file_is_not_run(tmp_path, monkeypatch):
    """A config.json edited to name some other script: loading and evaluating refuse, and the script never runs."""
    run, _, ran = _file_run(tmp_path, monkeypatch)
    other = tmp_path / "elsewhere.py"
    other.write_text("import os\nopen(os.environ['RAN'], 'a').write('other\\n')\n")
    config = json.loads((run / "config.json").read_text())
    config["config"]["model_class"] = f"{other}:FileVAE"
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="elsewhere.py"):
        load_run(run)
    with pytest.raises(ConfigError, match="elsewhere.py"):
        evaluate_run(run, "is", num_points=5, num_samples=4)
    assert not ran.exists()