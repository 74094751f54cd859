"""Fixtures of the tests of pyro_aevb.experiment."""

import pytest

from pyro_aevb import TrainConfig, train


@pytest.fixture(scope="module")
def aevb_run(tmp_path_factory):
    """
    The folder of a short AEVB run on mnist5k (2 latent dimensions, 20 hidden units, 300 samples), for the
    evaluation tests of one module; each module trains its own, so that no module sees another's files.
    """
    out = tmp_path_factory.mktemp("aevb") / "run"
    train(TrainConfig(dataset="mnist5k", latent_dim=2, hidden=20, samples=300, eval_points=1, eval_train_points=20),
          out, progress=False)
    return out
