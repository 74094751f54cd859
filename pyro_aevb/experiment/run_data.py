"""
The data a run trains on: a named data set, or the user's, of which the run folder keeps a record
(``data.json``: its shapes, its held-out rows and its sha256).
"""

import dataclasses
import json
from pathlib import Path

from pyro_aevb.data import DATASETS, DataError, load_dataset
from pyro_aevb.errors import RunDirError
from pyro_aevb.experiment.config import GIVEN_DATA
from pyro_aevb.own_data import as_dataset, describe, read_data_file

__all__ = ["DATA_RECORD", "load_data", "read_data_record"]

#: The file of a run folder that records a user's data.
DATA_RECORD = "data.json"


def load_data(config, data=None, record=None, device="cpu"):
    """
    The data a run trains on: ``(dataset, record)``. ``record`` is what the run folder keeps about a
    user's data (:func:`pyro_aevb.own_data.describe`; ``None`` for a named data set); given the record
    of a run, the same held-out rows are used and data whose sha256 differs are refused.

    :raises DataError: for bad or changed data, naming what is wrong.
    """
    if data is None and config.dataset in DATASETS:
        dataset = load_dataset(config.dataset, config.data_dir, config.binarize, device=device)
        if config.likelihood not in (None, dataset.likelihood):
            if config.likelihood == "gaussian":  # the grey levels, as they are
                dataset = load_dataset(config.dataset, config.data_dir, "none", device=device)
            dataset = dataclasses.replace(dataset, likelihood=config.likelihood)
        return dataset, None
    if data is None:
        if config.dataset == GIVEN_DATA:
            raise DataError("this run was trained on data passed to train() as data=: pass the same data= again")
        source = Path(config.dataset)
        data = read_data_file(source)
    else:
        source = None
    held_out = None if record is None else record.get("held_out_rows")
    dataset, rows = as_dataset(
        data, config.likelihood, config.test_fraction, config.seed, test_rows=held_out,
        name=str(source) if source is not None else "data", binarize=config.binarize or "none",
    )
    described = describe(dataset, rows, source)
    if record is not None and record.get("sha256") != described["sha256"]:
        raise DataError(
            f"the data have changed since the run was trained: its data.json records sha256 {record.get('sha256')}, "
            f"and {described['source'] if source is not None else 'the data given'} has sha256 {described['sha256']}. "
            "Give the run's own data, or start a new run."
        )
    return dataset.to(device), described


def read_data_record(run):
    """The run folder's ``data.json`` (what it trained on, for a user's data), or ``None`` if it has none."""
    path = run.path / DATA_RECORD
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RunDirError(f"cannot read {path}: {e}") from None
