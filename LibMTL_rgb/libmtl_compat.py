"""Running code written for LibMTL (median-research-group/LibMTL) on LibMTL_rgb.

- :func:`is_method_class`: the Trainer accepts a weighting (architecture) that subclasses our
  ``AbsWeighting`` (``AbsArchitecture``) *or LibMTL's*, when LibMTL is installed and the class
  was built on it. LibMTL is never imported here: a class built on LibMTL's base means that
  LibMTL's module is already in ``sys.modules``. Such a class runs with its own (LibMTL's)
  methods, ``_compute_grad``... included: LibMTL's semantics.
- :func:`signature_weight_args`: ``prepare_args`` for a method found by name (LibMTL's route:
  ``weighting_method.MyMethod = MyMethod``, then ``--weighting MyMethod``) that declares no
  ``hyperparameters``: the keyword parameters of its ``backward`` that the parsed flags hold.
- :func:`alias_libmtl_module_paths`: LibMTL's module paths of the method classes
  (``from LibMTL_rgb.weighting.MGDA import MGDA``, ``LibMTL_rgb.architecture.HPS``...) name
  the module that defines each class here.
"""
from __future__ import annotations

import argparse
import inspect
import sys
from typing import Any, Optional

import torch

#: Our package and the module of LibMTL's abstract class, per method kind.
_KINDS = {
    "weighting": ("LibMTL_rgb.weighting", "LibMTL.weighting.abstract_weighting", "AbsWeighting"),
    "architecture": ("LibMTL_rgb.architecture", "LibMTL.architecture.abstract_arch", "AbsArchitecture"),
}


def libmtl_base(kind: str) -> Optional[type]:
    """LibMTL's ``AbsWeighting`` / ``AbsArchitecture`` if LibMTL's module is loaded, else None."""
    _, libmtl_module, name = _KINDS[kind]
    module = sys.modules.get(libmtl_module)
    return getattr(module, name, None) if module is not None else None


def our_base(kind: str) -> type:
    """Our ``AbsWeighting`` / ``AbsArchitecture``."""
    package, _, name = _KINDS[kind]
    return getattr(sys.modules.get(package) or __import__(package, fromlist=[name]), name)


def is_libmtl_class(cls: Any, kind: str) -> bool:
    """Whether ``cls`` subclasses LibMTL's abstract class of ``kind`` (and not ours)."""
    base = libmtl_base(kind)
    return (isinstance(cls, type) and base is not None and issubclass(cls, base)
            and not issubclass(cls, our_base(kind)))


def is_method_class(cls: Any, kind: str) -> bool:
    """Whether ``cls`` is a weighting/architecture class: a subclass of ours or of LibMTL's."""
    if not isinstance(cls, type):
        return False
    return issubclass(cls, our_base(kind)) or is_libmtl_class(cls, kind)


def check_method_class(cls: Any, kind: str) -> None:
    """``TypeError`` unless :func:`is_method_class`."""
    if not is_method_class(cls, kind):
        _, libmtl_module, name = _KINDS[kind]
        raise TypeError(f"{kind} {cls!r} is not a subclass of LibMTL_rgb's {name} "
                        f"(nor of LibMTL's {libmtl_module}.{name})")


def move_created_state(model: torch.nn.Module, device: torch.device) -> None:
    """LibMTL moves the model to ``device`` after ``init_param``: parameters and floating-point
    buffers that ``init_param`` created elsewhere (``nn.Parameter(torch.ones(T))``) follow.
    Integer buffers stay where the method put them (our step counters live on the CPU so that
    reading them costs no device sync)."""
    def move(tensor: torch.Tensor) -> torch.Tensor:
        floating = tensor.is_floating_point() or tensor.is_complex()
        return tensor.to(device) if floating and tensor.device != device else tensor

    model._apply(move)  # what ``Module.to`` uses: parameters stay the same objects where it can


def signature_weight_args(cls: type, params: argparse.Namespace) -> dict[str, Any]:
    """The keyword parameters of ``cls.backward`` (after ``losses``) that ``params`` holds."""
    backward = getattr(cls, "backward", None)
    if not callable(backward):
        return {}
    try:
        signature = inspect.signature(backward)
    except (TypeError, ValueError):
        return {}
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = [p.name for p in list(signature.parameters.values())[2:] if p.kind in kinds]
    return {name: getattr(params, name) for name in names if hasattr(params, name)}


def alias_libmtl_module_paths() -> None:
    """Register ``LibMTL_rgb.<kind>.<Class>`` in ``sys.modules`` as the module defining each
    class of ``LibMTL_rgb.<kind>.__all__`` (LibMTL has one module per class, named after it).

    Aliases never replace a real module; the package attribute stays the class (the import
    system does not rebind a parent's attribute for a module already in ``sys.modules``)."""
    for package_name, _, _ in _KINDS.values():
        package = sys.modules.get(package_name)
        if package is None:
            continue
        for name in getattr(package, "__all__", ()):
            cls = getattr(package, name, None)
            alias = f"{package_name}.{name}"
            if isinstance(cls, type) and alias not in sys.modules and cls.__module__ in sys.modules:
                sys.modules[alias] = sys.modules[cls.__module__]
