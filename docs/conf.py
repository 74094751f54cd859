"""
Sphinx configuration of the pyro-aevb documentation. Build it with warnings as errors::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

import importlib
import inspect
import importlib.metadata
from pathlib import Path

from docutils import nodes

import pyro_aevb

project = "pyro-aevb"
author = "pyro-aevb developers"
copyright = "2026, pyro-aevb developers"
release = version = pyro_aevb.__version__

extensions = [
    "myst_nb",  # MyST Markdown (it includes myst-parser) and executed Jupyter notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinxarg.ext",
]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

# The notebooks of docs/tutorials are executed by the build, through jupyter-cache: once, then their
# outputs are reused (docs/_build/.jupyter_cache) until their code changes. A cell that raises fails the
# build, and so does anything a cell writes to stderr (a warning), since warnings are errors.
nb_execution_mode = "cache"
nb_execution_raise_on_error = True
nb_execution_timeout = 600  # seconds per cell
nb_output_stderr = "warn"
nb_merge_streams = True

autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": True}
# Every reference to this package must resolve (warnings are errors). The docstrings also refer to
# Pyro, PyTorch and the standard library, which this site does not document, and to private bases.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(pyro|torch|numpy|arviz|matplotlib|argparse|pathlib)(\..*)?"),
    (r"py:class", r"callable|.*\._\w+"),
]

# Theme and static files. Furo: a sidebar with every page, code blocks and wide tables that scroll
# sideways instead of being cut off, images scaled to the column. docs/_static/site holds this
# site's own CSS; docs/_static/results holds figures that pages include as images (copied to _images).
html_theme = "furo"
html_title = f"pyro-aevb {release}"
html_static_path = ["_static/site"]
html_css_files = ["custom.css"]
html_js_files = ["math-fit.js"]


def _mathjax_static():
    """
    The folder that holds ``mathjax/``: MathJax 3.2.2's browser bundles as the sphinx-mathjax-offline
    wheel ships them. Only its files are used, not its Sphinx extension (which picks the CHTML output
    and its web fonts).
    """
    dist = importlib.metadata.distribution("sphinx-mathjax-offline")
    return str(Path(dist.locate_file("sphinx-mathjax-offline/static")).resolve())


# Math is typeset in the reader's browser by a MathJax that ships with the site, not one from a CDN,
# so that pages read offline. tex-svg draws glyphs as SVG paths from data inside the bundle: no web
# fonts to fetch. The TeX extensions that a page needs (ams, ...) load from beside it.
html_static_path.append(_mathjax_static())
mathjax_path = "mathjax/tex-svg.js"


def typeset_math_in_title_links(app, doctree, docname):
    """
    A link whose text Sphinx takes from a section title (``{ref}`label```) gets the title's plain
    text, so math in the title showed as its TeX source ("10^7 samples"). Give such links the
    title's nodes, math included, so that they read as the heading does.
    """
    titles = getattr(app, "_math_titles", None)
    if titles is None:
        titles = app._math_titles = {}
        for name in sorted(app.env.found_docs):
            for title in app.env.get_doctree(name).findall(nodes.title):
                if title.next_node(nodes.math) is not None:
                    titles.setdefault(title.astext(), title)
    for ref in doctree.findall(nodes.reference):
        title = titles.get(ref.astext())
        if title is None or ref.next_node(nodes.math) is not None:
            continue
        holder = ref
        while len(holder.children) == 1 and isinstance(holder[0], nodes.Element):
            holder = holder[0]
        if len(holder.children) == 1 and isinstance(holder[0], nodes.Text):
            holder.children = []
            holder.extend(child.deepcopy() for child in title.children)


def _lookup(path, module_name=None):
    """The object that ``path`` names, as Python would see it from ``module_name`` or from the top."""
    candidates = [path] + ([f"{module_name}.{path}"] if module_name else [])
    for candidate in candidates:
        parts = candidate.split(".")
        for split in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:split]))
            except ImportError:
                continue
            for attr in parts[split:]:
                obj = getattr(obj, attr, None)
            if obj is not None:
                return obj
    return None


def source_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    """
    ``{source}`pyro_aevb.models.vae.VAE.guide``: a link to the line of the source, on the page that
    ``sphinx.ext.viewcode`` writes, where the object is defined. An object that does not exist is an
    error, so the equation table of the tutorial cannot point at code that is gone.
    """
    obj = _lookup(text)
    module_name, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if module_name is None or qualname is None:
        msg = inliner.reporter.error(f"no such function or class: {text}", line=lineno)
        return [inliner.problematic(rawtext, rawtext, msg)], [msg]
    docname = inliner.document.settings.env.docname
    prefix = "../" * docname.count("/")
    uri = f"{prefix}_modules/{module_name.replace('.', '/')}.html#{qualname}"
    return [nodes.reference(rawtext, "[source]", refuri=uri, classes=["viewcode-link"])], []


def resolve_imported_name(app, env, node, contnode):
    """
    Resolve a name that a module imports or re-exports (``pyro_aevb.load_run``, or ``RunDirError`` in
    a docstring of :mod:`pyro_aevb.experiment.rundir`) to the place where the object is defined and documented.
    """
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or target.startswith(("pyro.", "torch.")):
        return None
    obj = _lookup(target, node.get("py:module"))
    module_name, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not (module_name or "").startswith("pyro_aevb") or qualname is None:
        return None
    if f"{module_name}.{qualname}" == target:
        return None  # already the defining path: truly missing from the docs
    node["reftarget"] = f"{module_name}.{qualname}"
    domain = env.get_domain("py")
    return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], node["reftarget"], node, contnode)


def follow_documented_instance(app, modname, fullname):
    """
    ``sphinx.ext.viewcode`` files a documented object under the module that defines its class, and
    takes the first documenting page it meets as the one every link of that module's source page
    points to. For an attribute that holds an instance (``VAE.closed_forms``) that is the wrong module:
    keep it with the module that documents it.
    """
    obj = _lookup(f"{modname}.{fullname}")
    if obj is None or inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj):
        return None  # viewcode's own rule: the module where the object is defined
    return modname


def setup(app):
    app.add_role("source", source_role)
    app.connect("viewcode-follow-imported", follow_documented_instance)
    app.connect("missing-reference", resolve_imported_name)
    app.connect("doctree-resolved", typeset_math_in_title_links)
