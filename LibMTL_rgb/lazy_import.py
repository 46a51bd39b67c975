"""Deferred imports of heavy optional dependencies (torchjd, torchvision, torch_geometric, ...).

``import LibMTL_rgb`` must cost about one ``import torch``; libraries that only some methods,
models or examples use are imported where they are used. :func:`lazy_callable` keeps a
module-level name (a class or function of another library) that imports its module on the
first call.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_callable(module: str, name: str) -> Callable[..., Any]:
    """A stand-in for ``module.name`` that imports ``module`` when first called.

    >>> sqrt = lazy_callable("math", "sqrt")
    >>> sqrt(9.0)
    3.0
    """

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"``{module}.{name}``, imported on first call."
    return call
