"""Sphinx configuration of the modal-vlm documentation.

Build (warnings are errors; the gallery examples run, offline, on the CPU)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Generated at build time, never edited by hand:

* the API reference of everything in ``modal_vlm.__all__`` (autosummary, from the list
  itself: a new export appears without touching the docs),
* the CLI reference (``modal-vlm --help`` of every sub-command, from the argparse parser),
* the benchmark tables of ``benchmarks/results/*.md`` on the results page,
* the example gallery (sphinx-gallery runs ``examples/plot_*.py``).
"""
from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
import sys
from pathlib import Path

from sphinx.pycode import ModuleAnalyzer

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

# The offline reference model's text tower ships in a pip package: never ask the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import modal_vlm  # noqa: E402

# -- project ---------------------------------------------------------------------------------

project = "modal-vlm"
author = "the modal-vlm developers"
copyright = "the modal-vlm developers"
release = modal_vlm.__version__
version = release

# -- extensions ------------------------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

# Intersphinx needs the network; a missing network must never fail the build (-W), so it is
# opt-in: MODAL_VLM_DOCS_INTERSPHINX=1 links to the Python, NumPy, scikit-learn, PyTorch and
# skorch documentation.
if os.environ.get("MODAL_VLM_DOCS_INTERSPHINX") == "1":
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "sklearn": ("https://scikit-learn.org/stable", None),
        "torch": ("https://pytorch.org/docs/stable", None),
        "skorch": ("https://skorch.readthedocs.io/en/stable", None),
    }

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "auto_examples/*.ipynb",
                    "auto_examples/*.py", "auto_examples/*.zip"]
# The results page includes benchmark tables written by scripts; their heading levels are
# theirs, not this site's.
suppress_warnings = ["myst.header"]

# -- API reference: autosummary + numpydoc ---------------------------------------------------

autosummary_generate = True
autosummary_ignore_module_all = False   # a module's __all__ decides what it documents
autosummary_imported_members = False
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"              # types are in the numpydoc "Parameters" sections
autodoc_inherit_docstrings = False     # skorch hooks we override stay out of the reference
numpydoc_show_class_members = False     # the class template lists the members itself
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
# Docstring checks (issue 6), on every docstring of the API reference; with -W each fails
# the build: a parameter missing from "Parameters" (PR01), documented but not in the
# signature (PR02), out of order (PR03), without a type (PR04), with a type ending in a
# period (PR05), without a description (PR07), a bad "name : type" separator (PR10), and a
# function that returns a value without a "Returns" section (RT01).
numpydoc_validation_checks = {"PR01", "PR02", "PR03", "PR04", "PR05", "PR06", "PR07", "PR10", "RT01", "RT02", "RT03"}
# Regexes on the full name of the objects that are not validated. Keep this list short:
numpydoc_validation_exclude = {
    # skorch hooks ClipPromptClassifier overrides: skorch's signatures, documented by skorch.
    r"^modal_vlm\.ClipPromptClassifier\.get_loss$",
    # An abstract nn.Module: its "signature" is nn.Module's (*args, **kwargs), not an API.
    r"^modal_vlm\.backbones\.TextTower$",
    # typing.Protocols: their "signature" is Protocol's (*args, **kwargs); they are never built.
    r"^modal_vlm\.strategies\.(Probabilistic|Embedding|Feature|TextEmbedding)Classifier$",
}


def canonical_name(module: str, name: str) -> str:
    """Where ``module.name`` is documented: under the outermost package above ``module`` that
    exports the same object (``modal_vlm.cec_query``, ``modal_vlm.embeddings.EmbeddingPool``),
    else under ``module``."""
    obj = getattr(importlib.import_module(module), name)
    parts = module.split(".")
    for depth in range(1, len(parts)):
        package = importlib.import_module(".".join(parts[:depth]))
        if name in getattr(package, "__all__", ()) and getattr(package, name, None) is obj:
            return f"{package.__name__}.{name}"
    return f"{module}.{name}"


