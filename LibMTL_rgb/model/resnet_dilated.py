"""LibMTL's module path ``LibMTL.model.resnet_dilated`` (the code is in :mod:`.dilated_resnet`).

``from LibMTL_rgb.model.resnet_dilated import resnet_dilated, ResnetDilated`` works as with
LibMTL. Importing this submodule binds the package attribute ``resnet_dilated`` to the module
(Python's import system does so), which would hide the function of the same name; so the
module object is callable and calls the function: ``LibMTL_rgb.model.resnet_dilated('resnet50')``
builds the network whichever of the two the name holds.
"""
from __future__ import annotations

import sys
import types
from typing import Any

from LibMTL_rgb.model.dilated_resnet import ResnetDilated, resnet_dilated

__all__ = ["ResnetDilated", "resnet_dilated"]


class _CallableModule(types.ModuleType):
    """This module, callable as :func:`resnet_dilated`."""

    def __call__(self, *args: Any, **kwargs: Any) -> ResnetDilated:
        return resnet_dilated(*args, **kwargs)


__wrapped__ = resnet_dilated  # inspect.signature(module) gives the function's
sys.modules[__name__].__class__ = _CallableModule
