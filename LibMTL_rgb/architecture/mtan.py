"""MTAN: Multi-Task Attention Network."""
from __future__ import annotations

import itertools
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from LibMTL_rgb.architecture._common import IMG_SIZE, probe_input, probing, selected_tasks
from LibMTL_rgb.architecture._stages import encoder_stages, split_last
from LibMTL_rgb.architecture.abstract_arch import AbsArchitecture
from LibMTL_rgb.registry import ARCHITECTURES


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def attention_mask(in_channels: int, out_channels: int) -> nn.Sequential:
    """A task's soft attention mask ``a = σ(BN(conv1x1(ReLU(BN(conv1x1(x))))))`` in (0, 1)."""
    hidden = max(1, out_channels // 4)
    return nn.Sequential(
        *_conv_bn_relu(in_channels, hidden, 1),
        nn.Conv2d(hidden, out_channels, kernel_size=1),
        nn.BatchNorm2d(out_channels),
        nn.Sigmoid(),
    )


def feature_transition(in_channels: int, out_channels: int) -> nn.Sequential:
    """The paper's shared ``f``: maps attended features to the next stage's channels
    (a 1x1-3x3-1x1 bottleneck)."""
    hidden = max(1, out_channels // 4)
    return nn.Sequential(
        *_conv_bn_relu(in_channels, hidden, 1),
        *_conv_bn_relu(hidden, hidden, 3),
        *_conv_bn_relu(hidden, out_channels, 1),
    )


def _match_size(x: Tensor, like: Tensor) -> Tensor:
    """Max-pool ``x`` to the spatial size of ``like`` (a no-op when they agree)."""
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.adaptive_max_pool2d(x, like.shape[-2:])


@ARCHITECTURES.register
class MTAN(AbsArchitecture):
    """Multi-Task Attention Network (Liu, Johns, Davison, "End-To-End Multi-Task Learning with
    Attention", CVPR 2019), on a ResNet-like encoder.

    The encoder runs once, shared. Each of its stages is split before its last block: ``u``
    (after the other blocks) and ``p`` (the stage output). For every task and stage a soft
    mask ``a = att(u)`` (first stage) or ``att([u, f(prev)])`` gates ``p``; the attended
    feature ``a ⊙ p`` goes through the shared transition ``f`` of that stage (max-pooled to the
    next stage's size) into the next stage's mask. Each task's decoder reads its attended
    last-stage feature.

    Shared parameters (``get_share_params``): the encoder and the transitions ``f`` — exactly
    the parameters that more than one task's loss reaches. Task parameters: the attention
    masks and the decoders.

    Requires an encoder with ``stages`` (e.g. ``LibMTL_rgb.model.resnet_encoder``) or
    torchvision ResNet attributes ``conv1`` ... ``layer4``, with no parameters outside its
    stages (checked at construction). Channel counts are traced at construction on a zero image
    of size ``img_size`` (optional; default: 64x64 with the first convolution's input channels).
    Works with ``rep_grad`` and ``multi_input`` (only the requested task's masks run).
    """

    hyperparameters = (IMG_SIZE,)

    def __init__(self, task_name, encoder_class, decoders, rep_grad, multi_input, device, **kwargs):
        super().__init__(task_name, encoder_class, decoders, rep_grad, multi_input, device, **kwargs)
        self.encoder = self.encoder_class()
        # (body, last) views of the encoder's own modules, kept out of the module tree.
        self._stage_parts = [split_last(stage) for stage in encoder_stages(self.encoder, "MTAN")]
        body_channels, out_channels = self._probe_channels(kwargs.get("img_size"))
        mask_inputs = [body_channels[0]] + [b + o for b, o in zip(body_channels[1:], out_channels[1:])]
        self.attention = nn.ModuleDict(
            {task: nn.ModuleList([attention_mask(i, o) for i, o in zip(mask_inputs, out_channels)]) for task in self.task_name}
        )
        self.transitions = nn.ModuleList(
            [feature_transition(out_channels[s], out_channels[s + 1]) for s in range(len(out_channels) - 1)]
        )

    def _probe_channels(self, img_size: Optional[Sequence[int]]) -> tuple[list[int], list[int]]:
        x = probe_input(self.encoder, img_size, "MTAN")
        body_channels, out_channels = [], []
        with probing(self.encoder):
            for body, last in self._stage_parts:
                u = body(x)
                x = last(u)
                if u.dim() != 4 or x.dim() != 4:
                    raise TypeError(f"MTAN needs 4-D feature maps [B, C, H, W] from every stage, got {tuple(x.shape)}")
                body_channels.append(u.shape[1])
                out_channels.append(x.shape[1])
        return body_channels, out_channels

    def forward(self, inputs: Tensor, task_name: Optional[str] = None) -> dict[str, Tensor]:
        tasks = selected_tasks(self.task_name, task_name)
        attended: dict[str, Tensor] = {}
        x = inputs
        for stage, (body, last) in enumerate(self._stage_parts):
            u = body(x)
            x = last(u)
            for task in tasks:
                mask_input = u if stage == 0 else torch.cat([u, _match_size(attended[task], u)], dim=1)
                feature = self.attention[task][stage](mask_input) * x
                attended[task] = self.transitions[stage](feature) if stage < len(self.transitions) else feature
        out = {}
        for task in tasks:
            rep = self._prepare_rep(attended[task], task, same_rep=False)
            out[task] = self.decoders[task](rep)
        return out

    def get_share_params(self):
        """The encoder's and the shared transitions' parameters."""
        return itertools.chain(self.encoder.parameters(), self.transitions.parameters())
