"""Sphinx configuration of the LibMTL_rgb documentation (Markdown pages through MyST).

Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (requirements in
``docs/requirements.txt``). The API reference is generated from the docstrings (autosummary,
``api.md``); the hyper-parameter tables from the registry (``_ext/registry_tables.py``).
"""
from __future__ import annotations

import os
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(DOCS))  # this checkout's LibMTL_rgb, not an installed copy
sys.path.insert(0, os.path.join(DOCS, "_ext"))

import LibMTL_rgb  # noqa: E402

project = "LibMTL_rgb"
author = "LibMTL_rgb contributors"
copyright = "LibMTL_rgb contributors"
release = version = LibMTL_rgb.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "registry_tables",
    "example_pages",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "_templates", "README.md"]
templates_path = ["_templates"]

myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 4

autosummary_generate = True
autosummary_imported_members = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "alabaster"
html_title = "LibMTL_rgb"
html_theme_options = {"description": "Multi-task learning with Rotation-Based Gradient Balancing", "page_width": "1200px",
                      "sidebar_width": "260px"}
