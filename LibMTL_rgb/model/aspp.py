"""DeepLabV3-style dense-prediction model of MTAN / LibMTL / ConsMTL for NYUv2 and Cityscapes:
a dilated ResNet (output stride 8) shared encoder and one ASPP head per task.

The ASPP block is torchvision's (``torchvision.models.segmentation.deeplabv3.ASPP``: a 1×1
branch, three 3×3 atrous branches with rates 12/24/36 and an image-pooling branch); the head
adds a 3×3 conv + BN + ReLU and a 1×1 output conv like torchvision's / LibMTL's
``DeepLabHead``, then upsamples to the label resolution (bilinear, LibMTL's
``process_preds``) and, for surface normals, scales each output vector to unit length.

``add_deeplab_args`` / ``deeplab_model`` build the encoder factory and decoders from the
command-line flags the NYUv2 and Cityscapes examples share; ``--backbone segnet`` swaps the
whole model for MTAN's SegNet (``LibMTL_rgb/model/segnet.py``).
"""
from __future__ import annotations

import argparse
import copy
from typing import TYPE_CHECKING, Callable, Mapping, Optional, Sequence

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from LibMTL_rgb.model.normals import unit_normals

if TYPE_CHECKING:  # torchvision loads when a model is built, not for --help
    from torchvision.models.segmentation.deeplabv3 import ASPP

BACKBONES = ("resnet", "segnet")
ATROUS_RATES = (12, 24, 36)
HEAD_CHANNELS = 256


