"""RGB inside an installed LibMTL (tested with LibMTL 1.1.5, the last PyPI release).

``register()`` adds ``RGB`` to ``LibMTL.weighting``, its ``--rgb_*`` flags to
``LibMTL.config.LibMTL_args``, and teaches ``LibMTL.config.prepare_args`` to fill
``weight_args`` for ``--weighting RGB``. The class it adds is our
:class:`LibMTL_rgb.weighting.RGB` (math, plumbing, state) that is also a subclass of LibMTL's
``AbsWeighting``, so LibMTL's ``Trainer`` composes it with LibMTL's architectures as usual.
Limits: ``docs/methods.md``, section "Using RGB inside LibMTL".
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import io
import sys
import types
from typing import Any, Callable, Optional

from LibMTL_rgb.config import add_flag, method_args
from LibMTL_rgb.registry import hyperparameters_of
from LibMTL_rgb.weighting.rgb import RGB

__all__ = ["register", "libmtl_rgb_class", "ensure_torchvision_models_utils"]

#: The group title of the flags ``register`` adds to ``LibMTL_args``.
FLAG_GROUP = "weighting RGB (LibMTL_rgb)"

_LIBMTL_RGB_CLASS: Optional[type] = None


def ensure_torchvision_models_utils() -> None:
    """Provide ``torchvision.models.utils`` (removed in torchvision 0.13) with
    ``load_state_dict_from_url = torch.hub.load_state_dict_from_url``, as LibMTL 1.1.5's
    ``LibMTL/model/resnet.py`` imports it. Does nothing when the module exists."""
    try:
        importlib.import_module("torchvision.models.utils")
        return
    except ModuleNotFoundError:
        pass
    import torch.hub
    import torchvision.models

    stand_in = types.ModuleType("torchvision.models.utils")
    stand_in.__doc__ = "Stand-in for torchvision < 0.13's module, added by LibMTL_rgb for LibMTL 1.1.5."
    stand_in.load_state_dict_from_url = torch.hub.load_state_dict_from_url
    sys.modules["torchvision.models.utils"] = stand_in
    torchvision.models.utils = stand_in


def libmtl_rgb_class() -> type:
    """Our ``RGB`` as a subclass of ``LibMTL.weighting.abstract_weighting.AbsWeighting``.

    Its MRO puts our ``RGB`` and our ``AbsWeighting`` (gradient plumbing) before LibMTL's
    ``AbsWeighting``, so every method is ours and ``issubclass(..., LibMTL's AbsWeighting)``
    holds."""
    global _LIBMTL_RGB_CLASS
    if _LIBMTL_RGB_CLASS is None:
        ensure_torchvision_models_utils()
        from LibMTL.weighting.abstract_weighting import AbsWeighting as LibMTLAbsWeighting

        _LIBMTL_RGB_CLASS = type(
            "RGB", (RGB, LibMTLAbsWeighting),
            {"__doc__": RGB.__doc__, "__module__": __name__, "__qualname__": "RGB"},
        )
    return _LIBMTL_RGB_CLASS


def register() -> type:
    """Make ``--weighting RGB`` and the ``--rgb_*`` flags work in an installed LibMTL.

    Call it **before** ``from LibMTL.config import prepare_args`` (that import binds the
    function ``register`` replaces) and before ``from LibMTL.weighting import RGB``;
    ``LibMTL_args`` and ``import LibMTL.weighting as weighting_method`` may come earlier, as
    long as the arguments are parsed after ``register()``::

        from LibMTL_rgb.integrations.libmtl import register
        register()
        from LibMTL.config import LibMTL_args, prepare_args
        import LibMTL.weighting as weighting_method

    It also provides ``torchvision.models.utils`` when the installed torchvision lacks it
    (LibMTL 1.1.5 imports it). Calling it again changes nothing. Returns the RGB class.
    """
    rgb_class = libmtl_rgb_class()
    weighting_module = importlib.import_module("LibMTL.weighting")
    config = importlib.import_module("LibMTL.config")
    weighting_module.RGB = rgb_class
    names = getattr(weighting_module, "__all__", None)
    if isinstance(names, list) and "RGB" not in names:
        names.append("RGB")
    _add_rgb_flags(config.LibMTL_args)
    if not getattr(config.prepare_args, "_handles_rgb", False):
        config.prepare_args = _prepare_args_with_rgb(config.prepare_args, getattr(config, "_display", None))
    return rgb_class


def _add_rgb_flags(parser: argparse.ArgumentParser) -> None:
    missing = [hp for hp in hyperparameters_of(RGB) if f"--{hp.name}" not in parser._option_string_actions]
    if not missing:
        return
    group = parser.add_argument_group(FLAG_GROUP)
    for hp in missing:
        add_flag(group, hp)


def _prepare_args_with_rgb(original: Callable, display: Optional[Callable]) -> Callable:
    """Wrap LibMTL's ``prepare_args`` (which raises for unknown methods): for RGB, run it as
    for EW (it still checks the architecture, optimizer and scheduler), then put RGB's
    options into ``weight_args`` and print LibMTL's summary for RGB."""

    @functools.wraps(original)
    def prepare_args(params: argparse.Namespace, *args: Any, **kwargs: Any):
        if getattr(params, "weighting", None) != "RGB":
            return original(params, *args, **kwargs)
        as_ew = argparse.Namespace(**{**vars(params), "weighting": "EW"})
        summary = io.StringIO()
        with contextlib.redirect_stdout(summary):
            method_kwargs, optim_param, scheduler_param = original(as_ew, *args, **kwargs)
        method_kwargs["weight_args"] = method_args(params, RGB)
        if display is not None:
            display(params, method_kwargs, optim_param, scheduler_param)
        else:
            print(f"{summary.getvalue()}RGB weight_args: {method_kwargs['weight_args']}")
        return method_kwargs, optim_param, scheduler_param

    prepare_args._handles_rgb = True
    return prepare_args
