"""FAMO's CelebA network: a small VGG-like conv encoder (shared) and one linear logit head
per attribute. With ``width`` w the conv channels are w, 2w, 2w, 4w, 4w, 8w, 8w (3×3, no bias,
BatchNorm, ReLU; 2×2 max-pool after the 1st, 3rd and 5th), then global average pooling and two
``Linear(8w, 8w)`` + BatchNorm + ReLU layers; FAMO uses w = 64 (512 features).

The encoder is built as ``stages`` (the protocol of MTAN, Cross_stitch and PLE,
``LibMTL_rgb/architecture/_stages.py``): the conv layers split at the pools, then the pooled
dense part, whose ``Linear`` + ``BatchNorm1d`` layers are written as the identical 1×1
convolutions + ``BatchNorm2d`` on the ``[B, 8w, 1, 1]`` map, so that every stage yields a
feature map. ``forward`` flattens the last one, so HPS and the gated architectures see
``[B, 8w]`` features; the heads flatten too, so they read either."""
from __future__ import annotations

from typing import Sequence

import torch.nn as nn
from torch import Tensor

#: (channel multiplier of ``width``, max-pool after this conv?)
CONV_STAGES: tuple[tuple[int, bool], ...] = ((1, True), (2, False), (2, True), (4, False), (4, True), (8, False), (8, False))


def encoder_features(width: int) -> int:
    """Size of the encoder's output for a given ``width`` (8·width)."""
    return CONV_STAGES[-1][0] * width


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
                         nn.ReLU(inplace=True))


def _dense_block(features: int) -> nn.Sequential:
    """``Linear(bias=False)`` + ``BatchNorm1d`` + ReLU, as a 1×1 conv + ``BatchNorm2d`` on ``[B, C, 1, 1]``."""
    return nn.Sequential(nn.Conv2d(features, features, 1, bias=False), nn.BatchNorm2d(features), nn.ReLU(inplace=True))


def _conv_stages(width: int) -> list[nn.Sequential]:
    """The conv layers in stages: a new stage starts at each max-pool (the pool first, so a
    stage's last block keeps its input's spatial size, as MTAN's masks need)."""
    stages, layers, channels = [], [], 3
    for multiplier, pool in CONV_STAGES:
        layers.append(_conv_block(channels, multiplier * width))
        channels = multiplier * width
        if pool:
            stages.append(nn.Sequential(*layers))
            layers = [nn.MaxPool2d(2)]
    stages.append(nn.Sequential(*layers))
    return stages


def stage_macs(width: int, image_size: int) -> list[int]:
    """Multiply-accumulates per image of each of the encoder's five stages (the four conv stages,
    then the two dense layers), for ``width`` and ``image_size`` × ``image_size`` inputs."""
    macs, channels, side, stage = [0], 3, image_size, 0
    for multiplier, pool in CONV_STAGES:
        macs[stage] += side * side * 9 * channels * multiplier * width
        channels = multiplier * width
        if pool:
            side //= 2
            stage += 1
            macs.append(0)
    return macs + [2 * channels * channels]


class CelebAEncoder(nn.Module):
    """Images ``[B, 3, H, W]`` -> features ``[B, 8·width]`` (any H, W ≥ 8), run as five
    ``stages``: four conv stages (split at the max-pools) and the pooled dense stage."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        features = encoder_features(width)
        dense = nn.Sequential(nn.AdaptiveAvgPool2d(1), _dense_block(features), _dense_block(features))
        self.stages = nn.ModuleList([*_conv_stages(width), dense])

    def forward(self, images: Tensor) -> Tensor:
        x = images
        for stage in self.stages:
            x = stage(x)
        return x.flatten(1)


def attribute_heads(task_name: Sequence[str], features: int) -> nn.ModuleDict:
    """One ``Linear(features, 1)`` logit per attribute, after flattening (the stage-wise
    architectures hand over the last stage's ``[B, features, 1, 1]`` map). FAMO applies the
    sigmoid inside the model; here it lives in the loss (``binary_cross_entropy_with_logits``)."""
    return nn.ModuleDict({task: nn.Sequential(nn.Flatten(), nn.Linear(features, 1)) for task in task_name})
