"""The documentation site builds without a warning, and its links to the code cannot go stale."""

import importlib.util
import os
import re

import pytest

from conftest import REPO

DOCS = REPO / "docs"
DOCS_PACKAGES = ("sphinx", "myst_parser", "sphinxarg")


def _require_docs_packages():
    missing = [name for name in DOCS_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        message = f"the docs extra is not installed (missing {missing}): pip install -e '.[docs]'"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _conf():
    """docs/conf.py as a module, for the name lookup that its ``{source}`` role uses."""
    spec = importlib.util.spec_from_file_location("docs_conf", DOCS / "conf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _equation_table():
    """Rows of the tutorial's equations-to-code table: (paper reference, [role targets], [source targets])."""
    text = (DOCS / "tutorial.md").read_text()
    table = text.split("(equations-to-code)=", 1)[1]
    rows = []
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) != 4 or cells[0] in ("Paper", "---"):
            continue
        roles = re.findall(r"\{py:\w+\}`~?([\w.]+)`", cells[2])
        sources = re.findall(r"\{source\}`([\w.]+)`", cells[3])
        rows.append((cells[0], roles, sources))
    return text, rows


def test_docs_build_without_warnings(tmp_path):
    _require_docs_packages()
    from sphinx.cmd.build import build_main

    status = build_main(["-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(tmp_path / "html")])
    assert status == 0, "sphinx-build -W failed: see the warnings above"
    for page in ("index", "tutorial", "swapping", "cli", "api", "baselines", "results", "performance"):
        assert (tmp_path / "html" / f"{page}.html").exists(), f"{page}.html was not built"
    assert (tmp_path / "html" / "_modules" / "pyro_aevb" / "models" / "vae.html").exists(), "viewcode wrote no source pages"


def test_every_equation_in_the_table_links_to_existing_code():
    _require_docs_packages()
    lookup = _conf()._lookup
    text, rows = _equation_table()
    assert rows, "the tutorial has no equations-to-code table"
    for paper, roles, sources in rows:
        assert roles and sources, f"table row {paper!r} needs a function and a [source] link"
        for target in roles + sources:
            obj = lookup(target)
            assert obj is not None, f"table row {paper!r}: {target} does not exist"
            assert callable(obj), f"table row {paper!r}: {target} is not a function or class"
    tagged = {int(n) for n in re.findall(r"\\tag\{(\d+)\}", text)}
    tabled = {int(n) for paper, _, _ in rows for n in re.findall(r"Eq\. \((\d+)\)", paper)}
    assert tagged <= tabled, f"equations shown in the tutorial but missing from its table: {sorted(tagged - tabled)}"


def _package_modules():
    """Every public module of the package, subpackages included, as a dotted name."""
    package = REPO / "pyro_aevb"
    modules = set()
    for path in package.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        if any(part.startswith("_") for part in parts):
            continue  # __init__, __main__ and private modules
        modules.add(".".join(parts))
    return modules


def test_api_reference_covers_every_module():
    modules = _package_modules()
    assert {"pyro_aevb.models.vae", "pyro_aevb.infer.aevb", "pyro_aevb.experiment.train"} <= modules, (
        "the module walk missed the subpackages"
    )
    documented = set(re.findall(r"automodule:: (pyro_aevb(?:\.\w+)+)", (DOCS / "api.md").read_text()))
    assert modules <= documented, f"modules missing from docs/api.md: {sorted(modules - documented)}"
