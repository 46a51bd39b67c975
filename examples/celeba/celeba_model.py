"""FAMO's CelebA network: a small VGG-like conv encoder (shared) and one linear logit head
per attribute. With ``width`` w the conv channels are w, 2w, 2w, 4w, 4w, 8w, 8w (3×3, no bias,
BatchNorm, ReLU; 2×2 max-pool after the 1st, 3rd and 5th), then global average pooling and two
``Linear(8w, 8w)`` + BatchNorm + ReLU layers; FAMO uses w = 64 (512 features)."""
from __future__ import annotations

from typing import Sequence

import torch.nn as nn
from torch import Tensor

#: (channel multiplier of ``width``, max-pool after this conv?)
CONV_STAGES: tuple[tuple[int, bool], ...] = ((1, True), (2, False), (2, True), (4, False), (4, True), (8, False), (8, False))


def encoder_features(width: int) -> int:
    """Size of the encoder's output for a given ``width`` (8·width)."""
    return CONV_STAGES[-1][0] * width


def _conv_block(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


def _dense_block(features: int) -> list[nn.Module]:
    return [nn.Linear(features, features, bias=False), nn.BatchNorm1d(features), nn.ReLU(inplace=True)]


class CelebAEncoder(nn.Module):
    """Images ``[B, 3, H, W]`` -> features ``[B, 8·width]`` (any H, W ≥ 8)."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        layers: list[nn.Module] = []
        channels = 3
        for multiplier, pool in CONV_STAGES:
            layers += _conv_block(channels, multiplier * width)
            channels = multiplier * width
            if pool:
                layers.append(nn.MaxPool2d(2))
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), *_dense_block(channels), *_dense_block(channels)]
        self.net = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)


def attribute_heads(task_name: Sequence[str], features: int) -> nn.ModuleDict:
    """One ``Linear(features, 1)`` logit per attribute (FAMO applies the sigmoid inside the
    model; here it lives in the loss, ``binary_cross_entropy_with_logits``)."""
    return nn.ModuleDict({task: nn.Linear(features, 1) for task in task_name})
