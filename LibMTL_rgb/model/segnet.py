"""SegNet encoder and per-task SegNet decoders: the NYUv2 model of MTAN (Liu, Johns, Davison,
"End-To-End Multi-Task Learning with Attention", CVPR 2019), an alternative to the paper's
dilated ResNet-50 + ASPP heads (``--backbone segnet`` in the dense examples).

Encoder: VGG16-bn's five convolution blocks (2, 2, 3, 3, 3 conv-BN-ReLU layers of 64, 128,
256, 512, 512 channels, scaled by ``width / 64``) with a 2×2 max-pooling between blocks. Each
block is one entry of ``stages``, so MTAN puts one attention mask per task on each block
(mask from the block's earlier layers, gating its last layer's output before pooling, the
shared transition then max-pooled into the next block: MTAN's own arrangement); HPS runs
the stages as one encoder, Cross_stitch stitches the task columns between them.

Decoder (one per task): the encoder mirrored. Each block's convolutions in reverse order,
then 2× bilinear upsampling to the previous block's resolution; at full resolution a 1×1
output convolution. Surface normals are scaled to unit length.

Differences from MTAN's SegNet, and why:

- MTAN upsamples by max-unpooling with the pooling indices of its shared encoder. Here the
  encoder hands each task's decoder one feature map (the HPS / ``rep_grad`` contract of
  LibMTL: ``decoder(rep)``), so the indices cannot reach the decoders; the decoders upsample
  bilinearly instead, and the encoder does not compute indices.
- MTAN pools after the fifth block too (output stride 32) and unpools first. Without indices
  that pool/upsample pair only loses resolution, so it is left out: output stride 16.
- MTAN shares the decoder between tasks (with attention in it too) and keeps only two
  convolutions per task. Here the decoder is the task-specific part, as ``decoders`` are in
  LibMTL; the shared parameters that RGB balances are the encoder's (plus MTAN's transitions).
- Trained from scratch, as in MTAN: there are no pretrained weights to load.
"""
from __future__ import annotations

import copy
from typing import Callable, Mapping, Optional, Sequence

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import Conv2dNormActivation

from LibMTL_rgb.model.normals import unit_normals

#: VGG16's convolution blocks: (channels at width 64, conv layers).
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
STANDARD_WIDTH = 64


def _conv_bn_relu(in_channels: int, out_channels: int) -> Conv2dNormActivation:
    return Conv2dNormActivation(in_channels, out_channels, kernel_size=3)