def reexported_comment(package: str, name: str):
    """The ``#:`` doc comment of a constant that ``package`` re-exports from a submodule
    through its lazy ``_EXPORTS`` (``modal_vlm.model.COOP_PROTOCOL``), or None."""
    defined_in = getattr(importlib.import_module(package), "_EXPORTS", {}).get(name)
    while defined_in is not None:
        package = f"{package}.{defined_in}"
        comment = ModuleAnalyzer.for_module(package).find_attr_docs().get(("", name))
        if comment:
            return list(comment)
        defined_in = getattr(importlib.import_module(package), "_EXPORTS", {}).get(name)
    return None


def public_modules():
    yield modal_vlm
    for info in pkgutil.walk_packages(modal_vlm.__path__, "modal_vlm."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            yield importlib.import_module(info.name)


def api_names() -> tuple[dict, list]:
    """For the module template: ``{"module.name": "canonical.name"}`` for every public name
    that a package above its module exports (each object gets one page; the other tables
    link there), and the constants packages re-export with a doc comment (documented on the
    package's page, under the package's name)."""
    links, constants = {}, []
    for module in public_modules():
        names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
        for name in names:
            full, target = f"{module.__name__}.{name}", canonical_name(module.__name__, name)
            if target != full:
                links[full] = target
            value = getattr(module, name)
            if (target == full and not callable(value) and not inspect.ismodule(value)
                    and reexported_comment(module.__name__, name)):
                constants.append(full)
    return links, constants


def bases_outside_package(cls) -> str:
    """``:inherited-members:``'s argument that documents what ``cls`` inherits from this
    package's classes, not what it inherits from skorch's or scikit-learn's."""
    return ", ".join(base.__name__ for base in cls.__mro__ if not base.__module__.startswith("modal_vlm."))


API_LINKS, REEXPORTED_CONSTANTS = api_names()
# For the class template: classes whose public methods partly come from the package's private
# mixins (modal_vlm.model._encoders) also document those.
autosummary_context = {"api_links": API_LINKS, "reexported_constants": REEXPORTED_CONSTANTS,
                       "document_inherited": {"modal_vlm.ClipPromptClassifier":
                                              bases_outside_package(modal_vlm.ClipPromptClassifier)}}


def reexported_data_doc(app, what, name, obj, options, lines):
    # A re-exported constant's doc comment is in the submodule that defines it, where autodoc
    # does not look (it would show the value's type's docstring).
    if what == "data" and name in REEXPORTED_CONSTANTS:
        lines[:] = reexported_comment(*name.rsplit(".", 1))


def skip_member(app, what, name, obj, skip, options):
    # scikit-learn adds metadata-routing methods (set_fit_request...) to every estimator
    # whose fit takes extra arguments; their docstrings are scikit-learn's, not ours.
    if re.fullmatch(r"set_\w+_request", name):
        return True
    return None

# -- HTML ------------------------------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = f"modal-vlm {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_show_sourcelink = False

# -- example gallery -------------------------------------------------------------------------

# Examples whose API has not landed yet. They are complete and written against the final
# API; the build skips them until the feature is in. To enable one, delete its line.
WAITING_EXAMPLES = [
    # e.g. "plot_something.py",  # enable when <feature> lands
]

sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",          # execute every plot_*.py
    "ignore_pattern": "|".join([r"__init__\.py"] + [re.escape(name) for name in WAITING_EXAMPLES]),
    "within_subsection_order": "FileNameSortKey",
    "doc_module": ("modal_vlm",),
    "backreferences_dir": "generated/backreferences",
    "abort_on_example_error": False,       # report every failing example, then fail the build
    "only_warn_on_example_error": False,
    "plot_gallery": "True",
    "download_all_examples": False,
    "remove_config_comments": True,
    "matplotlib_animations": False,
    "reset_modules": ("matplotlib",),      # keep modal_vlm's embedding cache across examples
    "capture_repr": ("_repr_html_", "__repr__"),
    "show_memory": False,
    "min_reported_time": 5,
}

