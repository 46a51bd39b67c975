"""Backbones: plain and dilated ResNet encoders (torchvision-based), SegNet encoder/decoders, and
LibMTL's model factories under LibMTL's names (``resnet18`` ... ``wide_resnet101_2``,
``resnet_dilated``, ``ResnetDilated``).

The names load their submodule (and torchvision) on first access, so importing this package,
or :mod:`LibMTL_rgb.model.aspp` for its command-line flags, does not import torchvision.
"""
from __future__ import annotations

import importlib
from typing import Any

#: LibMTL's ``LibMTL.model.__all__``, same names and signatures.
LIBMTL_MODEL_NAMES = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
                      "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2", "resnet_dilated"]

#: Public name -> the submodule that defines it.
_SUBMODULE_OF = {
    "ResNetEncoder": "resnet", "resnet_encoder": "resnet", "resnet_stages": "resnet", "pretrained_weight_files": "resnet",
    "HeadlessResNet": "resnet",
    **{name: "resnet" for name in LIBMTL_MODEL_NAMES if name != "resnet_dilated"},
    "resnet_dilated": "dilated_resnet", "ResnetDilated": "dilated_resnet",
    "SegNetEncoder": "segnet", "SegNetDecoder": "segnet", "segnet_model": "segnet",
}

__all__ = ["ResNetEncoder", "resnet_encoder", "resnet_stages", "pretrained_weight_files",
           "SegNetEncoder", "SegNetDecoder", "segnet_model",
           "HeadlessResNet", "ResnetDilated", *LIBMTL_MODEL_NAMES]


def __getattr__(name: str) -> Any:
    if name not in _SUBMODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_SUBMODULE_OF[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
