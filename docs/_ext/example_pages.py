"""Sphinx extension: the pages ``examples/<name>.md`` are the examples' READMEs, and links to a
README (``examples/<name>/README.md``) point at its page.

``docs/examples/<name>.md`` holds one line linking to ``examples/<name>/README.md`` (so it reads
well on GitHub too); when the docs are built its source is replaced by the README itself, with
the README's relative links rewritten from the README's folder to the page's. In every other
page, links to an example's README are rewritten to that example's page.
"""
from __future__ import annotations

import os
import re
from typing import Any

from sphinx.application import Sphinx

LINK = re.compile(r"\]\((?!https?://|mailto:|#)([^)\s]+)\)")
README = re.compile(r"^examples/(\w+)/README\.md$")


def _rewrite_links(text: str, source_dir: str, page_dir: str, root: str) -> str:
    """Relative links written from ``source_dir`` that now sit in a page in ``page_dir``."""

    def replace(match: re.Match) -> str:
        target, _, anchor = match.group(1).partition("#")
        absolute = os.path.normpath(os.path.join(source_dir, target))
        from_root = os.path.relpath(absolute, root).replace(os.sep, "/")
        readme = README.match(from_root)
        if readme:
            absolute = os.path.join(root, "docs", "examples", f"{readme.group(1)}.md")
        new = os.path.relpath(absolute, page_dir).replace(os.sep, "/")
        return f"]({new}{'#' + anchor if anchor else ''})"

    return LINK.sub(replace, text)


def _on_source_read(app: Sphinx, docname: str, source: list[str]) -> None:
    docs = app.srcdir
    root = os.path.dirname(docs)
    page_dir = os.path.dirname(os.path.join(docs, docname))
    match = re.fullmatch(r"examples/(\w+)", docname)
    if match and os.path.isfile(readme := os.path.join(root, "examples", match.group(1), "README.md")):
        with open(readme, encoding="utf-8") as handle:
            source[0] = _rewrite_links(handle.read(), os.path.dirname(readme), page_dir, root)
        app.env.note_dependency(readme)
        return
    source[0] = _rewrite_links(source[0], page_dir, page_dir, root)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("source-read", _on_source_read)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