class SegNetEncoder(nn.Module):
    """VGG16-bn convolution blocks with 2×2 max-pooling between them:
    ``[B, in_channels, H, W] -> [B, out_channels, H / 16, W / 16]`` (sizes floored per pooling).

    Args:
        width: channels of the first block (64 = VGG16; the others scale with it). A small
            width (e.g. 4) gives a tiny model for tests.
        in_channels: input image channels.
        blocks: ``(channels at width 64, conv layers)`` per block (default: VGG16's five).

    Attributes:
        stages: one ``nn.Sequential`` per block: ``[max-pool (not in the first),
            conv-BN-ReLU, ...]``; applying them in order is ``forward``.
        stage_channels: output channels of each stage.
        stage_depths: conv layers of each stage (the decoder mirrors them).
        out_channels: channels of the output feature map.
        output_stride: input size / output size.
    """

    def __init__(self, width: int = STANDARD_WIDTH, in_channels: int = 3,
                 blocks: Sequence[tuple[int, int]] = VGG16_BLOCKS) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"SegNet width must be >= 1, got {width}")
        if not blocks or any(depth < 1 for _, depth in blocks):
            raise ValueError(f"SegNet needs at least one block of at least one conv layer, got {list(blocks)}")
        self.stage_channels = [max(1, channels * width // STANDARD_WIDTH) for channels, _ in blocks]
        self.stage_depths = [depth for _, depth in blocks]
        stages, previous = [], in_channels
        for index, (channels, depth) in enumerate(zip(self.stage_channels, self.stage_depths)):
            pool = [nn.MaxPool2d(kernel_size=2, stride=2)] if index > 0 else []
            convs = [_conv_bn_relu(previous if layer == 0 else channels, channels) for layer in range(depth)]
            stages.append(nn.Sequential(*pool, *convs))
            previous = channels
        self.stages = nn.ModuleList(stages)
        self.out_channels = self.stage_channels[-1]
        self.output_stride = 2 ** (len(stages) - 1)

    def forward(self, x: Tensor) -> Tensor:
        if min(x.shape[-2:]) < self.output_stride:
            raise ValueError(
                f"SegNet pools {len(self.stages) - 1} times, so inputs must be at least "
                f"{self.output_stride}×{self.output_stride} pixels; got {tuple(x.shape[-2:])}"
            )
        for stage in self.stages:
            x = stage(x)
        return x


class SegNetDecoder(nn.Module):
    """One task's SegNet decoder: ``[B, C, h, w] -> [B, num_outputs, *output_size]``, the
    mirror of ``encoder`` (built from its ``stage_channels`` and ``stage_depths``).

    For each encoder block, last first: its conv-BN-ReLU layers in reverse (ending with the
    previous block's channels), then bilinear upsampling to the previous block's resolution;
    finally a 1×1 convolution to ``num_outputs``.

    Args:
        encoder: the :class:`SegNetEncoder` whose features this decoder reads.
        num_outputs: output channels (classes, 1 for depth, 3 for normals, ...).
        output_size: ``(H, W)`` of the prediction; the intermediate resolutions are
            ``(H, W) // 2**k``, as the encoder's pooling produced them from an ``H × W`` input.
            None: upsample 2× per block (exact when the input sides are multiples of 16).
        unit_normal: divide each output vector (over channels) by its length (normals).
    """

    def __init__(self, encoder: SegNetEncoder, num_outputs: int,
                 output_size: Optional[Sequence[int]] = None, unit_normal: bool = False) -> None:
        super().__init__()
        channels, depths = encoder.stage_channels, encoder.stage_depths
        blocks = []
        for index in reversed(range(len(channels))):
            target = channels[max(index - 1, 0)]
            layers = [_conv_bn_relu(channels[index], channels[index]) for _ in range(depths[index] - 1)]
            blocks.append(nn.Sequential(*layers, _conv_bn_relu(channels[index], target)))
        self.blocks = nn.ModuleList(blocks)
        self.output = nn.Conv2d(channels[0], num_outputs, kernel_size=1)
        self.output_size = None if output_size is None else (int(output_size[0]), int(output_size[1]))
        self.unit_normal = unit_normal

    def _upsampled_size(self, x: Tensor, level: int) -> tuple[int, int]:
        """The spatial size of encoder block ``level`` (0 = input resolution)."""
        if self.output_size is None:
            return (2 * x.shape[-2], 2 * x.shape[-1])
        return (max(1, self.output_size[0] >> level), max(1, self.output_size[1] >> level))

    def forward(self, features: Tensor) -> Tensor:
        x = features
        levels = len(self.blocks) - 1
        for step, block in enumerate(self.blocks):
            x = block(x)
            level = levels - step - 1  # the resolution of the block this one's output feeds
            if level >= 0:
                x = F.interpolate(x, size=self._upsampled_size(x, level), mode="bilinear", align_corners=False)
        out = self.output(x)
        if self.output_size is not None and tuple(out.shape[-2:]) != self.output_size:
            out = F.interpolate(out, size=self.output_size, mode="bilinear", align_corners=False)
        if self.unit_normal:
            out = unit_normals(out)
        return out


def segnet_model(
    task_outputs: Mapping[str, int],
    output_size: Optional[Sequence[int]] = None,
    unit_normal_tasks: Sequence[str] = (),
    width: int = STANDARD_WIDTH,
) -> tuple[Callable[[], SegNetEncoder], nn.ModuleDict]:
    """``(encoder_class, decoders)`` for the Trainer: a :class:`SegNetEncoder` of ``width``
    and one :class:`SegNetDecoder` per task in ``task_outputs`` (task -> output channels);
    the tasks in ``unit_normal_tasks`` predict unit-length vectors. ``encoder_class`` returns
    copies of one randomly initialised encoder (architectures with one encoder per task start
    them equal, as from pretrained weights on the ResNet path)."""
    unknown = sorted(set(unit_normal_tasks) - set(task_outputs))
    if unknown:
        raise ValueError(f"unit_normal_tasks {unknown} are not tasks; tasks are {list(task_outputs)}")
    template = SegNetEncoder(width)

    def encoder_class() -> SegNetEncoder:
        return copy.deepcopy(template)

    decoders = nn.ModuleDict({
        task: SegNetDecoder(template, outputs, output_size, unit_normal=task in unit_normal_tasks)
        for task, outputs in task_outputs.items()
    })
    return encoder_class, decoders

