"""Cross-stitch networks."""
from __future__ import annotations

import itertools
from typing import Optional

import torch
import torch.nn as nn
from torch import Tensor

from LibMTL_rgb.architecture._common import selected_tasks
from LibMTL_rgb.architecture._stages import build_task_columns, decode_columns
from LibMTL_rgb.architecture.abstract_arch import AbsArchitecture
from LibMTL_rgb.registry import ARCHITECTURES

#: Initial weight of a task's own feature in a cross-stitch unit (the paper's α_S = 0.9);
#: the rest is spread evenly over the other tasks, so every row sums to 1.
SELF_WEIGHT = 0.9


def initial_cross_units(num_units: int, task_num: int) -> Tensor:
    """``[num_units, T, T]`` mixing matrices: ``SELF_WEIGHT`` on the diagonal, rows summing to 1."""
    if task_num == 1:
        return torch.ones(num_units, 1, 1)
    unit = torch.full((task_num, task_num), (1 - SELF_WEIGHT) / (task_num - 1))
    unit.fill_diagonal_(SELF_WEIGHT)
    return unit.expand(num_units, -1, -1).clone()


@ARCHITECTURES.register
class Cross_stitch(AbsArchitecture):
    """Cross-stitch networks (Misra et al., "Cross-stitch Networks for Multi-task Learning",
    CVPR 2016), on a ResNet-like encoder.

    Each task has its own copy of the encoder (a column). After every stage but the last, a
    learned cross-stitch unit mixes the columns: the input of task ``t``'s next stage is
    ``Σ_j α[t, j] · x_j`` (initialised to 0.9 on the own task, the rest spread evenly).

    Shared parameters (``get_share_params``): the cross-stitch units and every column's stages
    except the last — exactly the parameters that more than one task's loss reaches; each
    column's last stage is its task's own. (LibMTL counts all columns as shared.)

    Requires an encoder with at least two ``stages`` (e.g. ``LibMTL_rgb.model.resnet_encoder``)
    or torchvision ResNet attributes ``conv1`` ... ``layer4``. Works with ``rep_grad``;
    ``multi_input=True`` is refused at construction (the columns mix one shared input).
    """

    #: The columns mix one shared input, so each task cannot have its own.
    supports_multi_input = False

    def __init__(self, task_name, encoder_class, decoders, rep_grad, multi_input, device, **kwargs):
        super().__init__(task_name, encoder_class, decoders, rep_grad, multi_input, device, **kwargs)
        self._columns = dict(zip(self.task_name, build_task_columns(self, "Cross_stitch",
                                                                    "mixes the tasks' features at every stage")))
        self.num_stages = len(self._columns[self.task_name[0]])
        if self.num_stages < 2:
            raise ValueError("Cross_stitch needs an encoder with at least two stages to stitch between")
        self.cross_unit = nn.Parameter(initial_cross_units(self.num_stages - 1, self.task_num))

    def forward(self, inputs: Tensor, task_name: Optional[str] = None) -> dict[str, Tensor]:
        tasks = selected_tasks(self.task_name, task_name)
        features = [inputs] * self.task_num
        for stage in range(self.num_stages):
            features = [self._columns[task][stage](x) for task, x in zip(self.task_name, features)]
            if stage < self.num_stages - 1:
                stitched = torch.einsum("tj,jb...->tb...", self.cross_unit[stage], torch.stack(features))
                features = list(stitched.unbind(0))
        return decode_columns(self, features, tasks)

    def get_share_params(self):
        """The cross-stitch units and all columns' stages but the last."""
        stages = (stage for column in self._columns.values() for stage in column[:-1])
        return itertools.chain([self.cross_unit], *(stage.parameters() for stage in stages))
