"""The repository's folders, the real data's folder, the devices to test on, and waiting for a subprocess."""

import os
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("PYRO_AEVB_DATA", REPO.parent / "shared" / "data"))
#: Devices to parametrize over: the CPU always, CUDA where present.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def wait_for(path, proc, timeout=120):
    """Wait until ``path`` exists; False if the subprocess ``proc`` ended first or ``timeout`` passed."""
    start = time.time()
    while not path.exists():
        if proc.poll() is not None or time.time() - start > timeout:
            return False
        time.sleep(0.05)
    return True
