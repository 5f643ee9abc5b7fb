"""Sphinx configuration for torch-rlprune."""

project = "torch-rlprune"
author = "torch-rlprune developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
html_theme = "furo"
nitpicky = False
