"""Sphinx configuration of the anemoi-ckpt-nb documentation (built as Read the Docs builds it).

Build locally: ``pip install -e '.[docs]' && sphinx-build -W --keep-going -b html docs docs/_build/html``.
``tests/test_docs.py`` runs the same build with warnings as errors, and runs every snippet.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))  # this site's own extensions (the CLI reference)

import anemoi_ckpt_nb  # noqa: E402  (installed with the package; Read the Docs installs it too)

project = "anemoi-ckpt-nb"
author = "anemoi-ckpt-nb contributors"
copyright = "2026, anemoi-ckpt-nb contributors"
release = anemoi_ckpt_nb.__version__
version = release

extensions = [
    "myst_nb",  # Markdown pages (MyST) and the tutorials' notebooks with their stored outputs
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # docstrings use Args/Returns/Raises sections
    "sphinx.ext.viewcode",
    "cli_reference",  # docs/_ext/cli_reference.py: the `anemoi-ckpt` reference from the real parsers
]

source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**/.ipynb_checkpoints"]
root_doc = "index"

# The tutorials are executed by nbval in the test suite; the site shows the outputs stored in the
# notebooks, so building the docs needs no kernel, no S3 server and no pandoc.
nb_execution_mode = "off"
# Widgets are stored without their state (nbconvert --ExecutePreprocessor.store_widget_state=False):
# show their text fallback rather than an empty widget view.
nb_mime_priority_overrides = [("html", "application/vnd.jupyter.widget-view+json", None)]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "undoc-members": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# Attributes sections become fields of their class, not objects of their own (no duplicate targets).
napoleon_use_ivar = True

html_theme = "sphinx_rtd_theme"
html_title = f"anemoi-ckpt-nb {release}"
html_theme_options = {"navigation_depth": 3}
html_show_sourcelink = False
