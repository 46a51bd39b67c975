"""MTAN: Multi-Task Attention Network."""
from __future__ import annotations

import itertools
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from LibMTL_rgb.architecture._common import IMG_SIZE, TASK_STAGES, first_task_stage, probe_input, probing, selected_tasks
from LibMTL_rgb.architecture._stages import WRAPPED_NETWORK, ComputedFeature, encoder_stages, split_last, wrapped_network
from LibMTL_rgb.architecture.abstract_arch import AbsArchitecture
from LibMTL_rgb.registry import ARCHITECTURES


def attention_mask(in_channels: int, hidden_channels: int, out_channels: int) -> nn.Sequential:
    """A task's soft attention mask (the paper's ``g``, Eq. 1), in (0, 1):
    ``a = σ(BN(conv1x1(ReLU(BN(conv1x1(x))))))``, the authors' and LibMTL's layout."""
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden_channels, kernel_size=1),
        nn.BatchNorm2d(hidden_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden_channels, out_channels, kernel_size=1),
        nn.BatchNorm2d(out_channels),
        nn.Sigmoid(),
    )


def block_expansion(stage_last: nn.Module) -> int:
    """Channel expansion of a stage's last block: ``expansion`` of a ResNet block (Bottleneck: 4,
    BasicBlock: 1), 1 for anything else (e.g. a SegNet block)."""
    return int(getattr(stage_last, "expansion", 1))


def is_residual_block(module: nn.Module) -> bool:
    """A torchvision-style ResNet block (``BasicBlock``/``Bottleneck``: ``expansion`` and ``downsample``)."""
    return hasattr(module, "expansion") and hasattr(module, "downsample")


def feature_transition(in_channels: int, out_channels: int, stage_last: nn.Module) -> nn.Module:
    """The paper's shared ``f`` between two stages: maps attended features to the next stage's
    channels.

    After a ResNet stage it is a block of the stage's own type with a 1x1 convolution + BN as its
    residual (downsample) branch, ``block(in, out / expansion, downsample)`` — LibMTL's and the
    authors' ResNet MTAN; after any other stage (e.g. SegNet) it is a 3x3 convolution + BN + ReLU,
    the authors' SegNet MTAN.
    """
    if is_residual_block(stage_last):
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False), nn.BatchNorm2d(out_channels)
        )
        return type(stage_last)(in_channels, out_channels // block_expansion(stage_last), downsample=downsample)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
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

    Modules as LibMTL main and the authors' code build them: every task has its own masks (one
    module per task and stage: 1x1 conv, BN, ReLU, 1x1 conv, BN, sigmoid, with ``C / expansion``
    hidden channels for a stage of ``C`` channels); on a ResNet, ``f`` is a residual block of the
    encoder's type with a 1x1 convolution on its residual branch (:func:`feature_transition`), so
    the parameter counts are LibMTL main's (e.g. 19,137,216 on a dilated ResNet-18 for three tasks).

    ``task_stages`` (optional, default every stage): masks only on the encoder's last N stages;
    the first of them reads ``u`` alone (as the first stage does), and the earlier stages run
    once, shared, as in HPS. Every task runs its masks and transitions at full resolution, so a
    step costs about T times these branches; with many tasks, fewer (deeper) stages keep it near
    HPS's.

    Shared parameters (``get_share_params``): the encoder and the transitions ``f`` — exactly
    the parameters that more than one task's loss reaches. Task parameters: the attention
    masks and the decoders.

    Requires an encoder with ``stages`` (e.g. ``LibMTL_rgb.model.resnet_encoder``) or
    torchvision ResNet attributes ``conv1`` ... ``layer4``, with no parameters outside its
    stages (checked at construction); or, as LibMTL, a *wrapper encoder* (LibMTL's Office-31
    pattern) whose ``resnet_network`` is such an encoder and whose forward runs
    ``self.resnet_network(inputs)`` then a head: the attention runs on ``resnet_network``'s
    stages and the wrapper's head (shared, like the wrapper's other parameters) on each task's
    attended feature, with or without ``multi_input`` (LibMTL only with it). Channel counts are traced at construction on a zero image
    of size ``img_size`` (optional; default: 64x64 with the first convolution's input channels).
    Works with ``rep_grad`` and ``multi_input`` (only the requested task's masks run).
    """

    hyperparameters = (IMG_SIZE, TASK_STAGES)

    def __init__(self, task_name, encoder_class, decoders, rep_grad, multi_input, device, **kwargs):
        super().__init__(task_name, encoder_class, decoders, rep_grad, multi_input, device, **kwargs)
        self.encoder = self.encoder_class()
        network = wrapped_network(self.encoder)
        trunk = self.encoder if network is None else network
        # (body, last) views of the encoder's own modules, kept out of the module tree.
        self._stage_parts = [split_last(stage) for stage in encoder_stages(trunk, "MTAN")]
        body_channels, out_channels = self._probe_channels(trunk, kwargs.get("img_size"))
        self._wrapped = network is not None
        if self._wrapped:  # the wrapper's head then runs on what the stages below compute
            setattr(self.encoder, WRAPPED_NETWORK, ComputedFeature(trunk))
        #: The first stage with attention masks (0: every stage, LibMTL's).
        self.first_attended = first_task_stage(len(self._stage_parts), kwargs.get("task_stages"))
        body_channels, out_channels = body_channels[self.first_attended:], out_channels[self.first_attended:]
        mask_inputs = [body_channels[0]] + [b + o for b, o in zip(body_channels[1:], out_channels[1:])]
        lasts = [last for _, last in self._stage_parts[self.first_attended:]]
        hidden = [max(1, o // block_expansion(last)) for o, last in zip(out_channels, lasts)]
        self.attention = nn.ModuleDict({
            task: nn.ModuleList([attention_mask(i, h, o) for i, h, o in zip(mask_inputs, hidden, out_channels)])
            for task in self.task_name
        })
        self.transitions = nn.ModuleList(
            [feature_transition(out_channels[s], out_channels[s + 1], lasts[s]) for s in range(len(out_channels) - 1)]
        )

    def _probe_channels(self, trunk: nn.Module, img_size: Optional[Sequence[int]]) -> tuple[list[int], list[int]]:
        x = probe_input(trunk, img_size, "MTAN")
        body_channels, out_channels = [], []
        with probing(trunk):
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
        for index, (body, last) in enumerate(self._stage_parts):
            u = body(x)
            x = last(u)
            stage = index - self.first_attended
            if stage < 0:  # below the attended stages: shared, as in HPS
                continue
            for task in tasks:
                mask_input = u if stage == 0 else torch.cat([u, _match_size(attended[task], u)], dim=1)
                feature = self.attention[task][stage](mask_input) * x
                attended[task] = self.transitions[stage](feature) if stage < len(self.transitions) else feature
        out = {}
        for task in tasks:
            rep = self._prepare_rep(self._encoder_head(attended[task], inputs), task, same_rep=False)
            out[task] = self.decoders[task](rep)
        return out

    def _encoder_head(self, feature: Tensor, inputs: Tensor) -> Tensor:
        """``feature`` through a wrapper encoder's head (its forward, with ``resnet_network``
        giving ``feature``); ``feature`` itself for any other encoder."""
        if not self._wrapped:
            return feature
        computed = getattr(self.encoder, WRAPPED_NETWORK)
        computed.feature = feature
        try:
            return self.encoder(inputs)
        finally:
            computed.feature = None

    def get_share_params(self):
        """The encoder's (a wrapper's head included) and the shared transitions' parameters."""
        return itertools.chain(self.encoder.parameters(), self.transitions.parameters())
