"""
A user's own data as a :class:`~pyro_aevb.data.Dataset`: tensors, NumPy arrays, ``(train, test)``
pairs, dicts, :class:`torch.utils.data.Dataset` objects and ``.npz`` / ``.npy`` / ``.pt`` files.

Data of any shape ``[N, ...]`` is kept in its shape: the built-in nets flatten each datapoint, a
user's model sees its own shape. Without a test set a seeded held-out split is taken
(:func:`held_out_rows`), and :func:`describe` gives what a run folder records about the data (shapes,
the likelihood, the split's rows and a sha256 of the content), so that a resumed run and ``evaluate``
use the same split and refuse changed data.

Files are read without pickles (``allow_pickle=False``, ``weights_only=True``): a file that holds one
is refused.
"""

import hashlib
import math
import pathlib

import numpy as np
import torch

from pyro_aevb.data import Dataset, DataError, binarize_static, check_support

__all__ = ["FILE_SUFFIXES", "as_dataset", "choose_likelihood", "describe", "file_sha256", "held_out_rows", "read_data_file"]

#: The file formats ``--dataset PATH`` reads.
FILE_SUFFIXES = (".npz", ".npy", ".pt")


def file_sha256(path):
    """The sha256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_data_file(path):
    """
    The arrays in a data file: ``{"train": ..., "test": ...}`` (``"test"`` optional).

    - ``.npz``: arrays ``train`` and, optionally, ``test``; or a single array of any name (as
      ``np.savez(path, x)`` writes it), the training set;
    - ``.npy``: one array, the training set;
    - ``.pt``: a tensor (the training set) or a dict of them with ``"train"`` and optionally ``"test"``
      (or a single entry of any name, the training set).

    :raises DataError: for a missing file, another format, a file that holds pickles (object arrays
        included), or one with several arrays and none named ``train``.
    """
    path = pathlib.Path(path)
    if path.suffix not in FILE_SUFFIXES:
        raise DataError(f"{path}: unknown data file format {path.suffix or '(no suffix)'!r}; use .npz, .npy or .pt")
    if not path.is_file():
        raise DataError(f"the data file {path} does not exist")
    try:
        if path.suffix == ".pt":
            data = torch.load(path, map_location="cpu", weights_only=True)
        elif path.suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as archive:
                data = {name: archive[name] for name in archive.files}
    except ValueError as e:
        if "pickle" in str(e):
            raise DataError(f"{path} holds pickled objects (an object array?), which are not read: save plain numeric arrays") from None
        raise DataError(f"cannot read {path}: {e}") from None
    except Exception as e:  # torch's UnpicklingError and numpy's format errors have no common base
        if "weights_only" in str(e) or "Unpickl" in type(e).__name__:
            raise DataError(f"{path} holds pickled objects, which are not read: save a tensor or a dict of tensors") from None
        raise DataError(f"cannot read {path}: {e}") from None
    if isinstance(data, dict):
        if len(data) == 1 and "test" not in data:
            return {"train": next(iter(data.values()))}
        unknown = sorted(set(data) - {"train", "test"})
        if "train" not in data or unknown:
            raise DataError(f"{path} must hold one array, or an array 'train' and optionally 'test', found {sorted(data)}")
        return dict(data)
    return {"train": data}


def _as_tensor(x, what):
    """``x`` (a tensor or array) as a float32 CPU tensor, checked: numeric, at least 2 rows, finite."""
    if isinstance(x, np.ndarray):
        if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise DataError(f"{what} is a NumPy array of dtype {x.dtype}: it must hold numbers")
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{what} must be a tensor or a NumPy array, got {type(x).__name__}")
    if x.is_complex():
        raise DataError(f"{what} is complex ({x.dtype}): it must hold real numbers")
    if x.dim() < 1 or x.shape[0] < 2:
        raise DataError(f"{what} must have at least 2 rows (datapoints) along its first dimension, got shape {tuple(x.shape)}")
    x = x.detach().to("cpu", torch.float32).contiguous()
    bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(1)
    if bad.any():
        row = int(bad.nonzero()[0])
        raise DataError(f"{what} has NaN or infinite values in {int(bad.sum())} rows, the first in row {row}")
    return x


def _split_parts(data):
    """``(train, test or None)`` from the kinds of data :func:`as_dataset` takes."""
    if isinstance(data, dict):
        unknown = sorted(set(data) - {"train", "test"})
        if "train" not in data or unknown:
            raise DataError(f"a dict of data must have the key 'train' and optionally 'test', got {sorted(data)}")
        return data["train"], data.get("test")
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise DataError(f"data given as a sequence must be a pair (train, test), got {len(data)} items")
        return tuple(data)
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.Tensor):
        return _stack_items(data), None
    return data, None


def _stack_items(dataset):
    """The items of a :class:`torch.utils.data.Dataset` (tensors, or ``(tensor, label)`` pairs) stacked."""
    try:
        size = len(dataset)
    except TypeError:
        raise DataError(f"a torch Dataset must have a length, {type(dataset).__name__} has none") from None
    rows = []
    for i in range(size):
        item = dataset[i]
        if isinstance(item, (tuple, list)):
            item = item[0]
        item = torch.as_tensor(item) if isinstance(item, np.ndarray) else item
        if not isinstance(item, torch.Tensor):
            raise DataError(f"item {i} of the Dataset is a {type(item).__name__}: items must be tensors or (tensor, label) pairs")
        if rows and item.shape != rows[0].shape:
            raise DataError(f"item {i} of the Dataset has shape {tuple(item.shape)}, item 0 {tuple(rows[0].shape)}")
        rows.append(item)
    if not rows:
        raise DataError("the Dataset is empty")
    return torch.stack(rows)


def choose_likelihood(x):
    """``"bernoulli"`` when every value of ``x`` is 0 or 1, ``"gaussian"`` otherwise."""
    return "bernoulli" if bool(((x == 0) | (x == 1)).all()) else "gaussian"


def held_out_rows(num_rows, test_fraction, seed):
    """
    The rows held out for testing: ``ceil(test_fraction * num_rows)`` of them (at least one, and at
    least one left to train on), drawn by a generator seeded with ``seed``, in increasing order.
    """
    if not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    num_test = min(max(1, math.ceil(test_fraction * num_rows)), num_rows - 1)
    perm = torch.randperm(num_rows, generator=torch.Generator().manual_seed(int(seed)))
    return perm[:num_test].sort().values


def as_dataset(data, likelihood=None, test_fraction=0.1, seed=0, test_rows=None, name="data", binarize="none"):
    """
    A user's data as a :class:`~pyro_aevb.data.Dataset`, checked.

    :param data: a tensor or NumPy array ``[N, ...]`` (the training set), a pair ``(train, test)``, a
        dict with ``"train"`` and optionally ``"test"``, or a :class:`torch.utils.data.Dataset` whose
        items are tensors or ``(tensor, label)`` pairs.
    :param str likelihood: ``"bernoulli"`` or ``"gaussian"``; ``None``: Bernoulli when every value
        is 0 or 1 (:func:`choose_likelihood`).
    :param float test_fraction: the share of rows held out when there is no test set.
    :param int seed: seeds the held-out split.
    :param test_rows: the held-out rows (a run folder's record), instead of drawing them.
    :param str name: how to name the data in messages.
    :param str binarize: ``"none"``, or for Bernoulli data ``"static"`` or ``"dynamic"``.
    :returns: ``(dataset, held-out rows or None)``.
    :raises DataError: naming what is wrong: non-numeric values, fewer than 2 rows, NaN or infinite
        values (and the first such row), train and test of different shapes, values outside the
        likelihood's support.
    """
    train, test = _split_parts(data)
    train = _as_tensor(train, f"the training data ({name})")
    if test is not None:
        test = _as_tensor(test, f"the test data ({name})")
        if test.shape[1:] != train.shape[1:]:
            raise DataError(
                f"the training and test data ({name}) have datapoints of different shapes: "
                f"{tuple(train.shape[1:])} and {tuple(test.shape[1:])}"
            )
    elif test_rows is None:
        test_rows = held_out_rows(train.shape[0], test_fraction, seed)
    rows = None
    if test is None:
        rows = torch.as_tensor(test_rows, dtype=torch.long)
        if rows.numel() == 0 or int(rows.max()) >= train.shape[0]:
            raise DataError(f"the recorded held-out rows do not fit the {train.shape[0]} rows of {name}")
        keep = torch.ones(train.shape[0], dtype=torch.bool)
        keep[rows] = False
        train, test = train[keep], train[rows]
    if likelihood is None:
        likelihood = choose_likelihood(torch.cat([train.flatten(), test.flatten()]))
    for split, x in (("training", train), ("test", test)):
        check_support(x, likelihood, f"the {split} data ({name})")
    if likelihood == "bernoulli" and binarize in ("static", "dynamic"):
        test = binarize_static(test)
        train = binarize_static(train) if binarize == "static" else train
    dataset = Dataset(name, train, test, _image_shape(train.shape[1:]), likelihood,
                      binarize if likelihood == "bernoulli" else "none")
    return dataset, rows


def _image_shape(shape):
    """``(height, width)`` of datapoints that are one-channel images (``[H, W]`` or ``[1, H, W]``), else ``None``."""
    shape = tuple(shape)
    if len(shape) == 3 and shape[0] == 1:
        shape = shape[1:]
    return shape if len(shape) == 2 else None


def describe(dataset, held_out=None, source=None):
    """
    What a run folder records about the data: the source (a file's path, or ``"python"``), the shapes,
    the likelihood, the held-out rows (``None`` when the data came with a test set) and the sha256 of
    the content (of the file, or of the two splits' float32 bytes).
    """
    if source is not None:
        sha = file_sha256(source)
    else:
        digest = hashlib.sha256()
        for x in (dataset.train, dataset.test):
            digest.update(str(tuple(x.shape)).encode())
            digest.update(x.detach().cpu().contiguous().numpy().tobytes())
        sha = digest.hexdigest()
    return {
        "source": "python" if source is None else str(source),
        "sha256": sha,
        "shape": {"train": list(dataset.train.shape), "test": list(dataset.test.shape)},
        "likelihood": dataset.likelihood,
        "held_out_rows": None if held_out is None else [int(i) for i in held_out],
    }
