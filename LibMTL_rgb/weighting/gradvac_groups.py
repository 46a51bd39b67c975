"""GradVac per parameter group (LibMTL's ``--GradVac_group_type``).

Gradient Vaccine (Wang, Tsvetkov, Firat & Cao, ICLR 2021) sets its similarity goals per
parameter group: the paper compares the whole model with finer granularities. LibMTL's
values: 0 = the whole shared model (one group), 1 = one group per layer (the parameters of
one module), 2 = one group per parameter tensor. Each group has its own EMA targets
``φ̂_ij`` and its own vaccine correction; the update is the concatenation of the groups'
corrected sums. Versus LibMTL: a layer is every module that directly owns shared
parameters (LibMTL counts leaf modules of the encoder only, which mis-sizes the groups of
architectures whose shared parameters are not all in leaf modules of the encoder); the
order of the other tasks is drawn per group (LibMTL draws one order per task for all groups).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from LibMTL_rgb.weighting.state_buffers import ResizableBuffers

#: LibMTL's ``GradVac_group_type``: whole model, per layer, per parameter tensor.
GRADVAC_GROUP_TYPES = (0, 1, 2)


def parameter_groups(model: nn.Module, params: list[nn.Parameter], group_type: int) -> list[tuple[int, int]]:
    """``[(begin, end), ...]``: the column ranges of the ``[T, D]`` gradient matrix (laid out
    as ``params``) that form each group of ``group_type``."""
    if group_type not in GRADVAC_GROUP_TYPES:
        raise ValueError(f"GradVac_group_type must be one of {GRADVAC_GROUP_TYPES}, got {group_type!r}")
    offsets = np.concatenate([[0], np.cumsum([p.numel() for p in params])]).astype(int).tolist()
    if group_type == 0:
        return [(0, offsets[-1])]
    if group_type == 2:
        return list(zip(offsets[:-1], offsets[1:]))
    owner = {}
    for name, module in model.named_modules():
        for param in module.parameters(recurse=False):
            owner.setdefault(id(param), name)
    groups: list[tuple[int, int]] = []
    previous = None
    for param, begin, end in zip(params, offsets[:-1], offsets[1:]):
        layer = owner.get(id(param))
        if groups and layer == previous:
            groups[-1] = (groups[-1][0], end)
        else:
            groups.append((begin, end))
        previous = layer
    return groups


class GradVacGrouping(ResizableBuffers):
    """Mixin for the GradVac weighting: with ``GradVac_group_type`` 1 or 2, one GradVac per
    parameter group (targets in the buffer ``gradvac_group_targets``, [groups, T, T]);
    with 0, the whole-model path of the class it is mixed into."""

    def init_param(self) -> None:
        super().init_param()
        self.register_resizable_buffer("gradvac_group_targets", dtype=torch.float64)

    def backward(self, losses: Tensor, **kwargs) -> np.ndarray:
        options = self.method_options(kwargs)
        group_type = options["GradVac_group_type"]
        if group_type == 0:
            return super().backward(losses, **kwargs)
        if self.rep_grad:
            raise ValueError("GradVac with GradVac_group_type 1 or 2 groups shared parameters and cannot run with "
                             "rep_grad=True; use rep_grad=False or GradVac_group_type 0")
        if self.gradient_path() == "gramian":
            raise ValueError("GradVac with GradVac_group_type 1 or 2 needs each group's gradients and cannot run on the "
                             "Gramian path; use GradVac_group_type 0, or grad_method 'auto'/'loop' with a larger grad_memory_budget")
        groups = parameter_groups(self, self._share_param_list(), group_type)
        grads = self._get_grads(losses, mode="backward")
        self._raise_if_nonfinite(losses, grads)
        with torch.no_grad():
            direction = self._grouped_direction(self.aggregator(options), grads, groups)
        self._reset_grad(direction)
        return np.ones(self.task_num)

    def _grouped_direction(self, aggregator: Any, grads: Tensor, groups: list[tuple[int, int]]) -> Tensor:
        shape = (len(groups), self.task_num, self.task_num)
        if self.gradvac_group_targets.shape != shape:
            self.gradvac_group_targets = torch.zeros(shape, dtype=torch.float64, device=grads.device)
        weighting = aggregator.gramian_weighting
        direction = torch.empty(grads.shape[1], dtype=grads.dtype, device=grads.device)
        for index, (begin, end) in enumerate(groups):
            block = grads[:, begin:end]
            weighting._phi_t = self.gradvac_group_targets[index].to(device="cpu", dtype=grads.dtype).clone()
            weighting._state_key = (self.task_num, grads.dtype)
            weights = aggregator.weighting(block).to(device=grads.device, dtype=grads.dtype)
            self.gradvac_group_targets[index].copy_(weighting._phi_t)
            direction[begin:end] = weights @ block
        return direction
