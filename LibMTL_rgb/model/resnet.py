"""Plain and dilated ResNet encoders on top of torchvision's ResNet.

``resnet_encoder(50, dilated=True, pretrained=True)`` is the dilated ResNet-50 (output stride
8) of MTAN / LibMTL / ConsMTL for NYUv2 and Cityscapes. The encoder keeps torchvision's module
names (``conv1``, ``bn1``, ``layer1`` ... ``layer4``), so torchvision ImageNet checkpoints load
as they are, and exposes ``stages`` (stem + layer1, layer2, layer3, layer4) for architectures
that work stage by stage (MTAN, Cross_stitch; PLE and LTB put the stem apart, see :func:`resnet_stages`).

LibMTL's factories are here under LibMTL's names and signatures (``resnet18`` ...
``resnet152``, ``resnext50_32x4d``, ``resnext101_32x8d``, ``wide_resnet50_2``,
``wide_resnet101_2``): each returns a :class:`HeadlessResNet` (LibMTL's headless ``ResNet``:
``forward`` gives the last feature map, ``feature_dim`` its channels).

Pretrained weights are never downloaded: they load from ``weights_path`` or from the torch hub
cache under LibMTL's or torchvision's file names (:mod:`LibMTL_rgb.model.pretrained_weights`);
when absent, ``FileNotFoundError`` says which URL to fetch and where to put the file.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn as nn
from torch import Tensor
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from LibMTL_rgb.model.pretrained_weights import load_imagenet_weights, weight_files

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


class HeadlessResNet(ResNet):
    """torchvision's ResNet without its classifier (no ``avgpool``/``fc``), as LibMTL's
    ``LibMTL.model.resnet.ResNet``: ``forward(x)`` is the last feature map and ``feature_dim``
    its channels. Channel counts are scaled by ``width / 64`` (64: unchanged). Other keyword
    arguments are torchvision's (``groups``, ``width_per_group``, ``replace_stride_with_dilation``,
    ``norm_layer``, ``zero_init_residual``; ``num_classes`` is accepted and unused)."""

    def __init__(self, block: type[nn.Module], layers: list[int], width: int = STANDARD_WIDTH, **kwargs: Any) -> None:
        self._width = width
        rng_before = torch.get_rng_state()
        super().__init__(block, layers, **kwargs)
        if width == STANDARD_WIDTH:
            _replay_libmtl_initialisation(self, rng_before, kwargs.get("zero_init_residual", False))
        if width != STANDARD_WIDTH:
            self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = self._norm_layer(width)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        del self.avgpool, self.fc  # an encoder: no classifier head
        self.feature_dim = _out_channels(self.layer4)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        if planes == STANDARD_WIDTH:  # layer1: its input is the stem's output
            self.inplanes = self._width
        return super()._make_layer(block, planes * self._width // STANDARD_WIDTH, blocks, stride, dilate)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _convolutions_in_construction_order(model: ResNet) -> list[nn.Conv2d]:
    """The convolutions in the order ResNet's constructor builds them: the stem, then per
    block its ``downsample`` (built before the block) and the block's own."""
    convs = [model.conv1]
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in layer:
            if block.downsample is not None:
                convs += [m for m in block.downsample.modules() if isinstance(m, nn.Conv2d)]
            convs += [m for name, m in block.named_children() if isinstance(m, nn.Conv2d)]
    return convs


def _replay_libmtl_initialisation(model: ResNet, rng_before: Tensor, zero_init_residual: bool) -> None:
    """Same seed, same weights and same random stream afterwards as LibMTL's factories.

    torchvision's constructor also builds the classifier ``fc`` (random draws between the
    convolutions' construction and their initialisation), which LibMTL's ResNet does not. So
    the CPU generator is rewound to ``rng_before`` and LibMTL's draws are made again: each
    convolution's construction (``reset_parameters``), then the Kaiming-normal initialisation
    in module order; batch norms are constants (``zero_init_residual`` re-applied)."""
    torch.set_rng_state(rng_before)
    with torch.no_grad():
        for conv in _convolutions_in_construction_order(model):
            conv.reset_parameters()
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        for module in model.modules() if zero_init_residual else ():
            if isinstance(module, Bottleneck):
                nn.init.constant_(module.bn3.weight, 0)
            elif isinstance(module, BasicBlock):
                nn.init.constant_(module.bn2.weight, 0)


