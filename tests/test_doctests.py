"""Every docstring example (``>>>``) in the library runs and prints what it shows.

The README's test command (``python -m pytest -q tests``) collects only ``tests/``, so this
file runs the doctests of every ``LibMTL_rgb`` module (one test per module that has examples).
"""
from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil

import pytest

import LibMTL_rgb


def modules_with_examples() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(LibMTL_rgb.__path__, prefix="LibMTL_rgb."):
        if info.name.endswith("__main__"):
            continue
        spec = importlib.util.find_spec(info.name)
        with open(spec.origin, encoding="utf-8") as source:
            if ">>>" in source.read():
                names.append(info.name)
    return names


MODULES = modules_with_examples()


def test_the_library_has_doctests():
    assert len(MODULES) >= 3, MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{name} has '>>>' but doctest found no example"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed (see the output above)"


def test_every_public_class_and_function_has_a_docstring():
    """The API reference (autodoc ``:members:``) lists what has a docstring: so every public
    class and function of every public module needs one."""
    import inspect

    missing = []
    for info in pkgutil.walk_packages(LibMTL_rgb.__path__, prefix="LibMTL_rgb."):
        if info.name.endswith("__main__") or any(part.startswith("_") for part in info.name.split(".")[1:]):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj) and not obj.__doc__ or inspect.isclass(obj) and obj.__doc__ is None:
                missing.append(f"{module.__name__}.{name}")
    assert missing == []
