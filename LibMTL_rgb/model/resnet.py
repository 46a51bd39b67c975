"""Plain and dilated ResNet encoders on top of torchvision's ResNet.

``resnet_encoder(50, dilated=True, pretrained=True)`` is the dilated ResNet-50 (output stride
8) of MTAN / LibMTL / ConsMTL for NYUv2 and Cityscapes. The encoder keeps torchvision's module
names (``conv1``, ``bn1``, ``layer1`` ... ``layer4``), so torchvision ImageNet checkpoints load
as they are, and exposes ``stages`` (stem + layer1, layer2, layer3, layer4) for architectures
that work stage by stage (MTAN, Cross_stitch).

Pretrained weights are never downloaded: they load from ``weights_path`` or from the torch hub
cache (``torch.hub.get_dir()/checkpoints/<torchvision file name>``, where torchvision itself
would have put them); when absent, ``FileNotFoundError`` says which URL to fetch and where to
put the file.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import torch.nn as nn
from torch import Tensor
from torchvision.models import get_model_weights
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

#: depth -> (block, blocks per layer), as torchvision's resnet18 ... resnet152.
RESNET_LAYOUTS: dict[int, tuple[type[nn.Module], list[int]]] = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
}
STANDARD_WIDTH = 64
#: layer3 and layer4 trade their stride 2 for dilation 2 and 4 (output stride 8).
DILATED_LAYERS = {"layer3": 2, "layer4": 4}


class _WidthScaledResNet(ResNet):
    """torchvision's ResNet whose channel counts are scaled by ``width / 64`` (64: unchanged)."""

    def __init__(self, block: type[nn.Module], layers: list[int], width: int, dilate_bottleneck: bool) -> None:
        self._width = width
        dilation = [False, True, True] if dilate_bottleneck else None
        super().__init__(block, layers, replace_stride_with_dilation=dilation)
        if width != STANDARD_WIDTH:
            self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        del self.avgpool, self.fc  # an encoder: no classifier head

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        if planes == STANDARD_WIDTH:  # layer1: its input is the stem's output
            self.inplanes = self._width
        return super()._make_layer(block, planes * self._width // STANDARD_WIDTH, blocks, stride, dilate)


def _dilate_basic_layer(layer: nn.Sequential, previous_dilation: int, dilation: int) -> None:
    """Turn a stride-2 layer of BasicBlocks into a stride-1 dilated one, with torchvision's
    convention for Bottlenecks: the first block keeps ``previous_dilation``, the others use
    ``dilation`` (torchvision's BasicBlock refuses dilation, so it is set here)."""
    for index, block in enumerate(layer):
        rate = previous_dilation if index == 0 else dilation
        for conv in (block.conv1, block.conv2):
            conv.stride = (1, 1)
            conv.dilation = (rate, rate)
            conv.padding = (rate, rate)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)