class AtrousConv2d(nn.Conv2d):
    """A stride-1 dilated convolution with zero "same" padding (odd kernel, padding =
    dilation · (k − 1) / 2) that skips the kernel taps which, on the input at hand, can only
    read padding: a tap at offset ``j · dilation`` from the centre reaches an input pixel only
    if ``|j| · dilation < size``. The result and every gradient are those of ``nn.Conv2d``
    (skipped taps multiply zeros and get zero gradient).

    That is how DeepLabV3's large rates behave on small maps (rate 36 on a 16×32 map is a 1×1
    convolution, rate 24 a 1×3): Cityscapes' 128×256 input gives 16×32 features at output
    stride 8, where the three atrous branches need 13 instead of 27 taps.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.stride != (1, 1) or self.padding_mode != "zeros" or any(
            k % 2 == 0 or p != d * (k - 1) // 2 for k, p, d in zip(self.kernel_size, self.padding, self.dilation)
        ):
            raise ValueError("AtrousConv2d needs stride 1, an odd kernel and zero padding of dilation*(k-1)/2")

    @classmethod
    def sharing_parameters(cls, conv: nn.Conv2d) -> "AtrousConv2d":
        """An ``AtrousConv2d`` with ``conv``'s configuration and parameter tensors (no new
        initialisation, so the random number stream is untouched)."""
        atrous = cls(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding,
                     dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None, device="meta")
        atrous.weight = conv.weight
        atrous.bias = conv.bias
        return atrous

    def forward(self, x: Tensor) -> Tensor:
        centre = [(k - 1) // 2 for k in self.kernel_size]
        reach = [min(c, (size - 1) // d) for c, size, d in zip(centre, x.shape[-2:], self.dilation)]
        if reach == centre:
            return super().forward(x)
        weight = self.weight[:, :, centre[0] - reach[0]:centre[0] + reach[0] + 1, centre[1] - reach[1]:centre[1] + reach[1] + 1]
        padding = tuple(r * d for r, d in zip(reach, self.dilation))
        return F.conv2d(x, weight, self.bias, 1, padding, self.dilation, self.groups)


def _skip_padding_taps(aspp: ASPP) -> ASPP:
    """Swap the atrous branches' convolutions of torchvision's ASPP for :class:`AtrousConv2d`
    (same parameters and ``state_dict`` keys)."""
    for branch in aspp.convs:
        conv = branch[0] if isinstance(branch, nn.Sequential) else None
        if isinstance(conv, nn.Conv2d) and conv.dilation != (1, 1):
            branch[0] = AtrousConv2d.sharing_parameters(conv)
    return aspp


class DeepLabHead(nn.Module):
    """ASPP head: ``[B, in_channels, h, w] -> [B, num_outputs, *output_size]``.

    Args:
        in_channels: channels of the encoder's feature map.
        num_outputs: output channels (classes, 1 for depth, 3 for normals, ...).
        output_size: ``(H, W)`` to upsample to (bilinear, corners aligned); None keeps ``h, w``.
        unit_normal: divide each output vector (over channels) by its length (normals).
        channels: width of the ASPP branches and of the 3×3 conv (256 in DeepLabV3).
        atrous_rates: dilation rates of the three atrous branches.
    """

    def __init__(
        self,
        in_channels: int,
        num_outputs: int,
        output_size: Optional[Sequence[int]] = None,
        unit_normal: bool = False,
        channels: int = HEAD_CHANNELS,
        atrous_rates: Sequence[int] = ATROUS_RATES,
    ) -> None:
        super().__init__()
        from torchvision.models.segmentation.deeplabv3 import ASPP

        self.aspp = _skip_padding_taps(ASPP(in_channels, atrous_rates, out_channels=channels))
        self.refine = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU()
        )
        self.output = nn.Conv2d(channels, num_outputs, 1)
        self.output_size = None if output_size is None else (int(output_size[0]), int(output_size[1]))
        self.unit_normal = unit_normal

    def forward(self, features: Tensor) -> Tensor:
        out = self.output(self.refine(self.aspp(features)))
        if self.output_size is not None and tuple(out.shape[-2:]) != self.output_size:
            out = F.interpolate(out, size=self.output_size, mode="bilinear", align_corners=True)
        if self.unit_normal:
            out = unit_normals(out)
        return out


def add_deeplab_args(parser: argparse.ArgumentParser) -> None:
    """The backbone flags of the dense examples."""
    group = parser.add_argument_group("model (dilated ResNet + ASPP heads, or SegNet)")
    group.add_argument("--backbone", type=str, default="resnet", choices=BACKBONES,
                       help="resnet: dilated ResNet shared encoder + one ASPP head per task (the paper's model); "
                            "segnet: VGG16-bn SegNet encoder + one SegNet decoder per task (MTAN's NYUv2 model, "
                            "trained from scratch; see LibMTL_rgb/model/segnet.py)")
    group.add_argument("--backbone_depth", type=int, default=50, choices=[18, 34, 50, 101, 152],
                       help="ResNet depth of the dilated shared encoder (the paper: 50; --backbone resnet only)")
    group.add_argument("--backbone_width", type=int, default=64,
                       help="ResNet stem width / SegNet first-block width (64 = standard; a small value gives a tiny "
                            "model for quick tries and tests, which needs --no_pretrained with resnet); the ASPP "
                            "heads use 4x this many channels")
    group.add_argument("--weights_path", type=str, default=None,
                       help="torchvision ImageNet ResNet state_dict to start from (default: the torch hub cache, "
                            "<torch hub dir>/checkpoints/resnet50-*.pth); nothing is downloaded")
    group.add_argument("--no_pretrained", action="store_true", default=False,
                       help="train the encoder from scratch instead of from ImageNet weights (segnet always does)")


def deeplab_model(
    params: argparse.Namespace,
    task_outputs: Mapping[str, int],
    output_size: Sequence[int],
    unit_normal_tasks: Sequence[str] = (),
) -> tuple[Callable[[], nn.Module], nn.ModuleDict]:
    """``(encoder_class, decoders)`` for the Trainer: a dilated ResNet built from the flags of
    :func:`add_deeplab_args` and one :class:`DeepLabHead` per task in ``task_outputs``
    (task -> output channels). Exits with a download hint when pretrained weights are missing.
    With ``--backbone segnet``: :func:`LibMTL_rgb.model.segnet.segnet_model` instead.

    The ImageNet weights are read once; ``encoder_class`` returns copies, so architectures
    with one encoder per task (Cross_stitch...) all start from them.
    """
    from LibMTL_rgb.model.resnet import resnet_encoder
    from LibMTL_rgb.model.segnet import segnet_model

    if getattr(params, "backbone", "resnet") == "segnet":
        if params.weights_path is not None:
            raise SystemExit("--weights_path loads ResNet weights, but --backbone segnet trains from scratch: drop it")
        try:
            return segnet_model(task_outputs, output_size, unit_normal_tasks, width=params.backbone_width)
        except ValueError as err:
            raise SystemExit(str(err)) from None
    pretrained = not params.no_pretrained
    if params.no_pretrained and params.weights_path is not None:
        raise SystemExit("--weights_path and --no_pretrained contradict each other: give one")
    try:
        template = resnet_encoder(params.backbone_depth, dilated=True, pretrained=pretrained,
                                  weights_path=params.weights_path, width=params.backbone_width)
    except FileNotFoundError as err:
        raise SystemExit(f"{err}\nOr pass --no_pretrained to train from scratch.") from None
    except ValueError as err:
        raise SystemExit(str(err)) from None

    def encoder_class() -> nn.Module:
        return copy.deepcopy(template)

    channels = 4 * params.backbone_width
    decoders = nn.ModuleDict({
        task: DeepLabHead(template.out_channels, outputs, output_size, unit_normal=task in unit_normal_tasks, channels=channels)
        for task, outputs in task_outputs.items()
    })
    return encoder_class, decoders
