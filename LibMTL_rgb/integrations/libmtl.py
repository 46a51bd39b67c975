"""RGB inside an installed LibMTL (tested with LibMTL 1.1.5, the last PyPI release).

``register()`` adds ``RGB`` to ``LibMTL.weighting``, its ``--rgb_*`` flags to
``LibMTL.config.LibMTL_args``, and teaches ``LibMTL.config.prepare_args`` to fill
``weight_args`` for ``--weighting RGB``. The class it adds is our
:class:`LibMTL_rgb.weighting.RGB` (math, plumbing, state) that is also a subclass of LibMTL's
``AbsWeighting``, so LibMTL's ``Trainer`` composes it with LibMTL's architectures as usual.

Everything is patched in place, so the import order of the script does not matter: the flags
go into the parser object ``LibMTL_args`` itself, and the function object ``prepare_args``
that a script may already hold gets a new body (its ``__code__``) that calls the wrapper.
Without CUDA, LibMTL's ``Trainer`` (which hard-codes ``cuda:0``) is sent to the CPU, and
1.1.5's ``iterator.next()`` becomes ``next(iterator)``.
Limits: ``docs/methods.md``, section "Using RGB inside LibMTL".
"""
from __future__ import annotations

import argparse
import contextlib
import dis
import functools
import importlib
import importlib.machinery
import io
import sys
import types
from typing import Any, Callable, Optional

import torch

from LibMTL_rgb.config import add_flag, method_args
from LibMTL_rgb.registry import hyperparameters_of
from LibMTL_rgb.weighting.rgb import RGB

__all__ = ["register", "libmtl_rgb_class", "ensure_torchvision_models_utils", "patch_trainer_for_cpu"]

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

    models: Any = torchvision.models

    stand_in: Any = types.ModuleType("torchvision.models.utils")
    stand_in.__doc__ = "Stand-in for torchvision < 0.13's module, added by LibMTL_rgb for LibMTL 1.1.5."
    stand_in.load_state_dict_from_url = torch.hub.load_state_dict_from_url
    stand_in.__spec__ = importlib.machinery.ModuleSpec("torchvision.models.utils", None)  # find_spec works
    sys.modules["torchvision.models.utils"] = stand_in
    models.utils = stand_in


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

    Call it anywhere before the arguments are parsed and the ``Trainer`` is built; names the
    script imported from LibMTL earlier (``LibMTL_args``, ``prepare_args``, ``Trainer``,
    ``import LibMTL.weighting as weighting_method``) are patched in place::

        from LibMTL.config import LibMTL_args, prepare_args
        from LibMTL_rgb.integrations.libmtl import register
        register()
        params = LibMTL_args.parse_args()   # --weighting RGB --rgb_steps 5 ...

    ``from LibMTL.weighting import RGB`` works only after it. It also provides
    ``torchvision.models.utils`` when the installed torchvision lacks it (LibMTL 1.1.5 imports
    it; on such a torchvision ``import LibMTL`` fails before ``register()``), and lets
    LibMTL's ``Trainer`` run without CUDA (:func:`patch_trainer_for_cpu`). Calling it again
    changes nothing. Returns the RGB class.
    """
    rgb_class = libmtl_rgb_class()
    weighting_module: Any = importlib.import_module("LibMTL.weighting")
    config = importlib.import_module("LibMTL.config")
    weighting_module.RGB = rgb_class
    names = getattr(weighting_module, "__all__", None)
    if isinstance(names, list) and "RGB" not in names:
        names.append("RGB")
    _add_rgb_flags(config.LibMTL_args)
    _teach_prepare_args_rgb(config)
    patch_trainer_for_cpu(importlib.import_module("LibMTL.trainer").Trainer)
    return rgb_class


#: The name, in ``LibMTL.config``'s globals, of the wrapper that ``prepare_args``' new body calls.
_WRAPPER_GLOBAL = "_libmtl_rgb_prepare_args"


def _call_wrapper(params, *args, **kwargs):  # becomes the body of LibMTL's ``prepare_args``
    return _libmtl_rgb_prepare_args(params, *args, **kwargs)  # noqa: F821  (resolved in LibMTL.config)


def _teach_prepare_args_rgb(config: Any) -> None:
    """Give LibMTL's ``prepare_args`` function object (the one scripts may already hold) a
    body that calls :func:`_prepare_args_with_rgb`'s wrapper around a copy of the original."""
    function = config.prepare_args
    if getattr(function, "_handles_rgb", False):
        return
    original = types.FunctionType(function.__code__, function.__globals__, function.__name__,
                                  function.__defaults__, function.__closure__)
    original.__kwdefaults__ = function.__kwdefaults__
    function.__globals__[_WRAPPER_GLOBAL] = _prepare_args_with_rgb(original, getattr(config, "_display", None))
    if function.__closure__ is None:
        function.__code__ = _call_wrapper.__code__
        function.__defaults__ = None
    else:  # a closure cannot take a code object without free variables: rebind the name only
        config.prepare_args = function.__globals__[_WRAPPER_GLOBAL]
    function._handles_rgb = True


def patch_trainer_for_cpu(trainer_class: Any) -> None:
    """Let LibMTL's ``Trainer`` run on a machine without CUDA (it hard-codes ``cuda:0``):
    the model goes to the CPU, with one printed line saying so; and, for 1.1.5, fetch batches
    with ``next(iterator)`` instead of ``iterator.next()`` (gone from DataLoader iterators).
    Changes nothing when CUDA is available, or when already patched."""
    if getattr(trainer_class, "_libmtl_rgb_cpu_patch", False):
        return
    trainer_class._libmtl_rgb_cpu_patch = True
    prepare_model = trainer_class._prepare_model

    @functools.wraps(prepare_model)
    def _prepare_model(self, *args, **kwargs):
        if torch.device(self.device).type == "cuda" and not torch.cuda.is_available():
            print(f"LibMTL_rgb.integrations.libmtl: CUDA is not available; LibMTL's Trainer runs on the CPU instead of {self.device}")
            self.device = torch.device("cpu")
        return prepare_model(self, *args, **kwargs)

    trainer_class._prepare_model = _prepare_model
    if _calls_method(trainer_class._process_data, "next"):
        trainer_class._process_data = _process_data


def _calls_method(function: Callable, name: str) -> bool:
    """Whether ``function``'s body reads an attribute ``name`` (``x.next()``)."""
    return any(ins.opname in ("LOAD_ATTR", "LOAD_METHOD") and ins.argval == name
               for ins in dis.get_instructions(function))


def _process_data(self, loader):
    """LibMTL main's ``Trainer._process_data`` (``next(iterator)``; 1.1.5 calls ``.next()``)."""
    try:
        data, label = next(loader[1])
    except StopIteration:
        loader[1] = iter(loader[0])
        data, label = next(loader[1])
    data = data.to(self.device, non_blocking=True)
    if not self.multi_input:
        for task in self.task_name:
            label[task] = label[task].to(self.device, non_blocking=True)
    else:
        label = label.to(self.device, non_blocking=True)
    return data, label


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

    setattr(prepare_args, "_handles_rgb", True)  # a mark read by _teach_prepare_args_rgb
    return prepare_args