def nostride_dilate(module: nn.Module, rate: int) -> None:
    """LibMTL's rule for one module (``ResnetDilated._nostride_dilate``, after Yu et al. 2017):
    a stride-2 convolution gets stride 1 and, when 3×3, dilation and padding ``rate // 2``;
    any other 3×3 convolution gets dilation and padding ``rate``; other modules are left alone."""
    if not isinstance(module, nn.Conv2d):
        return
    if module.stride == (2, 2):
        module.stride = (1, 1)
        if module.kernel_size == (3, 3):
            module.dilation = module.padding = (rate // 2, rate // 2)
    elif module.kernel_size == (3, 3):
        module.dilation = module.padding = (rate, rate)


def dilate_layer(layer: nn.Module, rate: int) -> None:
    """Trade a ResNet layer's stride 2 for dilation ``rate``, in place, by LibMTL's rule
    (:func:`nostride_dilate` on every module). For Bottleneck layers this is torchvision's
    ``replace_stride_with_dilation``; it also dilates BasicBlocks (ResNet-18/34)."""
    for module in layer.modules():
        nostride_dilate(module, rate)


class ResNetEncoder(nn.Module):
    """A ResNet without its classifier: ``forward(x)`` is the last feature map
    ``[B, out_channels, H / output_stride, W / output_stride]``.

    Attributes:
        stages: ``[stem + layer1, layer2, layer3, layer4]`` (see :func:`resnet_stages`; a view
            of the same modules: the parameters are registered once, under torchvision's names).
        stage_channels: output channels of each stage.
        out_channels: channels of the output feature map.
        output_stride: input size / output size (32 plain, 8 dilated).
        feature_dim: ``out_channels`` (LibMTL's name).
    """

    def __init__(self, backbone: nn.Module, dilated: bool = False, output_stride: Optional[int] = None) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4
        self.stage_channels = [_out_channels(layer) for layer in (self.layer1, self.layer2, self.layer3, self.layer4)]
        self.out_channels = self.feature_dim = self.stage_channels[-1]
        self.output_stride = output_stride if output_stride is not None else (8 if dilated else 32)

    @property
    def stages(self) -> nn.ModuleList:
        return resnet_stages(self)

    forward = HeadlessResNet.forward


def resnet_stages(resnet: nn.Module, stem_apart: bool = False) -> nn.ModuleList:
    """The stages of a torchvision-style ResNet (``conv1``, ``bn1``, ``relu``, ``maxpool``,
    ``layer1`` ... ``layer4``) as ``nn.Sequential`` containers of its own modules.

    By default four: stage 0 is the stem followed by layer1's blocks, stages 1-3 are
    layer2-layer4 (MTAN's and Cross_stitch's stages, as LibMTL). With ``stem_apart`` five: the
    stem (``conv1``, ``bn1``, ``relu``, ``maxpool``) is a stage of its own, followed by
    layer1-layer4 (LibMTL's five levels of PLE and LTB). Applying them in order is the ResNet's
    forward without its head; a layer's last child is its last residual block."""
    stem = [resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool]
    layers = [resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4]
    if stem_apart:
        return nn.ModuleList([nn.Sequential(*stem), *layers])
    return nn.ModuleList([nn.Sequential(*stem, *resnet.layer1), *layers[1:]])


def _out_channels(layer: nn.Sequential) -> int:
    """Output channels of a layer of torchvision-style blocks (Bottleneck: ``bn3``, BasicBlock: ``bn2``)."""
    last = layer[-1]
    return (last.bn3 if hasattr(last, "bn3") else last.bn2).num_features


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
        dilated: replace the strides of layer3/layer4 by dilation 2/4 (output stride 8) by
            LibMTL's rule (:func:`dilate_layer`), as the dilated ResNet-50 of MTAN / LibMTL:
            the same network as LibMTL's ``resnet_dilated(f'resnet{depth}')``, 18/34 included.
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
    backbone = HeadlessResNet(block, layers, width)
    if dilated:
        for name, rate in DILATED_LAYERS.items():
            dilate_layer(getattr(backbone, name), rate)
    if pretrained:
        load_imagenet_weights(backbone, f"resnet{depth}", weights_path)
    return ResNetEncoder(backbone, dilated)


def pretrained_weight_files(arch: int | str) -> list[tuple[str, str]]:
    """``(file name, URL)`` of the accepted ImageNet checkpoints of ``arch`` (a ResNet depth or a
    factory name such as ``'resnext50_32x4d'``), in lookup order: LibMTL's file, then torchvision's."""
    name = f"resnet{arch}" if isinstance(arch, int) else arch
    return [(f.name, f.url) for f in weight_files(name)]


# ------------------------------------------------------------- LibMTL's factories
# LibMTL's ``LibMTL.model.resnet`` names and signatures: ``name(pretrained=False, progress=True,
# **kwargs)`` -> HeadlessResNet. ``pretrained`` loads ImageNet weights from the torch hub cache
# (LibMTL's or torchvision's file name, see ``pretrained_weights``; never downloads);
# ``progress`` is accepted and unused; ``kwargs`` are torchvision's ResNet arguments.


def _libmtl_resnet(arch: str, depth: int, pretrained: bool, **kwargs: Any) -> HeadlessResNet:
    block, layers = RESNET_LAYOUTS[depth]
    model = HeadlessResNet(block, layers, **kwargs)
    if pretrained:
        load_imagenet_weights(model, arch)
    return model


def resnet18(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> HeadlessResNet:
    """ResNet-18 (He et al., 2016), headless."""
    return _libmtl_resnet("resnet18", 18, pretrained, **kwargs)


def resnet34(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> HeadlessResNet:
    """ResNet-34 (He et al., 2016), headless."""
    return _libmtl_resnet("resnet34", 34, pretrained, **kwargs)


def resnet50(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> HeadlessResNet:
    """ResNet-50 (He et al., 2016), headless."""
    return _libmtl_resnet("resnet50", 50, pretrained, **kwargs)


def resnet101(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> HeadlessResNet:
    """ResNet-101 (He et al., 2016), headless."""
    return _libmtl_resnet("resnet101", 101, pretrained, **kwargs)


def resnet152(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> HeadlessResNet:
    """ResNet-152 (He et al., 2016), headless."""
    return _libmtl_resnet("resnet152", 152, pretrained, **kwargs)


def resnext50_32x4d(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> HeadlessResNet:
    """ResNeXt-50 32x4d (Xie et al., 2017), headless: 32 groups of width 4."""
    return _libmtl_resnet("resnext50_32x4d", 50, pretrained, **{**kwargs, "groups": 32, "width_per_group": 4})


def resnext101_32x8d(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> HeadlessResNet:
    """ResNeXt-101 32x8d (Xie et al., 2017), headless: 32 groups of width 8."""
    return _libmtl_resnet("resnext101_32x8d", 101, pretrained, **{**kwargs, "groups": 32, "width_per_group": 8})


def wide_resnet50_2(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> HeadlessResNet:
    """Wide ResNet-50-2 (Zagoruyko & Komodakis, 2016), headless: bottlenecks twice as wide."""
    return _libmtl_resnet("wide_resnet50_2", 50, pretrained, **{**kwargs, "width_per_group": 128})


def wide_resnet101_2(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> HeadlessResNet:
    """Wide ResNet-101-2 (Zagoruyko & Komodakis, 2016), headless: bottlenecks twice as wide."""
    return _libmtl_resnet("wide_resnet101_2", 101, pretrained, **{**kwargs, "width_per_group": 128})


#: LibMTL's factory names -> factories (``resnet_dilated(basenet)`` looks ``basenet`` up here).
FACTORIES = {f.__name__: f for f in (resnet18, resnet34, resnet50, resnet101, resnet152, resnext50_32x4d,
                                     resnext101_32x8d, wide_resnet50_2, wide_resnet101_2)}
