"""
Loading a trained model back from its run folder (:func:`load_run`), and putting a checkpoint's
parameters into a model (:func:`restore_parameters`), which resuming a run does too.
"""

import pyro
import torch

from pyro_aevb.errors import ConfigError, RunDirError, note
from pyro_aevb.experiment.build import build_model
from pyro_aevb.experiment.checkpoint import load_latest, previous_path
from pyro_aevb.experiment.state import restore_param_store
from pyro_aevb.experiment.config import TrainConfig, read_config
from pyro_aevb.experiment.model_object import as_model_object, check_state
from pyro_aevb.experiment.rundir import RunDir, metrics_as_floats, read_metrics

__all__ = ["load_run", "restore_parameters"]


def restore_parameters(vae, state, x, source, *, replace=False, check_params=False):
    """
    Put the parameters of the checkpoint ``state`` into the model object ``vae``: its modules' state,
    then the values of the ``pyro.param`` sites outside the modules (a learnable prior, say), which live
    in Pyro's param store. The live parameters are entered in the store by a run of the guide and the
    model on ``x``, and the saved values are copied into them in place (an optimizer that holds them
    keeps holding them).

    :param vae: a :class:`torch.nn.Module` with Pyro ``.model`` and ``.guide``.
    :param dict state: the checkpoint.
    :param torch.Tensor x: one datapoint ``[1, ...]`` to run the guide and the model on.
    :param source: the checkpoint's path, for the messages.
    :param bool replace: first drop the store's entries of the checkpoint's names (left by another model,
        they would shadow this one's); a run being resumed keeps its own.
    :param bool check_params: also check that the param store's entries the run touches are the
        checkpoint's, by name and shape (for a model object the caller built).
    :raises ConfigError: at the first parameter whose name or shape differs.
    """
    check_state(state["vae"], vae.state_dict(), f"checkpoint ({source})")
    vae.load_state_dict(state["vae"])
    store = pyro.get_param_store()
    if replace:
        for name in state["param_store"]["params"]:
            if name in store:
                del store[name]
    with torch.random.fork_rng(devices=[]), pyro.poutine.block():
        traces = [pyro.poutine.trace(fn).get_trace(x) for fn in (vae.guide, vae.model)]
    if check_params:
        names = {name for trace in traces for name, site in trace.nodes.items() if site["type"] == "param"}
        check_state(state["param_store"]["params"], {name: store[name].unconstrained() for name in names},
                    f"param store ({source})")
    restore_param_store(state["param_store"])


def load_run(run_dir, device="cpu", model=None, guide=None, trust_model_file=False):
    """
    Load a trained model from a run folder written by :func:`~pyro_aevb.experiment.train.train` (or
    ``pyro-aevb train``).

    :param run_dir: the run folder.
    :param device: where to put the model.
    :param model: your model object, built as the run's was (PyTorch's ``state_dict`` idiom: the
        architecture from you, the weights from the folder): a :class:`torch.nn.Module` with ``.model``
        and ``.guide``, or a model function with ``guide=``. The run's parameters are put into it,
        after their names and shapes are checked (the first mismatch is named). Without it, the run's
        model class is imported and built, which needs the class to be importable (not defined in a
        script's ``__main__``).
    :param guide: the guide function, with a model function.
    :param bool trust_model_file: a run whose model class is named by a file
        (``--model-class path/to/file.py:Class``) is built, without ``model=``, only when this is true:
        importing the class runs that file, and loading a run never runs code from a file that its
        folder names unless you say so.
    :returns: the model (a :class:`~pyro_aevb.models.vae.VAE`, the run's model class, or the object
        given). Its ``.model`` and ``.guide`` are the Pyro functions. ``.config`` holds the run's
        :class:`~pyro_aevb.experiment.config.TrainConfig`, ``.metrics`` the rows of ``metrics.csv``.
    """
    run = RunDir(run_dir)
    if not (run.checkpoint_path.exists() or previous_path(run.checkpoint_path).exists()):
        raise RunDirError(f"no checkpoint in {run.path}: is it a run folder written by `pyro-aevb train`?")
    state, _ = load_latest(run.checkpoint_path, map_location=device, log=note)
    try:
        _, config = read_config(run, unknown="ignore")
    except (ConfigError, RunDirError) as e:
        if "config" not in state:
            raise
        note(f"{e}; using the settings stored in the checkpoint")
        config = TrainConfig.from_dict(state["config"], source=f"the settings in {run.checkpoint_path}", unknown="ignore")
    config.device = str(device)
    if model is not None:
        vae = as_model_object(model, guide).to(device)
    else:
        try:
            vae = build_model(config, state["x_dim"], trust_model_file).to(device)
        except ConfigError as e:
            raise ConfigError(f"{e}. To load this run, pass the model object: load_run(path, model=...)") from None
    x = torch.zeros(1, *state.get("data_shape", [state["x_dim"]]), device=device)
    # The caller's object: its Pyro parameters must be the run's.
    restore_parameters(vae, state, x, run.checkpoint_path, replace=True, check_params=model is not None)
    vae.config = config
    if "metrics" in state:
        vae.metrics = metrics_as_floats(state["metrics"])
    else:
        vae.metrics = read_metrics(run.metrics_path, strict=False) if run.metrics_path.exists() else []
    vae.eval()
    return vae
