"""
Training on your own data: tensors, arrays, pairs, dicts, torch Datasets and files, of any shape, with
a seeded held-out split recorded in the run folder, the likelihood chosen from the values, changed
data refused on resume and evaluate, and every kind of bad data refused before a run folder exists.
"""

import json

import numpy as np
import pytest
import torch

from pyro_aevb import MinibatchSampler, TrainConfig, lower_bound, train
from pyro_aevb.data import DataError
from pyro_aevb.experiment.cli import main
from pyro_aevb.experiment.evaluate import evaluate_run
from pyro_aevb.own_data import as_dataset, held_out_rows, read_data_file

TINY = dict(samples=200, batch_size=20, hidden=8, latent_dim=2, eval_train_points=20, checkpoint_every=100)


def _binary(rows=100, shape=(6,), seed=0):
    return (np.random.RandomState(seed).rand(rows, *shape) > 0.5).astype(np.float32)


def _train(tmp_path, data, name="run", **settings):
    return train(TrainConfig(**{**TINY, **settings}), out=tmp_path / name, data=data, progress=False)


def _record(run):
    return json.loads((run / "data.json").read_text())


@pytest.mark.parametrize("kind", ["ndarray", "tensor", "pair", "dict", "torch-dataset"])
def test_every_kind_of_data_trains(tmp_path, kind):
    """Each accepted form gives a run whose data.json records the shapes; test sets given are used as given."""
    x = _binary()
    data = {
        "ndarray": x,
        "tensor": torch.from_numpy(x),
        "pair": (x[:80], x[80:]),
        "dict": {"train": x[:80], "test": x[80:]},
        "torch-dataset": torch.utils.data.TensorDataset(torch.from_numpy(x), torch.zeros(100)),
    }[kind]
    _train(tmp_path, data)
    record = _record(tmp_path / "run")
    given_test = kind in ("pair", "dict")
    assert record["shape"] == ({"train": [80, 6], "test": [20, 6]} if given_test else {"train": [90, 6], "test": [10, 6]})
    assert (record["held_out_rows"] is None) == given_test


def test_held_out_split_is_seeded_and_kept_on_resume(tmp_path):
    """The held-out rows depend on the seed alone, are recorded, and a resumed run keeps them."""
    x = _binary()
    _train(tmp_path, x, samples=100, seed=3)
    rows = _record(tmp_path / "run")["held_out_rows"]
    assert rows == held_out_rows(100, 0.1, 3).tolist()
    assert rows != held_out_rows(100, 0.1, 4).tolist()
    train(None, out=tmp_path / "run", resume=True, data=x, samples=200, progress=False)
    assert _record(tmp_path / "run")["held_out_rows"] == rows


def test_likelihood_is_chosen_from_the_values_and_recorded(tmp_path):
    """0/1 data get a Bernoulli likelihood, other values a Gaussian one; config.json says which."""
    with pytest.warns(UserWarning, match="the likelihood: bernoulli"):
        _train(tmp_path, _binary(), "binary")
    real = np.random.RandomState(0).randn(100, 6).astype(np.float32)
    with pytest.warns(UserWarning, match="the likelihood: gaussian"):
        vae = _train(tmp_path, real, "real")
    assert vae.likelihood == "gaussian"
    for name, likelihood in (("binary", "bernoulli"), ("real", "gaussian")):
        assert json.loads((tmp_path / name / "config.json").read_text())["config"]["likelihood"] == likelihood


def test_data_outside_the_built_in_decoders_range_are_named(tmp_path, recwarn):
    """The built-in Gaussian decoder's means lie in (0, 1): data beyond that get a note naming their range; data within do not."""
    real = np.random.RandomState(0).randn(100, 6).astype(np.float32)
    with pytest.warns(UserWarning, match=r"range from -\d\.\d+ to \d\.\d+, but the built-in Gaussian decoder's means lie in \(0, 1\)"):
        _train(tmp_path, real, "standardised")
    recwarn.clear()
    _train(tmp_path, np.random.RandomState(0).rand(100, 6).astype(np.float32), "unit")
    assert not [w for w in recwarn if "built-in Gaussian decoder" in str(w.message)]


def test_image_shaped_data(tmp_path):
    """[N, 1, H, W] data: the built-in nets flatten it, and the bound, the sampler and the figures take it."""
    x = _binary(shape=(1, 2, 3))
    vae = _train(tmp_path, x)
    assert (tmp_path / "run" / "reconstructions.png").exists()
    images = torch.from_numpy(x)
    # the bound of image-shaped data is the bound of the same data flattened (same draws)
    assert lower_bound(vae.model, vae.guide, images, seed=0) == pytest.approx(
        lower_bound(vae.model, vae.guide, images.reshape(100, 6), seed=0), rel=1e-6)
    idx, batch = MinibatchSampler(images, 10, 0).next()
    assert batch.shape == (10, 1, 2, 3) and torch.equal(batch, images[idx])