class ResNetEncoder(nn.Module):
    """A ResNet without its classifier: ``forward(x)`` is the last feature map
    ``[B, out_channels, H / output_stride, W / output_stride]``.

    Attributes:
        stages: ``[stem + layer1, layer2, layer3, layer4]`` (see :func:`resnet_stages`; a view
            of the same modules: the parameters are registered once, under torchvision's names).
        stage_channels: output channels of each stage.
        out_channels: channels of the output feature map.
        output_stride: input size / output size (32 plain, 8 dilated).
    """

    def __init__(self, backbone: ResNet, dilated: bool) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4
        self.stage_channels = [_out_channels(layer) for layer in (self.layer1, self.layer2, self.layer3, self.layer4)]
        self.out_channels = self.stage_channels[-1]
        self.output_stride = 8 if dilated else 32

    @property
    def stages(self) -> nn.ModuleList:
        return resnet_stages(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def resnet_stages(resnet: nn.Module) -> nn.ModuleList:
    """The four stages of a torchvision-style ResNet (``conv1``, ``bn1``, ``relu``, ``maxpool``,
    ``layer1`` ... ``layer4``) as ``nn.Sequential`` containers of its own modules: stage 0 is the stem
    followed by layer1's blocks, stages 1-3 are layer2-layer4. Applying them in order is the
    ResNet's forward without its head; each stage's last child is its last residual block."""
    stem = [resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool]
    return nn.ModuleList([nn.Sequential(*stem, *resnet.layer1), resnet.layer2, resnet.layer3, resnet.layer4])


def _out_channels(layer: nn.Sequential) -> int:
    last = layer[-1]
    return (last.bn3 if isinstance(last, Bottleneck) else last.bn2).num_features


def resnet_encoder(
    depth: int = 50,
    *,
    dilated: bool = False,
    pretrained: bool = False,
    weights_path: Optional[str] = None,
    width: int = STANDARD_WIDTH,
) -> ResNetEncoder:
    """A (dilated) ResNet-``depth`` encoder.

    Args:
        depth: 18, 34, 50, 101 or 152.
        dilated: replace the strides of layer3/layer4 by dilation 2/4 (output stride 8), as the
            dilated ResNet-50 of MTAN / LibMTL; also for 18/34 (their BasicBlocks are dilated
            here, torchvision does not do it).
        pretrained: load torchvision's ImageNet weights from the hub cache (never downloaded).
        weights_path: a local torchvision ResNet state_dict to load (implies ``pretrained``).
        width: channels of the stem (64 = the standard ResNet; every layer scales with it).
            A small width (e.g. 8) gives a tiny ResNet for tests; pretrained needs 64.
    """
    if depth not in RESNET_LAYOUTS:
        raise ValueError(f"ResNet depth must be one of {sorted(RESNET_LAYOUTS)}, got {depth}")
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    pretrained = pretrained or weights_path is not None
    if pretrained and width != STANDARD_WIDTH:
        raise ValueError(f"pretrained ImageNet weights exist only for width {STANDARD_WIDTH}, got width={width}")
    block, layers = RESNET_LAYOUTS[depth]
    backbone = _WidthScaledResNet(block, layers, width, dilate_bottleneck=dilated and block is Bottleneck)
    if dilated and block is BasicBlock:
        previous = 1
        for name, rate in DILATED_LAYERS.items():
            _dilate_basic_layer(getattr(backbone, name), previous, rate)
            previous = rate
    if pretrained:
        _load_imagenet_weights(backbone, depth, weights_path)
    return ResNetEncoder(backbone, dilated)


def pretrained_weight_files(depth: int) -> list[tuple[str, str]]:
    """``(file name, URL)`` of torchvision's ImageNet checkpoints for ResNet-``depth``."""
    return [(w.url.rsplit("/", 1)[-1], w.url) for w in get_model_weights(f"resnet{depth}")]


def _find_weights(depth: int, weights_path: Optional[str]) -> str:
    if weights_path is not None:
        if not os.path.isfile(weights_path):
            raise FileNotFoundError(f"ResNet-{depth} weights file {weights_path!r} does not exist")
        return weights_path
    checkpoints = os.path.join(torch.hub.get_dir(), "checkpoints")
    files = pretrained_weight_files(depth)
    for file_name, _ in files:
        candidate = os.path.join(checkpoints, file_name)
        if os.path.isfile(candidate):
            return candidate
    file_name, url = files[0]
    raise FileNotFoundError(
        f"no ImageNet weights for ResNet-{depth}: looked for {[f for f, _ in files]} in {checkpoints}. "
        f"Download {url} and save it as {os.path.join(checkpoints, file_name)} "
        f"(or pass its path as weights_path); nothing is downloaded automatically."
    )


def _load_imagenet_weights(backbone: ResNet, depth: int, weights_path: Optional[str]) -> None:
    path = _find_weights(depth, weights_path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path} is not a torchvision ResNet-{depth} state_dict: {err}") from err
