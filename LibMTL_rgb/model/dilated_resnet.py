"""LibMTL's dilated ResNet (``LibMTL.model.resnet_dilated``): ``resnet_dilated('resnet50')``
is the shared encoder of LibMTL's NYUv2 and Cityscapes examples (Yu et al., "Dilated Residual
Networks", CVPR 2017)."""
from __future__ import annotations

import torch.nn as nn

from LibMTL_rgb.model.resnet import DILATED_LAYERS, FACTORIES, ResNetEncoder, dilate_layer, nostride_dilate

#: dilate_scale -> (layer, dilation rate) pairs; 32 leaves the ResNet as it is.
DILATIONS = {8: tuple(DILATED_LAYERS.items()), 16: (("layer4", 2),), 32: ()}


class ResnetDilated(ResNetEncoder):
    """A ResNet (``conv1``, ``bn1``, ``relu``, ``maxpool``, ``layer1`` ... ``layer4``, e.g. from
    :func:`~LibMTL_rgb.model.resnet50`) with its last strides traded for dilation, in place.

    ``forward(x)`` is the feature map at ``1 / dilate_scale`` of the input resolution;
    ``feature_dim`` its channels (as LibMTL's; also ``out_channels``, ``stage_channels``,
    ``stages`` and ``output_stride`` of :class:`ResNetEncoder`).

    Args:
        orig_resnet: the ResNet to dilate (its modules are reused, not copied).
        dilate_scale: 8 (layer3 and layer4 dilated by 2 and 4) or 16 (layer4 by 2), as
            LibMTL; 32 keeps every stride (LibMTL silently does that for any other value;
            here other values are refused).
    """

    def __init__(self, orig_resnet: nn.Module, dilate_scale: int = 8) -> None:
        if dilate_scale not in DILATIONS:
            raise ValueError(f"dilate_scale must be one of {sorted(DILATIONS)}, got {dilate_scale}")
        for name, rate in DILATIONS[dilate_scale]:
            dilate_layer(getattr(orig_resnet, name), rate)
        super().__init__(orig_resnet, output_stride=dilate_scale)
        self.feature_dim = getattr(orig_resnet, "feature_dim", self.out_channels)

    def _nostride_dilate(self, m: nn.Module, dilate: int) -> None:
        """LibMTL's per-module dilation rule, for subclasses that call it (:func:`nostride_dilate`)."""
        nostride_dilate(m, dilate)


def resnet_dilated(basenet: str, pretrained: bool = True, dilate_scale: int = 8) -> ResnetDilated:
    """LibMTL's ``resnet_dilated``: the factory ``basenet`` (``'resnet50'``, ``'resnet18'``,
    ``'resnext50_32x4d'`` ...) built with ``pretrained`` and dilated to output stride
    ``dilate_scale``. ImageNet weights come from the torch hub cache (never downloaded; a
    missing file raises ``FileNotFoundError`` saying which file to get and where to put it)."""
    if basenet not in FACTORIES:
        raise ValueError(f"unknown basenet {basenet!r}; choose one of {', '.join(FACTORIES)}")
    return ResnetDilated(FACTORIES[basenet](pretrained=pretrained), dilate_scale=dilate_scale)