# -- generated page content ------------------------------------------------------------------

RESULTS_DIR = ROOT / "benchmarks" / "results"
RESULTS_MARKER = "<!-- benchmark-results -->"
CLI_MARKER = ".. cli-reference::"


def results_markdown() -> str:
    """MyST source that includes every ``benchmarks/results/*.md``, or says there is none."""
    files = sorted(RESULTS_DIR.glob("*.md")) if RESULTS_DIR.is_dir() else []
    if not files:
        return ("*No benchmark results yet.* Tables appear here once a benchmark writes a "
                "markdown file to `benchmarks/results/`.\n")
    parts = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        first = next((line for line in text.splitlines() if line.strip()), "")
        relative = os.path.relpath(path, DOCS).replace(os.sep, "/")
        if not re.match(r"#\s", first):   # no title of its own: use the file name
            parts.append(f"## {path.stem.replace('_', ' ').replace('-', ' ').capitalize()}\n")
            offset = 2
        else:
            offset = 1
        parts.append(f"```{{include}} {relative}\n:heading-offset: {offset}\n```\n")
        parts.append(f"*Source: `benchmarks/results/{path.name}`.*\n")
    return "\n".join(parts)


def cli_reference() -> str:
    """reST: ``modal-vlm --help`` and the help of every sub-command, from the parser."""
    import argparse

    from modal_vlm.cli import build_parser

    parser = build_parser()
    parser.prog = "modal-vlm"
    blocks = [("modal-vlm", parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            blocks += [(f"modal-vlm {name}", sub) for name, sub in action.choices.items()]
    out = []
    columns = os.environ.get("COLUMNS")
    # argparse wraps help at the terminal's width: fix it, so every build renders alike.
    os.environ["COLUMNS"] = "90"
    try:
        helps = [sub.format_help().replace("\t", "    ") for _, sub in blocks]
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    for (title, _), help_text in zip(blocks, helps):
        out += [f"``{title}``", "^" * (len(title) + 4), "", ".. code-block:: text", ""]
        out += [f"    {line}" if line else "" for line in help_text.splitlines()]
        out.append("")
    return "\n".join(out)


def fill_generated_content(app, docname, source):
    if RESULTS_MARKER in source[0]:
        source[0] = source[0].replace(RESULTS_MARKER, results_markdown())
    if CLI_MARKER in source[0]:
        source[0] = source[0].replace(CLI_MARKER, cli_reference())


def always_reread(app, env, added, changed, removed):
    # Their content comes from outside docs/: re-read them on every build.
    return [name for name in ("results", "experiments", "contracts", "trust") if name in env.found_docs]


# Pages that may be missing while a feature is being written; the user guide lists only
# those that exist (so no toctree ever points at a missing file).
USER_GUIDE = ["installation", "quickstart", "inputs", "estimator", "strategies", "ueo", "open_set", "contracts",
              "algorithms", "experiments", "labeling", "labelstudio", "trust", "performance", "scale", "results"]
USER_GUIDE_MARKER = ".. user-guide-toctree::"


def user_guide_toctree() -> str:
    pages = [page for page in USER_GUIDE
             if (DOCS / f"{page}.rst").is_file() or (DOCS / f"{page}.md").is_file()]
    return "\n".join([".. toctree::", "   :maxdepth: 2", "   :caption: User guide", ""]
                     + [f"   {page}" for page in pages])


def fill_user_guide(app, docname, source):
    if USER_GUIDE_MARKER in source[0]:
        source[0] = source[0].replace(USER_GUIDE_MARKER, user_guide_toctree())


def setup(app):
    app.connect("source-read", fill_generated_content)
    app.connect("source-read", fill_user_guide)
    app.connect("env-get-outdated", always_reread)
    app.connect("autodoc-skip-member", skip_member)
    app.connect("autodoc-process-docstring", reexported_data_doc)
