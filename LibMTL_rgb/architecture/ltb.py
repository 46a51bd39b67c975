"""LTB: Learning to Branch (Guo, Lee & Ulbricht, "Learning to Branch for Multi-Task
Learning", ICML 2020), in LibMTL's form."""
from __future__ import annotations

import itertools
import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from LibMTL_rgb.architecture._common import selected_tasks
from LibMTL_rgb.architecture._stages import build_task_columns, decode_columns
from LibMTL_rgb.architecture.abstract_arch import AbsArchitecture
from LibMTL_rgb.registry import ARCHITECTURES

#: Warm-up: the first ``epochs * WARMUP_FRACTION`` epochs average all parents (LibMTL: 1/100).
WARMUP_FRACTION = 0.01
#: Gumbel-softmax temperature ``τ = epochs * TAU_SCALE / sqrt(epoch + 1)`` (LibMTL: 1/20).
TAU_SCALE = 0.05
#: Temperature when the model runs outside a Trainer (no ``epoch``/``epochs`` set).
DEFAULT_TAU = 1.0


def in_warmup(epoch: Optional[int], epochs: Optional[int]) -> bool:
    """Whether ``epoch`` (0-based) of ``epochs`` is in the warm-up (LibMTL's ``epoch < epochs/100``)."""
    return epoch is not None and epochs is not None and epoch < epochs * WARMUP_FRACTION


def temperature(epoch: Optional[int], epochs: Optional[int]) -> float:
    """The Gumbel-softmax temperature of ``epoch``: ``epochs / 20 / sqrt(epoch + 1)`` (LibMTL's decay)."""
    if epoch is None or epochs is None:
        return DEFAULT_TAU
    return epochs * TAU_SCALE / math.sqrt(epoch + 1)


@ARCHITECTURES.register
class LTB(AbsArchitecture):
    r"""Learning to Branch on a ResNet-like encoder with S stages.

    Every task has its own copy of the encoder (a column of S stages; a ResNet's are LibMTL's
    five: the stem, then layer1 ... layer4, so the tree branches before each of layer1 ... layer4).
    The first stage of each column reads the input; stage ``s ≥ 1`` of column ``t`` reads the output of ONE
    parent among the T columns' stages ``s − 1``, chosen by a hard Gumbel-softmax sample
    over learnable logits ``branch_logits[s − 1, t, :]``: the forward pass uses a one-hot
    choice, the backward pass the softmax's gradient (straight-through), so the tree
    structure (which tasks share a node at each depth) is learned end to end with the
    network. Columns whose stage is nobody's parent are pruned branches; where several
    children pick the same parent, the tasks share that node.

    Schedule (LibMTL's, from the Trainer's ``epoch``/``epochs``): a warm-up of the first
    ``epochs/100`` epochs in which every child reads the average of all parents (LibMTL
    sums them), then temperature ``τ = epochs / 20 / sqrt(epoch + 1)``. In ``eval()`` mode
    every child reads its most likely parent (:meth:`selected_parents`, the tree the paper
    keeps; LibMTL still samples). Logits start equal (all parents equally likely).

    Shared parameters (``get_share_params``): the branching logits and every column's stages
    but the last (each may become any task's parent; the last stage is its task's own).
    LibMTL counts all columns as shared. ``multi_input=True`` is refused (one shared input).
    """

    supports_multi_input = False

    def __init__(self, task_name, encoder_class, decoders, rep_grad, multi_input, device, **kwargs):
        super().__init__(task_name, encoder_class, decoders, rep_grad, multi_input, device, **kwargs)
        self._columns = build_task_columns(self, "LTB", "branches one network whose columns read the same input",
                                           stem_apart=True)
        self.num_stages = len(self._columns[0])
        if self.num_stages < 2:
            raise ValueError("LTB needs an encoder with at least two stages to branch between")
        self.branch_logits = nn.Parameter(torch.ones(self.num_stages - 1, self.task_num, self.task_num))

    def branching_weights(self) -> Tensor:
        """``[S − 1, T, T]``: row ``[s, t]`` weighs the parents of column ``t``'s stage ``s + 1``."""
        logits = self.branch_logits
        if not self.training:
            return F.one_hot(logits.argmax(-1), self.task_num).to(logits.dtype)
        epoch, epochs = getattr(self, "epoch", None), getattr(self, "epochs", None)
        if in_warmup(epoch, epochs):
            return torch.full_like(logits, 1.0 / self.task_num)
        return F.gumbel_softmax(logits, tau=temperature(epoch, epochs), hard=True, dim=-1)

    def selected_parents(self) -> list[list[int]]:
        """The learned tree: ``[s][t]`` = the column whose stage ``s`` feeds column ``t``'s stage ``s + 1``."""
        return self.branch_logits.detach().argmax(-1).tolist()

    def forward(self, inputs: Tensor, task_name: Optional[str] = None) -> dict[str, Tensor]:
        tasks = selected_tasks(self.task_name, task_name)
        weights = self.branching_weights()
        features = [column[0](inputs) for column in self._columns]
        for stage in range(1, self.num_stages):
            parents = torch.einsum("tj,jb...->tb...", weights[stage - 1].to(features[0].dtype), torch.stack(features))
            features = [column[stage](x) for column, x in zip(self._columns, parents.unbind(0))]
        return decode_columns(self, features, tasks)

    def get_share_params(self):
        """The branching logits and all columns' stages but the last."""
        stages = (stage for column in self._columns for stage in column[:-1])
        return itertools.chain([self.branch_logits], *(stage.parameters() for stage in stages))
