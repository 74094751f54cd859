import os
import sys

import pyro
import pytest
import torch

from tests.helpers.common import REPO, SHARED_DATA
from tests.helpers.docs_build import build_docs


@pytest.fixture(autouse=True)
def _pyro_defaults():
    """Folder-level defaults, as in Pyro's own test suite: a seed, an empty param store, validation on."""
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    pyro.enable_validation(True)
    yield
    pyro.clear_param_store()


@pytest.fixture
def one_thread():
    """
    One torch thread for the test: for tiny tensors a second thread only adds synchronisation (5-10
    times slower leapfrog steps on a loaded 2-core machine), and a run resumed in this process matches
    subprocesses run with OMP_NUM_THREADS=1 bit for bit.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def shared_data():
    """The real MNIST and Frey Face files, as CI provides them beside the repository."""
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        message = f"real data not found at {SHARED_DATA} (set PYRO_AEVB_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI always has the data: a missing folder is a broken set-up, not a skip
        pytest.skip(message)
    return SHARED_DATA


@pytest.fixture(scope="session")
def docs_build():
    """The documentation site, built once per test run into docs/_build/html: (folder, exit status, warnings)."""
    return build_docs()


# Under pytest-xdist each worker gets one thread, so that two workers share two cores without thrashing.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, os.cpu_count() or 1))
sys.path.insert(0, str(REPO))
