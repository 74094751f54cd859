"""The documentation site builds without a warning, and its links to the code cannot go stale."""

import importlib.util
import json
import re

import pytest

from tests.helpers.common import REPO
from tests.helpers.docs_build import DOCS, require_docs_packages

#: Notebooks that the docs build executes (through jupyter-cache) and renders with their outputs.
NOTEBOOKS = sorted((DOCS / "tutorials").glob("*.ipynb"))


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


def test_docs_build_without_warnings(docs_build):
    html, status, warnings = docs_build
    assert status == 0, f"sphinx-build -W failed:\n{warnings}"
    pages = ("index", "tutorial", "swapping", "cli", "api", "baselines", "results", "performance")
    for page in pages + tuple(f"tutorials/{path.stem}" for path in NOTEBOOKS):
        assert (html / f"{page}.html").exists(), f"{page}.html was not built"
    assert (html / "_static" / "mathjax" / "tex-svg.js").exists(), "MathJax was not copied into the site"
    assert (html / "_modules" / "pyro_aevb" / "models" / "vae.html").exists(), "viewcode wrote no source pages"


def _code_cells(path):
    return [cell for cell in json.loads(path.read_text())["cells"] if cell["cell_type"] == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_is_stored_without_outputs(path):
    # Every number and figure in it comes from executing it (the docs build does, `make notebook` too).
    for cell in _code_cells(path):
        assert not cell.get("outputs") and cell.get("execution_count") is None, (
            f"{path.name} holds outputs: clear them (jupyter nbconvert --clear-output --inplace {path.name})"
        )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_executed_notebook_page_shows_every_figure(docs_build, path):
    html, status, warnings = docs_build
    page = (html / "tutorials" / f"{path.stem}.html").read_text(encoding="utf-8")
    figures = sum("plt.show()" in "".join(cell["source"]) for cell in _code_cells(path))
    images = re.findall(r'<img [^>]*src="([^"]+\.png)"', page)
    assert figures and len(images) >= figures, f"{path.stem}.html shows {len(images)} images for {figures} figures"
    for src in images:
        assert (html / "tutorials" / src).resolve().is_file(), f"{path.stem}.html: image {src} was not written"
    assert "Traceback" not in page, f"{path.stem}.html shows a traceback"


def test_every_equation_in_the_table_links_to_existing_code():
    require_docs_packages()
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
