"""Sphinx directive ``registry-hyperparameters``: the options of every registered weighting or
architecture, read from ``LibMTL_rgb.registry`` when the docs are built (so they never drift).

In a MyST page::

    ```{registry-hyperparameters} weightings
    ```

gives one table per method with options (flag, ``weight_args``/``arch_args`` key, default,
allowed values, meaning, all from its ``Hyperparameter`` declarations) and a line naming the
methods without options.
"""
from __future__ import annotations

from typing import Any, Sequence

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

#: Directive argument -> (registry attribute, the dict the options go into).
KINDS = {"weightings": ("WEIGHTINGS", "weight_args"), "architectures": ("ARCHITECTURES", "arch_args")}
HEADER = ("flag", "{key} key", "default", "allowed values", "meaning")
WIDTHS = (18, 18, 9, 14, 41)


def allowed_values(hp: Any) -> str:
    """The declared range or choices of a hyper-parameter, as text ('any' when unconstrained)."""
    if hp.choices is not None:
        return "one of " + ", ".join(repr(choice) for choice in hp.choices)
    if isinstance(hp.default, bool):
        return "on / off"
    return hp.range_text() or "any"


def flag_text(hp: Any) -> str:
    if isinstance(hp.default, bool):
        return f"--{hp.name} / --no-{hp.name}"
    return f"--{hp.name}" + (" X [X ...]" if hp.nargs in ("+", "*") else "")


def _cell(content: "str | nodes.Node", literal: bool = False) -> nodes.entry:
    if isinstance(content, str):
        content = nodes.literal(content, content) if literal else nodes.Text(content)
    return nodes.entry("", nodes.paragraph("", "", content))


def table(rows: Sequence[Sequence[nodes.entry]], header: Sequence[str]) -> nodes.table:
    group = nodes.tgroup(cols=len(header))
    group += [nodes.colspec(colwidth=width) for width in WIDTHS]
    group += nodes.thead("", nodes.row("", *[_cell(title) for title in header]))
    group += nodes.tbody("", *[nodes.row("", *row) for row in rows])
    return nodes.table("", group, classes=["hyperparameters"])


class RegistryHyperparameters(SphinxDirective):
    """The hyper-parameter tables of one registry (``weightings`` or ``architectures``)."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        import LibMTL_rgb  # noqa: F401  (registers every method)
        from LibMTL_rgb import registry

        kind = self.arguments[0]
        if kind not in KINDS:
            raise self.error(f"registry-hyperparameters takes one of {sorted(KINDS)}, got {kind!r}")
        attribute, key = KINDS[kind]
        header = [title.format(key=key) for title in HEADER]
        output: list[nodes.Node] = []
        without: list[str] = []
        for name, cls in getattr(registry, attribute).items():
            hyperparameters = registry.hyperparameters_of(cls)
            if not hyperparameters:
                without.append(name)
                continue
            rows = [[_cell(flag_text(hp), literal=True), _cell(hp.name, literal=True), _cell(repr(hp.default), literal=True),
                     _cell(allowed_values(hp)), _cell(hp.help)] for hp in hyperparameters]
            title = nodes.rubric("", "", nodes.literal(name, name), nodes.Text(f" ({cls.__module__}.{cls.__qualname__})"))
            output += [title, table(rows, header)]
        if without:
            names = ", ".join(without)
            output.append(nodes.paragraph("", f"Without options: {names}."))
        return output


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("registry-hyperparameters", RegistryHyperparameters)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