def test_data_file_from_the_command_line(tmp_path, capsys):
    """--dataset PATH: the file's path, shape and sha256 are recorded; a changed file is refused by hash."""
    path = tmp_path / "mine.npz"
    np.savez(path, train=_binary(80), test=_binary(20, seed=1))
    run = tmp_path / "run"
    args = ["train", "--dataset", str(path), "--samples", "100", "--batch-size", "20", "--hidden", "8",
            "--latent-dim", "2", "--eval-train-points", "20", "--out", str(run), "--no-progress"]
    assert main(args) == 0
    record = _record(run)
    assert record["source"] == str(path) and record["shape"]["train"] == [80, 6] and len(record["sha256"]) == 64
    np.savez(path, train=_binary(80, seed=2), test=_binary(20, seed=1))
    assert main(["train", "--out", str(run), "--resume", "--samples", "200", "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert record["sha256"] in error and "has sha256" in error
    with pytest.raises(DataError, match=record["sha256"]):
        evaluate_run(run, "is", num_points=5, num_samples=5)


def test_a_relative_data_path_is_recorded_whole(tmp_path, monkeypatch):
    """--dataset mine.npz typed in one directory: the run records the full path, and resumes and evaluates from another."""
    (tmp_path / "work").mkdir()
    np.savez(tmp_path / "work" / "mine.npz", train=_binary(80), test=_binary(20, seed=1))
    monkeypatch.chdir(tmp_path / "work")
    args = ["train", "--dataset", "mine.npz", "--samples", "100", "--batch-size", "20", "--hidden", "8",
            "--latent-dim", "2", "--eval-train-points", "20", "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(args) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert config["dataset"] == str((tmp_path / "work" / "mine.npz").resolve())
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--out", str(tmp_path / "run"), "--resume", "--samples", "200", "--no-progress"]) == 0
    assert evaluate_run(tmp_path / "run", "is", num_points=5, num_samples=5)["num_points"] == 5


def test_evaluate_run_with_given_data(tmp_path):
    x = _binary()
    _train(tmp_path, x)
    with pytest.raises(DataError, match="pass the same data="):
        evaluate_run(tmp_path / "run", "is", num_points=5, num_samples=5)
    result = evaluate_run(tmp_path / "run", "is", num_points=5, num_samples=5, data=x)
    assert result["num_points"] == 5


def _bad(tmp_path, name):
    """The bad data of each case, in memory or written to a file."""
    x = _binary()
    if name == "nan":
        x[7, 2] = np.nan
        return x, "row 7"
    if name == "inf":
        x[3, 0] = np.inf
        return x, "row 3"
    if name == "one-row":
        return x[:1], "at least 2 rows"
    if name == "shapes":
        return (x, _binary(10, shape=(5,))), "different shapes"
    if name == "support":
        return x * 2, "outside \\[0, 1\\]"
    if name == "object-array":
        return np.array([[1, "a"], [0, None]], dtype=object), "dtype object"
    path = tmp_path / {"pickle-npy": "x.npy", "pickle-pt": "x.pt", "missing": "none.npz", "format": "x.csv"}[name]
    if name == "pickle-npy":
        np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    elif name == "pickle-pt":
        torch.save({"train": torch.zeros(3, 2), "note": object()}, path)
    elif name == "format":
        path.write_text("1,0\n0,1\n")
    return str(path), {"pickle-npy": "pickled", "pickle-pt": "pickled", "missing": "does not exist",
                       "format": "unknown data file format"}[name]


BAD = ["nan", "inf", "one-row", "shapes", "support", "object-array", "pickle-npy", "pickle-pt", "missing", "format"]


@pytest.mark.parametrize("name", BAD)
def test_bad_data_is_refused_without_a_run_folder(tmp_path, name):
    data, message = _bad(tmp_path, name)
    run = tmp_path / "run"
    settings = dict(likelihood="bernoulli") if name == "support" else {}
    with pytest.raises(DataError, match=message):
        if isinstance(data, str):
            train(TrainConfig(dataset=data, **TINY), out=run, progress=False)
        else:
            _train(tmp_path, data, **settings)
    assert not run.exists()


def test_read_data_file_forms(tmp_path):
    """.npy: one array, the training set; .pt: a tensor or a dict; .npz: train and test."""
    x = _binary(10)
    np.save(tmp_path / "a.npy", x)
    torch.save(torch.from_numpy(x), tmp_path / "b.pt")
    torch.save({"train": torch.from_numpy(x), "test": torch.from_numpy(x[:4])}, tmp_path / "c.pt")
    assert np.array_equal(read_data_file(tmp_path / "a.npy")["train"], x)
    assert torch.equal(read_data_file(tmp_path / "b.pt")["train"], torch.from_numpy(x))
    assert set(read_data_file(tmp_path / "c.pt")) == {"train", "test"}
    dataset, rows = as_dataset(read_data_file(tmp_path / "c.pt"))
    assert rows is None and dataset.num_test == 4
    # A single array of any name, as np.savez(path, x) or np.savez(path, pixels=x) writes it: the training set.
    np.savez(tmp_path / "d.npz", x)
    np.savez(tmp_path / "e.npz", pixels=x)
    for name in ("d.npz", "e.npz"):
        assert list(read_data_file(tmp_path / name)) == ["train"]
        assert np.array_equal(read_data_file(tmp_path / name)["train"], x)
    # Two arrays neither of which is 'train' are refused, naming what the file holds.
    np.savez(tmp_path / "f.npz", pixels=x, labels=x[:, 0])
    with pytest.raises(DataError, match=r"one array, or an array 'train'.*\['labels', 'pixels'\]"):
        read_data_file(tmp_path / "f.npz")
