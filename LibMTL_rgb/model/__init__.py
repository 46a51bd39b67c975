"""Backbones: plain and dilated ResNet encoders (torchvision-based), SegNet encoder/decoders.

The names load their submodule (and torchvision) on first access, so importing this package,
or :mod:`LibMTL_rgb.model.aspp` for its command-line flags, does not import torchvision.
"""
from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the submodule that defines it.
_SUBMODULE_OF = {
    "ResNetEncoder": "resnet", "resnet_encoder": "resnet", "resnet_stages": "resnet", "pretrained_weight_files": "resnet",
    "SegNetEncoder": "segnet", "SegNetDecoder": "segnet", "segnet_model": "segnet",
}

__all__ = ["ResNetEncoder", "resnet_encoder", "resnet_stages", "pretrained_weight_files",
           "SegNetEncoder", "SegNetDecoder", "segnet_model"]


def __getattr__(name: str) -> Any:
    if name not in _SUBMODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_SUBMODULE_OF[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
