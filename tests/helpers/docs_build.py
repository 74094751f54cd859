"""The documentation site, built once per test run for the docs tests and the browser checks."""

import importlib.metadata
import importlib.util
import os
import shutil
import uuid

import pytest

from tests.helpers.common import REPO

DOCS = REPO / "docs"
#: Where the suite builds the site once per run (what `make docs` writes); tests/test_docs_browser.py reads it.
BUILD = DOCS / "_build"
HTML = BUILD / "html"
DOCS_PACKAGES = ("sphinx", "myst_parser", "myst_nb", "jupyter_cache", "ipykernel", "sphinxarg", "furo", "sphinx-mathjax-offline")
#: One id per test run, shared by the pytest-xdist workers of that run.
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID") or uuid.uuid4().hex


def require_docs_packages():
    """Skip the calling test where the docs extra is missing (fail it under CI, which always has it)."""
    missing = [name for name in DOCS_PACKAGES if not _installed(name)]
    if missing:
        message = f"the docs extra is not installed (missing {missing}): pip install -e '.[docs]'"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _installed(name):
    try:
        return importlib.util.find_spec(name) is not None or importlib.metadata.distribution(name) is not None
    except importlib.metadata.PackageNotFoundError:
        return False


def build_docs():
    """
    Build the site into docs/_build/html from scratch, once per test run: the first test that asks
    builds it (under a file lock, so that pytest-xdist workers of one run never build at the same
    time) and later ones reuse it. Returns (html folder, sphinx-build's exit status, its warnings).
    """
    require_docs_packages()
    # Imported here: the docs extra is optional, and Sphinx is slow to import.
    from filelock import FileLock
    from sphinx.cmd.build import build_main

    BUILD.mkdir(parents=True, exist_ok=True)
    stamp, warnings = BUILD / "html.testrun", BUILD / "html.warnings"
    with FileLock(BUILD / "html.lock"):
        if not (stamp.exists() and stamp.read_text().split()[0] == _RUN):
            shutil.rmtree(HTML, ignore_errors=True)  # a fresh build: every warning is emitted again
            status = build_main(["-W", "--keep-going", "-q", "-w", str(warnings), "-b", "html", str(DOCS), str(HTML)])
            stamp.write_text(f"{_RUN} {status}")
        status = int(stamp.read_text().split()[1])
        return HTML, status, warnings.read_text() if warnings.exists() else ""
